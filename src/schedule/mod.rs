//! Job schedules: Chronos' ISO 8601 repeating intervals (`Rn/<start>/<period>`) and cron
//! expressions (`cron.rs`): parsing, rendering, and working out when a job runs next.
//!
//! Everything here is pure: callers pass `now` in, so the engine decides what
//! time it is and the tests can pick any time they like.

use chrono::{DateTime, Days, Duration, FixedOffset, Months, NaiveDate, NaiveDateTime, NaiveTime};
use chrono::{SubsecRound, TimeDelta, Utc, Weekday};

mod cron;
mod period;
mod zone;

#[cfg(test)]
mod cron_tests;
#[cfg(test)]
mod tests;

pub use cron::Cron;

pub use period::{Period, format_duration, parse_duration};
pub use zone::{Zone, parse_time_zone};

/// Why a schedule, its time zone or an epsilon was rejected. The messages are
/// shown to users in HTTP 400 bodies, so each one names the offending text.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error(
        "schedule '{schedule}' is neither an ISO 8601 repeating interval (Rn/start/period) \
         nor a cron expression (five or six fields, or a macro such as @daily)"
    )]
    NotRepeatingInterval { schedule: String },
    #[error(
        "cron expression '{schedule}' has {count} fields; give five (minute hour day-of-month \
         month day-of-week) or six (second first)"
    )]
    CronFieldCount { schedule: String, count: usize },
    #[error(
        "cron expression '{schedule}' uses an unknown macro; use @yearly, @annually, @monthly, \
         @weekly, @daily, @midnight or @hourly"
    )]
    UnknownCronMacro { schedule: String },
    #[error("cron expression '{schedule}' is invalid: {reason}")]
    InvalidCron { schedule: String, reason: String },
    #[error("cron expression '{schedule}' never matches a date (such as 30 February), so it would never run")]
    CronNeverRuns { schedule: String },
    #[error(
        "schedule '{schedule}' has a repeat count that is too large (at most {max})",
        max = u64::MAX
    )]
    RepeatCountTooLarge { schedule: String },
    #[error(
        "start '{start}' of schedule '{schedule}' is not an ISO 8601 date-time \
         (for example 2008-03-01T13:00:00Z)"
    )]
    InvalidStart { schedule: String, start: String },
    #[error("schedule start '{start}' is before 1970-01-01T00:00:01Z")]
    StartBefore1970 { start: String },
    #[error("period '{period}' is not an ISO 8601 period (PnYnMnWnDTnHnMnS)")]
    InvalidPeriod { period: String },
    #[error(
        "schedule '{schedule}' repeats with a zero period, so it would run back to back \
         forever; use R1 to run once or give a non-zero period"
    )]
    ZeroPeriod { schedule: String },
    #[error("unknown time zone '{name}'")]
    UnknownTimeZone { name: String },
    #[error("duration '{text}' is not an ISO 8601 duration (for example PT60S)")]
    InvalidDuration { text: String },
    #[error(
        "duration '{text}' has years or months, which have no fixed length; \
         use weeks, days, hours, minutes or seconds"
    )]
    InexactDuration { text: String },
}

impl Error {
    /// The job field at fault, so that the API layer can name it.
    pub fn field(&self) -> &'static str {
        match self {
            Error::NotRepeatingInterval { .. }
            | Error::RepeatCountTooLarge { .. }
            | Error::InvalidStart { .. }
            | Error::StartBefore1970 { .. }
            | Error::InvalidPeriod { .. }
            | Error::ZeroPeriod { .. }
            | Error::CronFieldCount { .. }
            | Error::UnknownCronMacro { .. }
            | Error::InvalidCron { .. }
            | Error::CronNeverRuns { .. } => "schedule",
            Error::UnknownTimeZone { .. } => "scheduleTimeZone",
            Error::InvalidDuration { .. } | Error::InexactDuration { .. } => "epsilon",
        }
    }
}

/// A parsed schedule of either kind, with what the engine asks of both.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Chronos' ISO 8601 repeating interval, rewritten (rendered) as it advances.
    Interval(Interval),
    /// A cron expression, kept as given; its progress is a cursor kept beside it.
    Cron(Cron),
}

