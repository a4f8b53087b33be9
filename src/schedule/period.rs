//! ISO 8601 periods in Joda's standard format (`PnYnMnWnDTnHnMnS`) and the
//! exact durations built from them.

use std::fmt;

use chrono::Duration;

use super::Error;

const MILLIS_PER_SECOND: i64 = 1_000;
const MILLIS_PER_MINUTE: i64 = 60 * MILLIS_PER_SECOND;
const MILLIS_PER_HOUR: i64 = 60 * MILLIS_PER_MINUTE;
const MILLIS_PER_DAY: i64 = 24 * MILLIS_PER_HOUR;
const MILLIS_PER_WEEK: i64 = 7 * MILLIS_PER_DAY;

/// The step between two occurrences of a schedule.
///
/// The fields are kept as the user wrote them (`PT60M` stays sixty minutes and
/// is printed back as `PT60M`), because Chronos echoes the schedule string it
/// was given and users compare it with what they sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
    pub millis: u32,
}

impl Period {
    /// Parse `PnYnMnWnDTnHnMnS`. Every field is optional, `P` alone is the
    /// zero period, only seconds may carry a fraction (kept to milliseconds),
    /// and hour, minute and second fields must follow a `T`.
    pub fn parse(text: &str) -> Result<Period, Error> {
        parse_period(text).ok_or_else(|| Error::InvalidPeriod {
            period: text.to_owned(),
        })
    }

    /// Whether every field is zero, so that adding the period changes nothing.
    pub fn is_zero(&self) -> bool {
        *self == Period::default()
    }

    /// Whether the period has fields that are added on the local calendar
    /// (years, months, weeks or days) rather than as exact durations.
    pub(super) fn has_calendar_part(&self) -> bool {
        self.years != 0 || self.months != 0 || self.weeks != 0 || self.days != 0
    }

    /// The hours, minutes, seconds and milliseconds as exact milliseconds.
    /// Each field is at most `u32::MAX`, so the sum always fits in an `i64`.
    pub(super) fn time_millis(&self) -> i64 {
        i64::from(self.hours) * MILLIS_PER_HOUR
            + i64::from(self.minutes) * MILLIS_PER_MINUTE
            + i64::from(self.seconds) * MILLIS_PER_SECOND
            + i64::from(self.millis)
    }

    /// The weeks and days as whole days. It cannot overflow: both are `u32`.
    pub(super) fn total_days(&self) -> u64 {
        u64::from(self.weeks) * 7 + u64::from(self.days)
    }

    /// The length in milliseconds when weeks and days are taken as exactly
    /// 7 × 24 h and 24 h, or `None` when the period has years or months,
    /// which have no fixed length.
    pub(super) fn fixed_millis(&self) -> Option<i64> {
        if self.years != 0 || self.months != 0 {
            return None;
        }
        // Every term is below 2^63 / 4, so the sum cannot overflow.
        Some(
            i64::from(self.weeks) * MILLIS_PER_WEEK
                + i64::from(self.days) * MILLIS_PER_DAY
                + self.time_millis(),
        )
    }
}

/// Prints the period as Joda's `ISOPeriodFormat.standard()` does: zero fields
/// are left out, the zero period is `PT0S`, and the seconds carry a fraction
/// only when there are milliseconds (without trailing zeros).
impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("PT0S");
        }
        f.write_str("P")?;
        for (value, unit) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        if self.hours == 0 && self.minutes == 0 && self.seconds == 0 && self.millis == 0 {
            return Ok(());
        }
        f.write_str("T")?;
        for (value, unit) in [(self.hours, 'H'), (self.minutes, 'M')] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        if self.seconds != 0 || self.millis != 0 {
            write!(f, "{}", self.seconds)?;
            write_millis_fraction(f, self.millis)?;
            f.write_str("S")?;
        }
        Ok(())
    }
}

/// Writes `.5` for 500 ms, `.25` for 250 ms, `.005` for 5 ms and nothing
/// for 0 ms; milliseconds of 1000 or more cannot come from the parser and are
/// printed as they are so that nothing is silently lost.
fn write_millis_fraction(f: &mut impl fmt::Write, millis: u32) -> fmt::Result {
    if millis == 0 {
        return Ok(());
    }
    let digits = format!("{millis:03}");
    write!(f, ".{}", digits.trim_end_matches('0'))
}

