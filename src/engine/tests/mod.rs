//! Engine behaviour through its shell in tokio's paused time (hours of schedule pass in
//! milliseconds of real time), and the core on its own with explicit instants (`core.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::api::dto::{self, Defaults, Route};
use crate::clock;
use crate::job::TaskId;
use crate::store::MemoryStore;
use crate::store::{StoredJob, TaskState, Write};

fn config(dir: &std::path::Path) -> Config {
    Config {
        failure_retry: Duration::from_secs(60),
        default_epsilon: chrono::Duration::seconds(60),
        disable_after_failures: 0,
        kill_grace: Duration::from_secs(1),
        output_limit: 4096,
        sandbox_dir: dir.join("sandbox"),
        worker_name: "engine-test".to_owned(),
        worker_id: "engine-test".to_owned(),
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
        tokens: crate::auth::Tokens::default(),
        task_tokens: None,
        audit_retention: chrono::Duration::days(90),
        notify: crate::notify::Settings::default(),
        store_timeout: Duration::from_secs(30),
        lease: None,
    }
}

struct Fixture<S = MemoryStore> {
    engine: Handle,
    store: Arc<S>,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    start_on(MemoryStore::default()).await
}

async fn start_on<S: Store>(store: S) -> Fixture<S> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store);
    let engine = super::start(config(dir.path()), store.clone()).await.unwrap();
    Fixture {
        engine,
        store,
        _dir: dir,
    }
}

/// A memory store whose next commits fail on request, as a store that lost its disk or network.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: std::sync::atomic::AtomicU32,
}

