//! Fuzzes cron schedules: `schedule::parse` with a cron expression (croner's fields, macros and
//! kairos' own field count and daylight saving rules) in a `scheduleTimeZone`, then the
//! next-occurrence arithmetic the engine runs on it: upcoming runs, advancing, skipping missed
//! runs and resuming from a stored cursor. Runs must go strictly forward.
//!
//! Input: the expression on the first line, the time zone on the second, optionally a number of
//! seconds (under four years) on the third that moves `now` on from its fixed value, so that
//! the runs start at different points of a year's clock changes.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use kairos::schedule::{self, Schedule};
use libfuzzer_sys::fuzz_target;

/// 2026-01-01T00:00:00Z.
const NOW_MS: i64 = 1_767_225_600_000;

/// How far the third line may move `now`: four years of seconds.
const SPREAD_SECONDS: i64 = 4 * 366 * 24 * 3600;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let expression = lines.next().unwrap_or_default();
    let zone = lines.next().unwrap_or_default();
    let shift = lines
        .next()
        .and_then(|l| l.trim().parse::<i64>().ok())
        .map_or(0, |s| s.rem_euclid(SPREAD_SECONDS));
    if !schedule::is_cron(expression) {
        return;
    }
    let now = DateTime::from_timestamp_millis(NOW_MS).expect("a valid instant") + Duration::seconds(shift);
    let Ok(parsed) = schedule::parse(expression, zone, now) else {
        return;
    };
    let Schedule::Cron(cron) = &parsed else {
        panic!("{expression:?} is cron text but did not parse as cron");
    };
    let first = cron.next_run().expect("a parsed cron schedule has a next run");
    assert!(first >= now, "{expression:?}: first run {first} before now {now}");
    assert_eq!(cron.at_or_after(now), Some(first));

    let runs = parsed.upcoming(6);
    strictly_forward(expression, &runs);
    let mut schedule = parsed.clone();
    for run in &runs {
        assert_eq!(
            schedule.next_run(),
            Some(*run),
            "{expression:?}: advance agrees with upcoming"
        );
        schedule = schedule.advance();
    }
    let _ = parsed.describe();
    let _ = cron.expression();

    // Missed runs after a few minutes' downtime (each is one step, so a per-second expression
    // takes hundreds): the next run is the first at or after `now - epsilon`.
    let back = now + Duration::minutes(5);
    let (skipped, _) = parsed.skip_missed(back, Duration::seconds(60));
    if let Some(next) = skipped.next_run() {
        assert!(
            next >= back - Duration::seconds(60),
            "{expression:?}: {next} after skipping"
        );
    }
    let mut resumed = parsed.clone();
    resumed.resume(first.timestamp_millis());
    assert_eq!(resumed.next_run(), Some(first));
    let _ = cron.after(now + Duration::days(200));
    let _ = cron.at_or_after(now + Duration::seconds(shift / 3));
});

fn strictly_forward(expression: &str, runs: &[DateTime<Utc>]) {
    assert!(
        runs.windows(2).all(|w| w[0] < w[1]),
        "{expression:?}: runs go strictly forward: {runs:?}"
    );
}
