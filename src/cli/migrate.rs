//! `kairos export` and `kairos import` (from a file, or `--from-chronos` from a running Chronos
//! or kairos): every job, parents before children, idempotent. What the target stored is read
//! back and compared with what the source had, so every field that did not carry over is named.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::client::Client;
use super::jobs::COUNTERS;
use super::render::{print, print_json, table};
use super::{Error, read_jobs};
use crate::job::Job;

pub(super) enum Source {
    File(PathBuf),
    Server(Client),
}

pub(super) struct Options {
    pub(super) dry_run: bool,
    pub(super) prefix: String,
    pub(super) overwrite: bool,
}

/// `kairos export`: `GET /jobs` in the job's own key order, parents first.
pub(super) async fn export(client: &Client) -> Result<(), Error> {
    let (jobs, _): (Vec<Job>, String) = client.get(client.api(&["jobs"], &[])).await?;
    let names: Vec<(String, Vec<String>)> = jobs
        .iter()
        .map(|j| (j.name.clone(), j.parents().to_vec()))
        .collect();
    let order = parents_first(&names);
    let ordered: Vec<&Job> = order.into_iter().map(|i| &jobs[i]).collect();
    let text = serde_json::to_string_pretty(&ordered).map_err(|e| Error::Answer(e.to_string()))?;
    print_json(&text)
}

/// Indices of `jobs` (name, parents) with every job after those of its parents that are in the
/// list, otherwise in the given order. Jobs caught in a cycle come last, in the given order, for
/// the server to refuse with the cycle named.
fn parents_first(jobs: &[(String, Vec<String>)]) -> Vec<usize> {
    let present: HashSet<&str> = jobs.iter().map(|(n, _)| n.as_str()).collect();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut order = Vec::with_capacity(jobs.len());
    let mut left: Vec<usize> = (0..jobs.len()).collect();
    loop {
        let before = left.len();
        left.retain(|&i| {
            let (name, parents) = &jobs[i];
            let ready = parents
                .iter()
                .all(|p| !present.contains(p.as_str()) || placed.contains(p.as_str()));
            if ready {
                placed.insert(name);
                order.push(i);
            }
            !ready
        });
        if left.is_empty() || left.len() == before {
            break;
        }
    }
    order.extend(left);
    order
}

/// What happened to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
enum Outcome {
    Created,
    Updated,
    Unchanged,
    /// Exists here with another definition, left alone (no `--overwrite`).
    Differs,
    Failed,
}

impl Outcome {
    fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Outcome::Created, false) => "created",
            (Outcome::Created, true) => "would create",
            (Outcome::Updated, false) => "updated",
            (Outcome::Updated, true) => "would update",
            (Outcome::Unchanged, _) => "unchanged",
            (Outcome::Differs, _) => "differs",
            (Outcome::Failed, _) => "failed",
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    name: String,
    outcome: Outcome,
    /// The fields that differ from the job already here (for `differs` and `updated`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    differing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// A field the target did not keep as the source had it.
#[derive(Debug, Serialize)]
struct Lost {
    job: String,
    field: String,
    reason: String,
}

