//! `kairos pause`, `kairos resume` and `kairos upcoming`: the scheduler-wide controls.

use reqwest::Method;
use serde_json::Value;

use super::Error;
use super::client::Client;
use super::render::{local_time, pairs, print, print_json, table};

/// Pauses (`true`) or resumes the scheduler, or (`None`) shows whether it is paused.
pub(super) async fn pause(client: &Client, paused: Option<bool>) -> Result<(), Error> {
    let (state, text): (Value, String) = match paused {
        None => client.get(client.api(&["pause"], &[])).await?,
        Some(paused) => {
            let route = if paused { "pause" } else { "resume" };
            let url = client.api(&[route], &[]);
            let response = client
                .send(Method::PUT, url.clone(), None)
                .await
                .map_err(|e| e.during(format!("{route} the scheduler")))?;
            let text = response
                .text()
                .await
                .map_err(|e| Error::Answer(format!("{url}: {e}")))?;
            let state = serde_json::from_str(&text).map_err(|e| Error::Answer(format!("{url}: {e}")))?;
            (state, text)
        }
    };
    if client.json {
        return print_json(&text);
    }
    let status = match state["since"].as_str() {
        Some(since) if state["paused"] == true => format!("paused since {}", local_time(since)),
        _ => "running".to_owned(),
    };
    print(&pairs(&[("scheduler", status)]))
}

/// The next runs across every job, in time order.
pub(super) async fn upcoming(client: &Client, until: Option<&str>, limit: u32) -> Result<(), Error> {
    let limit = limit.to_string();
    let mut query = vec![("limit", limit.as_str())];
    if let Some(until) = until {
        query.push(("until", until));
    }
    let (runs, text): (Vec<Value>, String) = client.get(client.api(&["upcoming"], &query)).await?;
    if client.json {
        return print_json(&text);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                local_time(r["at"].as_str().unwrap_or("")),
                r["job"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    print(&table(&["WHEN", "JOB"], &rows))
}
