//! The core alone, with explicit instants: no tokio time, no store, no processes. Each test
//! feeds inputs at chosen instants and checks the effects.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::config;
use crate::engine::core::{After, Command, Core};
use crate::engine::ends::End;
use crate::engine::load::Stored;
use crate::engine::workers::{WorkerInfo, WorkerLink};
use crate::executor::runner::TaskLaunch;
use crate::job::TaskId;
use crate::store::{TaskRecord, TaskState, Write};

/// A worker that accepts everything and does nothing: the core cannot tell.
pub(super) struct Inert;

impl WorkerLink for Inert {
    fn launch(&self, _: TaskLaunch) -> bool {
        true
    }
    fn kill(&self, _: &TaskId, _: Duration) {}
}

pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

pub(super) fn ms(seconds: i64) -> i64 {
    at(seconds).timestamp_millis()
}

/// A core with one worker, "w", at instant 0.
pub(super) fn core() -> Core {
    core_with_worker(crate::placement::Runs::EVERYTHING)
}

/// A core with one worker, "w", that does the work `runs` says, at instant 0.
fn core_with_worker(runs: crate::placement::Runs) -> Core {
    let dir = std::env::temp_dir();
    let mut core = Core::new(config(&dir), at(0));
    let info = WorkerInfo {
        name: "w".to_owned(),
        id: "w-id".to_owned(),
        hostname: "w".to_owned(),
        attributes: Vec::new(),
        total: crate::placement::Resources {
            cpus: 4.0,
            mem: 4096.0,
            disk: 4096.0,
        },
        running: Vec::new(),
        finished: Vec::new(),
        local: false,
        runs,
    };
    core.worker_connected(info, Arc::new(Inert)).unwrap();
    core.take_effects();
    core
}

pub(super) fn upsert(core: &mut Core, body: serde_json::Value) {
    let (job, provided) = super::parse(body);
    core.upsert(job, provided).unwrap();
}

/// Releases what waits for the commit (as the shell does once it is done) and returns the
/// commands that followed.
pub(super) fn commit(core: &mut Core) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut effects = core.take_effects();
    loop {
        commands.extend(effects.commands);
        if effects.after.is_empty() {
            return commands;
        }
        release(core, effects.after);
        effects = core.take_effects();
    }
}

/// Hands the launches that waited for a commit back to the core, as the shell does.
pub(super) fn release(core: &mut Core, afters: Vec<After>) {
    for after in afters {
        match after {
            After::Launch {
                task_id,
                worker,
                launch,
            } => core.launch_when_due(task_id, worker, *launch),
            After::Dispatch {
                task_id,
                worker,
                launch,
            } => core.dispatch(task_id, worker, *launch),
            _ => {}
        }
    }
}

/// The last task record a batch of writes puts.
fn last_put(writes: &[Write]) -> TaskRecord {
    writes
        .iter()
        .rev()
        .find_map(|w| match w {
            Write::PutTask(t) => Some(t.clone()),
            _ => None,
        })
        .expect("a task record")
}

/// A new core restored at `now` from the job `name` of `before` and one stored task, with the
/// launch mark at `mark`: what a scheduler starting after a crash finds.
fn restarted(before: &Core, name: &str, task: TaskRecord, mark: i64, now: DateTime<Utc>) -> Core {
    let mut after = core();
    after.at(now).restore(Stored {
        jobs: vec![crate::store::StoredJob {
            job: before.state.jobs[name].job.clone(),
            satisfied: Vec::new(),
        }],
        durations: Vec::new(),
        open_tasks: vec![task],
        launched_through: mark,
        paused_since: None,
    });
    after
}

