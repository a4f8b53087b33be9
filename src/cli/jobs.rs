//! `kairos jobs …`, `kairos tasks …` and `kairos workers`: one API call (or a few) each, shown
//! as a table or as the server's JSON.

use std::io::Write;

use futures_util::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Client;
use super::render::{duration_words, local_time, pairs, print, print_json, table};
use super::{Error, GraphFormat, JobState, JobsCommand, TasksCommand, read_jobs};

/// The counters a job carries. A job sent without them keeps them (docs/compatibility.md), so
/// edits, enables and disables leave them out rather than send back values that may be stale.
pub(super) const COUNTERS: [&str; 5] = [
    "successCount",
    "errorCount",
    "lastSuccess",
    "lastError",
    "errorsSinceLastSuccess",
];

/// One `/jobs/summary` entry, in the server's key order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    name: String,
    status: String,
    state: String,
    schedule: String,
    parents: Vec<String>,
    disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queued_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Summaries {
    jobs: Vec<Summary>,
}

pub(super) async fn jobs(client: &Client, command: JobsCommand) -> Result<(), Error> {
    let json = client.json;
    match command {
        JobsCommand::List {
            search,
            state,
            failing,
        } => list(client, search, state, failing).await,
        JobsCommand::Show { name } => {
            let (job, text): (Value, String) = client.get(client.api(&["job", &name], &[])).await?;
            if json {
                return print_json(&text);
            }
            print(&show(&job))
        }
        JobsCommand::Add { file } => {
            let jobs = read_jobs(&file)?;
            let mut saved = Vec::new();
            for job in &jobs {
                let name = job["name"].as_str().unwrap_or("(no name)").to_owned();
                client
                    .save_job(job)
                    .await
                    .map_err(|e| e.during(format_args!("job {name}")))?;
                if !json {
                    print(&format!("saved {name}\n"))?;
                }
                saved.push(name);
            }
            if json {
                return print_json(&json!({ "saved": saved }).to_string());
            }
            Ok(())
        }
        JobsCommand::Edit { name } => edit(client, &name).await,
        JobsCommand::Run { name, arguments } => {
            let joined = arguments.join(" ");
            let query: Vec<(&str, &str)> = if arguments.is_empty() {
                vec![]
            } else {
                vec![("arguments", &joined)]
            };
            client
                .send(Method::PUT, client.api(&["job", &name], &query), None)
                .await?;
            done(json, "run", &name, &format!("started {name}"))
        }
        JobsCommand::Kill { name } => {
            client
                .send(Method::DELETE, client.api(&["task", "kill", &name], &[]), None)
                .await?;
            done(json, "kill", &name, &format!("killed the tasks of {name}"))
        }
        JobsCommand::Enable { name } => toggle(client, &name, false).await,
        JobsCommand::Disable { name } => toggle(client, &name, true).await,
        JobsCommand::Delete { name } => {
            client
                .send(Method::DELETE, client.api(&["job", &name], &[]), None)
                .await?;
            done(json, "delete", &name, &format!("deleted {name}"))
        }
        JobsCommand::Next { name, count } => {
            let count = count.to_string();
            let url = client.api(&["job", &name, "next"], &[("count", &count)]);
            let (runs, text): (Vec<String>, String) = client.get(url).await?;
            if json {
                return print_json(&text);
            }
            if runs.is_empty() {
                return print(&format!(
                    "{name} has no scheduled runs (it is dependent, or its repeats are used up)\n"
                ));
            }
            let rows: Vec<Vec<String>> = runs.iter().map(|r| vec![local_time(r)]).collect();
            print(&table(&["NEXT RUN"], &rows))
        }
        JobsCommand::Graph { format } => {
            // The graph's own formats are already meant for programs, so --json changes nothing.
            let route = match format {
                GraphFormat::Dot => "dot",
                GraphFormat::Csv => "csv",
                GraphFormat::Svg => "svg",
            };
            let text = client.text(client.api(&["graph", route], &[])).await?;
            print(&text)
        }
    }
}

/// What a change that answers nothing prints: a sentence, or `{"ok":true,…}` for scripts.
fn done(json: bool, action: &str, name: &str, sentence: &str) -> Result<(), Error> {
    if json {
        print_json(&json!({ "ok": true, "action": action, "job": name }).to_string())
    } else {
        print(&format!("{sentence}\n"))
    }
}