pub(super) async fn import(target: &Client, source: Source, options: &Options) -> Result<(), Error> {
    let jobs = match &source {
        Source::File(path) => read_jobs(path)?,
        Source::Server(client) => read_server(client).await?,
    };
    let mut prepared: Vec<Map<String, Value>> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        let Value::Object(mut job) = job else {
            return Err(Error::Usage(format!(
                "job {} of the source is not a JSON object",
                i + 1
            )));
        };
        let Some(name) = job.get("name").and_then(Value::as_str) else {
            return Err(Error::Usage(format!("job {} of the source has no name", i + 1)));
        };
        let renamed = format!("{}{name}", options.prefix);
        job.insert("name".to_owned(), Value::String(renamed));
        if let Some(Value::Array(parents)) = job.get_mut("parents") {
            for parent in parents.iter_mut() {
                if let Value::String(p) = parent {
                    *p = format!("{}{p}", options.prefix);
                }
            }
        }
        prepared.push(job);
    }
    let graph: Vec<(String, Vec<String>)> = prepared.iter().map(|j| (name_of(j), parents_of(j))).collect();
    let order = parents_first(&graph);

    let existing = list_jobs(target).await?;
    let mut reports: Vec<Report> = Vec::new();
    let mut not_imported: HashSet<String> = HashSet::new();
    let mut written: Vec<usize> = Vec::new();
    for i in order {
        let job = &prepared[i];
        let name = name_of(job);
        if let Some(parent) = parents_of(job).into_iter().find(|p| not_imported.contains(p)) {
            not_imported.insert(name.clone());
            reports.push(Report {
                name,
                outcome: Outcome::Failed,
                differing: vec![],
                message: Some(format!("its parent {parent} was not imported")),
            });
            continue;
        }
        let (outcome, differing) = match existing.get(&name) {
            None => (Outcome::Created, vec![]),
            Some(here) => {
                let differing: Vec<String> = differences(job, here)
                    .into_iter()
                    .filter(|(field, _)| !COUNTERS.contains(&field.as_str()))
                    .map(|(field, _)| field)
                    .collect();
                if differing.is_empty() {
                    (Outcome::Unchanged, differing)
                } else if options.overwrite {
                    (Outcome::Updated, differing)
                } else {
                    (Outcome::Differs, differing)
                }
            }
        };
        if matches!(outcome, Outcome::Created | Outcome::Updated) && !options.dry_run {
            if let Err(error) = target.save_job(&Value::Object(job.clone())).await {
                let message = match error {
                    Error::Refused { message, .. } => message,
                    // Anything but a refusal of this one job stops the import.
                    other => return Err(other),
                };
                not_imported.insert(name.clone());
                reports.push(Report {
                    name,
                    outcome: Outcome::Failed,
                    differing,
                    message: Some(message),
                });
                continue;
            }
            written.push(i);
        }
        reports.push(Report {
            name,
            outcome,
            differing,
            message: None,
        });
    }

    // What the target stored, against what the source had: every field that did not survive.
    let mut lost: Vec<Lost> = Vec::new();
    if !written.is_empty() {
        let stored = list_jobs(target).await?;
        for i in written {
            let job = &prepared[i];
            let name = name_of(job);
            let Some(here) = stored.get(&name) else {
                lost.push(Lost {
                    job: name,
                    field: "*".to_owned(),
                    reason: "accepted but not listed by the target afterwards".to_owned(),
                });
                continue;
            };
            for (field, reason) in differences(job, here) {
                lost.push(Lost {
                    job: name.clone(),
                    field,
                    reason,
                });
            }
        }
    }

    let count = |o: Outcome| reports.iter().filter(|r| r.outcome == o).count();
    let failed = count(Outcome::Failed);
    if target.json {
        let summary: BTreeMap<&str, usize> = [
            ("created", count(Outcome::Created)),
            ("updated", count(Outcome::Updated)),
            ("unchanged", count(Outcome::Unchanged)),
            ("differs", count(Outcome::Differs)),
            ("failed", failed),
        ]
        .into();
        let body = json!({
            "dryRun": options.dry_run,
            "jobs": reports,
            "summary": summary,
            "notCarriedOver": lost,
        });
        print_json(&body.to_string())?;
    } else {
        let rows: Vec<Vec<String>> = reports
            .iter()
            .map(|r| {
                let detail = match (&r.message, r.differing.is_empty()) {
                    (Some(m), _) => m.clone(),
                    (None, false) if r.outcome == Outcome::Differs => format!(
                        "differs in {}; left unchanged (--overwrite replaces it)",
                        r.differing.join(", ")
                    ),
                    (None, false) => format!("differed in {}", r.differing.join(", ")),
                    (None, true) => String::new(),
                };
                vec![r.outcome.word(options.dry_run).to_owned(), r.name.clone(), detail]
            })
            .collect();
        let mut out = table(&["OUTCOME", "JOB", "DETAIL"], &rows);
        let dry = if options.dry_run {
            " (dry run: nothing was changed)"
        } else {
            ""
        };
        out.push_str(&format!(
            "\n{} jobs read: {} {}, {} {}, {} unchanged, {} differing, {} failed{dry}.\n",
            reports.len(),
            count(Outcome::Created),
            Outcome::Created.word(options.dry_run),
            count(Outcome::Updated),
            Outcome::Updated.word(options.dry_run),
            count(Outcome::Unchanged),
            count(Outcome::Differs),
            failed,
        ));
        if lost.is_empty() {
            if !options.dry_run {
                out.push_str("Every field of every job written was carried over.\n");
            }
        } else {
            out.push_str("\nNot carried over:\n");
            let rows: Vec<Vec<String>> = lost
                .iter()
                .map(|l| vec![l.job.clone(), l.field.clone(), l.reason.clone()])
                .collect();
            out.push_str(&table(&["JOB", "FIELD", "WHY"], &rows));
        }
        print(&out)?;
    }
    if failed > 0 {
        return Err(Error::Incomplete(format!(
            "{failed} of {} jobs could not be imported",
            reports.len()
        )));
    }
    Ok(())
}