pub(super) fn launched(commands: &[Command]) -> Vec<TaskId> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Launch { launch, .. } => Some(launch.process.task_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_scheduled_run_is_recorded_ahead_and_launched_at_its_instant() {
    let mut core = core();
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "true", "schedule": "R2/2027-01-15T08:00:10Z/PT10S"}),
    );
    core.take_effects();
    assert_eq!(core.next_timer(), Some(ms(10) - 100));
    // 100 ms ahead the run is claimed and recorded as started at its instant, not launched.
    core.at(at(10) - chrono::Duration::milliseconds(100))
        .fire_timers();
    let effects = core.take_effects();
    assert!(matches!(&effects.writes[0], Write::ClaimRun { due_ms, .. } if *due_ms == ms(10)));
    let started = effects.writes.iter().find_map(|w| match w {
        Write::PutTask(t) if t.state == TaskState::Running => t.started_ms,
        _ => None,
    });
    assert_eq!(started, Some(ms(10)));
    release(&mut core, effects.after);
    assert!(
        launched(&core.take_effects().commands).is_empty(),
        "not before its instant"
    );
    core.at(at(10)).fire_timers();
    let effects = core.take_effects();
    // The launch is marked first, so a scheduler that starts later knows whether it reached
    // its worker; the worker gets it only once the mark is committed.
    assert!(
        effects
            .writes
            .iter()
            .any(|w| matches!(w, Write::LaunchedThrough(t) if *t == ms(10)))
    );
    assert!(
        launched(&effects.commands).is_empty(),
        "not before its mark commits"
    );
    release(&mut core, effects.after);
    assert_eq!(launched(&core.take_effects().commands), ["ct:1800000010000:0:j:"]);
}

#[test]
fn a_run_recorded_but_never_launched_runs_after_a_restart() {
    let mut before = core();
    upsert(
        &mut before,
        serde_json::json!({"name": "j", "command": "true", "retries": 0, "schedule": "R1/2027-01-15T08:00:10Z/PT10S"}),
    );
    before.take_effects();
    before
        .at(at(10) - chrono::Duration::milliseconds(50))
        .fire_timers();
    let writes = before.take_effects().writes;
    let task = last_put(&writes);
    assert_eq!(task.state, TaskState::Running);
    // The scheduler died before the instant: restore from what was written.
    let mut after = restarted(&before, "j", task.clone(), ms(5), at(11));
    let commands = commit(&mut after);
    assert_eq!(launched(&commands), [task.id], "run, not lost");
}

/// The other direction: a run sent to its worker is covered by a committed mark first, so a
/// scheduler that restarts after the launch never starts it again as the same instant.
#[test]
fn a_run_sent_to_its_worker_is_not_run_again_after_a_restart() {
    let mut before = core();
    upsert(
        &mut before,
        serde_json::json!({"name": "j", "command": "true", "retries": 0, "schedule": "R1/2027-01-15T08:00:10Z/PT10S"}),
    );
    commit(&mut before);
    before
        .at(at(10) - chrono::Duration::milliseconds(50))
        .fire_timers();
    commit(&mut before);
    before.at(at(10)).fire_timers();
    let effects = before.take_effects();
    let mark = effects
        .writes
        .iter()
        .find_map(|w| match w {
            Write::LaunchedThrough(t) => Some(*t),
            _ => None,
        })
        .expect("the launch is marked");
    assert!(
        launched(&effects.commands).is_empty(),
        "sent only after the mark commits"
    );
    release(&mut before, effects.after);
    let sent = launched(&before.take_effects().commands);
    assert_eq!(sent.len(), 1);
    let task = before.state.tasks[&sent[0]].record.clone();
    // The scheduler died right after sending it (its end never recorded): restore.
    let mut after = restarted(&before, "j", task, mark, at(11));
    let commands = commit(&mut after);
    assert!(launched(&commands).is_empty(), "not started twice");
}

/// An async task completed through the API while its process ran keeps that completion across a
/// restart: when its process is then lost, it still ends the way the client said.
#[test]
fn an_acknowledged_completion_survives_a_restart() {
    let mut before = core();
    upsert(
        &mut before,
        serde_json::json!({"name": "a", "async": true, "command": "true", "retries": 0, "schedule": "R1/2027-01-15T08:00:10Z/PT10S"}),
    );
    commit(&mut before);
    before.at(at(10)).fire_timers();
    let sent = launched(&commit(&mut before));
    before.at(at(11)).complete(&sent[0], 0).unwrap();
    let writes = before.take_effects().writes;
    let task = last_put(&writes);
    assert_eq!((task.state, task.exit_code), (TaskState::Running, Some(0)));
    let mut after = restarted(&before, "a", task.clone(), ms(10), at(12));
    after.take_effects();
    // Its worker comes back without it: its process is lost, but the client already said.
    after
        .at(at(13))
        .lose("w", &task.id, "the worker came back without it");
    let ended = after.take_effects().writes;
    let last = last_put(&ended);
    assert_eq!(last.state, TaskState::Finished, "{}", last.message);
    assert_eq!(after.state.jobs["a"].job.success_count, 1);
}

