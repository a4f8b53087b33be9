//! Time zones for schedules: parsing `scheduleTimeZone` and moving between
//! instants and wall-clock times in a zone.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};

use super::Error;

/// The zone a schedule's calendar arithmetic happens in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// UTC, for schedules given without an offset or with `Z`.
    Utc,
    /// A fixed offset without daylight saving time, for schedules whose start
    /// carries an offset such as `+02:00` and no `scheduleTimeZone`.
    Fixed(FixedOffset),
    /// An IANA zone from `scheduleTimeZone`, with its daylight saving rules.
    Named(Tz),
}

/// Java's legacy three-letter zone ids (`java.util.TimeZone`), which Chronos
/// accepted and which its users still send. `EST`, `MST` and `HST` are not
/// here because chrono-tz knows them with the same meaning.
const LEGACY_IDS: &[(&str, Tz)] = &[
    ("ACT", Tz::Australia__Darwin),
    ("AET", Tz::Australia__Sydney),
    ("AGT", Tz::America__Argentina__Buenos_Aires),
    ("ART", Tz::Africa__Cairo),
    ("AST", Tz::America__Anchorage),
    ("BET", Tz::America__Sao_Paulo),
    ("BST", Tz::Asia__Dhaka),
    ("CAT", Tz::Africa__Harare),
    ("CNT", Tz::America__St_Johns),
    ("CST", Tz::America__Chicago),
    ("CTT", Tz::Asia__Shanghai),
    ("EAT", Tz::Africa__Addis_Ababa),
    ("ECT", Tz::Europe__Paris),
    ("IET", Tz::America__Indiana__Indianapolis),
    ("IST", Tz::Asia__Kolkata),
    ("JST", Tz::Asia__Tokyo),
    ("MIT", Tz::Pacific__Apia),
    ("NET", Tz::Asia__Yerevan),
    ("NST", Tz::Pacific__Auckland),
    ("PLT", Tz::Asia__Karachi),
    ("PNT", Tz::America__Phoenix),
    ("PRT", Tz::America__Puerto_Rico),
    ("PST", Tz::America__Los_Angeles),
    ("SST", Tz::Pacific__Guadalcanal),
    ("VST", Tz::Asia__Ho_Chi_Minh),
];

/// Resolve a `scheduleTimeZone`: an IANA name (`Europe/Paris`), one of Java's
/// legacy short ids (`PST`), or a Java custom id (`GMT+02:00`, `GMT-5`).
///
/// An empty name means UTC here; [`super::parse`] treats an empty zone
/// specially and uses the offset written in the schedule instead. Unknown
/// names are rejected, where Chronos silently fell back to GMT.
pub fn parse_time_zone(name: &str) -> Result<Zone, Error> {
    if name.is_empty() {
        return Ok(Zone::Utc);
    }
    if let Some((_, tz)) = LEGACY_IDS.iter().find(|(id, _)| *id == name) {
        return Ok(Zone::Named(*tz));
    }
    if let Ok(tz) = Tz::from_str(name) {
        return Ok(Zone::Named(tz));
    }
    if let Some(offset) = parse_custom_gmt_id(name) {
        return Ok(Zone::Fixed(offset));
    }
    Err(Error::UnknownTimeZone {
        name: name.to_owned(),
    })
}