/// A cursor over the bytes of a period, so that the grammar below reads
/// like the format it accepts.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> &[u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.bytes.get(start..self.pos).unwrap_or_default()
    }

    /// Reads `<digits><unit>` if the digits are followed by `unit`; otherwise
    /// leaves the cursor where it was so that the next unit can be tried.
    /// `Err` means the number does not fit in a `u32`.
    fn field(&mut self, unit: u8) -> Result<Option<u32>, ()> {
        let start = self.pos;
        let digits = self.digits();
        if digits.is_empty() {
            self.pos = start;
            return Ok(None);
        }
        let value = parse_u32(digits).ok_or(())?;
        if self.eat(unit) {
            Ok(Some(value))
        } else {
            self.pos = start;
            Ok(None)
        }
    }
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Turns fraction digits into milliseconds, truncating past the third digit
/// because Joda keeps millisecond precision ("5" -> 500, "1234" -> 123).
fn fraction_to_millis(digits: &[u8]) -> u32 {
    let mut millis = 0;
    for i in 0..3 {
        let digit = digits.get(i).map_or(0, |d| u32::from(d - b'0'));
        millis = millis * 10 + digit;
    }
    millis
}

fn parse_period(text: &str) -> Option<Period> {
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    if !cursor.eat(b'P') {
        return None;
    }
    let mut period = Period::default();
    let date_fields: [(&mut u32, u8); 4] = [
        (&mut period.years, b'Y'),
        (&mut period.months, b'M'),
        (&mut period.weeks, b'W'),
        (&mut period.days, b'D'),
    ];
    for (slot, unit) in date_fields {
        if let Some(value) = cursor.field(unit).ok()? {
            *slot = value;
        }
    }
    if cursor.eat(b'T') {
        let mut any = false;
        for (slot, unit) in [(&mut period.hours, b'H'), (&mut period.minutes, b'M')] {
            if let Some(value) = cursor.field(unit).ok()? {
                *slot = value;
                any = true;
            }
        }
        let seconds_start = cursor.pos;
        let whole = cursor.digits();
        if !whole.is_empty() {
            period.seconds = parse_u32(whole)?;
            if cursor.eat(b'.') || cursor.eat(b',') {
                let fraction = cursor.digits();
                if fraction.is_empty() {
                    return None;
                }
                period.millis = fraction_to_millis(fraction);
            }
            if !cursor.eat(b'S') {
                // Digits that are not seconds can only be a misplaced field
                // such as `PT1H2D`; leave them to the end-of-input check.
                cursor.pos = seconds_start;
                period.seconds = 0;
                period.millis = 0;
            } else {
                any = true;
            }
        }
        // `PT` with nothing after it is not a period in Joda's grammar.
        if !any {
            return None;
        }
    }
    if cursor.pos != cursor.bytes.len() {
        return None;
    }
    Some(period)
}

/// Parse an ISO 8601 duration such as `PT60S` into an exact duration (used
/// for `epsilon`). Years and months are rejected because they have no fixed
/// length; a week is 7 days and a day is 24 hours.
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let period = parse_period(text).ok_or_else(|| Error::InvalidDuration {
        text: text.to_owned(),
    })?;
    let millis = period.fixed_millis().ok_or_else(|| Error::InexactDuration {
        text: text.to_owned(),
    })?;
    Duration::try_milliseconds(millis).ok_or_else(|| Error::InvalidDuration {
        text: text.to_owned(),
    })
}

/// Render an exact duration as `PT<n>S` (60 s -> `PT60S`, 1.5 s -> `PT1.5S`),
/// the way Chronos prints `epsilon`. Precision below a millisecond is dropped,
/// and a negative duration is printed with a leading minus on the seconds as
/// Joda does (`PT-1.5S`).
pub fn format_duration(d: Duration) -> String {
    let millis = d.num_milliseconds();
    let sign = if millis < 0 { "-" } else { "" };
    let magnitude = millis.unsigned_abs();
    let mut out = format!("PT{sign}{}", magnitude / 1_000);
    // `magnitude % 1000` is below 1000, so the conversion cannot fail.
    let fraction = u32::try_from(magnitude % 1_000).unwrap_or(0);
    // Writing into a `String` cannot fail.
    let _ = write_millis_fraction(&mut out, fraction);
    out.push('S');
    out
}
