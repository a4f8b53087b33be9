//! Runs are never lost, replayed or overlapping: a test for each way they were (each failed
//! before its fix), and one property over random interleavings.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

impl<S: Store> Fixture<S> {
    async fn run_now(&self, name: &str, arguments: Option<&str>) {
        let (name, arguments) = (name.to_owned(), arguments.map(str::to_owned));
        self.engine
            .call(|reply| Event::RunNow {
                who: None,
                name,
                arguments,
                reply,
            })
            .await
            .unwrap();
    }

    async fn complete(&self, task_id: &TaskId, status_code: i64) -> Result<(), Error> {
        let task_id = task_id.clone();
        self.engine
            .call(|reply| Event::Complete {
                who: None,
                task_id,
                status_code,
                reply,
            })
            .await
    }

    /// The job's open tasks in memory: (state, due_ms) of each.
    async fn open(&self, name: &str) -> Vec<(TaskState, i64)> {
        let name = name.to_owned();
        self.engine
            .read(move |s| {
                let mut open: Vec<(TaskState, i64)> = s
                    .tasks
                    .values()
                    .filter(|t| t.record.job == name)
                    .map(|t| (t.record.state, t.record.due_ms))
                    .collect();
                open.sort_by_key(|t| t.1);
                open
            })
            .await
            .unwrap()
    }
}

/// A restart on the same store, as after kill -9 (`abandon`) or a clean stop (`shutdown`).
async fn restart_on<S: Store>(f: Fixture<S>, clean: bool) -> Fixture<S> {
    if clean {
        f.engine.shutdown().await;
    } else {
        f.engine.abandon().await;
    }
    let engine = crate::engine::start(config(f._dir.path()), f.store.clone())
        .await
        .unwrap();
    Fixture { engine, ..f }
}

/// A command that blocks until `gate` exists, then exits with `code`.
fn gated(gate: &std::path::Path, code: i32) -> String {
    format!(
        "while [ ! -e {} ]; do sleep 0.01; done; exit {code}",
        gate.display()
    )
}

#[tokio::test(start_paused = true)]
async fn a_crash_in_the_lead_window_runs_the_occurrence_after_the_restart() {
    let f = start().await;
    let due = clock::now() + chrono::Duration::hours(1);
    let marker = f._dir.path().join("ran");
    f.upsert(
        serde_json::json!({"name": "lead", "command": format!("echo $mesos_task_id >> {}", marker.display()),
        "retries": 0, "schedule": format!("R2/{}/PT1H", iso(due))}),
    )
    .await;
    // 50 ms before the instant its start is recorded, and the scheduler dies.
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(3_600_000 - 50)).await;
    assert_eq!(f.tasks("lead").await[0].state, TaskState::Running);
    let f = restart_on(f, false).await;
    let job = f.wait("lead", |j| j.success_count == 1).await;
    assert_eq!((job.error_count, job.success_count), (0, 1), "{job:?}");
    let tasks = f.tasks("lead").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!((tasks[0].due_ms, tasks[0].attempt), (due.timestamp_millis(), 0));
    assert!(
        tasks[0].started_ms.unwrap() >= due.timestamp_millis(),
        "not early"
    );
    assert_eq!(lines_of(&marker).len(), 1, "ran once");
}

#[tokio::test(start_paused = true)]
async fn a_stop_just_before_an_instant_launches_nothing_and_the_next_start_runs_it() {
    let f = start().await;
    let due = clock::now() + chrono::Duration::hours(1);
    let marker = f._dir.path().join("ran");
    f.upsert(
        serde_json::json!({"name": "stop", "command": format!("echo $mesos_task_id >> {}", marker.display()),
        "retries": 0, "schedule": format!("R2/{}/PT1H", iso(due))}),
    )
    .await;
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(3_600_000 - 30)).await;
    // The server begins to stop 30 ms before the instant and is still answering at it.
    f.engine.quiesce().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!marker.exists(), "launched during the stop");
    let f = restart_on(f, true).await;
    let job = f.wait("stop", |j| j.success_count == 1).await;
    assert_eq!(job.error_count, 0, "{job:?}");
    let tasks = f.tasks("stop").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].due_ms, due.timestamp_millis());
    assert_eq!(lines_of(&marker).len(), 1);
}

fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn only_async_jobs_take_a_completion_and_it_holds_the_slot_until_the_process_ends() {
    let f = start().await;
    let gate = f._dir.path().join("gate");
    f.upsert(serde_json::json!({"name": "plain", "command": gated(&gate, 3), "retries": 0, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    f.run_now("plain", None).await;
    let task = f.wait_task("plain", TaskState::Running).await;
    let refused = f.complete(&task, 0).await.unwrap_err();
    assert!(matches!(refused, Error::Invalid { .. }), "{refused}");

    f.upsert(
        serde_json::json!({"name": "later", "command": gated(&gate, 0), "async": true, "retries": 1,
        "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    f.run_now("later", None).await;
    let task = f.wait_task("later", TaskState::Running).await;
    f.complete(&task, 1).await.unwrap();
    // The retry waits for the process: ten minutes later the first task still holds the slot.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(f.open("later").await.len(), 1, "{:?}", f.open("later").await);
    assert_eq!(f.open("later").await[0].0, TaskState::Running);
    std::fs::write(&gate, "").unwrap();
    f.wait("plain", |j| j.error_count == 1).await;
    let first = loop {
        let tasks = f.tasks("later").await;
        if !tasks[0].state.is_open() {
            break tasks[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(first.state, TaskState::Failed);
    assert_eq!(first.exit_code, Some(1), "the status given, not the process's 0");
    assert_eq!(first.message, "completed asynchronously with status 1");
}

impl<S: Store> Fixture<S> {
    /// Waits until the job's newest task is in `state`; returns its id.
    async fn wait_task(&self, name: &str, state: TaskState) -> TaskId {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = self.tasks(name).await;
            if let Some(t) = tasks.last().filter(|t| t.state == state) {
                return t.id.clone();
            }
            assert!(std::time::Instant::now() < deadline, "{tasks:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn enabling_a_job_again_does_not_replay_what_fell_due_while_it_was_disabled() {
    let f = start().await;
    let first = clock::now() + chrono::Duration::seconds(1);
    let schedule = format!("R5/{}/PT1S", iso(first));
    f.upsert(
        serde_json::json!({"name": "paused", "command": "true", "disabled": true, "schedule": schedule}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let enabled_at = clock::now();
    f.upsert(
        serde_json::json!({"name": "paused", "command": "true", "disabled": false, "schedule": schedule}),
    )
    .await;
    f.wait("paused", |j| j.success_count == 5).await;
    // (In paused time an occurrence can come due while a run's process is still exiting; it is
    // then passed over and recorded as skipped, which is not what this test is about.)
    let tasks = f.tasks("paused").await;
    assert!(
        tasks
            .iter()
            .all(|t| matches!(t.state, TaskState::Finished | TaskState::Skipped))
    );
    let dues: Vec<i64> = tasks.iter().map(|t| t.due_ms).collect();
    assert_eq!(
        tasks.iter().filter(|t| t.state == TaskState::Finished).count(),
        5,
        "{tasks:?}"
    );
    assert!(
        dues.iter().all(|d| *d >= enabled_at.timestamp_millis()),
        "replayed occurrences from before it was enabled: {dues:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_occurrence_waits_and_none_starts_later_than_its_epsilon() {
    let f = start().await;
    let gate = f._dir.path().join("gate");
    let first = clock::now() + chrono::Duration::seconds(1);
    f.upsert(
        serde_json::json!({"name": "slow", "command": gated(&gate, 0), "epsilon": "PT1S",
        "schedule": format!("R/{}/PT1S", iso(first))}),
    )
    .await;
    f.wait_task("slow", TaskState::Running).await;
    // Twelve seconds of occurrences come due while the first run blocks.
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let queued = f
            .open("slow")
            .await
            .iter()
            .filter(|t| t.0 == TaskState::Queued)
            .count();
        assert!(queued <= 1, "{queued} occurrences wait");
    }
    std::fs::write(&gate, "").unwrap();
    f.wait("slow", |j| j.success_count >= 3).await;
    let tasks = f.tasks("slow").await;
    let skipped = tasks.iter().filter(|t| t.state == TaskState::Skipped).count();
    assert!(skipped >= 10, "passed-over occurrences are recorded: {tasks:?}");
    for t in tasks.iter().filter(|t| t.started_ms.is_some()) {
        assert!(
            t.started_ms.unwrap() - t.due_ms <= 1000,
            "started {} ms late: {t:?}",
            t.started_ms.unwrap() - t.due_ms
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_manual_run_with_other_arguments_is_queued_not_merged() {
    let f = start().await;
    let gate = f._dir.path().join("gate");
    let log = f._dir.path().join("args");
    f.upsert(serde_json::json!({"name": "args", "command": format!("{}; echo \"[$0 $*]\" >> {}", gated(&gate, 0).replace("; exit 0", ""), log.display()),
        "shell": true, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    f.run_now("args", None).await;
    f.run_now("args", None).await;
    f.run_now("args", Some("--important")).await;
    f.run_now("args", Some("--important")).await;
    std::fs::write(&gate, "").unwrap();
    f.wait("args", |j| j.success_count == 3).await;
    let arguments: Vec<String> = f
        .tasks("args")
        .await
        .iter()
        .map(|t| t.arguments.clone())
        .collect();
    assert_eq!(arguments, ["", "", "--important"]);
}

#[tokio::test(start_paused = true)]
async fn counters_that_are_not_sent_keep_their_values() {
    let f = start().await;
    f.upsert(
        serde_json::json!({"name": "counted", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    for n in 1..=3 {
        f.run_now("counted", None).await;
        f.wait("counted", |j| j.success_count == n).await;
    }
    f.upsert(serde_json::json!({"name": "counted", "command": "true", "errorCount": 7, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    let job = f.job("counted").await;
    assert_eq!((job.success_count, job.error_count), (3, 7));
    assert!(!job.last_success.is_empty());
}

// ----- One property over random interleavings -----

/// What happens to the job next, in the property below.
#[derive(Debug, Clone)]
enum Op {
    /// Lets this much (virtual) time pass, in milliseconds.
    Wait(u64),
    /// A manual run, with or without extra arguments.
    RunNow(bool),
    /// `PUT /task/<id>` with this status for the job's open task, if it has one.
    Complete(i64),
    Kill,
    Disable,
    Enable,
    /// A clean stop and start.
    Restart,
    /// kill -9 and start.
    Crash,
    /// kill -9 50 ms before the next instant (after its run was recorded ahead), and start.
    CrashInLeadWindow,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        5 => (100u64..25_000).prop_map(Op::Wait),
        1 => any::<bool>().prop_map(Op::RunNow),
        1 => prop_oneof![Just(0i64), Just(3)].prop_map(Op::Complete),
        1 => Just(Op::Kill),
        1 => Just(Op::Disable),
        1 => Just(Op::Enable),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        2 => Just(Op::CrashInLeadWindow),
    ]
}

const PERIOD_MS: i64 = 10_000;
const EPSILON_MS: i64 = 5_000;

/// Drives one job through `ops` and checks the guarantees in docs/compatibility.md: each
/// scheduled instant starts at most once, no two of the job's tasks overlap, and no instant
/// that fell due while the job was enabled is lost.
async fn drive(ops: Vec<Op>, is_async: bool) -> Result<(), String> {
    let mut f = start().await;
    let log = f._dir.path().join("starts");
    let t0 = (clock::now() + chrono::Duration::seconds(5)).timestamp_millis();
    let body = |disabled: bool| {
        serde_json::json!({"name": "p", "command": format!("echo \"$CHRONOS_JOB_RUN_TIME $mesos_task_id\" >> {}", log.display()),
            "async": is_async, "epsilon": "PT5S", "retries": 1, "disabled": disabled,
            "schedule": format!("R/{}/PT10S", iso(clock::from_millis(t0)))})
    };
    f.upsert(body(false)).await;
    // When the job was enabled: [from, to) intervals in epoch ms.
    let mut enabled: Vec<(i64, i64)> = vec![(t0 - 1, i64::MAX)];
    for op in ops {
        match op {
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::RunNow(with_arguments) => f.run_now("p", with_arguments.then_some("--extra")).await,
            Op::Complete(status) => {
                let open = f
                    .engine
                    .read(|s| {
                        s.tasks
                            .values()
                            .find(|t| matches!(t.record.state, TaskState::Running | TaskState::Waiting))
                            .map(|t| t.record.id.clone())
                    })
                    .await
                    .unwrap();
                if let Some(id) = open {
                    let result = f.complete(&id, status).await;
                    if !is_async && result.is_ok() {
                        return Err(format!("a completion of non-async {id} was accepted"));
                    }
                }
            }
            Op::Kill => f
                .engine
                .call(|reply| Event::Kill {
                    who: None,
                    name: "p".to_owned(),
                    reply,
                })
                .await
                .unwrap(),
            Op::Disable => {
                if enabled.last().is_some_and(|e| e.1 == i64::MAX) {
                    f.upsert(body(true)).await;
                    enabled.last_mut().unwrap().1 = clock::now().timestamp_millis();
                }
            }
            Op::Enable => {
                if enabled.last().is_some_and(|e| e.1 != i64::MAX) {
                    f.upsert(body(false)).await;
                    enabled.push((clock::now().timestamp_millis(), i64::MAX));
                }
            }
            Op::Restart => {
                f.engine.quiesce().await;
                f = restart_on(f, true).await;
            }
            Op::Crash => f = restart_on(f, false).await,
            Op::CrashInLeadWindow => {
                let now = clock::now().timestamp_millis();
                let next = t0 + ((now - t0).max(0) / PERIOD_MS + 1) * PERIOD_MS;
                let lead = (next - 50 - now).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(lead)).await;
                f = restart_on(f, false).await;
            }
        }
    }
    let end = clock::now().timestamp_millis();
    // Let what is due settle: a minute of schedule, then every open task done or waiting.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let all: Vec<TaskRecord> = f.store.job_tasks("p", 100_000).await.unwrap();
    let starts: Vec<(i64, String)> = lines_of(&log)
        .iter()
        .filter_map(|l| {
            // `<due> <task id>`, then the arguments a manual run appended to the command.
            let mut words = l.split_whitespace();
            Some((words.next()?.parse().unwrap_or(-1), words.next()?.to_owned()))
        })
        .collect();
    let by_id: HashMap<&str, &TaskRecord> = all.iter().map(|t| (t.id.as_str(), t)).collect();
    // Each scheduled instant starts at most once.
    let mut per_instant: HashMap<i64, usize> = HashMap::new();
    for (due, id) in &starts {
        let Some(task) = by_id.get(id.as_str()) else {
            return Err(format!("{id} ran but has no record"));
        };
        if task.scheduled && task.attempt == 0 {
            *per_instant.entry(*due).or_default() += 1;
        }
    }
    if let Some((due, n)) = per_instant.iter().find(|(_, n)| **n > 1) {
        return Err(format!("the instant {due} ran {n} times"));
    }
    // No two tasks overlap (a record spans at least its process).
    let mut spans: Vec<(i64, i64, &str)> = all
        .iter()
        .filter_map(|t| {
            t.started_ms
                .map(|s| (s, t.finished_ms.unwrap_or(i64::MAX), t.id.as_str()))
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(format!("{} started while {} ran: {pair:?}", pair[1].2, pair[0].2));
        }
    }
    // No instant that fell due while the job was enabled is lost.
    let mut instant = t0;
    while instant + EPSILON_MS < end {
        let was_enabled = enabled
            .iter()
            .any(|(from, to)| *from <= instant - 300 && instant < *to);
        if was_enabled {
            let Some(task) = all
                .iter()
                .find(|t| t.scheduled && t.attempt == 0 && t.due_ms == instant)
            else {
                return Err(format!("the instant {instant} has no task"));
            };
            // A task handed to its worker may be cut down by a crash before its command writes
            // anything (in paused time the clock runs ahead while a process starts); but one
            // whose start was still ahead when the scheduler went down never ran and must not
            // be counted lost.
            if task.state == TaskState::Lost && task.started_ms > task.finished_ms {
                return Err(format!("{} was lost before its start: {task:?}", task.id));
            }
            if task.state == TaskState::Skipped && !task.message.starts_with("skipped:") {
                return Err(format!("{} skipped without a reason", task.id));
            }
        }
        instant += PERIOD_MS;
    }
    Ok(())
}

#[test]
fn runs_are_never_lost_replayed_or_overlapping() {
    use proptest::prelude::*;
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        // Each case runs real processes; a failing one is printed whole instead of shrunk long.
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 4..16), is_async in any::<bool>())| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = runtime.block_on(drive(ops.clone(), is_async));
        prop_assert!(outcome.is_ok(), "{}\nops: {:?}", outcome.unwrap_err(), ops);
    });
}
