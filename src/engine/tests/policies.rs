//! The rules beyond Chronos in the core alone, at explicit instants: concurrency policies,
//! pausing, catching up and retry policies.

use chrono::{DateTime, Utc};

use super::core::{at, commit, core, launched, ms, release, upsert};
use crate::engine::Error;
use crate::engine::core::{Command, Core, Timer};
use crate::engine::ends::End;
use crate::executor::Outcome;
use crate::executor::runner::TaskEnd;
use crate::job::TaskId;
use crate::store::{TaskRecord, TaskState, Write};

/// Fires what is due at `t` and commits: the writes of the turn and the commands that followed.
fn turn(core: &mut Core, t: DateTime<Utc>) -> (Vec<Write>, Vec<Command>) {
    core.at(t).fire_timers();
    let mut effects = core.take_effects();
    let (mut writes, mut commands) = (Vec::new(), Vec::new());
    loop {
        writes.extend(effects.writes);
        commands.extend(effects.commands);
        if effects.after.is_empty() {
            return (writes, commands);
        }
        release(core, effects.after);
        effects = core.take_effects();
    }
}

fn tasks(writes: &[Write], state: TaskState) -> Vec<TaskRecord> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::PutTask(t) if t.state == state => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn killed(commands: &[Command]) -> Vec<TaskId> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

/// A job every 10 s from instant 10, with extra fields.
fn every_ten(core: &mut Core, extra: serde_json::Value) {
    let mut job = serde_json::json!({"name": "j", "command": "sleep 60",
                                     "schedule": "R/2027-01-15T08:00:10Z/PT10S"});
    job.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    upsert(core, job);
    core.take_effects();
}

fn ended(core: &mut Core, task_id: &TaskId, killed: bool, exit_code: Option<i32>) {
    core.on_task_end(
        "w",
        TaskEnd {
            task_id: task_id.clone(),
            outcome: Outcome {
                task_id: task_id.clone(),
                exit_code,
                signal: None,
                timed_out: false,
                stdout: String::new(),
                stderr: String::new(),
            },
            killed,
            error: None,
        },
    );
}

#[test]
fn forbid_records_a_run_due_while_one_runs_as_skipped() {
    let mut core = core();
    every_ten(&mut core, serde_json::json!({"concurrencyPolicy": "forbid"}));
    let (_, commands) = turn(&mut core, at(10));
    assert_eq!(launched(&commands).len(), 1);
    let (writes, commands) = turn(&mut core, at(20));
    assert!(launched(&commands).is_empty() && killed(&commands).is_empty());
    let skipped = tasks(&writes, TaskState::Skipped);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].due_ms, ms(20));
    assert!(skipped[0].message.contains("forbid"), "{}", skipped[0].message);
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::ClaimRun { due_ms, .. } if *due_ms == ms(20))),
        "a skipped run is claimed too, so no other scheduler runs it"
    );
    assert!(core.state.jobs["j"].queue.is_empty());
    assert_eq!(core.state.metrics.skipped_runs, 1);
    // A manual run is refused with the reason rather than queued.
    assert!(matches!(core.run_now("j", None), Err(Error::Conflict { .. })));
}

#[test]
fn replace_kills_the_running_task_and_starts_the_new_one_when_it_ends() {
    let mut core = core();
    every_ten(&mut core, serde_json::json!({"concurrencyPolicy": "replace"}));
    let (_, commands) = turn(&mut core, at(10));
    let first = launched(&commands)[0].clone();
    let (_, commands) = turn(&mut core, at(20));
    assert_eq!(killed(&commands), std::slice::from_ref(&first));
    assert!(launched(&commands).is_empty(), "not beside the old one");
    core.at(at(21));
    ended(&mut core, &first, true, None);
    let effects = core.take_effects();
    let record = tasks(&effects.writes, TaskState::Killed).pop().unwrap();
    assert!(
        record.message.contains("replaced by the run due at"),
        "{}",
        record.message
    );
    assert_eq!(record.state, TaskState::Killed, "a replaced run is not a failure");
    assert_eq!(core.state.jobs["j"].job.error_count, 0);
    let started = tasks(&effects.writes, TaskState::Running);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].due_ms, ms(20));
}

#[test]
fn queue_lets_one_run_wait_and_allow_starts_it_beside() {
    for (policy, starts) in [("queue", 0), ("allow", 1)] {
        let mut core = core();
        every_ten(&mut core, serde_json::json!({ "concurrencyPolicy": policy }));
        turn(&mut core, at(10));
        let (_, commands) = turn(&mut core, at(20));
        assert_eq!(launched(&commands).len(), starts, "{policy}");
        let (writes, _) = turn(&mut core, at(30));
        if policy == "queue" {
            let skipped = tasks(&writes, TaskState::Skipped);
            assert!(skipped[0].message.contains("had not started yet"), "{skipped:?}");
        } else {
            assert_eq!(core.state.jobs["j"].running.len(), 3);
        }
    }
}

#[test]
fn concurrent_maps_onto_the_policy() {
    let mut core = core();
    every_ten(&mut core, serde_json::json!({"concurrent": true}));
    assert_eq!(
        core.state.jobs["j"].job.concurrency(),
        crate::job::ConcurrencyPolicy::Allow
    );
    every_ten(
        &mut core,
        serde_json::json!({"concurrent": true, "concurrencyPolicy": "forbid"}),
    );
    let job = &core.state.jobs["j"].job;
    assert_eq!(job.concurrency(), crate::job::ConcurrencyPolicy::Forbid);
    assert!(!job.concurrent, "concurrent follows the policy");
}

