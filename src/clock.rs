//! The one place that reads the wall clock, and the one timestamp format kairos writes.
//!
//! Pure modules (`schedule`, `graph`) take `now` as an argument; the engine asks this module.

use chrono::{DateTime, SecondsFormat, Utc};

/// The current instant.
#[cfg(not(test))]
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The current instant, following tokio's clock so that unit tests can pause and advance time.
#[cfg(test)]
pub fn now() -> DateTime<Utc> {
    use std::sync::OnceLock;
    static BASE: OnceLock<(DateTime<Utc>, std::time::Instant)> = OnceLock::new();
    let (wall, instant) = *BASE.get_or_init(|| (Utc::now(), std::time::Instant::now()));
    let tokio_now = tokio::time::Instant::now().into_std();
    match tokio_now.checked_duration_since(instant) {
        Some(ahead) => wall + chrono::Duration::from_std(ahead).unwrap_or_default(),
        None => wall - chrono::Duration::from_std(instant - tokio_now).unwrap_or_default(),
    }
}

/// Chronos' timestamp format for `lastSuccess`/`lastError`: UTC with milliseconds, e.g. `2017-01-24T12:48:57.123Z`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the epoch to an instant (out-of-range values clamp to the epoch).
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_matches_chronos_format() {
        let t = super::from_millis(1_485_262_137_123);
        assert_eq!(super::iso(t), "2017-01-24T12:48:57.123Z");
    }
}
