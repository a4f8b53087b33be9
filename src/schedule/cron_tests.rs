//! Tests for cron schedules: tables of expressions and their next runs (daylight saving time
//! in two zones, leap days, macros, seconds, `L`, `W`, `#`), errors, and property tests against
//! brute-force walkers that know nothing of croner.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text}: {e}"))
        .to_utc()
}

fn cron(expression: &str, time_zone: &str, now: DateTime<Utc>) -> Cron {
    match parse(expression, time_zone, now) {
        Ok(Schedule::Cron(c)) => c,
        other => panic!("parse({expression:?}, {time_zone:?}) is not a cron schedule: {other:?}"),
    }
}

/// The first `expected.len()` runs of `expression` from `from` on (a run at `from` included).
fn assert_runs(expression: &str, time_zone: &str, from: &str, expected: &[&str]) {
    let got = cron(expression, time_zone, utc(from)).upcoming(expected.len());
    let want: Vec<DateTime<Utc>> = expected.iter().map(|t| utc(t)).collect();
    assert_eq!(got, want, "runs of {expression:?} in {time_zone:?} from {from}");
}

#[test]
fn daylight_saving_time_in_paris() {
    // Clocks go from 02:00 to 03:00 on 29 March 2026, and from 03:00 back to 02:00 on 25 October.
    let rows: Vec<(&str, &str, Vec<&str>)> = vec![
        // A skipped wall-clock time runs once, at the first instant after the gap.
        (
            "30 2 * * *",
            "2026-03-28T12:00:00Z",
            vec!["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
        ),
        // Several skipped times run once, together; one of them at the gap's end as well.
        (
            "*/30 2 * * *",
            "2026-03-29T01:45:00+01:00",
            vec!["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
        ),
        (
            "0,30 2,3 * * *",
            "2026-03-29T01:45:00+01:00",
            vec![
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:30:00+02:00",
                "2026-03-30T02:00:00+02:00",
            ],
        ),
        // An hour field of `*` follows real time: nothing for the hour that does not exist.
        (
            "0 * * * *",
            "2026-03-29T00:30:00+01:00",
            vec![
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T04:00:00+02:00",
            ],
        ),
        (
            "*/20 * * * *",
            "2026-03-29T01:30:00+01:00",
            vec![
                "2026-03-29T01:40:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:20:00+02:00",
            ],
        ),
        // A repeated wall-clock time runs once, at the first of its two instants.
        (
            "30 2 * * *",
            "2026-10-25T00:00:00+02:00",
            vec!["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
        (
            "*/30 2 * * *",
            "2026-10-25T00:00:00+02:00",
            vec![
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:00:00+01:00",
            ],
        ),
        // From inside the repeated hour, its times have run already.
        (
            "15 2 * * *",
            "2026-10-25T02:05:00+01:00",
            vec!["2026-10-26T02:15:00+01:00"],
        ),
        // Real time: the repeated hour is a real hour and runs again.
        (
            "0 * * * *",
            "2026-10-25T01:30:00+02:00",
            vec![
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T03:00:00+01:00",
            ],
        ),
        (
            "*/20 * * * *",
            "2026-10-25T02:30:00+02:00",
            vec![
                "2026-10-25T02:40:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:20:00+01:00",
                "2026-10-25T02:40:00+01:00",
                "2026-10-25T03:00:00+01:00",
            ],
        ),
        // From inside the repeated hour, real time goes on.
        (
            "*/20 * * * *",
            "2026-10-25T02:05:00+01:00",
            vec!["2026-10-25T02:20:00+01:00", "2026-10-25T02:40:00+01:00"],
        ),
    ];
    for (expression, from, expected) in rows {
        assert_runs(expression, "Europe/Paris", from, &expected);
    }
}

#[test]
fn daylight_saving_time_in_new_york() {
    // Clocks go from 02:00 to 03:00 on 8 March 2026, and from 02:00 back to 01:00 on 1 November.
    let rows: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "30 2 * * *",
            "2026-03-07T12:00:00-05:00",
            vec!["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
        ),
        (
            "0 2 * * *",
            "2026-03-08T00:00:00-05:00",
            vec!["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
        ),
        (
            "0 * * * *",
            "2026-03-08T01:30:00-05:00",
            vec!["2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"],
        ),
        (
            "30 1 * * *",
            "2026-11-01T00:00:00-04:00",
            vec!["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
        ),
        (
            "*/30 * * * *",
            "2026-11-01T01:00:00-04:00",
            vec![
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:30:00-05:00",
                "2026-11-01T02:00:00-05:00",
            ],
        ),
        // A six-field expression, every 20 seconds through the repeated hour: real time.
        (
            "*/20 59 * * * *",
            "2026-11-01T01:59:30-04:00",
            vec![
                "2026-11-01T01:59:40-04:00",
                "2026-11-01T01:59:00-05:00",
                "2026-11-01T01:59:20-05:00",
                "2026-11-01T01:59:40-05:00",
                "2026-11-01T02:59:00-05:00",
            ],
        ),
    ];
    for (expression, from, expected) in rows {
        assert_runs(expression, "America/New_York", from, &expected);
    }
}

#[test]
fn leap_days_macros_seconds_and_special_days() {
    // (expression, time zone, from, next runs)
    let rows: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "0 0 29 2 *",
            "",
            "2026-01-01T00:00:00Z",
            vec!["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
        ),
        (
            "0 0 L 2 *",
            "",
            "2027-01-01T00:00:00Z",
            vec![
                "2027-02-28T00:00:00Z",
                "2028-02-29T00:00:00Z",
                "2029-02-28T00:00:00Z",
            ],
        ),
        (
            "0 12 29 2 *",
            "Europe/Paris",
            "2024-01-01T00:00:00Z",
            vec!["2024-02-29T12:00:00+01:00", "2028-02-29T12:00:00+01:00"],
        ),
        // 15 May 2026 is a Friday.
        (
            "@yearly",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2027-01-01T00:00:00Z"],
        ),
        (
            "@annually",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2027-01-01T00:00:00Z"],
        ),
        (
            "@monthly",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-06-01T00:00:00Z"],
        ),
        (
            "@weekly",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-17T00:00:00Z"],
        ),
        ("@daily", "", "2026-05-15T10:20:30Z", vec!["2026-05-16T00:00:00Z"]),
        (
            "@midnight",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-16T00:00:00Z"],
        ),
        (
            "@HOURLY",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-15T11:00:00Z"],
        ),
        (
            "@daily",
            "Europe/Paris",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-16T00:00:00+02:00"],
        ),
        // Six fields: the second comes first.
        (
            "*/20 * * * * *",
            "",
            "2026-05-15T10:20:30Z",
            vec![
                "2026-05-15T10:20:40Z",
                "2026-05-15T10:21:00Z",
                "2026-05-15T10:21:20Z",
            ],
        ),
        (
            "30 0 9 * * MON-FRI",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-18T09:00:30Z", "2026-05-19T09:00:30Z"],
        ),
        // A run at the instant the schedule starts from is the first.
        (
            "30 20 10 * * *",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-15T10:20:30Z"],
        ),
        // The second Friday, the last Friday, the weekday nearest the 15th, the last weekday.
        (
            "0 9 * * 5#2",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-06-12T09:00:00Z", "2026-07-10T09:00:00Z"],
        ),
        (
            "0 9 * * 5L",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-29T09:00:00Z", "2026-06-26T09:00:00Z"],
        ),
        (
            "0 9 15W * *",
            "",
            "2026-05-15T10:20:30Z",
            vec![
                "2026-06-15T09:00:00Z",
                "2026-07-15T09:00:00Z",
                "2026-08-14T09:00:00Z",
            ],
        ),
        (
            "0 9 LW * *",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-29T09:00:00Z", "2026-06-30T09:00:00Z"],
        ),
        (
            "0 0 L * *",
            "",
            "2026-05-15T10:20:30Z",
            vec!["2026-05-31T00:00:00Z", "2026-06-30T00:00:00Z"],
        ),
        // Day of month and day of week both given: either one, as in Vixie cron.
        (
            "0 0 1 * MON",
            "",
            "2026-05-15T10:20:30Z",
            vec![
                "2026-05-18T00:00:00Z",
                "2026-05-25T00:00:00Z",
                "2026-06-01T00:00:00Z",
            ],
        ),
    ];
    for (expression, time_zone, from, expected) in rows {
        assert_runs(expression, time_zone, from, &expected);
    }
}

#[test]
fn the_expression_is_kept_as_given_and_described() {
    let now = utc("2026-05-15T10:20:30Z");
    let c = cron(" 0 2 * * * ", "Europe/Paris", now);
    assert_eq!(c.expression(), " 0 2 * * * ");
    assert_eq!(c.describe(), "cron ' 0 2 * * * ' in Europe/Paris");
    assert_eq!(cron("@daily", "", now).describe(), "cron '@daily' in UTC");
    // Advancing moves the next run only.
    let s = parse("*/10 * * * *", "", now).unwrap();
    let next = s.advance();
    assert_eq!(next.next_run(), Some(utc("2026-05-15T10:40:00Z")));
    assert!(matches!(&next, Schedule::Cron(c) if c.expression() == "*/10 * * * *"));
    assert_eq!(s.pass(), next);
    // A cron schedule has no repeats to give back.
    assert!(!next.clone().give_back_repeat());
}

#[test]
fn a_cursor_resumes_where_the_schedule_was() {
    let now = utc("2026-05-15T10:20:30Z");
    let mut s = parse("*/10 * * * *", "", now).unwrap();
    s.resume(utc("2026-05-15T09:00:00Z").timestamp_millis());
    assert_eq!(s.next_run(), Some(utc("2026-05-15T09:00:00Z")));
    // Runs later than epsilon are skipped and counted; the first one not too late stays.
    let (after, skipped) = s.skip_missed(now, Duration::minutes(5));
    assert_eq!(skipped, 8, "09:00 to 10:10");
    assert_eq!(after.next_run(), Some(utc("2026-05-15T10:20:00Z")));
    let (after, skipped) = s.skip_missed(now, Duration::zero());
    assert_eq!(
        (after.next_run(), skipped),
        (Some(utc("2026-05-15T10:30:00Z")), 9)
    );
    // Nothing is late: nothing moves.
    let (same, skipped) = s.skip_missed(utc("2026-05-15T08:00:00Z"), Duration::zero());
    assert_eq!((same, skipped), (s.clone(), 0));
    // An interval keeps its place in its text and ignores a cursor.
    let mut interval = parse("R/2026-05-15T10:00:00Z/PT1H", "", now).unwrap();
    let before = interval.clone();
    interval.resume(0);
    assert_eq!(interval, before);
}

#[test]
fn what_is_cron_and_what_is_iso() {
    assert!(is_cron("* * * * *"));
    assert!(is_cron("@daily"));
    assert!(is_cron(" @daily"));
    assert!(!is_cron("R/2026-05-15T10:00:00Z/PT1H"));
    assert!(!is_cron("R1//PT24H"));
    assert!(!is_cron("FOO"));
    let now = utc("2026-05-15T10:20:30Z");
    assert!(matches!(parse("R1//PT24H", "", now), Ok(Schedule::Interval(_))));
    assert!(matches!(parse("0 0 * * *", "", now), Ok(Schedule::Cron(_))));
}

#[test]
fn bad_expressions_are_refused_with_the_reason() {
    let now = utc("2026-05-15T10:20:30Z");
    // (schedule, time zone, message (or its start), field)
    let rows: Vec<(&str, &str, &str, &str)> = vec![
        (
            "* * * *",
            "",
            "cron expression '* * * *' has 4 fields; give five (minute hour day-of-month month \
             day-of-week) or six (second first)",
            "schedule",
        ),
        (
            "0 0 0 1 1 * 2030",
            "",
            "cron expression '0 0 0 1 1 * 2030' has 7 fields; give five",
            "schedule",
        ),
        (
            "@reboot",
            "",
            "cron expression '@reboot' uses an unknown macro; use @yearly, @annually, @monthly, \
             @weekly, @daily, @midnight or @hourly",
            "schedule",
        ),
        (
            "61 * * * *",
            "",
            "cron expression '61 * * * *' is invalid: ",
            "schedule",
        ),
        (
            "* 24 * * *",
            "",
            "cron expression '* 24 * * *' is invalid: ",
            "schedule",
        ),
        (
            "* * 0 * *",
            "",
            "cron expression '* * 0 * *' is invalid: ",
            "schedule",
        ),
        (
            "* * * 13 *",
            "",
            "cron expression '* * * 13 *' is invalid: ",
            "schedule",
        ),
        (
            "a b c d e",
            "",
            "cron expression 'a b c d e' is invalid: ",
            "schedule",
        ),
        (
            "5-1 * * * *",
            "",
            "cron expression '5-1 * * * *' is invalid: ",
            "schedule",
        ),
        (
            "*/0 * * * *",
            "",
            "cron expression '*/0 * * * *' is invalid: ",
            "schedule",
        ),
        // Found by fuzzing (`fuzz/`, target `schedule_cron`): croner skips empty list items,
        // and a field that is all commas matched nothing, which took seconds to find out.
        (
            ",,,,,,,,,,,,,,,,,,,,, * * * *",
            "Pacific/Apia",
            "cron expression ',,,,,,,,,,,,,,,,,,,,, * * * *' is invalid: the field \
             ',,,,,,,,,,,,,,,,,,,,,' has an empty item in its list",
            "schedule",
        ),
        (
            "0 1,,2 * * *",
            "",
            "cron expression '0 1,,2 * * *' is invalid: the field '1,,2' has an empty item in its list",
            "schedule",
        ),
        (
            "0,30, * * * *",
            "",
            "cron expression '0,30, * * * *' is invalid: the field '0,30,' has an empty item",
            "schedule",
        ),
        (
            "0 0 30 2 *",
            "",
            "cron expression '0 0 30 2 *' never matches a date (such as 30 February), so it would \
             never run",
            "schedule",
        ),
        (
            "0 0 * * *",
            "Mars/Olympus_Mons",
            "unknown time zone 'Mars/Olympus_Mons'",
            "scheduleTimeZone",
        ),
    ];
    for (schedule, time_zone, message, field) in rows {
        match parse(schedule, time_zone, now) {
            Ok(s) => panic!("parse({schedule:?}, {time_zone:?}) should fail, got {s:?}"),
            Err(e) => {
                assert!(
                    e.to_string().starts_with(message),
                    "message for {schedule:?}: {e}"
                );
                assert_eq!(e.field(), field, "field for {schedule:?}");
            }
        }
    }
}

/// One field of a generated expression: its text and the values it matches.
#[derive(Debug, Clone)]
struct Field {
    text: String,
    values: Vec<u32>,
}

/// A field from a small grammar: `*`, or a list of one to three numbers, ranges and steps over
/// `*` or a range (a bare `*` is not allowed in a list); `values` is worked out here, without
/// croner.
fn arb_field(min: u32, max: u32) -> impl Strategy<Value = Field> {
    let part = prop_oneof![
        (min..=max).prop_map(|n| (n.to_string(), vec![n])),
        (min..=max, min..=max).prop_map(|(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            (format!("{a}-{b}"), (a..=b).collect())
        }),
        (1..=max.max(2)).prop_map(move |s| (format!("*/{s}"), (min..=max).step_by(s as usize).collect())),
        (min..=max, min..=max, 1..=max.max(2)).prop_map(|(a, b, s)| {
            let (a, b) = (a.min(b), a.max(b));
            (format!("{a}-{b}/{s}"), (a..=b).step_by(s as usize).collect())
        }),
    ];
    let list = prop::collection::vec(part, 1..=3).prop_map(|parts| {
        let text = parts
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut values: Vec<u32> = parts.into_iter().flat_map(|(_, v)| v).collect();
        values.sort_unstable();
        values.dedup();
        Field { text, values }
    });
    let star = Just(Field {
        text: "*".to_owned(),
        values: (min..=max).collect(),
    });
    prop_oneof![1 => star, 3 => list]
}

/// A five-field expression and a matcher for it that knows nothing of croner.
#[derive(Debug, Clone)]
struct Expression {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Expression {
    fn text(&self) -> String {
        [&self.minute, &self.hour, &self.dom, &self.month, &self.dow]
            .map(|f| f.text.as_str())
            .join(" ")
    }

    /// Vixie cron's rule: when both day fields are restricted (neither is `*`), either
    /// matches; otherwise both must (and a `*` always does). 7 is Sunday, as 0.
    fn day_matches(&self, date: chrono::NaiveDate) -> bool {
        let dom = self.dom.values.contains(&date.day());
        let weekday = date.weekday().num_days_from_sunday();
        let dow = self.dow.values.contains(&weekday) || (weekday == 0 && self.dow.values.contains(&7));
        let month = self.month.values.contains(&date.month());
        let days = match (self.dom.text == "*", self.dow.text == "*") {
            (false, false) => dom || dow,
            _ => dom && dow,
        };
        month && days
    }

    fn matches(&self, wall: NaiveDateTime) -> bool {
        wall.second() == 0
            && self.minute.values.contains(&wall.minute())
            && self.hour.values.contains(&wall.hour())
            && self.day_matches(wall.date())
    }
}

fn arb_expression() -> impl Strategy<Value = Expression> {
    (
        arb_field(0, 59),
        arb_field(0, 23),
        arb_field(1, 31),
        arb_field(1, 12),
        arb_field(0, 7),
    )
        .prop_map(|(minute, hour, dom, month, dow)| Expression {
            minute,
            hour,
            dom,
            month,
            dow,
        })
}

/// How far the walkers look: past the next 29 February in any case.
const WALK_DAYS: i64 = 8 * 366;

/// The first minute after `t` (in UTC) that matches, walking minute by minute; a day none of
/// whose minutes can match (its date fields do not) is stepped over whole.
fn walk_minutes(e: &Expression, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let start = t.naive_utc().date();
    for day in 0..WALK_DAYS {
        let date = start + Duration::days(day);
        if !e.day_matches(date) {
            continue;
        }
        let mut wall = date.and_hms_opt(0, 0, 0)?;
        while wall.date() == date {
            if wall.and_utc() > t && e.matches(wall) {
                return Some(wall.and_utc());
            }
            wall += Duration::minutes(1);
        }
    }
    None
}

/// Instants from 2000 to 2100, with milliseconds.
fn arb_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800_000i64..4_102_444_800_000).prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
}

/// Instants within two days either side of a change of the clocks in Paris or New York.
fn arb_instant_near_a_change() -> impl Strategy<Value = (DateTime<Utc>, Tz)> {
    let changes = [
        ("2026-03-29T01:00:00Z", Tz::Europe__Paris),
        ("2026-10-25T01:00:00Z", Tz::Europe__Paris),
        ("2026-03-08T07:00:00Z", Tz::America__New_York),
        ("2026-11-01T06:00:00Z", Tz::America__New_York),
    ];
    (0..changes.len(), -2 * 86_400i64..2 * 86_400).prop_map(move |(i, offset)| {
        let (at, tz) = changes[i];
        (utc(at) + Duration::seconds(offset), tz)
    })
}

/// Five-field expressions that run often around a change of the clocks: any minutes, hours
/// that are `*` (real time) or around 01:00 to 03:00 (wall-clock times), every day.
fn arb_dst_expression() -> impl Strategy<Value = Expression> {
    let hour = prop_oneof![
        Just(Field {
            text: "*".to_owned(),
            values: (0..24).collect()
        }),
        // Values up to 4 only, which `*` or `*/n` here would not mean.
        arb_field(0, 4).prop_filter("hours named", |f| !f.text.contains('*')),
    ];
    let any = |min: u32, max: u32| Field {
        text: "*".to_owned(),
        values: (min..=max).collect(),
    };
    (arb_field(0, 59), hour).prop_map(move |(minute, hour)| Expression {
        minute,
        hour,
        dom: any(1, 31),
        month: any(1, 12),
        dow: any(0, 7),
    })
}

/// Real time, walked one UTC minute at a time (both zones' offsets are whole hours, so their
/// minutes start with UTC's): the first instant after `t` whose wall-clock time matches.
fn walk_real_time(e: &Expression, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut at = t.naive_utc().with_second(0)?.and_utc();
    for _ in 0..3 * 24 * 60 {
        at += Duration::minutes(1);
        if e.matches(at.with_timezone(&tz).naive_local()) {
            return Some(at);
        }
    }
    None
}

/// Wall-clock times, walked a minute at a time from a day before `t`'s: each matching time runs
/// at its first instant, or, when a gap skips it, at the first minute after the gap that
/// exists. The first such run after `t` wins.
fn walk_wall_time(e: &Expression, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let first_instant = |wall: NaiveDateTime| {
        let mut probe = wall;
        loop {
            match tz.from_local_datetime(&probe) {
                LocalResult::Single(i) => return i.to_utc(),
                LocalResult::Ambiguous(a, b) => return a.to_utc().min(b.to_utc()),
                LocalResult::None => probe += Duration::minutes(1),
            }
        }
    };
    let mut wall = t.with_timezone(&tz).naive_local().with_second(0)? - Duration::days(1);
    let mut best: Option<DateTime<Utc>> = None;
    for _ in 0..4 * 24 * 60 {
        wall += Duration::minutes(1);
        if e.matches(wall) {
            let at = first_instant(wall);
            if at > t && best.is_none_or(|b| at < b) {
                best = Some(at);
            }
        }
    }
    best
}

proptest! {
    // Failures are not persisted, as in `tests.rs`.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_next_run_in_utc_is_what_a_minute_walker_finds(e in arb_expression(), t in arb_instant()) {
        let text = e.text();
        let walked = walk_minutes(&e, t);
        match parse(&text, "", t) {
            Ok(Schedule::Cron(c)) => {
                let next = c.after(t);
                match walked {
                    Some(w) => prop_assert_eq!(next, Some(w), "{} after {}", text, t),
                    None => prop_assert!(
                        next.is_none_or(|n| n > t + Duration::days(WALK_DAYS - 1)),
                        "{} after {}: {:?} but the walker found nothing", text, t, next
                    ),
                }
                // The first run counts `t` itself in.
                let first = c.at_or_after(t);
                prop_assert!(first.is_some_and(|f| f >= t) || first.is_none());
            }
            Ok(other) => prop_assert!(false, "{} parsed as {:?}", text, other),
            // Only an expression that never matches a date (31 in short months only) is refused.
            Err(Error::CronNeverRuns { .. }) => prop_assert_eq!(walked, None, "{}", text),
            Err(e) => prop_assert!(false, "{} refused: {}", text, e),
        }
    }

    #[test]
    fn around_a_change_of_the_clocks_runs_follow_the_rules(
        e in arb_dst_expression(),
        (t, tz) in arb_instant_near_a_change(),
    ) {
        let text = e.text();
        let c = cron(&text, tz.name(), t);
        let walked = if e.hour.text == "*" {
            walk_real_time(&e, tz, t)
        } else {
            walk_wall_time(&e, tz, t)
        };
        let next = c.after(t);
        match walked {
            Some(w) => prop_assert_eq!(next, Some(w), "{} in {} after {}", text, tz.name(), t),
            None => prop_assert!(next.is_some_and(|n| n > t + Duration::days(2)), "{} after {}", text, t),
        }
    }

    #[test]
    fn runs_go_forward_and_skip_missed_lands_on_one(
        e in arb_dst_expression(),
        (t, tz) in arb_instant_near_a_change(),
        late in 0i64..10_000,
        epsilon in 0i64..600,
    ) {
        let c = cron(&e.text(), tz.name(), t);
        let runs = c.upcoming(20);
        prop_assert!(runs.windows(2).all(|w| w[0] < w[1]), "{:?}", runs);
        prop_assert!(runs.first().is_some_and(|f| *f >= t));
        // Skipping from late in the list lands on the first run not too late, counting the rest.
        let now = t + Duration::seconds(late * 10);
        let epsilon = Duration::seconds(epsilon);
        let (after, skipped) = c.skip_missed(now, epsilon);
        let expected = c.upcoming(4_000).into_iter().position(|r| r >= now - epsilon);
        if let Some(position) = expected {
            prop_assert_eq!(skipped, position as u64);
            prop_assert_eq!(after.next_run(), Some(c.upcoming(position + 1)[position]));
        }
    }
}
