//! A full disk: the data directory is a 24 MiB tmpfs made by the test, filled to the last byte
//! while a client keeps creating 20 KB jobs and a task runs. Writes must get `503` within a bound
//! instead of hanging, reads must keep working, the task's end must be recorded once space
//! returns, the server must recover without a restart, and nothing acknowledged may be lost.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Proc, Rng, Verdict, create, get_json, within};

/// `--store-timeout` (5 s); the rest is slack for a loaded two-core machine.
const ANSWER_BOUND: Duration = Duration::from_secs(7);

/// A size-limited tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the README's test command runs as root in CI)"
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros into `path` until the file system refuses more.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0;
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0u8; chunk];
        while file.write_all(&block).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}

async fn status_of(request: reqwest::RequestBuilder) -> (Duration, Option<u16>) {
    let began = Instant::now();
    let status = request.send().await.ok().map(|r| r.status().as_u16());
    (began.elapsed(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_and_recovers_without_loss() {
    let _serial = super::SERIAL.lock().await;
    let rng = Rng::new();
    let mut verdict = Verdict::new("full-disk", rng.seed());
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let data = run.join("kairos-data");
    let _tmpfs = Tmpfs::mount(&data, "24m");
    let mut server = Proc::server(&run, &[]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    server.wait_ready(&client).await;
    let base = server.base();
    let marker = dir.path().join("long.done");
    let long = json!({"name": "long", "command": format!("sleep 4; echo done > {}", marker.display()),
        "schedule": "R0/2099-01-01T00:00:00Z/P1D", "cpus": 0.1, "disk": 1});
    create(&client, &base, &long).await;
    let started = client
        .put(format!("{base}/v1/scheduler/job/long"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 204);
    let running = within(Duration::from_secs(10), async || {
        state_of(&client, &base, "long")
            .await
            .is_some_and(|s| s.contains("running"))
    })
    .await;
    assert!(
        running.is_some(),
        "the long task never ran: {}",
        super::tail(&server.log)
    );

    let filled = fill(&data.join("filler"));
    verdict.note(
        "filled the data directory",
        format!("{} bytes of zeros; 24 MiB tmpfs", filled),
    );
    let pad = "x".repeat(20_000);
    let mut acked = Vec::new();
    let mut answers = Vec::new();
    let mut refused_in_a_row = 0;
    for i in 0..200 {
        let body = json!({"name": format!("full-{i}"), "command": "true", "description": pad,
            "schedule": "R/2099-01-01T00:00:00Z/P1D"});
        let answer = status_of(client.post(format!("{base}/v1/scheduler/iso8601")).json(&body)).await;
        if answer.1 == Some(204) {
            acked.push(format!("full-{i}"));
            refused_in_a_row = 0;
        } else {
            refused_in_a_row += 1;
        }
        answers.push(answer);
        if refused_in_a_row >= 10 {
            break;
        }
    }
    let slowest = answers.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let refused = answers.iter().filter(|(_, s)| *s == Some(503)).count();
    let odd: Vec<String> = answers
        .iter()
        .filter(|(_, s)| !matches!(s, Some(204) | Some(503)))
        .map(|(t, s)| format!("{s:?} after {t:?}"))
        .collect();
    verdict.check(
        "writes get 503 when the disk is full",
        refused >= 10,
        format!(
            "{} creates: {} acknowledged, {refused} refused with 503",
            answers.len(),
            acked.len()
        ),
    );
    verdict.check(
        &format!("every write answered within {ANSWER_BOUND:?}"),
        slowest <= ANSWER_BOUND,
        format!("slowest {slowest:?}"),
    );
    verdict.check("answers are 204 or 503 only", odd.is_empty(), format!("{odd:?}"));
    let refusal = client
        .post(format!("{base}/v1/scheduler/iso8601"))
        .json(&json!({"name": "one-more", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"}))
        .send()
        .await
        .unwrap();
    let message: Value = refusal.json().await.unwrap_or_default();
    verdict.check(
        "the refusal says why",
        message["message"].as_str().is_some_and(|m| m.contains("store")),
        message,
    );
    let (read_time, read) = status_of(client.get(format!("{base}/v1/scheduler/jobs"))).await;
    let (history_time, history) = status_of(client.get(format!("{base}/v1/scheduler/job/long/tasks"))).await;
    verdict.check(
        "reads keep working",
        read == Some(200) && read_time < ANSWER_BOUND && history == Some(200) && history_time < ANSWER_BOUND,
        format!("jobs {read:?} in {read_time:?}; history {history:?} in {history_time:?}"),
    );
    let ended = within(Duration::from_secs(15), async || marker.exists()).await;
    verdict.check("the task ended while the disk was full", ended.is_some(), "");

    std::fs::remove_file(data.join("filler")).unwrap();
    let freed = Instant::now();
    let recovered = within(Duration::from_secs(30), async || {
        let body = json!({"name": "after", "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
        status_of(client.post(format!("{base}/v1/scheduler/iso8601")).json(&body))
            .await
            .1
            == Some(204)
    })
    .await;
    verdict.check(
        "writes recover without a restart",
        recovered.is_some(),
        format!(
            "first 204 {:?} after space returned",
            recovered.map(|_| freed.elapsed())
        ),
    );
    let recorded = within(Duration::from_secs(15), async || {
        job(&client, &base, "long")
            .await
            .is_some_and(|j| j["successCount"] == 1)
    })
    .await;
    verdict.check(
        "the task's end is recorded once space returns",
        recorded.is_some(),
        "",
    );

    // A hard stop, then everything acknowledged must be there.
    server.restart().await;
    server.wait_ready(&client).await;
    let names = super::job_names(&client, &base).await;
    let mut expected = acked.clone();
    expected.push("after".to_owned());
    let missing: Vec<&String> = expected.iter().filter(|n| !names.contains(n)).collect();
    verdict.check(
        "acknowledged creates survive a kill -9",
        missing.is_empty(),
        format!("{} acknowledged; missing {missing:?}", expected.len()),
    );
    let long_after = job(&client, &base, "long").await;
    verdict.check(
        "the task's end survives it too",
        long_after.as_ref().is_some_and(|j| j["successCount"] == 1),
        long_after.map(|j| j["successCount"].clone()).unwrap_or_default(),
    );
    server.kill().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("kairos.db").display()))
        .await
        .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    verdict.check("PRAGMA integrity_check", integrity == "ok", &integrity);
    verdict.finish();
}

async fn job(client: &reqwest::Client, base: &str, name: &str) -> Option<Value> {
    let jobs = get_json(client, format!("{base}/v1/scheduler/jobs/search?name={name}")).await?;
    jobs.as_array()?.iter().find(|j| j["name"] == name).cloned()
}

/// A job's live state from `/jobs/summary` (`idle`, `queued`, `N running`).
async fn state_of(client: &reqwest::Client, base: &str, name: &str) -> Option<String> {
    let summary = get_json(client, format!("{base}/v1/scheduler/jobs/summary")).await?;
    summary["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["name"] == name)
        .and_then(|j| j["state"].as_str().map(str::to_owned))
}
