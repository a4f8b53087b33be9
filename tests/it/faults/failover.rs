//! Failover, many times: two servers on PostgreSQL and an agent; the leader is killed with
//! SIGKILL at random moments relative to the instants, a third of the time inside the 100 ms
//! before one (when its run is recorded but not yet launched). No instant may be missed, none
//! started twice.

use std::time::{Duration, Instant};

use super::{Proc, Rng, Ticks, Verdict, leader_of, long, within};

/// The arguments of every server in the HA scenarios.
pub(super) fn ha_args(store: &str) -> Vec<String> {
    [
        "--store",
        store,
        "--no-local-worker",
        "--election-interval",
        "0.2",
        "--heartbeat-interval",
        "0.2",
        "--worker-timeout",
        "10",
        "--task-history-per-job",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Two servers on `store`, the first leading, and an agent attached.
pub(super) async fn cluster(
    dir: &std::path::Path,
    store: &str,
    client: &reqwest::Client,
) -> (Proc, Proc, Proc) {
    let args = ha_args(store);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Proc::server(&dir.join("s1"), &args);
    a.wait_ready(client).await;
    let leads = within(Duration::from_secs(20), async || {
        leader_of(client, &a).await == Some(a.name())
    })
    .await;
    assert!(leads.is_some(), "s1 never led: {}", super::tail(&a.log));
    let b = Proc::server(&dir.join("s2"), &args);
    b.wait_ready(client).await;
    let agent = Proc::agent(&dir.join("agent"), "a", &[a.agent, b.agent]);
    let attached = super::wait_worker(client, &a.base(), "a", "active").await;
    assert!(
        attached.is_some(),
        "the agent never attached: {}",
        super::tail(&agent.log)
    );
    (a, b, agent)
}

/// Every stored task's state by id.
pub(super) async fn task_states(store: &str) -> std::collections::HashMap<String, String> {
    let pool = sqlx::PgPool::connect(store).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, state FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_fifty_times_misses_and_repeats_no_instant() {
    let _serial = super::SERIAL.lock().await;
    let rounds = if long() { 200 } else { 50 };
    let mut rng = Rng::new();
    let mut verdict = Verdict::new("failover", rng.seed());
    let store = crate::ha::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (a, b, _agent) = cluster(dir.path(), &store, &client).await;
    let ticks = Ticks::create(&client, &a.base(), dir.path(), 5, Duration::from_secs(2)).await;
    let mut servers = [a, b];
    let mut leader = 0;
    let mut takeovers = Vec::new();
    let mut before_instant = 0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..rounds {
        // A third of the kills fall in the 100 ms before an instant, the rest anywhere.
        let offset = if round % 3 == 0 {
            before_instant += 1;
            rng.range(900, 1000)
        } else {
            rng.range(0, 1000)
        };
        let now = chrono::Utc::now().timestamp_millis();
        let target = (now / 1000 + 1) * 1000 + offset as i64;
        tokio::time::sleep(Duration::from_millis((target - now) as u64)).await;
        servers[leader].kill().await;
        let killed = Instant::now();
        let next = 1 - leader;
        let name = servers[next].name();
        let took = within(Duration::from_secs(20), async || {
            leader_of(&client, &servers[next]).await.as_deref() == Some(name.as_str())
        })
        .await;
        let Some(took) = took else {
            verdict.check(
                "the standby takes over",
                false,
                format!("round {round}: no leader after 20 s"),
            );
            break;
        };
        takeovers.push(took.max(killed.elapsed()));
        servers[leader].start();
        servers[leader].wait_ready(&client).await;
        leader = next;
    }
    let last_ms = (chrono::Utc::now().timestamp_millis() / 1000) * 1000;
    verdict.note(
        "kill -9 of the leader",
        format!("{rounds} times, {before_instant} in the 100 ms before an instant"),
    );
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    verdict.check(
        "takeover within 5 s",
        slowest <= Duration::from_secs(5),
        format!("slowest {slowest:?}"),
    );
    ticks.settle(&mut verdict, last_ms, Duration::from_secs(60)).await;
    ticks.check(&mut verdict, last_ms, &task_states(&store).await);
    for server in &mut servers {
        server.kill().await;
    }
    verdict.finish();
}
