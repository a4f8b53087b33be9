//! Output for people: aligned tables, instants in local time, durations in words.

use std::io::Write;

use chrono::{DateTime, Local};

use super::Error;

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Label and value pairs, labels aligned.
pub(super) fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

/// An RFC 3339 instant in local time, `-` for none; text that is not an instant is shown as is.
pub(super) fn local_time(text: &str) -> String {
    if text.is_empty() {
        return "-".to_owned();
    }
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => text.to_owned(),
    }
}

/// Seconds in words: `0.4 seconds`, `1 minute 5 seconds`, `2 hours 3 minutes`, `1 day 2 hours`.
pub(super) fn duration_words(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    if seconds < 0.05 {
        // "0 seconds" reads as "did not run"; a task that ran took some time.
        return "under 0.1 seconds".to_owned();
    }
    if seconds < 10.0 {
        let rounded = (seconds * 10.0).round() / 10.0;
        return if rounded == 1.0 {
            "1 second".to_owned()
        } else {
            format!("{rounded} seconds")
        };
    }
    let total = seconds.round() as u64;
    let units = [("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1)];
    let mut parts = Vec::new();
    let mut rest = total;
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
        // Two units are enough for a person: "3 days 4 hours", not the seconds too.
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

pub(super) fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The server's JSON as it wrote it, with a final newline.
pub(super) fn print_json(text: &str) -> Result<(), Error> {
    let text = text.trim_end();
    print(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration_words(0.42), "0.4 seconds");
        assert_eq!(duration_words(0.008), "under 0.1 seconds");
        assert_eq!(duration_words(1.0), "1 second");
        assert_eq!(duration_words(65.0), "1 minute 5 seconds");
        assert_eq!(duration_words(7_380.0), "2 hours 3 minutes");
        assert_eq!(duration_words(93_600.0), "1 day 2 hours");
        assert_eq!(duration_words(-1.0), "-");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()]];
        assert_eq!(
            table(&["NAME", "V", "LAST"], &rows),
            "NAME  V           LAST\na     long value  x\n"
        );
    }
}