async fn list(
    client: &Client,
    search: Option<String>,
    state: Option<JobState>,
    failing: bool,
) -> Result<(), Error> {
    let (summaries, _): (Summaries, String) = client.get(client.api(&["jobs", "summary"], &[])).await?;
    let found: Option<Vec<String>> = match &search {
        Some(text) => {
            let url = client.api(
                &["jobs", "search"],
                &[("any", text), ("limit", &i64::MAX.to_string())],
            );
            let (jobs, _): (Vec<Value>, String) = client.get(url).await?;
            Some(
                jobs.iter()
                    .filter_map(|j| j["name"].as_str().map(str::to_owned))
                    .collect(),
            )
        }
        None => None,
    };
    let jobs: Vec<Summary> = summaries
        .jobs
        .into_iter()
        .filter(|s| found.as_ref().is_none_or(|names| names.contains(&s.name)))
        .filter(|s| match state {
            None => true,
            Some(JobState::Idle) => s.state == "idle",
            Some(JobState::Queued) => s.state == "queued",
            Some(JobState::Running) => s.state.ends_with("running"),
        })
        .filter(|s| !failing || s.status == "failure")
        .collect();
    if client.json {
        let text = serde_json::to_string(&jobs).map_err(|e| Error::Answer(e.to_string()))?;
        return print_json(&text);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|s| {
            let when = if s.parents.is_empty() {
                s.schedule.clone()
            } else {
                format!("after {}", s.parents.join(", "))
            };
            let mut state = s.state.clone();
            if let Some(reason) = &s.queued_reason {
                state = format!("{state} ({reason})");
            }
            vec![
                s.name.clone(),
                state,
                s.status.clone(),
                if s.disabled { "yes" } else { "no" }.to_owned(),
                when,
            ]
        })
        .collect();
    print(&table(&["NAME", "STATE", "LAST", "DISABLED", "RUNS"], &rows))
}