/// Every job of a Chronos or kairos: 3.x's route, then 2.x's if the server has no such route.
async fn read_server(client: &Client) -> Result<Vec<Value>, Error> {
    let v3 = client.url(&["v1", "scheduler", "jobs"], &[]);
    let answer = match client.get::<Vec<Value>>(v3).await {
        Err(Error::Refused { status: 404, .. }) => {
            let v2 = client.url(&["scheduler", "jobs"], &[]);
            client.get::<Vec<Value>>(v2).await
        }
        other => other,
    };
    answer
        .map(|(jobs, _)| jobs)
        .map_err(|e| e.during(format_args!("reading the jobs of {}", client.base())))
}

async fn list_jobs(client: &Client) -> Result<HashMap<String, Map<String, Value>>, Error> {
    let (jobs, _): (Vec<Value>, String) = client.get(client.api(&["jobs"], &[])).await?;
    Ok(jobs
        .into_iter()
        .filter_map(|j| match j {
            Value::Object(j) => Some((name_of(&j), j)),
            _ => None,
        })
        .collect())
}

fn name_of(job: &Map<String, Value>) -> String {
    job.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn parents_of(job: &Map<String, Value>) -> Vec<String> {
    job.get("parents")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The source's fields the target does not have as the source had them, each with why.
fn differences(source: &Map<String, Value>, here: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (field, had) in source {
        let stored = here.get(field).unwrap_or(&Value::Null);
        if same(had, stored) {
            continue;
        }
        let reason = if stored.is_null() {
            format!("kairos has no field {field:?}; {} was dropped", brief(had))
        } else {
            format!("stored as {} (the source had {})", brief(stored), brief(had))
        };
        out.push((field.clone(), reason));
    }
    out
}

/// Equal as a job means: numbers by value (`1` is `1.0`), and absent, `null`, `""`, `[]` and
/// `{}` alike, since Chronos and kairos write empty fields differently.
fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (a, b) {
        _ if empty(a) && empty(b) => true,
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .all(|k| same(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null))),
        _ => a == b,
    }
}

/// A value short enough for one line of a report.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, parents: &[&str]) -> (String, Vec<String>) {
        (name.to_owned(), parents.iter().map(|p| (*p).to_owned()).collect())
    }

    #[test]
    fn parents_come_first_and_cycles_last() {
        let jobs = [
            job("c", &["b"]),
            job("b", &["a"]),
            job("a", &[]),
            job("x", &["y"]),
            job("y", &["x"]),
            job("d", &["outside"]),
        ];
        assert_eq!(parents_first(&jobs), [2, 5, 1, 0, 3, 4]);
    }

    #[test]
    fn empty_values_and_numbers_compare_loosely() {
        assert!(same(&json!(1), &json!(1.0)));
        assert!(same(&Value::Null, &json!("")));
        assert!(same(&json!({"a": [], "b": 2}), &json!({"b": 2.0})));
        assert!(!same(&json!("x"), &Value::Null));
        assert!(!same(&json!([1, 2]), &json!([2, 1])));
    }
}
