//! A crash loop on SQLite: the server is killed with SIGKILL at random moments, twenty times, while
//! clients create, update and delete jobs, 200 jobs run every second and async tasks are
//! completed. Acknowledged changes must survive, unacknowledged ones exist whole or not at all,
//! every instant runs once, and nothing stays open from before the last restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Proc, Rng, Ticks, Verdict, create, long, runs, within};

/// What a client was told about one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// 2xx: the change is durable.
    Acked,
    /// Refused with a 4xx: not applied.
    Rejected,
    /// Never reached the server (connection refused): not applied; worth sending again.
    NotReached,
    /// No answer, or a 5xx: it may or may not have been applied.
    Unknown,
}

/// One change a client sent: to `name`, setting version `version` (`None`: a delete).
#[derive(Debug, Clone)]
struct Change {
    name: String,
    version: Option<u64>,
    told: Told,
}

const CLIENTS: usize = 64;
const NAMES_PER_CLIENT: usize = 4;
const TICK_JOBS: usize = 200;
const ASYNC_JOBS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_loop_on_sqlite_loses_and_repeats_nothing() {
    let _serial = super::SERIAL.lock().await;
    let rounds = if long() { 100 } else { 20 };
    let mut rng = Rng::new();
    let mut verdict = Verdict::new("crash-loop-sqlite", rng.seed());
    let dir = tempfile::tempdir().unwrap();
    let asyncs = dir.path().join("async.log");
    // Pruning would forget the lost attempts the checker reads; retries come after a second.
    let mut server = Proc::server(
        &dir.path().join("run"),
        &["--task-history-per-job", "100000", "--failure-retry", "1"],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    server.wait_ready(&client).await;
    let base = server.base();

    let ticks = Ticks::create(&client, &base, dir.path(), TICK_JOBS, Duration::from_secs(3)).await;
    let first_ms = ticks.first_ms;
    for i in 0..ASYNC_JOBS {
        let start = chrono::DateTime::from_timestamp_millis(first_ms)
            .unwrap()
            .to_rfc3339();
        let body = json!({
            "name": format!("async-{i}"), "async": true, "cpus": 0.01, "mem": 1, "disk": 0,
            "command": format!("echo \"$mesos_task_id\" >> {}", asyncs.display()),
            "schedule": format!("R/{start}/PT2S"), "epsilon": "PT60S",
        });
        create(&client, &base, &body).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(Mutex::new(Vec::<Change>::new()));
    let version = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, stop, changes, version) = (
            client.clone(),
            base.clone(),
            stop.clone(),
            changes.clone(),
            version.clone(),
        );
        let seed = rng.next();
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(seed.max(1));
            while !stop.load(Ordering::Relaxed) {
                let name = format!("c{c}-{}", rng.range(0, NAMES_PER_CLIENT as u64));
                let change = if rng.range(0, 5) == 0 {
                    let told = send(client.delete(format!("{base}/v1/scheduler/job/{name}"))).await;
                    Change {
                        name,
                        version: None,
                        told,
                    }
                } else {
                    let v = version.fetch_add(1, Ordering::Relaxed);
                    let request = client
                        .post(format!("{base}/v1/scheduler/iso8601"))
                        .json(&client_job(&name, v));
                    Change {
                        name,
                        version: Some(v),
                        told: send(request).await,
                    }
                };
                let refused = change.told != Told::Acked;
                changes.lock().await.push(change);
                if refused {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let completed = Arc::new(Mutex::new(HashMap::<String, Told>::new()));
    let completer = {
        let (client, base, stop, completed, asyncs) = (
            client.clone(),
            base.clone(),
            stop.clone(),
            completed.clone(),
            asyncs.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                complete_new(&client, &base, &asyncs, &completed).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The nemesis.
    tokio::time::sleep(Duration::from_millis(first_ms as u64 % 1000 + 3000)).await;
    let mut last_restart_ms = 0;
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 3000))).await;
        server.restart().await;
        last_restart_ms = chrono::Utc::now().timestamp_millis();
        server.wait_ready(&client).await;
    }
    let last_ms = (chrono::Utc::now().timestamp_millis() / 1000) * 1000;
    verdict.note("kill -9 rounds", rounds);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    completer.await.unwrap();
    ticks.settle(&mut verdict, last_ms, Duration::from_secs(90)).await;
    // Complete what ran meanwhile, until every async run written is answered.
    let answered = within(Duration::from_secs(30), async || {
        complete_new(&client, &base, &asyncs, &completed).await;
        let done = completed.lock().await;
        super::runs(&asyncs).iter().all(|r| {
            done.get(&r.task_id())
                .is_some_and(|t| matches!(t, Told::Acked | Told::Rejected))
        })
    })
    .await;
    verdict.check("every async run is answered", answered.is_some(), "");

    let changes = changes.lock().await.clone();
    check_changes(&mut verdict, &client, &base, &changes).await;
    let db = server.dir.join("kairos-data/kairos.db");
    let states = task_states(&db).await;
    ticks.check(&mut verdict, last_ms, &states);
    let completed = completed.lock().await.clone();
    let acked: Vec<&String> = completed
        .iter()
        .filter(|(_, t)| **t == Told::Acked)
        .map(|(id, _)| id)
        .collect();
    let unfinished: Vec<String> = acked
        .iter()
        .filter(|id| states.get(id.as_str()).is_none_or(|s| s != "finished"))
        .map(|id| format!("{id} ({:?})", states.get(id.as_str())))
        .collect();
    verdict.check(
        "acknowledged completions are recorded",
        unfinished.is_empty(),
        format!(
            "{} acknowledged; not finished: {:?}",
            acked.len(),
            &unfinished[..unfinished.len().min(5)]
        ),
    );
    let stale: Vec<String> = open_tasks_created_before(&db, last_restart_ms)
        .await
        .into_iter()
        .map(|task| {
            let id = task.split(' ').next().unwrap_or_default().to_owned();
            format!("{task} (completion: {:?})", completed.get(&id))
        })
        .collect();
    verdict.check(
        "no task left open from before the last restart",
        stale.is_empty(),
        format!("{} {stale:?}", stale.len()),
    );
    if !stale.is_empty() {
        // For the reader of a failure: every open async task, oldest first.
        let open = open_tasks_created_before(&db, i64::MAX).await;
        let asyncs: Vec<&String> = open.iter().filter(|t| t.contains(":async-")).collect();
        verdict.note("open async tasks at the end", format!("{asyncs:?}"));
    }
    server.kill().await;
    verdict.finish();
}

/// The body of client job `name` at version `v`: far in the future, so it never runs; its
/// command and description both carry the version, so a half-written job would show.
fn client_job(name: &str, v: u64) -> Value {
    json!({
        "name": name,
        "command": format!("echo v{v}"),
        "description": format!("v{v}"),
        "schedule": "R/2099-01-01T00:00:00Z/P1D",
        "owner": "faults@example.com",
    })
}

async fn send(request: reqwest::RequestBuilder) -> Told {
    match request.send().await {
        Ok(response) if response.status().is_success() => Told::Acked,
        Ok(response) if response.status().is_client_error() => Told::Rejected,
        Ok(_) => Told::Unknown,
        Err(error) if error.is_connect() => Told::NotReached,
        Err(_) => Told::Unknown,
    }
}

/// Completes every async run written to `log` that has no definite answer yet.
async fn complete_new(
    client: &reqwest::Client,
    base: &str,
    log: &Path,
    completed: &Mutex<HashMap<String, Told>>,
) {
    for run in runs(log) {
        let id = run.task_id();
        if completed
            .lock()
            .await
            .get(&id)
            .is_some_and(|t| matches!(t, Told::Acked | Told::Rejected))
        {
            continue;
        }
        let request = client
            .put(format!("{base}/v1/scheduler/task/{id}"))
            .json(&json!({"statusCode": 0}));
        let told = send(request).await;
        completed.lock().await.insert(id, told);
    }
}

/// Every acknowledged change is there (or a later change that may have applied), and every
/// client job present is whole: a version some client sent, in both fields.
async fn check_changes(verdict: &mut Verdict, client: &reqwest::Client, base: &str, changes: &[Change]) {
    let jobs = super::jobs(client, base).await;
    let present: HashMap<String, &Value> = jobs
        .iter()
        .filter_map(|j| Some((j["name"].as_str()?.to_owned(), j)))
        .filter(|(name, _)| name.starts_with('c'))
        .collect();
    let mut by_name: HashMap<&str, Vec<&Change>> = HashMap::new();
    for change in changes {
        by_name.entry(&change.name).or_default().push(change);
    }
    let count = |t: Told| changes.iter().filter(|c| c.told == t).count();
    verdict.note(
        "client changes",
        format!(
            "{} sent: {} acknowledged, {} refused, {} not reached, {} unknown",
            changes.len(),
            count(Told::Acked),
            count(Told::Rejected),
            count(Told::NotReached),
            count(Told::Unknown)
        ),
    );
    let mut lost = Vec::new();
    let mut torn = Vec::new();
    for (name, history) in &by_name {
        // What the last acknowledged change left, then whatever any later unknown one did.
        let last_acked = history.iter().rposition(|c| c.told == Told::Acked);
        let mut allowed: Vec<Option<u64>> = Vec::new();
        match last_acked {
            Some(i) => allowed.push(history[i].version),
            // Nothing acknowledged: absent, or any change that may have applied.
            None => allowed.push(None),
        }
        let from = last_acked.map_or(0, |i| i + 1);
        allowed.extend(
            history[from..]
                .iter()
                .filter(|c| c.told == Told::Unknown)
                .map(|c| c.version),
        );
        let found = present.get(*name).map(|job| {
            let description = job["description"].as_str().unwrap_or_default().to_owned();
            let command = job["command"].as_str().unwrap_or_default().to_owned();
            if command != format!("echo {description}") {
                torn.push(format!("{name}: {command} / {description}"));
            }
            description.trim_start_matches('v').parse::<u64>().ok()
        });
        let found = found.flatten();
        if !allowed.contains(&found) {
            lost.push(format!("{name}: found {found:?}, allowed {allowed:?}"));
        }
    }
    verdict.check(
        "acknowledged changes survive",
        lost.is_empty(),
        format!(
            "{} names checked; {} wrong {:?}",
            by_name.len(),
            lost.len(),
            &lost[..lost.len().min(5)]
        ),
    );
    verdict.check("nothing half-written", torn.is_empty(), format!("{torn:?}"));
}

/// Every stored task's state by id, read from the database file beside the running server.
async fn task_states(db: &Path) -> HashMap<String, String> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, state FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}

/// Tasks still open that were created before `before_ms`.
async fn open_tasks_created_before(db: &Path, before_ms: i64) -> Vec<String> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, state FROM tasks WHERE state IN ('queued', 'running', 'waiting') AND created_ms < ?",
    )
    .bind(before_ms)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, state)| format!("{id} {state}"))
        .collect()
}