#[test]
fn a_pause_starts_nothing_and_resuming_follows_epsilon() {
    let mut core = core();
    every_ten(&mut core, serde_json::json!({"epsilon": "PT5S"}));
    core.at(at(5));
    assert!(core.pause());
    assert!(!core.pause(), "pausing twice changes nothing");
    let effects = core.take_effects();
    assert!(
        effects
            .writes
            .iter()
            .any(|w| matches!(w, Write::SetPause(Some(t)) if *t == ms(5)))
    );
    assert_eq!(core.next_timer(), None, "no schedule timer while paused");
    assert!(matches!(core.run_now("j", None), Err(Error::Conflict { .. })));
    let (writes, commands) = turn(&mut core, at(33));
    assert!(writes.is_empty() && commands.is_empty());
    // The upcoming runs still show what is scheduled.
    assert_eq!(core.state.upcoming(None, 1)[0].0, at(10));

    core.at(at(35));
    assert!(core.resume());
    let (writes, commands) = turn(&mut core, at(35));
    assert!(writes.iter().any(|w| matches!(w, Write::SetPause(None))));
    // 10 and 20 are later than their epsilon; 30 still runs.
    let started = tasks(&writes, TaskState::Running);
    assert_eq!(started.iter().map(|t| t.due_ms).collect::<Vec<_>>(), [ms(30)]);
    assert_eq!(launched(&commands).len(), 1);
    assert_eq!(core.state.metrics.skipped_runs, 2);
}

#[test]
fn a_retry_due_while_paused_waits_for_the_resume() {
    let mut core = core();
    upsert(
        &mut core,
        serde_json::json!({"name": "r", "command": "false", "retries": 1, "schedule": "R0/2030-01-01T00:00:00Z/P1D",
                           "retryDelay": "PT1S"}),
    );
    core.run_now("r", None).unwrap();
    let first = launched(&commit(&mut core))[0].clone();
    core.at(at(1));
    ended(&mut core, &first, false, Some(1));
    core.take_effects();
    core.pause();
    let (_, commands) = turn(&mut core, at(5));
    assert!(launched(&commands).is_empty(), "the retry came due but waits");
    assert_eq!(core.state.jobs["r"].queue.len(), 1);
    core.at(at(6)).resume();
    let commands = commit(&mut core);
    assert_eq!(launched(&commands).len(), 1, "it starts on resume");
}

#[test]
fn catching_up_queues_the_newest_missed_runs_oldest_first() {
    let mut core = core();
    every_ten(
        &mut core,
        serde_json::json!({"epsilon": "PT5S", "catchUp": true, "catchUpLimit": 2}),
    );
    // Nothing ran from 10 to 65: 10..50 are past epsilon, 60 is within it.
    let (writes, _) = turn(&mut core, at(65));
    let mut dues: Vec<i64> = core.state.jobs["j"]
        .running
        .iter()
        .chain(core.state.jobs["j"].queue.iter())
        .map(|id| id.due_millis())
        .collect();
    dues.sort();
    assert_eq!(
        dues,
        [ms(40), ms(50), ms(60)],
        "the two newest missed, then the current one"
    );
    assert_eq!(
        core.state.jobs["j"].running[0].due_millis(),
        ms(40),
        "oldest first"
    );
    assert_eq!(core.state.metrics.skipped_runs, 3);
    let claims = writes
        .iter()
        .filter(|w| matches!(w, Write::ClaimRun { .. }))
        .count();
    assert_eq!(claims, 3, "each late run is claimed like any other");
    // A late run waiting for its turn is not expired by epsilon.
    turn(&mut core, at(200));
    assert!(core.state.jobs["j"].queue.len() >= 2, "they still wait");
}

#[test]
fn retry_on_decides_which_failures_retry() {
    let mut core = core();
    upsert(
        &mut core,
        serde_json::json!({"name": "r", "command": "false", "retries": 2, "schedule": "R0/2030-01-01T00:00:00Z/P1D",
                           "retryOn": ["timeout", 75], "retryDelay": "PT2S", "retryBackoff": 3}),
    );
    core.run_now("r", None).unwrap();
    let first = launched(&commit(&mut core))[0].clone();
    core.at(at(1)).end_task(
        &first,
        End::Failed {
            message: "exit 1".into(),
        },
    );
    core.take_effects();
    assert_eq!(core.state.jobs["r"].job.error_count, 1, "exit 1 is final");
    assert!(core.state.retrying.is_empty());

    core.at(at(2)).run_now("r", None).unwrap();
    let second = launched(&commit(&mut core))[0].clone();
    core.at(at(3)).end_task(
        &second,
        End::TimedOut {
            message: "late".into(),
        },
    );
    core.take_effects();
    let retry = core
        .state
        .retrying
        .keys()
        .next()
        .cloned()
        .expect("a timeout is retried");
    assert_eq!(retry.due_millis(), ms(5), "retryDelay");
    assert!(core.timers.contains(&(ms(5), Timer::Retry(retry.clone()))));
    let (_, commands) = turn(&mut core, at(5));
    let third = launched(&commands)[0].clone();
    assert_eq!(third, retry);
    core.at(at(6)).end_task(
        &third,
        End::Failed {
            message: "exit 75".into(),
        },
    );
    core.take_effects();
    // The record's exit code was not set through a worker here, so `Exit(None)` is not 75.
    assert_eq!(core.state.jobs["r"].job.error_count, 2);
}