/// Java's custom ids: `GMT` followed by a sign and `h`, `hh`, `hh:mm` or
/// `hhmm`, with hours up to 23 and minutes up to 59.
fn parse_custom_gmt_id(name: &str) -> Option<FixedOffset> {
    let rest = name.strip_prefix("GMT")?;
    let (sign, rest) = match rest.as_bytes().first()? {
        b'+' => (1, rest.get(1..)?),
        b'-' => (-1, rest.get(1..)?),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    let (hours, minutes) = match (rest.len(), rest.find(':')) {
        (1 | 2, None) => (rest, "0"),
        (4, None) => (rest.get(..2)?, rest.get(2..)?),
        (4 | 5, Some(colon)) if rest.len() - colon == 3 => (rest.get(..colon)?, rest.get(colon + 1..)?),
        _ => return None,
    };
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

impl Zone {
    /// The wall-clock time and the offset in force at instant `t`.
    ///
    /// East of UTC the end of time (`DateTime::<Utc>::MAX_UTC`, where a schedule whose next
    /// step is out of range saturates) has no wall-clock time in chrono's range; it reads as the
    /// last one there is, rather than panicking as chrono's `naive_local` does.
    pub(super) fn local(&self, t: DateTime<Utc>) -> (NaiveDateTime, FixedOffset) {
        let offset = match self {
            Zone::Utc => Utc.fix(),
            Zone::Fixed(offset) => *offset,
            Zone::Named(tz) => tz.offset_from_utc_datetime(&t.naive_utc()).fix(),
        };
        let local = t
            .naive_utc()
            .checked_add_offset(offset)
            .unwrap_or(NaiveDateTime::MAX);
        (local, offset)
    }

    /// The instant at which the zone's clocks show `local`.
    ///
    /// A wall-clock time inside a daylight saving gap does not exist; it is
    /// moved forward by the length of the gap (02:30 on a spring-forward day
    /// becomes 03:30), as Joda does. A time that happens twice in an overlap
    /// takes `preferred` when that is one of the two offsets (so a rendered
    /// schedule that names its offset parses back to the same instant), and
    /// otherwise the earlier instant. `None` only when out of chrono's range.
    pub(super) fn resolve(
        &self,
        local: NaiveDateTime,
        preferred: Option<FixedOffset>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc => Some(local.and_utc()),
            Zone::Fixed(offset) => offset.from_local_datetime(&local).single().map(|t| t.to_utc()),
            Zone::Named(tz) => match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => Some(t.to_utc()),
                LocalResult::Ambiguous(earlier, later) => {
                    let (earlier, later) = if earlier <= later {
                        (earlier, later)
                    } else {
                        (later, earlier)
                    };
                    if preferred.is_some_and(|p| p == later.offset().fix()) {
                        Some(later.to_utc())
                    } else {
                        Some(earlier.to_utc())
                    }
                }
                LocalResult::None => resolve_gap(*tz, local),
            },
        }
    }
}

impl Zone {
    /// The first instant at which the zone's clocks show `local` or, when a spring-forward
    /// skips it, the first instant after that gap (the moment of the change, 03:00 on a day
    /// whose clocks jump from 02:00 to 03:00). Cron schedules run a wall-clock time there, where
    /// intervals move it by the length of the gap instead ([`Zone::resolve`]). `None` only when
    /// out of range.
    pub(super) fn first_instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc | Zone::Fixed(_) => self.resolve(local, None),
            Zone::Named(tz) => match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => Some(t.to_utc()),
                LocalResult::Ambiguous(a, b) => Some(a.to_utc().min(b.to_utc())),
                LocalResult::None => match GapInfo::new(&local, tz).and_then(|gap| gap.end) {
                    Some(end) => Some(end.to_utc()),
                    // chrono-tz knows no end for this gap; moving by the gap is the best guess.
                    None => resolve_gap(*tz, local),
                },
            },
        }
    }

    /// The offset in force at instant `t`.
    pub(super) fn offset_at(&self, t: DateTime<Utc>) -> FixedOffset {
        self.local(t).1
    }

    /// The zone's name, for people: the IANA name, `UTC`, or the fixed offset.
    pub(super) fn name(&self) -> String {
        match self {
            Zone::Utc => "UTC".to_owned(),
            Zone::Fixed(offset) => format!("UTC{offset}"),
            Zone::Named(tz) => tz.name().to_owned(),
        }
    }
}

/// Moves a wall-clock time inside a gap forward by the gap: it is read with
/// the offset in force just before the gap, which lands after the transition.
fn resolve_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let before = match GapInfo::new(&local, &tz).and_then(|gap| gap.begin) {
        Some((_, offset)) => offset.fix(),
        // chrono-tz knows no start for this gap (it is before its first
        // transition); the offset a day earlier is the best available guess.
        None => tz
            .offset_from_utc_datetime(&local.checked_sub_signed(TimeDelta::try_days(1)?)?)
            .fix(),
    };
    let instant = local.checked_sub_signed(TimeDelta::try_seconds(i64::from(before.local_minus_utc()))?)?;
    Some(instant.and_utc())
}
