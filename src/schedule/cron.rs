//! Cron schedules: five fields, or six with the second first, or a macro such as `@daily`,
//! read in the job's `scheduleTimeZone`, and the daylight saving rules that decide when each
//! matching wall-clock time runs.
//!
//! croner parses the fields (lists, ranges, steps, `L`, `W`, `#`) and finds the next matching
//! wall-clock time, but it is only ever asked in UTC, where clocks never change. Its own
//! daylight saving handling counts a job as fixed-time only when the second, minute and hour
//! fields are single values, so `0,30 2 * * *` would lose both runs in a spring-forward gap,
//! where ours runs a skipped time once, after the gap. So the step from wall-clock times to
//! instants is taken here, by these rules:
//!
//! - An hour field of `*` (every hour, `@hourly`, `*/15 * * * *`) follows real time: every
//!   instant whose wall-clock time matches runs. An hour that a fall-back repeats is a real hour
//!   and runs again; times that a spring-forward skips never happen and do not run. So
//!   `0 * * * *` stays one real hour apart across both changes.
//! - Any other hour field names wall-clock times, and each runs once: at the first of its two
//!   instants when a fall-back repeats it, and at the first instant after the gap when a
//!   spring-forward skips it (times in one gap run once, together, at the end of the gap).

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDateTime, SubsecRound, TimeDelta, Utc};
use croner::parser::{CronParser, Seconds, Year};

use super::{Error, Zone};

/// How a cron schedule meets a change of the clocks (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// The hour field is `*`: every real instant whose wall-clock time matches.
    Real,
    /// Each matching wall-clock time once.
    Wall,
}

/// A cron schedule and its next run.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    /// The expression as the job gave it: the job JSON returns it so, whatever runs.
    expression: String,
    /// Shared: a parsed pattern is several hundred bytes, and each run clones the schedule.
    pattern: Arc<croner::Cron>,
    zone: Zone,
    clock: Clock,
    /// The next run; `None` when none is left (croner looks no further than the year 5000).
    next: Option<DateTime<Utc>>,
}

/// How often an offset change is looked for between two runs of a real-time schedule. Zones
/// change offset a few times a year at most, never twice in this long.
const PROBE: TimeDelta = TimeDelta::hours(6);

impl Cron {
    /// Parses `expression` in `zone`; its next run is its first occurrence at or after `now`.
    pub(super) fn parse(expression: &str, zone: Zone, now: DateTime<Utc>) -> Result<Cron, Error> {
        let text = expand_macro(expression)?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !matches!(fields.len(), 5 | 6) {
            return Err(Error::CronFieldCount {
                schedule: expression.to_owned(),
                count: fields.len(),
            });
        }
        // croner skips empty list items, so a field of commas alone matches nothing, and finding
        // that out walks every minute up to the year 5000: seconds of the engine's time for one
        // posted job (found by fuzzing). An empty item is a typo anyway, so none is accepted.
        if let Some(field) = fields.iter().find(|f| f.split(',').any(str::is_empty)) {
            return Err(Error::InvalidCron {
                schedule: expression.to_owned(),
                reason: format!("the field '{field}' has an empty item in its list"),
            });
        }
        // The hour is the third field from the right in both shapes.
        let clock = match fields.get(fields.len() - 4) {
            Some(&"*") => Clock::Real,
            _ => Clock::Wall,
        };
        let pattern = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| Error::InvalidCron {
                schedule: expression.to_owned(),
                reason: e.to_string(),
            })?;
        let mut cron = Cron {
            expression: expression.to_owned(),
            pattern: Arc::new(pattern),
            zone,
            clock,
            next: None,
        };
        cron.next = cron.at_or_after(now);
        if cron.next.is_none() {
            return Err(Error::CronNeverRuns {
                schedule: expression.to_owned(),
            });
        }
        Ok(cron)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The instant of the next run, or `None` when none is left.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    /// Continues from `next`, a next run kept from before (a restart).
    pub(super) fn resume(&mut self, next: DateTime<Utc>) {
        self.next = Some(next);
    }

    /// The schedule after its next run was launched or passed over: the run after it.
    pub fn advance(&self) -> Cron {
        Cron {
            next: self.next.and_then(|t| self.after(t)),
            ..self.clone()
        }
    }