fn show(job: &Value) -> String {
    let text = |key: &str| match &job[key] {
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut rows = vec![("name", text("name")), ("command", text("command"))];
    match job["parents"].as_array() {
        Some(parents) => rows.push((
            "parents",
            parents
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )),
        None => {
            rows.push(("schedule", text("schedule")));
            rows.push(("time zone", text("scheduleTimeZone")));
        }
    }
    rows.extend([
        ("owner", text("owner")),
        ("description", text("description")),
        ("disabled", text("disabled")),
        ("retries", text("retries")),
        (
            "resources",
            format!(
                "{} cpus, {} MB memory, {} MB disk",
                job["cpus"], job["mem"], job["disk"]
            ),
        ),
        ("successes", text("successCount")),
        ("errors", text("errorCount")),
        ("errors since success", text("errorsSinceLastSuccess")),
        (
            "last success",
            local_time(job["lastSuccess"].as_str().unwrap_or("")),
        ),
        ("last error", local_time(job["lastError"].as_str().unwrap_or(""))),
    ]);
    if job["container"].is_object() {
        rows.push(("container", text("container").replace('\n', " ")));
        if let Some(image) = job["container"]["image"].as_str() {
            rows.push(("image", image.to_owned()));
        }
    }
    pairs(&rows)
}

/// Disable or enable: the API has no route of its own, so the job is read, flipped and posted
/// back without its counters (which the server then keeps), as the web UI does.
async fn toggle(client: &Client, name: &str, disabled: bool) -> Result<(), Error> {
    let (mut job, _): (Value, String) = client.get(client.api(&["job", name], &[])).await?;
    job["disabled"] = Value::Bool(disabled);
    if let Value::Object(fields) = &mut job {
        for counter in COUNTERS {
            fields.remove(counter);
        }
    }
    client.save_job(&job).await?;
    let (action, sentence) = if disabled {
        ("disable", format!("disabled {name}"))
    } else {
        ("enable", format!("enabled {name}"))
    };
    done(client.json, action, name, &sentence)
}

/// `jobs edit`: the job, counters left out, in `$EDITOR`; a definition the server (or JSON)
/// refuses is shown and the editor reopens on what was written, until it is accepted, left
/// unchanged, or emptied (which abandons the edit).
async fn edit(client: &Client, name: &str) -> Result<(), Error> {
    let (mut job, _): (Value, String) = client.get(client.api(&["job", name], &[])).await?;
    if let Value::Object(fields) = &mut job {
        for counter in COUNTERS {
            fields.remove(counter);
        }
    }
    let original = serde_json::to_string_pretty(&job).map_err(|e| Error::Answer(e.to_string()))? + "\n";
    let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".to_owned());
    let path = std::env::temp_dir().join(format!("kairos-edit-{}-{name}.json", std::process::id()));
    let _cleanup = RemoveOnDrop(path.clone());
    let mut content = original.clone();
    loop {
        std::fs::write(&path, &content)
            .map_err(|e| Error::Usage(format!("writing {}: {e}", path.display())))?;
        // Through the shell, so an EDITOR with arguments (`code --wait`) works as in git.
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&path)
            .status()
            .map_err(|e| Error::Usage(format!("starting the editor {editor:?}: {e}")))?;
        if !status.success() {
            return Err(Error::Usage(format!(
                "the editor {editor:?} failed ({status}); {name} is unchanged"
            )));
        }
        let written = std::fs::read_to_string(&path)
            .map_err(|e| Error::Usage(format!("reading {}: {e}", path.display())))?;
        if written.trim().is_empty() {
            eprintln!("The file is empty: the edit is abandoned and {name} is unchanged.");
            return Ok(());
        }
        if written.trim() == original.trim() {
            return done(client.json, "edit", name, &format!("{name} is unchanged"));
        }
        content = written;
        let refusal = match serde_json::from_str::<Value>(&content) {
            Err(e) => format!("not valid JSON: {e}"),
            Ok(edited) if edited["name"].as_str() != Some(name) => {
                format!("the name must stay {name:?} (to make another job, use `kairos jobs add`)")
            }
            Ok(edited) => match client.save_job(&edited).await {
                Ok(()) => return done(client.json, "edit", name, &format!("saved {name}")),
                Err(Error::Refused {
                    status: 400, message, ..
                }) => message,
                Err(other) => return Err(other),
            },
        };
        eprintln!("{name} was not saved: {refusal}");
        eprintln!("Reopening the editor (empty the file to give up).");
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) async fn tasks(client: &Client, command: TasksCommand) -> Result<(), Error> {
    match command {
        TasksCommand::List { name, limit } => {
            let limit = limit.to_string();
            let url = client.api(&["job", &name, "tasks"], &[("limit", &limit)]);
            let (tasks, text): (Vec<Value>, String) = client.get(url).await?;
            if client.json {
                return print_json(&text);
            }
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or("").to_owned();
                    vec![
                        s("taskId"),
                        s("state"),
                        local_time(&s("startedAt")),
                        t["durationSeconds"]
                            .as_f64()
                            .map_or("-".to_owned(), duration_words),
                        t["exitCode"].as_i64().map_or("-".to_owned(), |c| c.to_string()),
                        s("worker"),
                        s("message"),
                    ]
                })
                .collect();
            print(&table(
                &[
                    "TASK", "STATE", "STARTED", "DURATION", "EXIT", "WORKER", "MESSAGE",
                ],
                &rows,
            ))
        }
        TasksCommand::Logs {
            task_id,
            follow: false,
        } => {
            let (output, text): (Value, String) =
                client.get(client.api(&["task", &task_id, "output"], &[])).await?;
            if client.json {
                return print_json(&text);
            }
            print(output["stdout"].as_str().unwrap_or(""))?;
            let mut err = std::io::stderr().lock();
            err.write_all(output["stderr"].as_str().unwrap_or("").as_bytes())?;
            Ok(())
        }
        TasksCommand::Logs {
            task_id,
            follow: true,
        } => follow(client, &task_id).await,
    }
}

/// One Server-Sent Event.
struct Event {
    kind: String,
    data: String,
}

