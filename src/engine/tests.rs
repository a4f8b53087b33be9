//! Engine behaviour in tokio's paused time: hours of schedule pass in milliseconds of real time.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::api::dto::{self, Defaults, Route};
use crate::store::MemoryStore;

fn config(dir: &std::path::Path) -> Config {
    Config {
        failure_retry: Duration::from_secs(60),
        default_epsilon: chrono::Duration::seconds(60),
        disable_after_failures: 0,
        kill_grace: Duration::from_secs(1),
        output_limit: 4096,
        sandbox_dir: dir.join("sandbox"),
        worker_name: "engine-test".to_owned(),
        job_history_limit: 5,
        task_history_per_job: 100,
        local_worker: Some(LocalWorker {
            resources: Resources {
                cpus: 4.0,
                mem: 4096.0,
                disk: 10_000.0,
            },
            attributes: Vec::new(),
        }),
        worker_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_secs(1),
        fetch_cache_dir: dir.join("cache"),
        fetch_timeout: Duration::from_secs(10),
    }
}

struct Fixture {
    engine: Handle,
    store: Arc<MemoryStore>,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::default());
    let engine = super::start(config(dir.path()), store.clone()).await.unwrap();
    Fixture {
        engine,
        store,
        _dir: dir,
    }
}

impl Fixture {
    async fn upsert(&self, body: serde_json::Value) {
        let defaults = Defaults {
            cpus: 0.1,
            mem: 128.0,
            disk: 256.0,
            run_as_user: "root".to_owned(),
            epsilon: "PT60S".to_owned(),
            allow_privileged: false,
        };
        let (job, counters) = dto::parse_job(body.to_string().as_bytes(), Route::Iso8601, &defaults).unwrap();
        let provided = Provided { counters };
        self.engine
            .call(|reply| Event::Upsert {
                job: Box::new(job),
                provided,
                reply,
            })
            .await
            .unwrap();
    }

    async fn job(&self, name: &str) -> Job {
        let name = name.to_owned();
        self.engine
            .read(move |s| s.jobs[&name].job.clone())
            .await
            .unwrap()
    }

    /// Waits (bounded in real time, since processes run in real time) until `check` holds.
    async fn wait(&self, name: &str, check: impl Fn(&Job) -> bool) -> Job {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.job(name).await;
            if check(&job) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out; last seen {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn tasks(&self, name: &str) -> Vec<TaskRecord> {
        let mut tasks = self.store.job_tasks(name, 100).await.unwrap();
        tasks.reverse();
        tasks
    }
}

fn iso(t: DateTime<Utc>) -> String {
    clock::iso(t)
}

#[tokio::test(start_paused = true)]
async fn hourly_r3_runs_three_times_an_hour_apart() {
    let f = start().await;
    let start_at = clock::now();
    f.upsert(serde_json::json!({"name": "hourly", "command": "true", "schedule": format!("R3/{}/PT1H", iso(start_at))})).await;
    let job = f.wait("hourly", |j| j.success_count == 3).await;
    assert!(job.schedule.as_deref().unwrap().starts_with("R0/"), "{job:?}");
    let dues: Vec<i64> = f.tasks("hourly").await.iter().map(|t| t.due_ms).collect();
    let hour = 3_600_000;
    let first = start_at.timestamp_millis();
    assert_eq!(dues, [first, first + hour, first + 2 * hour]);
    assert!(clock::now() >= start_at + chrono::Duration::hours(2));
}

#[tokio::test(start_paused = true)]
async fn occurrences_later_than_epsilon_are_skipped_without_using_repeats() {
    let f = start().await;
    let now = clock::now();
    let start_at = now - chrono::Duration::minutes(90);
    f.upsert(serde_json::json!({"name": "late", "command": "true", "epsilon": "PT60S", "schedule": format!("R5/{}/PT1H", iso(start_at))})).await;
    // The occurrences 90 and 30 minutes ago are too late; the next one is in 30 minutes.
    let job = f.wait("late", |j| j.success_count == 1).await;
    let tasks = f.tasks("late").await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0].due_ms,
        (start_at + chrono::Duration::hours(2)).timestamp_millis()
    );
    assert!(job.schedule.as_deref().unwrap().starts_with("R4/"), "{job:?}");
}

#[tokio::test(start_paused = true)]
async fn an_occurrence_within_epsilon_still_runs() {
    let f = start().await;
    let start_at = clock::now() - chrono::Duration::seconds(30);
    f.upsert(serde_json::json!({"name": "recent", "command": "true", "epsilon": "PT60S", "schedule": format!("R1/{}/PT1H", iso(start_at))})).await;
    f.wait("recent", |j| j.success_count == 1).await;
    assert_eq!(f.tasks("recent").await[0].due_ms, start_at.timestamp_millis());
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_the_failure_retry_delay() {
    let f = start().await;
    f.upsert(serde_json::json!({"name": "fails", "command": "exit 3", "retries": 1, "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
    f.engine
        .call(|reply| Event::RunNow {
            name: "fails".to_owned(),
            arguments: None,
            reply,
        })
        .await
        .unwrap();
    let job = f.wait("fails", |j| j.error_count == 1).await;
    assert_eq!(job.errors_since_last_success, 1);
    let tasks = f.tasks("fails").await;
    assert_eq!(tasks.iter().map(|t| t.attempt).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(tasks[1].due_ms - tasks[0].finished_ms.unwrap(), 60_000);
    assert!(tasks[1].started_ms.unwrap() >= tasks[1].due_ms);
}

#[tokio::test(start_paused = true)]
async fn disable_after_failures_stops_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::default());
    let mut cfg = config(dir.path());
    cfg.disable_after_failures = 2;
    let engine = super::start(cfg, store.clone()).await.unwrap();
    let f = Fixture {
        engine,
        store,
        _dir: dir,
    };
    let start_at = clock::now();
    f.upsert(serde_json::json!({"name": "broken", "command": "exit 1", "retries": 0, "schedule": format!("R/{}/PT1M", iso(start_at))})).await;
    let job = f.wait("broken", |j| j.disabled).await;
    assert_eq!(job.error_count, 2);
    // Ten minutes of schedule later, nothing more has run.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(f.job("broken").await.error_count, 2);
}