    /// Skips the runs earlier than `now - epsilon`, one by one, so that each is counted; the
    /// result's next run is the first at or after `now - epsilon`.
    pub fn skip_missed(&self, now: DateTime<Utc>, epsilon: chrono::Duration) -> (Cron, u64) {
        let target = now
            .checked_sub_signed(epsilon)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut next = self.next;
        let mut skipped = 0u64;
        while let Some(at) = next
            && at < target
        {
            next = self.after(at);
            skipped += 1;
        }
        let cron = Cron { next, ..self.clone() };
        (cron, skipped)
    }

    /// The next `count` runs from the next one on.
    pub fn upcoming(&self, count: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(self.next, |&t| self.after(t))
            .take(count)
            .collect()
    }

    /// The schedule in words, for people: "cron '0 2 * * *' in Europe/Paris".
    pub fn describe(&self) -> String {
        format!("cron '{}' in {}", self.expression, self.zone.name())
    }

    /// The first run at or after `t`.
    pub fn at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.after(t.checked_sub_signed(TimeDelta::nanoseconds(1))?)
    }

    /// The first run strictly after `t`, by the rules of the module's doc.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.clock, self.zone) {
            (Clock::Real, Zone::Named(_)) => self.after_in_real_time(t),
            // Without daylight saving time both rules agree, and walking wall-clock times is cheaper.
            _ => self.after_in_wall_time(t),
        }
    }

    /// Each matching wall-clock time runs at its first instant, or at the end of its gap. That
    /// instant never goes back as the wall-clock time goes forward, so the first matching time
    /// after `t`'s own whose instant is after `t` gives the first run after `t`. (Only in the
    /// second pass of a repeated hour are there matching times ahead whose instant is behind.)
    fn after_in_wall_time(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = self.zone.local(t.trunc_subsecs(0)).0;
        loop {
            wall = self.matching_wall(wall, false)?;
            let at = self.zone.first_instant(wall)?;
            if at > t {
                return Some(at);
            }
        }
    }

    /// Walks real time: between two changes of offset, instants and wall-clock times move
    /// together, so the first match in wall-clock time is the first in real time, unless the
    /// offset changes before it; then the walk starts again at the change, with the new offset.
    fn after_in_real_time(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t.trunc_subsecs(0);
        let mut inclusive = false;
        loop {
            let offset = self.zone.offset_at(from);
            let wall = shift(from.naive_utc(), offset, 1)?;
            let next = self.matching_wall(wall, inclusive)?;
            let at = shift(next, offset, -1)?.and_utc();
            match self.offset_change(from, at, offset) {
                None => return Some(at),
                Some(change) => {
                    from = change;
                    inclusive = true;
                }
            }
        }
    }

    /// The first instant in `(from, to]` whose offset is not `offset`, to the second.
    fn offset_change(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        offset: FixedOffset,
    ) -> Option<DateTime<Utc>> {
        let differs = |t: DateTime<Utc>| self.zone.offset_at(t) != offset;
        let mut low = from;
        while low < to {
            let high = low.checked_add_signed(PROBE).map_or(to, |t| t.min(to));
            if differs(high) {
                // The offset is `offset` at `low` and not at `high`: halve down to the second.
                let (mut same, mut changed) = (low.timestamp(), high.timestamp());
                while changed - same > 1 {
                    let middle = same + (changed - same) / 2;
                    match DateTime::from_timestamp(middle, 0) {
                        Some(t) if differs(t) => changed = middle,
                        _ => same = middle,
                    }
                }
                return DateTime::from_timestamp(changed, 0);
            }
            low = high;
        }
        None
    }

    /// The first wall-clock time after `wall` (or at it, when `inclusive`) that the expression
    /// matches. croner is asked in UTC so that no clock change of its own comes in.
    fn matching_wall(&self, wall: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.pattern
            .find_next_occurrence(&wall.and_utc(), inclusive)
            .ok()
            .map(|t| t.naive_utc())
    }
}

/// `local` moved by `sign` times `offset`: from UTC to wall-clock time with 1, back with -1.
fn shift(local: NaiveDateTime, offset: FixedOffset, sign: i64) -> Option<NaiveDateTime> {
    let seconds = TimeDelta::try_seconds(sign * i64::from(offset.local_minus_utc()))?;
    local.checked_add_signed(seconds)
}

/// The five fields a macro stands for; any other text as it is, trimmed.
fn expand_macro(expression: &str) -> Result<&str, Error> {
    let text = expression.trim();
    if !text.starts_with('@') {
        return Ok(text);
    }
    match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        _ => Err(Error::UnknownCronMacro {
            schedule: expression.to_owned(),
        }),
    }
}