/// Whether a schedule text is a cron expression rather than an ISO 8601 repeating interval:
/// a macro (`@daily`) or fields apart by white space, which an ISO interval never has.
pub fn is_cron(schedule: &str) -> bool {
    let text = schedule.trim();
    text.starts_with('@') || text.contains(char::is_whitespace)
}

/// Parse a job's `schedule` with its `scheduleTimeZone`: a cron expression (see
/// [`Cron`]) or a Chronos ISO 8601 repeating interval (see [`parse_interval`]).
/// A cron schedule's next run is its first occurrence at or after `now`.
pub fn parse(schedule: &str, time_zone: &str, now: DateTime<Utc>) -> Result<Schedule, Error> {
    if is_cron(schedule) {
        let zone = parse_time_zone(time_zone)?;
        Ok(Schedule::Cron(Cron::parse(schedule, zone, now)?))
    } else {
        Ok(Schedule::Interval(parse_interval(schedule, time_zone, now)?))
    }
}

impl Schedule {
    /// The instant of the next run, or `None` when no runs remain.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval(s) => s.next_run(),
            Schedule::Cron(c) => c.next_run(),
        }
    }

    /// The schedule after its next run was launched.
    pub fn advance(&self) -> Schedule {
        match self {
            Schedule::Interval(s) => Schedule::Interval(s.advance()),
            Schedule::Cron(c) => Schedule::Cron(c.advance()),
        }
    }

    /// The schedule after its next run was passed over without running.
    pub fn pass(&self) -> Schedule {
        match self {
            Schedule::Interval(s) => Schedule::Interval(s.pass()),
            Schedule::Cron(c) => Schedule::Cron(c.advance()),
        }
    }

    /// Skips the runs too late to start at `now` (earlier than `now - epsilon`); returns the
    /// schedule from the first run that is not, and how many were skipped.
    pub fn skip_missed(&self, now: DateTime<Utc>, epsilon: Duration) -> (Schedule, u64) {
        match self {
            Schedule::Interval(s) => {
                let (s, skipped) = s.skip_missed(now, epsilon);
                (Schedule::Interval(s), skipped)
            }
            Schedule::Cron(c) => {
                let (c, skipped) = c.skip_missed(now, epsilon);
                (Schedule::Cron(c), skipped)
            }
        }
    }

    /// The next `count` runs, as the scheduler will launch them if none is skipped.
    pub fn upcoming(&self, count: usize) -> Vec<DateTime<Utc>> {
        match self {
            Schedule::Interval(s) => s.upcoming(count),
            Schedule::Cron(c) => c.upcoming(count),
        }
    }

    /// The schedule in words, for people.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Interval(s) => s.describe(),
            Schedule::Cron(c) => c.describe(),
        }
    }

    /// A skipped run gives its repeat back, since `Rn` counts runs that happen. True when that
    /// changed the schedule: an interval with a repeat count (cron has none).
    pub fn give_back_repeat(&mut self) -> bool {
        match self {
            Schedule::Interval(Interval { repeat: Some(n), .. }) => {
                *n = n.saturating_add(1);
                true
            }
            Schedule::Interval(_) | Schedule::Cron(_) => false,
        }
    }

    /// Continues a cron schedule from a cursor kept by the store (the next run as epoch
    /// milliseconds), so a restart neither replays nor forgets runs. Intervals keep their
    /// progress in their own text and ignore it.
    pub fn resume(&mut self, cursor_ms: i64) {
        if let Schedule::Cron(c) = self
            && let Some(at) = DateTime::from_timestamp_millis(cursor_ms)
        {
            c.resume(at);
        }
    }
}

/// A parsed ISO 8601 repeating interval: what is left to run and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Remaining runs; `None` means infinite.
    pub repeat: Option<u64>,
    /// The next occurrence to run (an instant).
    pub start: DateTime<Utc>,
    pub period: Period,
    pub zone: Zone,
    /// The wall-clock time the occurrence at `start` is meant for, kept in a named zone when
    /// the period steps on the calendar only (days, weeks, months, years). It differs from the wall
    /// clock at `start` only when that time fell into a daylight saving gap: 02:30 on a
    /// spring-forward day runs at 03:30, and the next day runs at 02:30 again, because each
    /// step starts from the time meant rather than the time it ran.
    pub wall: Option<NaiveDateTime>,
}

