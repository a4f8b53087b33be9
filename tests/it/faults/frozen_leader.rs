//! A frozen leader: SIGSTOP for longer than its lease, under load, then SIGCONT. PostgreSQL
//! keeps a frozen process's session and lock, so only the lease can move leadership: the standby
//! must take over within the lease and a little, requests through it must get an answer (2xx
//! or 503) within the proxy timeout, and the old leader must launch nothing when it wakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Mutex;

use super::failover::{cluster, task_states};
use super::{Rng, Ticks, Verdict, check_answers, leader_of, long, within};

/// The default lease (5 s), plus a poll and the new engine's start.
const TAKEOVER_BOUND: Duration = Duration::from_secs(8);
/// The standby's proxy waits `--store-timeout` (5 s) and a second; the rest is slack for a
/// loaded two-core machine.
const ANSWER_BOUND: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_fenced() {
    let _serial = super::SERIAL.lock().await;
    let freeze = Duration::from_secs(if long() { 15 } else { 12 });
    let rng = Rng::new();
    let mut verdict = Verdict::new("frozen-leader", rng.seed());
    let store = crate::ha::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (mut a, mut b, _agent) = cluster(dir.path(), &store, &client).await;
    let ticks = Ticks::create(&client, &a.base(), dir.path(), 20, Duration::from_secs(2)).await;

    // Load through the standby: reads and writes, each timed.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(Duration, Option<u16>)>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (client, base, stop, answers) = (client.clone(), b.base(), stop.clone(), answers.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let began = Instant::now();
                let request = if n.is_multiple_of(2) {
                    client.get(format!("{base}/v1/scheduler/jobs"))
                } else {
                    let body = json!({"name": format!("load-{worker}"), "command": format!("echo {n}"),
                        "schedule": "R/2099-01-01T00:00:00Z/P1D"});
                    client.post(format!("{base}/v1/scheduler/iso8601")).json(&body)
                };
                let status = request.send().await.ok().map(|r| r.status().as_u16());
                answers.lock().await.push((began.elapsed(), status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(4)).await;
    a.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let b_name = b.name();
    let took = within(TAKEOVER_BOUND + Duration::from_secs(5), async || {
        leader_of(&client, &b).await.as_deref() == Some(b_name.as_str())
    })
    .await;
    verdict.note("SIGSTOP of the leader", format!("{freeze:?}"));
    verdict.check(
        &format!("the standby takes over within {TAKEOVER_BOUND:?}"),
        took.is_some_and(|t| t <= TAKEOVER_BOUND),
        format!("after {took:?}"),
    );
    tokio::time::sleep(freeze.saturating_sub(frozen.elapsed())).await;
    a.signal(libc::SIGCONT);
    let stepped_down = within(Duration::from_secs(10), async || {
        leader_of(&client, &a).await.as_deref() == Some(b_name.as_str())
    })
    .await;
    verdict.check(
        "the woken leader steps down",
        stepped_down.is_some(),
        format!("after {stepped_down:?}"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let last_ms = (chrono::Utc::now().timestamp_millis() / 1000) * 1000;
    let answers = answers.lock().await.clone();
    check_answers(
        &mut verdict,
        "requests through the standby",
        ANSWER_BOUND,
        &answers,
        |s| (200..300).contains(&s) || s == 503,
    );
    ticks.settle(&mut verdict, last_ms, Duration::from_secs(60)).await;
    ticks.check(&mut verdict, last_ms, &task_states(&store).await);
    a.kill().await;
    b.kill().await;
    verdict.finish();
}
