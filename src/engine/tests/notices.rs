//! Which events make notices, and where they go, on the core alone with explicit instants: a
//! final failure only once retries are used up, a recovery once, skipped runs, `warnAfter`, and
//! successes only for those who ask.

use super::core::{at, commit, core, launched, ms, upsert};
use crate::engine::core::{After, Core};
use crate::engine::ends::End;
use crate::job::TaskId;
use crate::notify::{Format, Kind, Mail, Notice, Sink};
use crate::store::Write;

/// The notices a turn wrote, checking that each has its `After` to hand it over.
fn notices(core: &mut Core) -> Vec<Notice> {
    let effects = core.take_effects();
    let written: Vec<Notice> = effects
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::PutNotice(n) => Some(Notice::from_stored(n).unwrap()),
            _ => None,
        })
        .collect();
    let handed: Vec<&Notice> = effects
        .after
        .iter()
        .filter_map(|a| match a {
            After::Notice(n) => Some(&**n),
            _ => None,
        })
        .collect();
    assert_eq!(
        written.iter().collect::<Vec<_>>(),
        handed,
        "each written notice is handed over after the commit"
    );
    written
}

fn kinds(notices: &[Notice]) -> Vec<Kind> {
    notices.iter().map(|n| n.event.kind).collect()
}

/// A core whose server has a webhook and email configured.
fn core_with_sinks() -> Core {
    let mut core = core();
    core.config.notify.webhook = Some("http://server-hook/".to_owned());
    core.config.notify.mail = Some(Mail {
        host: "localhost".to_owned(),
        port: 25,
        from: "kairos@localhost".to_owned(),
        user: None,
        password: None,
        ssl: false,
    });
    core
}

/// Runs the job now and returns its task id, launched.
fn run(core: &mut Core, job: &str) -> TaskId {
    core.run_now(job, None).unwrap();
    let commands = commit(core);
    launched(&commands).pop().expect("launched")
}

fn failed() -> End {
    End::Failed {
        message: "exited with status 3".into(),
    }
}

fn succeeded() -> End {
    End::Succeeded { message: "ok".into() }
}

#[test]
fn a_failure_is_told_once_retries_are_used_up_and_a_recovery_once() {
    let mut core = core_with_sinks();
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "false", "retries": 1, "owner": "ops@example.com, dev@example.com",
            "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    );
    let first = run(&mut core, "j");
    if let Some(open) = core.state.tasks.get_mut(&first) {
        open.record.stderr = "x".repeat(5000) + "the end";
        open.record.exit_code = Some(3);
    }
    core.at(at(5)).end_task(&first, failed());
    assert!(notices(&mut core).is_empty(), "a retry is left");
    core.at(at(65)).fire_timers();
    let retry = launched(&commit(&mut core)).pop().expect("the retry runs");
    if let Some(open) = core.state.tasks.get_mut(&retry) {
        open.record.stderr = "x".repeat(5000) + "the end";
        open.record.exit_code = Some(3);
    }
    core.at(at(70)).end_task(&retry, failed());
    let told = notices(&mut core);
    assert_eq!(
        kinds(&told),
        [Kind::Failure, Kind::Failure],
        "email and the server's webhook"
    );
    assert_eq!(
        told[0].sink,
        Sink::Email {
            to: vec!["ops@example.com".into(), "dev@example.com".into()]
        }
    );
    assert_eq!(
        told[1].sink,
        Sink::Webhook {
            url: "http://server-hook/".into(),
            format: Format::Json
        }
    );
    let event = &told[0].event;
    assert_eq!(event.task_id.as_deref(), Some(retry.as_str()));
    assert_eq!(
        (event.exit_code, event.attempt, event.duration_ms),
        (Some(3), Some(1), Some(5000))
    );
    assert_eq!(event.worker.as_deref(), Some("w"));
    assert!(event.stderr_tail.ends_with("the end") && event.stderr_tail.len() == 2048);
    assert_eq!(told[0].event.id, told[1].event.id, "one event, two sinks");
    assert_ne!(told[0].id, told[1].id);

    // The next success is a recovery; the one after is a plain success, which nobody asked for.
    let next = run(&mut core, "j");
    core.at(at(80)).end_task(&next, succeeded());
    assert_eq!(kinds(&notices(&mut core)), [Kind::Recovery, Kind::Recovery]);
    let again = run(&mut core, "j");
    core.at(at(90)).end_task(&again, succeeded());
    assert!(notices(&mut core).is_empty());
    // A kill is no failure.
    let killed = run(&mut core, "j");
    core.at(at(95)).end_task(
        &killed,
        End::Killed {
            message: "killed".into(),
        },
    );
    assert!(notices(&mut core).is_empty());
}