#[test]
fn every_end_closes_the_task_its_own_way() {
    let cases = [
        (
            End::Succeeded { message: "ok".into() },
            TaskState::Finished,
            (1, 0),
        ),
        (
            End::Failed {
                message: "exit 3".into(),
            },
            TaskState::Failed,
            (0, 1),
        ),
        (
            End::TimedOut {
                message: "late".into(),
            },
            TaskState::Failed,
            (0, 1),
        ),
        (
            End::LaunchFailed {
                message: "no image".into(),
                fetch: false,
            },
            TaskState::Failed,
            (0, 1),
        ),
        (End::lost("gone"), TaskState::Lost, (0, 1)),
        (
            End::Killed {
                message: "killed".into(),
            },
            TaskState::Killed,
            (0, 0),
        ),
    ];
    for (end, state, counters) in cases {
        let mut core = core();
        upsert(
            &mut core,
            serde_json::json!({"name": "j", "command": "true", "retries": 0, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
        );
        core.run_now("j", None).unwrap();
        commit(&mut core);
        let id = core.state.tasks.keys().next().unwrap().clone();
        assert_eq!(core.state.workers["w"].used.cpus, 0.1);
        core.at(at(1)).end_task(&id, end.clone());
        let effects = core.take_effects();
        let record = effects
            .writes
            .iter()
            .find_map(|w| match w {
                Write::PutTask(t) if t.id == id => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (record.state, record.message.as_str()),
            (state, end.message()),
            "{end:?}"
        );
        assert_eq!(record.finished_ms, Some(ms(1)));
        let job = &core.state.jobs["j"].job;
        assert_eq!((job.success_count, job.error_count), counters, "{end:?}");
        assert_eq!(core.state.workers["w"].used.cpus, 0.0, "resources given back");
        assert_eq!(effects.ended, [(id, end)]);
    }
}

#[test]
fn a_failure_with_retries_left_is_retried_after_the_delay() {
    let mut core = core();
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "false", "retries": 1, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    );
    core.run_now("j", None).unwrap();
    commit(&mut core);
    let id = core.state.tasks.keys().next().unwrap().clone();
    core.at(at(5)).end_task(
        &id,
        End::Failed {
            message: "exit 1".into(),
        },
    );
    assert!(launched(&commit(&mut core)).is_empty());
    // `failure_retry` is 60 s in the test configuration.
    core.at(at(64)).fire_timers();
    assert!(launched(&commit(&mut core)).is_empty());
    core.at(at(65)).fire_timers();
    assert_eq!(launched(&commit(&mut core)), ["ct:1800000065000:1:j:"]);
    assert_eq!(
        core.state.jobs["j"].job.error_count, 0,
        "not counted while retries remain"
    );
}

#[test]
fn a_change_and_its_audit_entry_are_written_together() {
    let mut core = core();
    let who = Some(Box::new(crate::engine::Actor {
        principal: "token:ci".into(),
        role: "admin".into(),
        source: "10.0.0.7".into(),
        method: "POST".into(),
        route: "/v1/scheduler/iso8601".into(),
    }));
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    );
    let result: Result<(), crate::engine::Error> = Ok(());
    core.at(at(3)).audit(who.clone(), Some("j"), &result);
    let writes = core.take_effects().writes;
    // One turn, so one group commit: the job and its entry land together or not at all.
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::PutJob(j) if j.job.name == "j"))
    );
    let entry = writes
        .iter()
        .find_map(|w| match w {
            Write::Audit(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            entry.at_ms,
            entry.principal.as_str(),
            entry.job.as_deref(),
            entry.outcome.as_str()
        ),
        (ms(3), "token:ci", Some("j"), "ok")
    );
    // A refused change is recorded with the refusal.
    let refused: Result<(), crate::engine::Error> =
        Err(crate::engine::Error::JobNotFound { name: "x".into() });
    core.audit(who, Some("x"), &refused);
    let writes = core.take_effects().writes;
    assert!(matches!(&writes[..], [Write::Audit(e)] if e.outcome == "Job 'x' not found"));
}

/// The last version of job `name` among `writes`, as the store would keep it.
fn stored_job(writes: &[Write], name: &str) -> Option<crate::job::Job> {
    writes.iter().rev().find_map(|w| match w {
        Write::PutJob(s) if s.job.name == name => Some(s.job.clone()),
        _ => None,
    })
}