/// Parse a Chronos schedule string (an ISO 8601 repeating interval) with its
/// `scheduleTimeZone`. An empty start means `now` (kept to the millisecond, as Chronos keeps it).
///
/// With an empty `time_zone` the offset written in the start is used as a
/// fixed offset (UTC when there is none). With a zone, the wall-clock fields
/// of the start are kept and read in that zone, whatever offset the string
/// carries, as Chronos does; the offset only picks between the two instants
/// of a wall-clock time that happens twice.
pub fn parse_interval(schedule: &str, time_zone: &str, now: DateTime<Utc>) -> Result<Interval, Error> {
    let not_interval = || Error::NotRepeatingInterval {
        schedule: schedule.to_owned(),
    };
    // The shape is Chronos' regex `(R[0-9]*)/(.*)/(P.*)`: its greedy middle
    // group makes the period start at the last `/P`.
    let rest = schedule.strip_prefix('R').ok_or_else(not_interval)?;
    let (count, rest) = rest.split_once('/').ok_or_else(not_interval)?;
    if !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_interval());
    }
    let period_at = rest.rfind("/P").ok_or_else(not_interval)?;
    // `period_at` is the index of an ASCII `/`, so both slices are on character
    // boundaries and cannot panic.
    let (start_text, period_text) = (&rest[..period_at], &rest[period_at + 1..]);

    let repeat = if count.is_empty() {
        None
    } else {
        Some(count.parse::<u64>().map_err(|_| Error::RepeatCountTooLarge {
            schedule: schedule.to_owned(),
        })?)
    };
    let period = Period::parse(period_text)?;
    let (start, zone, local) = parse_start(schedule, start_text, time_zone, now)?;
    if start.timestamp() < 1 {
        return Err(Error::StartBefore1970 {
            start: if start_text.is_empty() {
                start.to_rfc3339()
            } else {
                start_text.to_owned()
            },
        });
    }
    if period.is_zero() && !matches!(repeat, Some(0 | 1)) {
        return Err(Error::ZeroPeriod {
            schedule: schedule.to_owned(),
        });
    }
    // Only a whole-calendar period keeps it: with hours on top, the wall-clock time of each
    // occurrence moves with the exact hours anyway.
    let keeps_wall =
        matches!(zone, Zone::Named(_)) && period.has_calendar_part() && period.time_millis() == 0;
    let wall = keeps_wall.then_some(local);
    Ok(Interval {
        repeat,
        start,
        period,
        zone,
        wall,
    })
}

/// Works out the start instant and the zone of a schedule, and the wall-clock time written.
fn parse_start(
    schedule: &str,
    start_text: &str,
    time_zone: &str,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Zone, NaiveDateTime), Error> {
    let named = if time_zone.is_empty() {
        None
    } else {
        Some(parse_time_zone(time_zone)?)
    };
    if start_text.is_empty() {
        let zone = named.unwrap_or(Zone::Utc);
        let start = now.trunc_subsecs(3);
        return Ok((start, zone, zone.local(start).0));
    }
    let invalid = || Error::InvalidStart {
        schedule: schedule.to_owned(),
        start: start_text.to_owned(),
    };
    let written = parse_date_time(start_text).ok_or_else(invalid)?;
    let zone = match named {
        Some(zone) => zone,
        None if written.offset.local_minus_utc() == 0 => Zone::Utc,
        None => Zone::Fixed(written.offset),
    };
    let preferred = written.has_offset.then_some(written.offset);
    let start = zone.resolve(written.local, preferred).ok_or_else(invalid)?;
    Ok((start, zone, written.local))
}

/// A date-time as written: wall-clock fields and the offset beside them.
struct Written {
    local: NaiveDateTime,
    offset: FixedOffset,
    /// Whether the text names an offset (`Z`, `+02:00`) rather than none.
    has_offset: bool,
}

