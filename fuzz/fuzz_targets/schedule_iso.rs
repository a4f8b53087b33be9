//! Fuzzes the ISO 8601 side of `schedule`: `parse` (and so `parse_interval`) with a
//! `scheduleTimeZone`, `Period::parse`, `parse_duration` and `parse_time_zone`, then what the engine
//! does with a parsed schedule: next runs, advancing, skipping missed runs, and rendering the
//! schedule back as it is stored, which must parse again to the same schedule.
//!
//! Input: the schedule on the first line, the time zone on the second, optionally an epsilon on
//! the third. `now` is fixed, as the engine passes it.
#![no_main]

use chrono::{DateTime, Datelike, Duration, Utc};
use kairos::schedule::{self, Interval, Period, Schedule};
use libfuzzer_sys::fuzz_target;

/// The `now` every parse is given: 2026-01-01T00:00:00Z.
const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let schedule_text = lines.next().unwrap_or_default();
    let zone = lines.next().unwrap_or_default();
    let epsilon_text = lines.next().unwrap_or("PT60S");
    let now = DateTime::from_timestamp_millis(NOW_MS).expect("a valid instant");

    let _ = schedule::parse_time_zone(zone);
    // The period printer writes what the parser reads back.
    if let Ok(period) = Period::parse(schedule_text) {
        assert_eq!(Period::parse(&period.to_string()), Ok(period), "{period}");
    }
    let epsilon = schedule::parse_duration(epsilon_text).unwrap_or(Duration::seconds(60));
    let _ = schedule::format_duration(epsilon);
    if let Ok(duration) = schedule::parse_duration(schedule_text) {
        let _ = schedule::format_duration(duration);
    }

    let Ok(parsed) = schedule::parse(schedule_text, zone, now) else {
        return;
    };
    if let Schedule::Interval(interval) = &parsed {
        round_trip(schedule_text, interval, zone, now);
        // The store keeps each advanced schedule rendered too.
        round_trip(schedule_text, &interval.advance(), zone, now);
    }
    exercise(&parsed, now, epsilon);
});

/// What the store keeps is the rendered text, and loading must read back the same schedule.
/// Only for starts the parser can write (years 1 to 9999); a schedule advanced past that is at the
/// end of its days anyway.
fn round_trip(schedule_text: &str, interval: &Interval, zone: &str, now: DateTime<Utc>) {
    if !(1..=9999).contains(&interval.start.year()) {
        return;
    }
    let rendered = interval.render();
    let again = schedule::parse_interval(&rendered, zone, now)
        .unwrap_or_else(|e| panic!("{schedule_text:?} rendered as {rendered:?} does not parse: {e}"));
    assert_eq!(
        (again.repeat, again.start, again.period),
        (interval.repeat, interval.start, interval.period),
        "{schedule_text:?} rendered as {rendered:?}"
    );
}

/// Runs what the engine asks of a schedule, as it would over its life.
fn exercise(parsed: &Schedule, now: DateTime<Utc>, epsilon: Duration) {
    let _ = parsed.describe();
    let runs = parsed.upcoming(8);
    assert!(runs.windows(2).all(|w| w[0] <= w[1]), "runs go forward: {runs:?}");
    let mut schedule = parsed.clone();
    for _ in 0..4 {
        schedule = schedule.advance();
        schedule = schedule.pass();
        let _ = schedule.next_run();
    }
    // Downtimes after the schedule's next run. Calendar periods in a named zone skip one step at
    // a time (a start decades back is thousands of steps: correct, but it starved the fuzzer),
    // so the downtimes stay short.
    let from = schedule
        .next_run()
        .filter(|t| *t < DateTime::<Utc>::MAX_UTC)
        .unwrap_or(now);
    for later in [Duration::zero(), Duration::hours(1), Duration::days(40)] {
        if let Some(at) = from.checked_add_signed(later) {
            let (skipped, _) = schedule.skip_missed(at, epsilon);
            let _ = skipped.next_run();
        }
    }
    let mut given_back = parsed.clone();
    given_back.give_back_repeat();
    if let Schedule::Interval(interval) = &schedule {
        let _ = interval.render();
    }
}