/// The due instants claimed among `writes`, in order.
fn claimed(writes: &[Write]) -> Vec<i64> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::ClaimRun { due_ms, .. } => Some(*due_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cron_job_runs_at_its_instants_and_skips_what_a_downtime_missed() {
    // Instant 0 is 2027-01-15T08:00:00Z: the job runs at seconds 5 and 25 of every minute.
    let mut core = core();
    upsert(
        &mut core,
        serde_json::json!({"name": "c", "command": "true", "schedule": "5,25 * * * * *",
            "scheduleTimeZone": "Europe/Paris"}),
    );
    let effects = core.take_effects();
    // The first run is stored with the job as its cursor; the expression stays as given.
    let job = stored_job(&effects.writes, "c").unwrap();
    assert_eq!(
        (job.schedule.as_deref(), job.schedule_cursor),
        (Some("5,25 * * * * *"), Some(ms(5)))
    );
    assert_eq!(core.next_timer(), Some(ms(5) - 100));
    for (due, cursor) in [(5, 25), (25, 65), (65, 85)] {
        core.at(at(due) - chrono::Duration::milliseconds(100))
            .fire_timers();
        let effects = core.take_effects();
        assert_eq!(claimed(&effects.writes), [ms(due)], "claimed ahead of {due}");
        let job = stored_job(&effects.writes, "c").unwrap();
        assert_eq!(
            (job.schedule.as_deref(), job.schedule_cursor),
            (Some("5,25 * * * * *"), Some(ms(cursor))),
            "after the run at {due}"
        );
        release(&mut core, effects.after);
        core.at(at(due)).fire_timers();
        let id = format!("ct:{}:0:c:", ms(due));
        assert_eq!(launched(&commit(&mut core)), [id.as_str()]);
        core.at(at(due + 1)).end_task(
            &TaskId::parse(&id).unwrap(),
            End::Succeeded { message: "ok".into() },
        );
        commit(&mut core);
    }
    assert_eq!(core.state.jobs["c"].job.success_count, 3);

    // The scheduler stops after the run at 65 and starts again at 300, from what it stored.
    let job = core.state.jobs["c"].job.clone();
    assert_eq!(job.schedule_cursor, Some(ms(85)));
    let mut after = self::core();
    after.at(at(300)).restore(Stored {
        jobs: vec![crate::store::StoredJob {
            job,
            satisfied: Vec::new(),
        }],
        durations: Vec::new(),
        open_tasks: Vec::new(),
        launched_through: ms(65),
        paused_since: None,
    });
    after.take_effects();
    // Due at once: runs earlier than 300 - epsilon (60 s) are skipped and counted (85, 125,
    // 145, 185, 205); those at 245 and 265 are late but within their epsilon, so the first
    // runs now and the second waits for it, as for an ISO 8601 schedule.
    assert_eq!(after.next_timer(), Some(ms(85) - 100));
    after.fire_timers();
    let effects = after.take_effects();
    assert_eq!(claimed(&effects.writes), [ms(245), ms(265)]);
    assert_eq!(after.state.metrics.skipped_runs, 5);
    let job = stored_job(&effects.writes, "c").unwrap();
    assert_eq!(
        (job.schedule.as_deref(), job.schedule_cursor),
        (Some("5,25 * * * * *"), Some(ms(305)))
    );
    release(&mut after, effects.after);
    let id = format!("ct:{}:0:c:", ms(245));
    assert_eq!(launched(&commit(&mut after)), [id.as_str()]);
    assert_eq!(after.next_timer(), Some(ms(305) - 100));
}

#[test]
fn a_cron_job_sent_again_starts_from_now_and_clients_never_see_its_cursor() {
    let mut core = core();
    let body = |disabled: bool| {
        serde_json::json!({"name": "c", "command": "true", "schedule": "*/10 * * * * *",
            "disabled": disabled})
    };
    upsert(&mut core, body(true));
    core.take_effects();
    // Disabled: nothing is armed, whatever falls due.
    assert_eq!(core.next_timer(), None);
    core.at(at(95));
    upsert(&mut core, body(false));
    let job = stored_job(&core.take_effects().writes, "c").unwrap();
    assert_eq!(
        job.schedule_cursor,
        Some(ms(100)),
        "from now on, as a re-sent job"
    );
    assert_eq!(core.next_timer(), Some(ms(100) - 100));
    // What clients see of the job has no cursor.
    let shown = serde_json::to_value(core.state.jobs["c"].job.for_clients()).unwrap();
    assert!(shown.get("scheduleCursor").is_none(), "{shown}");
    assert_eq!(shown["schedule"], "*/10 * * * * *");
}

#[test]
fn a_containers_only_worker_runs_container_jobs_while_command_jobs_wait_saying_why() {
    let mut core = core_with_worker(crate::placement::Runs::CONTAINERS);
    let never = "R0/2030-01-01T00:00:00Z/P1D";
    let container = serde_json::json!({"type": "DOCKER", "image": "busybox"});
    // The command job asks for less than the container jobs: a pass that found no room for it
    // must not conclude that they cannot fit either.
    upsert(
        &mut core,
        serde_json::json!({"name": "plain", "command": "true", "schedule": never, "cpus": 0.1}),
    );
    upsert(
        &mut core,
        serde_json::json!({"name": "fetching", "command": "true", "schedule": never, "cpus": 0.1,
        "container": container, "fetch": [{"uri": "https://example.com/a.tgz"}]}),
    );
    upsert(
        &mut core,
        serde_json::json!({"name": "boxed", "command": "true", "schedule": never, "cpus": 0.5,
        "container": container}),
    );
    for name in ["plain", "fetching", "boxed"] {
        core.run_now(name, None).unwrap();
    }
    assert_eq!(launched(&commit(&mut core)), ["ct:1800000000000:0:boxed:"]);
    let reason = |name: &str| {
        core.state.jobs[name]
            .waiting
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    assert_eq!(
        reason("plain"),
        "waiting for a worker that runs commands without a container (an agent or the built-in worker); \
         the connected ones run containers only"
    );
    assert!(
        reason("fetching").contains("fetches files"),
        "{}",
        reason("fetching")
    );
}

#[test]
fn a_workers_new_offer_takes_effect_at_once_and_touches_nothing_it_runs() {
    use crate::engine::workers::WorkerUpdate;
    let mut core = core();
    let never = "R0/2030-01-01T00:00:00Z/P1D";
    upsert(
        &mut core,
        serde_json::json!({"name": "plain", "command": "true", "schedule": never}),
    );
    upsert(
        &mut core,
        serde_json::json!({"name": "racked", "command": "true", "schedule": never,
        "constraints": [["rack", "EQUALS", "r1"]]}),
    );
    core.run_now("plain", None).unwrap();
    core.run_now("racked", None).unwrap();
    assert_eq!(launched(&commit(&mut core)), ["ct:1800000000000:0:plain:"]);
    let connection = core.state.workers["w"].connection;
    let total = core.state.workers["w"].total;
    let update = |rack: &str, accepting: bool| WorkerUpdate {
        attributes: vec![("rack".to_owned(), rack.to_owned())],
        total,
        accepting,
    };
    // A stale connection's update is ignored; the current one's labels let "racked" start.
    core.worker_update("w", connection + 1, update("r1", true));
    assert!(launched(&commit(&mut core)).is_empty());
    core.worker_update("w", connection, update("r1", true));
    assert_eq!(launched(&commit(&mut core)), ["ct:1800000000000:0:racked:"]);
    // Taking no new tasks: a new job's run waits, and the two running tasks are not touched.
    core.worker_update("w", connection, update("r1", false));
    upsert(
        &mut core,
        serde_json::json!({"name": "later", "command": "true", "schedule": never}),
    );
    core.run_now("later", None).unwrap();
    let effects = commit(&mut core);
    assert!(launched(&effects).is_empty() && !effects.iter().any(|c| matches!(c, Command::Kill { .. })));
    assert!(core.state.jobs["later"].waiting.is_some());
    assert_eq!(core.state.workers["w"].tasks.len(), 2);
    core.worker_update("w", connection, update("r1", true));
    assert_eq!(
        launched(&commit(&mut core)),
        ["ct:1800000000000:0:later:"],
        "it takes tasks again"
    );
}

#[test]
fn a_worker_a_backend_declares_lost_loses_its_tasks_at_once_with_the_reason() {
    let mut core = core();
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "true", "retries": 0,
        "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    );
    core.run_now("j", None).unwrap();
    commit(&mut core);
    let id = core.state.tasks.keys().next().unwrap().clone();
    let connection = core.state.workers["w"].connection;
    core.worker_lost("w", connection + 1, "stale");
    assert!(
        core.state.tasks.contains_key(&id),
        "a stale connection's word changes nothing"
    );
    core.at(at(1))
        .worker_lost("w", connection, "the Swarm node vm is drained");
    let ended = core.take_effects().ended;
    assert_eq!(ended, [(id, End::lost("the Swarm node vm is drained"))]);
    assert_eq!(core.state.workers["w"].state, crate::engine::WorkerState::Lost);
}