/// Follows `/task/<id>/output?follow=true`: stdout to stdout and stderr to stderr as they come
/// (or, with `--json`, each event as one JSON line), until the server sends the task's end.
async fn follow(client: &Client, task_id: &str) -> Result<(), Error> {
    let url = client.api(&["task", task_id, "output"], &[("follow", "true")]);
    let response = client.send(Method::GET, url.clone(), None).await?;
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Answer(format!("{url}: the stream broke: {e}")))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = find_blank_line(&buffer) {
            let block: Vec<u8> = buffer.drain(..end.0).collect();
            buffer.drain(..end.1);
            let Some(event) = parse_event(&String::from_utf8_lossy(&block)) else {
                continue;
            };
            if show_event(client.json, &event)? {
                return Ok(());
            }
        }
    }
    Err(Error::Answer(format!(
        "{url}: the stream ended before the task did"
    )))
}

/// The end of the first event in `buffer` and the length of its separator.
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_event(block: &str) -> Option<Event> {
    let mut kind = "message".to_owned();
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in block.lines() {
        // Lines starting with ':' are comments, such as keep-alives.
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => {
                kind = value.to_owned();
                any = true;
            }
            "data" => {
                data.push(value);
                any = true;
            }
            _ => {}
        }
    }
    any.then(|| Event {
        kind,
        data: data.join("\n"),
    })
}

/// Shows one event; true once the stream is over.
fn show_event(json: bool, event: &Event) -> Result<bool, Error> {
    let data: Value = serde_json::from_str(&event.data).unwrap_or_else(|_| Value::String(event.data.clone()));
    let over = matches!(event.kind.as_str(), "end" | "error");
    if json {
        print_json(&json!({ "event": event.kind, "data": data }).to_string())?;
        return Ok(over);
    }
    match event.kind.as_str() {
        "stdout" => print(data.as_str().unwrap_or(""))?,
        "stderr" => {
            let mut err = std::io::stderr().lock();
            err.write_all(data.as_str().unwrap_or("").as_bytes())?;
            err.flush()?;
        }
        "reset" => eprintln!("[kairos: the worker restarted this output; what follows replaces it]"),
        "end" => {
            let code = data["exitCode"]
                .as_i64()
                .map_or(String::new(), |c| format!(", exit code {c}"));
            let message = data["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map_or(String::new(), |m| format!(": {m}"));
            eprintln!(
                "[kairos: the task ended {}{code}{message}]",
                data["state"].as_str().unwrap_or("?")
            );
        }
        "error" => {
            return Err(Error::Answer(format!(
                "the server stopped following: {}",
                data.as_str().map_or(data.to_string(), str::to_owned)
            )));
        }
        _ => {}
    }
    Ok(over)
}

pub(super) async fn workers(client: &Client) -> Result<(), Error> {
    let (workers, text): (Vec<Value>, String) = client.get(client.api(&["workers"], &[])).await?;
    if client.json {
        return print_json(&text);
    }
    let resource = |w: &Value, key: &str| format!("{}/{}", w["used"][key], w["total"][key]);
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let s = |k: &str| w[k].as_str().unwrap_or("").to_owned();
            let mut name = s("name");
            if w["local"] == true {
                name.push_str(" (built-in)");
            }
            vec![
                name,
                s("hostname"),
                s("state"),
                resource(w, "cpus"),
                resource(w, "mem"),
                resource(w, "disk"),
                w["tasks"].as_array().map_or(0, Vec::len).to_string(),
                local_time(&s("lastHeartbeat")),
            ]
        })
        .collect();
    print(&table(
        &[
            "NAME",
            "HOST",
            "STATE",
            "CPUS USED/TOTAL",
            "MEM MB",
            "DISK MB",
            "TASKS",
            "LAST HEARTBEAT",
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_and_parsed() {
        let mut buffer =
            b": keep-alive\n\nevent: stdout\ndata: \"a\\n\"\n\nevent: end\r\ndata: {}\r\n\r\n".to_vec();
        let mut events = Vec::new();
        while let Some((end, sep)) = find_blank_line(&buffer) {
            let block: Vec<u8> = buffer.drain(..end).collect();
            buffer.drain(..sep);
            events.extend(parse_event(&String::from_utf8_lossy(&block)));
        }
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.data.as_str()))
            .collect();
        assert_eq!(kinds, [("stdout", "\"a\\n\""), ("end", "{}")]);
    }
}