/// Parses what Joda's `DateTime.parse` accepts for a start: a date alone
/// (midnight), or a date, `T` and a time with optional seconds, fraction and
/// offset. Dates may be calendar, week (`2008-W09-6`) or ordinal (`2008-061`).
/// The `iso8601` crate's top-level functions ignore trailing garbage, so its
/// low-level parsers are used and must consume the whole text.
fn parse_date_time(text: &str) -> Option<Written> {
    let Some(t_at) = text.find('T') else {
        let (rest, date) = iso8601::parsers::parse_date(text.as_bytes()).ok()?;
        if !rest.is_empty() {
            return None;
        }
        return Some(Written {
            local: naive_date(date)?.and_time(NaiveTime::MIN),
            offset: FixedOffset::east_opt(0)?,
            has_offset: false,
        });
    };
    let (rest, parsed) = iso8601::parsers::parse_datetime(text.as_bytes()).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let time = parsed.time;
    // chrono rejects 24:00 and leap seconds here, as Joda does.
    let clock = NaiveTime::from_hms_milli_opt(time.hour, time.minute, time.second, time.millisecond)?;
    let offset_seconds = time
        .tz_offset_hours
        .checked_mul(3600)?
        .checked_add(time.tz_offset_minutes.checked_mul(60)?)?;
    // The crate reports no offset and `Z` alike as zero, so look at the text.
    let has_offset = text[t_at..].contains(['Z', '+', '-']);
    Some(Written {
        local: naive_date(parsed.date)?.and_time(clock),
        offset: FixedOffset::east_opt(offset_seconds)?,
        has_offset,
    })
}

fn naive_date(date: iso8601::Date) -> Option<NaiveDate> {
    match date {
        iso8601::Date::YMD { year, month, day } => NaiveDate::from_ymd_opt(year, month, day),
        iso8601::Date::Week { year, ww, d } => {
            let weekday = Weekday::try_from(u8::try_from(d.checked_sub(1)?).ok()?).ok()?;
            NaiveDate::from_isoywd_opt(year, ww, weekday)
        }
        iso8601::Date::Ordinal { year, ddd } => NaiveDate::from_yo_opt(year, ddd),
    }
}