#[test]
fn successes_reach_only_those_who_ask_and_each_webhook_its_own_events() {
    let mut core = core_with_sinks();
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "true", "retries": 0, "owner": "ops@example.com",
        "schedule": "R0/2030-01-01T00:00:00Z/P1D", "notifyOn": ["success"],
        "notifications": [
            {"webhook": "https://chat.example/hook", "on": ["failure"], "format": "slack"},
            {"webhook": "http://server-hook/", "on": ["success"]}
        ]}),
    );
    let id = run(&mut core, "j");
    core.at(at(3)).end_task(&id, succeeded());
    let told = notices(&mut core);
    // The job's own entry for the server's webhook is the same sink: told once.
    assert_eq!(kinds(&told), [Kind::Success, Kind::Success]);
    assert!(matches!(told[0].sink, Sink::Email { .. }));
    let id = run(&mut core, "j");
    core.at(at(4)).end_task(&id, failed());
    let told = notices(&mut core);
    assert_eq!(
        kinds(&told),
        [Kind::Failure],
        "notifyOn leaves failures out; the chat hook wants them"
    );
    assert_eq!(
        told[0].sink,
        Sink::Webhook {
            url: "https://chat.example/hook".into(),
            format: Format::Slack
        }
    );
    // Without any sink nothing is written at all.
    let mut quiet = super::core::core();
    upsert(
        &mut quiet,
        serde_json::json!({"name": "q", "command": "false", "retries": 0, "owner": "ops@example.com",
            "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    );
    let id = run(&mut quiet, "q");
    quiet.at(at(3)).end_task(&id, failed());
    assert!(notices(&mut quiet).is_empty(), "no mail server, no webhook");
}

#[test]
fn skipped_runs_are_told_whichever_rule_skips_them() {
    let mut core = core();
    core.config.notify.webhook = Some("http://server-hook/".to_owned());
    // Every 10 s from 10 s, epsilon 5 s; a long run holds the job (not concurrent).
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "sleep 100", "epsilon": "PT5S",
            "schedule": "R/2027-01-15T08:00:10Z/PT10S"}),
    );
    core.take_effects();
    let ahead = chrono::Duration::milliseconds(100);
    core.at(at(10) - ahead).fire_timers();
    commit(&mut core);
    core.at(at(10)).fire_timers();
    assert_eq!(launched(&commit(&mut core)).len(), 1, "the first run goes");
    // The run due at 20 s waits behind it; past 25 s it is skipped.
    core.at(at(20) - ahead).fire_timers();
    assert!(notices(&mut core).is_empty());
    core.at(at(25) + chrono::Duration::milliseconds(1)).fire_timers();
    let told = notices(&mut core);
    assert_eq!(kinds(&told), [Kind::Skipped]);
    assert_eq!(told[0].event.task_id.as_deref(), Some("ct:1800000020000:0:j:"));
    assert!(
        told[0].event.message.contains("epsilon"),
        "{}",
        told[0].event.message
    );
    assert_eq!(told[0].event.due.as_deref(), Some("2027-01-15T08:00:20.000Z"));

    // The scheduler was away for a minute: the runs missed beyond epsilon are one event.
    core.at(at(95) - ahead).fire_timers();
    let told = notices(&mut core);
    let skipped: Vec<_> = told.iter().filter(|n| n.event.task_id.is_none()).collect();
    assert_eq!(skipped.len(), 1, "{told:?}");
    assert_eq!(skipped[0].event.due.as_deref(), Some("2027-01-15T08:00:30.000Z"));
    assert!(
        skipped[0].event.message.starts_with("skipped 6 run(s)"),
        "{}",
        skipped[0].event.message
    );
    assert_eq!(
        skipped[0].event.id,
        crate::notify::event_id(Kind::Skipped, &format!("j@{}", ms(30)))
    );
}

#[test]
fn a_run_past_its_warn_after_is_told_once_and_an_ended_one_never() {
    let mut core = core();
    core.config.notify.webhook = Some("http://server-hook/".to_owned());
    upsert(
        &mut core,
        serde_json::json!({"name": "j", "command": "sleep 100", "warnAfter": "PT30S", "concurrent": true,
            "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    );
    core.take_effects();
    let slow = run(&mut core, "j");
    core.at(at(10));
    let quick = run(&mut core, "j");
    core.at(at(29)).fire_timers();
    assert!(notices(&mut core).is_empty(), "not yet");
    core.at(at(30)).fire_timers();
    let told = notices(&mut core);
    assert_eq!(kinds(&told), [Kind::Late]);
    assert_eq!(told[0].event.task_id.as_deref(), Some(slow.as_str()));
    assert_eq!(told[0].event.duration_ms, Some(30_000));
    assert!(
        told[0].event.message.contains("PT30S"),
        "{}",
        told[0].event.message
    );
    // The second run ends before its deadline: its timer finds nothing to tell.
    core.at(at(35)).end_task(&quick, succeeded());
    notices(&mut core);
    core.at(at(40)).fire_timers();
    assert!(notices(&mut core).is_empty());
    assert!(core.timers.is_empty(), "no timer left behind");
}
