//! Operators' view: `/metrics` in the Prometheus text format checked with `promtool`, JSON logs
//! from the real binary, and the Prometheus configuration and alert rules under `deploy/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::{Harness, free_port, wait_until};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Debian's `prometheus` package ships it; `scripts/test` installs it and sets the variable.
fn promtool() -> PathBuf {
    std::env::var_os("KAIROS_PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from)
}

/// Runs `promtool` with `args` (and `stdin`), asserting it accepts; returns what it printed.
async fn promtool_accepts(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = tokio::process::Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {:?} (set KAIROS_PROMTOOL): {e}", promtool()));
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await
        .unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} refused: {printed}");
    printed
}

/// The samples of an exposition: `name{labels}` as written, to its value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a number in {line}")),
            };
            (series.to_owned(), value)
        })
        .collect()
}

fn value(all: &HashMap<String, f64>, series: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("no series {series}; have {:#?}", all.keys()))
}

async fn scrape(h: &Harness, path: &str, accept: Option<&str>) -> String {
    let mut request = h.client.get(h.url(path));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path} {accept:?}");
    assert_eq!(
        response.headers()["content-type"],
        CONTENT_TYPE,
        "{path} {accept:?}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn prometheus_format_counts_tasks_and_passes_promtool() {
    let h = Harness::start_with(|c| c.metrics_per_job = true).await;
    let far = "R/2030-01-01T00:00:00Z/P1D";
    h.create(json!({"name": "fine", "command": "true", "schedule": far}))
        .await;
    h.create(json!({"name": "broken", "command": "exit 3", "schedule": far, "retries": 0}))
        .await;
    for job in ["fine", "broken"] {
        assert_eq!(h.put(&format!("/v1/scheduler/job/{job}"), None).await.0, 204);
    }
    h.wait_job("fine", "a success", |j| j["successCount"] == 1).await;
    h.wait_job("broken", "a failure", |j| j["errorCount"] == 1).await;
    let (_, workers) = h.get("/v1/scheduler/workers").await;
    let worker = workers[0]["name"]
        .as_str()
        .expect("the built-in worker")
        .to_owned();

    let text = scrape(&h, "/metrics?format=prometheus", None).await;
    let printed = promtool_accepts(&["check", "metrics"], Some(&text)).await;
    assert!(!printed.contains("problem"), "lint problems: {printed}");
    let all = samples(&text);
    assert_eq!(value(&all, "kairos_leader"), 1.0);
    let w = format!("worker=\"{worker}\"");
    assert_eq!(value(&all, &format!("kairos_tasks_started_total{{{w}}}")), 2.0);
    for outcome in ["succeeded", "failed"] {
        assert_eq!(
            value(
                &all,
                &format!("kairos_tasks_ended_total{{{w},outcome=\"{outcome}\"}}")
            ),
            1.0,
            "{outcome}"
        );
    }
    assert_eq!(value(&all, "kairos_scheduling_lag_seconds_count"), 2.0);
    assert_eq!(
        value(&all, "kairos_scheduling_lag_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    // A requested run launches at once: well within a second of its instant.
    assert_eq!(value(&all, "kairos_scheduling_lag_seconds_bucket{le=\"1\"}"), 2.0);
    assert_eq!(value(&all, "kairos_queue_depth"), 0.0);
    assert_eq!(value(&all, "kairos_queue_oldest_age_seconds"), 0.0);
    assert_eq!(value(&all, "kairos_tasks_running"), 0.0);
    let commits = value(&all, "kairos_store_commit_seconds_count");
    assert!(commits >= 4.0, "two creations, two starts, two ends: {commits}");
    assert_eq!(
        value(&all, "kairos_store_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert_eq!(value(&all, "kairos_store_commit_failures_total"), 0.0);
    assert_eq!(value(&all, "kairos_engine_queue_full_total"), 0.0);
    assert_eq!(
        value(&all, "kairos_auth_evictions_total{table=\"failed_logins\"}"),
        0.0
    );
    assert_eq!(value(&all, "kairos_jobs{state=\"idle\"}"), 2.0);
    assert_eq!(value(&all, "kairos_jobs{state=\"running\"}"), 0.0);
    let active = format!("{{{w},state=\"active\"}}");
    assert!(value(&all, &format!("kairos_worker_offered_cpus{active}")) > 0.0);
    assert!(value(&all, &format!("kairos_worker_offered_mem_bytes{active}")) > 0.0);
    assert_eq!(value(&all, &format!("kairos_worker_used_cpus{active}")), 0.0);
    // Requests are counted by route pattern, never by raw path.
    assert_eq!(
        value(
            &all,
            "kairos_http_requests_total{route=\"/v1/scheduler/job/{name}\",method=\"PUT\",status=\"204\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            "kairos_http_requests_total{route=\"/v1/scheduler/iso8601\",method=\"POST\",status=\"204\"}"
        ),
        2.0
    );
    assert!(!text.contains("/job/fine"), "a raw path leaked into a label");
    assert_eq!(value(&all, "kairos_job_successes_total{job=\"fine\"}"), 1.0);
    assert_eq!(value(&all, "kairos_job_failures_total{job=\"broken\"}"), 1.0);
    assert_eq!(value(&all, "kairos_job_failures_total{job=\"fine\"}"), 0.0);

    // Prometheus' own Accept header, and a plain text/plain one, get the same format.
    let scraper = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    for accept in ["text/plain", scraper] {
        let text = scrape(&h, "/metrics", Some(accept)).await;
        promtool_accepts(&["check", "metrics"], Some(&text)).await;
        let again = samples(&text);
        assert_eq!(value(&again, "kairos_leader"), 1.0, "{accept}");
        assert_eq!(value(&again, "kairos_jobs{state=\"idle\"}"), 2.0, "{accept}");
    }

    // Chronos' Codahale JSON stays the default, for Chronos' tools and browsers.
    for accept in [
        None,
        Some("application/json"),
        Some("application/json, text/plain, */*"),
    ] {
        let mut request = h.client.get(h.url("/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{accept:?}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["version"], "4.0.0", "{accept:?}");
        assert_eq!(
            body["counters"]["jobs.run.success.fine"]["count"], 1,
            "{accept:?}"
        );
    }
    let (status, body) = h.get("/metrics?format=json").await;
    assert_eq!((status, &body["version"]), (200, &json!("4.0.0")));

    // An unknown format is refused by name.
    let (status, body) = h.get("/metrics?format=xml").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "format", "{body}");
    assert!(body["message"].as_str().unwrap().contains("xml"), "{body}");
}

#[tokio::test]
async fn per_job_series_are_opt_in() {
    let h = Harness::start().await;
    h.create(json!({"name": "quiet", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;
    let text = scrape(&h, "/metrics?format=prometheus", None).await;
    promtool_accepts(&["check", "metrics"], Some(&text)).await;
    assert!(!text.contains("kairos_job_"), "{text}");
    assert!(!text.contains("quiet"), "{text}");
    assert_eq!(value(&samples(&text), "kairos_jobs{state=\"idle\"}"), 1.0);
}

#[tokio::test]
async fn json_logs_record_each_task_start_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("server")
        .args(["--log-format", "json", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--agent-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("KAIROS_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kairos starts");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the binary answers /ping", async || {
        client.get(format!("{base}/ping")).send().await.is_ok()
    })
    .await;
    let job = json!({"name": "logged", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"});
    let created = client
        .post(format!("{base}/v1/scheduler/iso8601"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 204);
    let run = client
        .put(format!("{base}/v1/scheduler/job/logged"))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status().as_u16(), 204);
    wait_until("the run succeeds", async || {
        let job: Value = client
            .get(format!("{base}/v1/scheduler/job/logged"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        job["successCount"] == 1
    })
    .await;
    // SAFETY: sending SIGTERM to our own child process.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("stops")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let find = |message: &str| -> Value {
        lines
            .iter()
            .find(|l| l["message"] == message && l["job"] == "logged")
            .cloned()
            .unwrap_or_else(|| panic!("no '{message}' line for the job in:\n{stderr}"))
    };
    let started = find("Task started.");
    let ended = find("Task ended.");
    for line in [&started, &ended] {
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(
            line["task"]
                .as_str()
                .is_some_and(|t| t.starts_with("ct:") && t.contains(":logged")),
            "{line}"
        );
        assert!(line["worker"].as_str().is_some_and(|w| !w.is_empty()), "{line}");
    }
    assert_eq!(started["task"], ended["task"]);
    assert_eq!(started["worker"], ended["worker"]);
    assert_eq!(ended["outcome"], "succeeded", "{ended}");
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

#[tokio::test]
async fn the_prometheus_config_and_alert_rules_are_valid_and_fire() {
    // The config reads its token from a file beside it, which promtool wants to exist: check a
    // copy with a token file made up for the test.
    let dir = tempfile::tempdir().unwrap();
    for file in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{file}")), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("kairos-token"), "made-up-token\n").unwrap();
    let config = dir.path().join("prometheus.yml");
    let printed = promtool_accepts(&["check", "config", config.to_str().unwrap()], None).await;
    assert!(printed.contains("1 rule files found"), "{printed}");
    let rules = deploy("prometheus/alerts.yml");
    let tests = deploy("prometheus/alerts_test.yml");
    let printed = promtool_accepts(&["check", "rules", rules.to_str().unwrap()], None).await;
    assert!(printed.contains("6 rules found"), "{printed}");
    // The rules' own unit tests: each alert fires on a series kairos really exports.
    promtool_accepts(&["test", "rules", tests.to_str().unwrap()], None).await;
    let alerts = std::fs::read_to_string(&rules).unwrap();
    for series in [
        "kairos_leader",
        "kairos_tasks_ended_total",
        "kairos_queue_depth",
        "kairos_scheduling_lag_seconds_bucket",
    ] {
        assert!(alerts.contains(series), "alerts.yml does not use {series}");
    }
}

/// `systemd-analyze verify` on the units, pointed at the binary just built (it checks that
/// `ExecStart` exists). It works offline; on a machine without systemd's tools there is nothing
/// to check with, which is said rather than hidden.
#[tokio::test]
async fn the_systemd_units_verify() {
    let Ok(which) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the units are not verified here");
        return;
    };
    assert!(which.status.success());
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for unit in ["kairos.service", "kairos-agent.service"] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}"))).unwrap();
        for option in [
            "ProtectSystem=full",
            "PrivateTmp=yes",
            "ProtectKernelTunables=yes",
        ] {
            assert!(text.lines().any(|l| l == option), "{unit} lacks {option}");
        }
        // Only in comments: it would bind every task (see the unit).
        assert!(!text.lines().any(|l| l.starts_with("NoNewPrivileges")), "{unit}");
        let path = dir.path().join(unit);
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/kairos", env!("CARGO_BIN_EXE_kairos")),
        )
        .unwrap();
        units.push(path);
    }
    let output = tokio::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // It warns about unknown keys and bad values but still exits 0, so its words count too.
    let about_ours: Vec<&str> = printed.lines().filter(|l| l.contains(".service")).collect();
    assert!(output.status.success() && about_ours.is_empty(), "{printed}");
}