impl Interval {
    /// The instant of the next run, or `None` when no runs remain
    /// (`repeat == Some(0)`).
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        match self.repeat {
            Some(0) => None,
            _ => Some(self.start),
        }
    }

    /// The occurrence one period after `t`. Years, months, weeks and days are
    /// added on the local calendar of the zone, so `P1D` keeps the wall-clock
    /// time across daylight saving changes and `P1M` from January 31 clamps to
    /// the end of February; hours, minutes, seconds and milliseconds are then
    /// added as exact durations.
    ///
    /// Each occurrence is computed from the one before it, as Chronos does, so
    /// month-end clamping carries forward: January 31 + `P1M` + `P1M` is
    /// March 28 (not 31). A daylight saving gap does not (unlike Chronos): a
    /// 02:30 `P1D` schedule runs at 03:30 on the spring-forward day and at
    /// 02:30 again the day after, because the step starts from the wall-clock
    /// time meant ([`Interval::wall`]) when `t` is the schedule's own start.
    ///
    /// Results past the end of chrono's range (about 262,000 years from now)
    /// saturate at [`DateTime::<Utc>::MAX_UTC`], a time that never comes.
    pub fn following(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let wall = self.wall.filter(|_| t == self.start);
        self.step(t, wall)
            .map_or(DateTime::<Utc>::MAX_UTC, |(next, _)| next)
    }

    /// The occurrence one period after `t` (meant for the wall-clock time
    /// `wall`, when kept), with the wall-clock time it is meant for.
    fn step(
        &self,
        t: DateTime<Utc>,
        wall: Option<NaiveDateTime>,
    ) -> Option<(DateTime<Utc>, Option<NaiveDateTime>)> {
        let period = &self.period;
        let time = TimeDelta::try_milliseconds(period.time_millis())?;
        let mut next = t;
        let mut next_wall = None;
        // Converting to wall-clock time and back would lose which of two
        // ambiguous instants `t` is, so only do it when the calendar is used.
        if period.has_calendar_part() {
            let local = wall.unwrap_or_else(|| self.zone.local(t).0);
            // Years go first and on their own, as in Joda: Feb 29 + P1Y1M is
            // Feb 28 + P1M = Mar 28, not Feb 29 + 13 months = Mar 29.
            let local = local
                .checked_add_months(Months::new(period.years.checked_mul(12)?))?
                .checked_add_months(Months::new(period.months))?
                .checked_add_days(Days::new(period.total_days()))?;
            next = self.zone.resolve(local, None)?;
            next_wall = wall.and_then(|_| local.checked_add_signed(time));
        }
        Some((next.checked_add_signed(time)?, next_wall))
    }

    /// Moves to the next occurrence, or to the end of time when it is out of range.
    fn stepped(&self) -> (DateTime<Utc>, Option<NaiveDateTime>) {
        self.step(self.start, self.wall)
            .unwrap_or((DateTime::<Utc>::MAX_UTC, None))
    }

    /// The schedule in words, for people: "every hour from 1 Dec 2026 09:00 UTC, 7 runs left".
    pub fn describe(&self) -> String {
        let units = [
            (self.period.years, "year"),
            (self.period.months, "month"),
            (self.period.weeks, "week"),
            (self.period.days, "day"),
            (self.period.hours, "hour"),
            (self.period.minutes, "minute"),
            (self.period.seconds, "second"),
            (self.period.millis, "millisecond"),
        ];
        let parts: Vec<String> = units
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|&(n, unit)| {
                if n == 1 {
                    unit.to_owned()
                } else {
                    format!("{n} {unit}s")
                }
            })
            .collect();
        let start = self.start.format("%-d %b %Y %H:%M UTC");
        let when = match (parts.is_empty(), self.repeat) {
            (_, Some(0)) => return format!("no runs left (was from {start})"),
            (true, _) | (false, Some(1)) => return format!("once at {start}"),
            (false, _) => format!("every {} from {start}", parts.join(" ")),
        };
        match self.repeat {
            Some(n) => format!("{when}, {n} runs left"),
            None => when,
        }
    }

    /// The next `count` runs, from the schedule's next run on, as the scheduler will launch them
    /// if none is skipped; fewer when fewer runs remain or the end of time is reached.
    pub fn upcoming(&self, count: usize) -> Vec<DateTime<Utc>> {
        let mut runs = Vec::new();
        let mut schedule = self.clone();
        while runs.len() < count
            && let Some(at) = schedule.next_run()
            && at < DateTime::<Utc>::MAX_UTC
        {
            runs.push(at);
            schedule = schedule.advance();
        }
        runs
    }

    /// The schedule after the run at `self.start` was launched: one run fewer
    /// (if finite) and the start moved one period on. A schedule with no runs
    /// left has nothing to launch and is returned unchanged.
    pub fn advance(&self) -> Interval {
        match self.repeat {
            Some(0) => self.clone(),
            repeat => {
                let (start, wall) = self.stepped();
                Interval {
                    repeat: repeat.map(|n| n.saturating_sub(1)),
                    start,
                    wall,
                    ..self.clone()
                }
            }
        }
    }

    /// The schedule after the occurrence at `start` was passed over without
    /// running: the start moves one period on and the repeats stay, since
    /// `Rn` counts runs that happen. A schedule with no runs left is returned
    /// unchanged.
    pub fn pass(&self) -> Interval {
        match self.repeat {
            Some(0) => self.clone(),
            _ => {
                let (start, wall) = self.stepped();
                Interval {
                    start,
                    wall,
                    ..self.clone()
                }
            }
        }
    }

    /// Skips occurrences that are too late to run at `now`: while
    /// `start + epsilon < now`, moves `start` one period on. The result's start
    /// is the earliest occurrence at or after `now - epsilon`.
    ///
    /// Skipped occurrences do not consume repeats (unlike Chronos): `Rn` counts
    /// runs that actually happened. Returns the new schedule and how many
    /// occurrences were skipped. A zero period never advances, and a schedule
    /// with no runs left is returned unchanged.
    pub fn skip_missed(&self, now: DateTime<Utc>, epsilon: Duration) -> (Interval, u64) {
        let unchanged = (self.clone(), 0);
        if self.repeat == Some(0) || self.period.is_zero() {
            return unchanged;
        }
        let target = now
            .checked_sub_signed(epsilon)
            .unwrap_or(if epsilon > Duration::zero() {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            });
        if self.start >= target {
            return unchanged;
        }
        let (start, wall, skipped) = match self.exact_step_millis() {
            Some(step) => {
                let (start, skipped) = jump(self.start, target, step);
                (start, None, skipped)
            }
            None => self.step_until(target),
        };
        (
            Interval {
                start,
                wall,
                ..self.clone()
            },
            skipped,
        )
    }

    /// The length of one step in milliseconds when every step has the same
    /// length: no years or months, and weeks or days only where the zone has
    /// no daylight saving time to stretch or shrink a day.
    fn exact_step_millis(&self) -> Option<i64> {
        let days_vary = matches!(self.zone, Zone::Named(_)) && self.period.total_days() != 0;
        if days_vary {
            return None;
        }
        self.period.fixed_millis().filter(|&step| step > 0)
    }

    /// Steps one occurrence at a time; used for calendar periods, whose steps
    /// are at least a day long, so even decades take only thousands of steps.
    fn step_until(&self, target: DateTime<Utc>) -> (DateTime<Utc>, Option<NaiveDateTime>, u64) {
        let mut at = (self.start, self.wall);
        let mut skipped = 0u64;
        while at.0 < target {
            let next = self.step(at.0, at.1).unwrap_or((DateTime::<Utc>::MAX_UTC, None));
            // Only saturation at the end of time can stop the clock; stop
            // there rather than loop forever.
            if next.0 <= at.0 {
                break;
            }
            at = next;
            skipped += 1;
        }
        (at.0, at.1, skipped)
    }

    /// Render as Chronos stores it: `R<n>/<start>/<period>` or
    /// `R/<start>/<period>`, with the start as `yyyy-MM-ddTHH:mm:ss.SSS` in the
    /// zone followed by `Z` for a zero offset or the zone's `±HH:mm` then.
    ///
    /// A kept [`Interval::wall`] is written as the wall-clock time, so the
    /// time meant survives a round trip through the text even on a gap day
    /// (the offset then is the one in force at the instant; parsing moves the
    /// wall-clock time across the gap to that same instant).
    pub fn render(&self) -> String {
        let repeat = self.repeat.map(|n| n.to_string()).unwrap_or_default();
        let (local, offset) = self.zone.local(self.start);
        let local = self.wall.unwrap_or(local);
        format!(
            "R{repeat}/{}{}/{}",
            local.format("%Y-%m-%dT%H:%M:%S%.3f"),
            format_offset(offset),
            self.period
        )
    }
}