impl FlakyStore {
    fn fail_next(&self, commits: u32) {
        self.failing.store(commits, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Store for FlakyStore {
    async fn commit(&self, batch: &[Write]) -> Result<store::CommitReport, store::Error> {
        let failing = &self.failing;
        let fail = failing
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if fail {
            return Err(store::Error::Corrupt {
                what: "the disk".to_owned(),
                reason: "injected failure".to_owned(),
            });
        }
        self.inner.commit(batch).await
    }
    async fn load_jobs(&self) -> Result<Vec<StoredJob>, store::Error> {
        self.inner.load_jobs().await
    }
    async fn load_open_tasks(&self) -> Result<Vec<TaskRecord>, store::Error> {
        self.inner.load_open_tasks().await
    }
    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, store::Error> {
        self.inner.task(id).await
    }
    async fn load_tokens(&self) -> Result<Vec<store::StoredToken>, store::Error> {
        self.inner.load_tokens().await
    }
    async fn audit(&self, query: &store::AuditQuery) -> Result<Vec<store::AuditEntry>, store::Error> {
        self.inner.audit(query).await
    }
    async fn launched_through(&self) -> Result<i64, store::Error> {
        self.inner.launched_through().await
    }
    async fn paused_since(&self) -> Result<Option<i64>, store::Error> {
        self.inner.paused_since().await
    }
    async fn job_tasks(&self, job: &str, limit: u32) -> Result<Vec<TaskRecord>, store::Error> {
        self.inner.job_tasks(job, limit).await
    }
    async fn recent_durations(&self, per_job: u32) -> Result<Vec<(String, f64)>, store::Error> {
        self.inner.recent_durations(per_job).await
    }
    async fn prune_history(&self, keep_per_job: u32) -> Result<u64, store::Error> {
        self.inner.prune_history(keep_per_job).await
    }
    async fn pending_notices(&self, limit: u32) -> Result<Vec<store::StoredNotice>, store::Error> {
        self.inner.pending_notices(limit).await
    }
    async fn prune_claims(&self, before_ms: i64) -> Result<u64, store::Error> {
        self.inner.prune_claims(before_ms).await
    }
}

/// A job as the API reads it, with the server's defaults.
fn parse(body: serde_json::Value) -> (Job, Provided) {
    let defaults = Defaults {
        cpus: 0.1,
        mem: 128.0,
        disk: 256.0,
        run_as_user: "root".to_owned(),
        epsilon: "PT60S".to_owned(),
        allow_privileged: false,
    };
    dto::parse_job(body.to_string().as_bytes(), Route::Iso8601, &defaults).unwrap()
}

impl<S: Store> Fixture<S> {
    async fn upsert(&self, body: serde_json::Value) {
        let (job, provided) = parse(body);
        self.engine
            .call(|reply| Event::Upsert {
                who: None,
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
            who: None,
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

#[tokio::test(start_paused = true)]
async fn a_reply_waits_until_its_change_is_committed_and_failed_commits_are_retried() {
    let f = start_on(FlakyStore::default()).await;
    f.upsert(
        serde_json::json!({"name": "manual", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    f.store.fail_next(3);
    let asked = tokio::time::Instant::now();
    f.engine
        .call(|reply| Event::RunNow {
            who: None,
            name: "manual".to_owned(),
            arguments: None,
            reply,
        })
        .await
        .unwrap();
    // The writer backed off 50, 100 and 200 ms before the fourth attempt went through, and only
    // then was the request answered: by then the store holds the task, started.
    assert!(
        asked.elapsed() >= Duration::from_millis(350),
        "{:?}",
        asked.elapsed()
    );
    let tasks = f.tasks("manual").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_ne!(
        tasks[0].state,
        TaskState::Queued,
        "the start was recorded with the run"
    );
    let job = f.wait("manual", |j| j.success_count == 1).await;
    assert_eq!(job.error_count, 0);
    let failures = f.engine.read(|s| s.metrics.store_failures).await.unwrap();
    assert_eq!(failures, 3);
}

#[tokio::test(start_paused = true)]
async fn a_run_another_scheduler_claimed_is_not_run_here() {
    let f = start().await;
    let first = clock::now();
    let hour = chrono::Duration::hours(1);
    // Another leader recorded the first occurrence before this one took over.
    f.store
        .commit(&[Write::ClaimRun {
            job: "claimed".to_owned(),
            due_ms: first.timestamp_millis(),
            task_id: TaskId::new(first.timestamp_millis(), 0, "elsewhere", ""),
        }])
        .await
        .unwrap();
    f.upsert(serde_json::json!({"name": "claimed", "command": "true", "schedule": format!("R2/{}/PT1H", iso(first))})).await;
    let job = f.wait("claimed", |j| j.success_count == 1).await;
    assert!(job.schedule.as_deref().unwrap().starts_with("R0/"), "{job:?}");
    let dues: Vec<i64> = f.tasks("claimed").await.iter().map(|t| t.due_ms).collect();
    assert_eq!(
        dues,
        [(first + hour).timestamp_millis()],
        "only the unclaimed run ran here"
    );
    let started = f.engine.read(|s| s.metrics.tasks_started).await.unwrap();
    assert_eq!(started, 1);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_run_is_recorded_ahead_and_launches_at_its_instant() {
    let f = start().await;
    let due = clock::now() + chrono::Duration::hours(1);
    let marker = f._dir.path().join("started");
    let command = format!("touch {}", marker.display());
    f.upsert(serde_json::json!({"name": "punctual", "command": command, "schedule": format!("R1/{}/PT1H", iso(due))}))
        .await;
    // Just before the instant the run is recorded as started, but its process has not run.
    tokio::time::sleep_until(
        tokio::time::Instant::now() + Duration::from_secs(3600) - Duration::from_millis(5),
    )
    .await;
    let tasks = f.tasks("punctual").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].state, TaskState::Running);
    assert_eq!(tasks[0].started_ms, Some(due.timestamp_millis()));
    assert!(!marker.exists(), "the process started early");
    f.wait("punctual", |j| j.success_count == 1).await;
    assert!(marker.exists());
    assert!(clock::now() >= due);
}

#[tokio::test(start_paused = true)]
async fn scheduled_runs_wait_while_the_store_fails_instead_of_piling_up() {
    let f = start_on(FlakyStore::default()).await;
    let first = clock::now() + chrono::Duration::seconds(10);
    f.upsert(serde_json::json!({"name": "often", "command": "true", "epsilon": "PT10M", "schedule": format!("R/{}/PT1S", iso(first))}))
        .await;
    // About 75 s of failing commits (the writer backs off up to 5 s between attempts).
    f.store.fail_next(20);
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (open, failing) = f
        .engine
        .read(|s| {
            let open = s.tasks.values().filter(|t| t.record.job == "often").count();
            (open, s.store_failing())
        })
        .await
        .unwrap();
    assert!(failing, "the failure shows while it lasts");
    assert!(open <= 2, "{open} runs piled up behind the failing store");
    // Once the store takes writes again, the runs resume.
    let job = f.wait("often", |j| j.success_count >= 3).await;
    assert_eq!(job.error_count, 0);
    // The hourly pruning (its first pass comes after a minute; the audit log, the notification
    // outbox and the claims each commit) may have met some of the failures.
    let failures = f.engine.read(|s| s.metrics.store_failures).await.unwrap();
    assert!((17..=20).contains(&failures), "{failures}");
}

mod core;
mod notices;
mod policies;
mod runs;