/// Moves `start` forward by whole steps of `step` milliseconds to the first
/// point at or after `target`, arithmetically, so that a `PT1S` schedule
/// decades behind costs nothing. Works in nanoseconds to keep any sub-millisecond
/// part of the instants exact.
fn jump(start: DateTime<Utc>, target: DateTime<Utc>, step: i64) -> (DateTime<Utc>, u64) {
    let step = i128::from(step) * 1_000_000;
    let gap = nanos(target) - nanos(start);
    let steps = (gap + step - 1).div_euclid(step);
    let moved = from_nanos(nanos(start) + steps * step).unwrap_or(DateTime::<Utc>::MAX_UTC);
    (moved, u64::try_from(steps).unwrap_or(u64::MAX))
}

fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

fn from_nanos(n: i128) -> Option<DateTime<Utc>> {
    let seconds = i64::try_from(n.div_euclid(1_000_000_000)).ok()?;
    let subsec = u32::try_from(n.rem_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(seconds, subsec)
}

/// `Z` for a zero offset, otherwise `±HH:mm` (seconds of historical offsets
/// are dropped; the zone, not the offset, is what a reader parses back).
fn format_offset(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    if seconds == 0 {
        return "Z".to_owned();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let seconds = seconds.unsigned_abs();
    format!("{sign}{:02}:{:02}", seconds / 3600, seconds % 3600 / 60)
}
