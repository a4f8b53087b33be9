//! High availability on PostgreSQL: two `kairos server` processes on one database and an agent;
//! the leader is killed with SIGKILL mid-run and the standby takes over without losing or
//! repeating anything.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::{free_port, lines, wait_until};

/// A fresh database on the test PostgreSQL (started by the README's test command).
pub(crate) async fn fresh_database() -> String {
    let url = std::env::var("KAIROS_TEST_POSTGRES_URL")
        .expect("KAIROS_TEST_POSTGRES_URL is not set: run the README's test command (scripts/test), which starts PostgreSQL");
    // Unique per test: the tests of one run share a process id.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let name = format!("kairos_ha_{}_{serial}_{stamp}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}

struct Node {
    child: Child,
    http: u16,
    agent: u16,
}

fn spawn_server(store: &str, dir: &std::path::Path, name: &str) -> Node {
    let (http, agent) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("server")
        .args(["--store", store, "--no-local-worker", "--hostname", "127.0.0.1"])
        .args([
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--agent-listen",
            &format!("127.0.0.1:{agent}"),
        ])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args([
            "--failure-retry",
            "0.1",
            "--worker-timeout",
            "10",
            "--heartbeat-interval",
            "0.2",
            "--election-interval",
            "0.2",
        ])
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kairos server starts");
    Node { child, http, agent }
}

/// An agent (8 cpus) given these servers in this order.
fn spawn_agent(servers: &[&Node], dir: &std::path::Path) -> Child {
    let list: Vec<String> = servers.iter().map(|n| format!("127.0.0.1:{}", n.agent)).collect();
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("agent")
        .args(["--server", &list.join(","), "--name", "a"])
        .args(["--cpus", "8", "--mem", "4096", "--disk", "1000", "--work-dir"])
        .arg(dir.join("agent"))
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts")
}

/// The scheduled instants a PT1S job wrote: none twice, none missing in between.
fn assert_each_instant_ran_once(ticks: &std::path::Path) {
    let mut dues: Vec<i64> = lines(ticks)
        .iter()
        .map(|l| l.parse().expect("a due time"))
        .collect();
    let written = dues.len();
    dues.sort_unstable();
    dues.dedup();
    assert_eq!(dues.len(), written, "an instant ran twice: {dues:?}");
    for pair in dues.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "an instant was missed between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

async fn get(client: &reqwest::Client, port: u16, path: &str) -> Option<Value> {
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

async fn leader_of(client: &reqwest::Client, port: u16) -> Option<String> {
    get(client, port, "/v1/scheduler/leader")
        .await?
        .get("leader")?
        .as_str()
        .map(str::to_owned)
}

async fn job(client: &reqwest::Client, port: u16, name: &str) -> Value {
    get(client, port, &format!("/v1/scheduler/job/{name}"))
        .await
        .unwrap_or(Value::Null)
}

/// Two servers on one store: `s1` leads, and `s2`, started after it, names it as the leader.
async fn leader_and_standby(store: &str, dir: &std::path::Path, client: &reqwest::Client) -> (Node, Node) {
    let s1 = spawn_server(store, dir, "s1");
    let s1_name = format!("127.0.0.1:{}", s1.http);
    wait_until("s1 leads", async || {
        leader_of(client, s1.http).await.as_deref() == Some(s1_name.as_str())
    })
    .await;
    let s2 = spawn_server(store, dir, "s2");
    // Every server names the leader.
    wait_until("s2 names s1", async || {
        leader_of(client, s2.http).await.as_deref() == Some(s1_name.as_str())
    })
    .await;
    (s1, s2)
}

#[tokio::test]
async fn the_standby_takes_over_and_every_run_happens_exactly_once() {
    let store = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut s1, s2) = leader_and_standby(&store, dir.path(), &client).await;
    let s2_name = format!("127.0.0.1:{}", s2.http);

    // The agent is given the standby first: it is pointed at the leader.
    let _agent = spawn_agent(&[&s2, &s1], dir.path());
    // Requests to the standby are served by the leader.
    wait_until("the agent attached to the leader", async || {
        get(&client, s2.http, "/v1/scheduler/workers")
            .await
            .and_then(|w| w.as_array().cloned())
            .is_some_and(|w| w.iter().any(|w| w["name"] == "a" && w["state"] == "active"))
    })
    .await;

    let ticks = dir.path().join("ticks.log");
    let chain = dir.path().join("chain.log");
    let async_id = dir.path().join("async.id");
    let post = async |path: &str, body: Value| {
        let response = client
            .post(format!("http://127.0.0.1:{}{path}", s2.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204, "{path} {body}");
    };
    post("/v1/scheduler/iso8601", json!({"name": "tick", "command": format!("echo $CHRONOS_JOB_RUN_TIME >> {}", ticks.display()), "schedule": "R//PT1S"})).await;
    post("/v1/scheduler/iso8601", json!({"name": "head", "command": format!("sleep 6; echo head >> {}", chain.display()), "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
    post(
        "/v1/scheduler/dependency",
        json!({"name": "mid", "command": format!("echo mid >> {}", chain.display()), "parents": ["head"]}),
    )
    .await;
    post(
        "/v1/scheduler/dependency",
        json!({"name": "tail", "command": format!("echo tail >> {}", chain.display()), "parents": ["mid"]}),
    )
    .await;
    post("/v1/scheduler/iso8601", json!({"name": "remote", "async": true, "command": format!("echo -n $mesos_task_id > {}", async_id.display()), "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
    for name in ["head", "remote"] {
        let response = client
            .put(format!("http://127.0.0.1:{}/v1/scheduler/job/{name}", s2.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);
    }
    wait_until("the async task waits for its completion", async || {
        !lines(&async_id).is_empty()
            && get(&client, s1.http, "/v1/scheduler/job/remote/tasks")
                .await
                .is_some_and(|t| t[0]["state"] == "waiting")
    })
    .await;
    wait_until("the chain's head runs and ticks are flowing", async || {
        lines(&ticks).len() >= 3
    })
    .await;
    assert!(
        job(&client, s1.http, "head").await["successCount"] == 0,
        "head is still running"
    );

    // Kill the leader outright in the middle of all this.
    s1.child.kill().await.unwrap();
    let killed_at = Instant::now();
    let killed_ms = chrono::Utc::now().timestamp_millis();
    wait_until("s2 leads", async || {
        leader_of(&client, s2.http).await.as_deref() == Some(s2_name.as_str())
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(takeover < Duration::from_secs(5), "takeover took {takeover:?}");

    // The async task started before the failover completes after it.
    let task_id = lines(&async_id)[0].replace(':', "%3A");
    let response = client
        .put(format!(
            "http://127.0.0.1:{}/v1/scheduler/task/{task_id}",
            s2.http
        ))
        .json(&json!({"statusCode": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(job(&client, s2.http, "remote").await["successCount"], 1);

    // The chain completes once: head's end reaches the new leader through the agent.
    wait_until("the chain completes", async || {
        job(&client, s2.http, "tail").await["successCount"] == 1
    })
    .await;
    assert_eq!(lines(&chain), vec!["head", "mid", "tail"]);

    // Ticks continue under the new leader; then count what they wrote.
    wait_until("ticks run under the new leader", async || {
        lines(&ticks)
            .iter()
            .filter_map(|l| l.parse::<i64>().ok())
            .any(|due| due > killed_ms + 3000)
    })
    .await;
    // Tasks run one after another (concurrent is false), so what is written so far is a prefix of the runs.
    assert_each_instant_ran_once(&ticks);
}

#[tokio::test]
async fn a_leader_that_loses_its_database_session_steps_down_and_a_leader_returns() {
    let store = fresh_database().await;
    let database = store.rsplit_once('/').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let s1 = spawn_server(&store, dir.path(), "s1");
    let s1_name = format!("127.0.0.1:{}", s1.http);
    wait_until("s1 leads", async || {
        leader_of(&client, s1.http).await.as_deref() == Some(s1_name.as_str())
    })
    .await;
    let s2 = spawn_server(&store, dir.path(), "s2");
    wait_until("s2 names s1", async || {
        leader_of(&client, s2.http).await.as_deref() == Some(s1_name.as_str())
    })
    .await;
    let _agent = spawn_agent(&[&s1, &s2], dir.path());
    let ticks = dir.path().join("ticks.log");
    let response = client
        .post(format!("http://127.0.0.1:{}/v1/scheduler/iso8601", s1.http))
        .json(&json!({"name": "tick", "command": format!("echo $CHRONOS_JOB_RUN_TIME >> {}", ticks.display()), "schedule": "R//PT1S"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    wait_until("ticks flow", async || lines(&ticks).len() >= 2).await;

    // Cut the leader's lock session, as a dropped connection or a database restart would.
    let admin_url = std::env::var("KAIROS_TEST_POSTGRES_URL").unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let cut = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '{database}'"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut.len(), 1, "exactly one session held the leader lock");
    let cut_ms = chrono::Utc::now().timestamp_millis();

    // Some server leads again, both agree on which, and scheduling resumes.
    wait_until("a leader is back and both servers agree", async || {
        let (a, b) = (
            leader_of(&client, s1.http).await,
            leader_of(&client, s2.http).await,
        );
        a.is_some() && a == b && a.as_deref().is_some_and(|l| !l.is_empty())
    })
    .await;
    wait_until("ticks resume", async || {
        lines(&ticks)
            .iter()
            .filter_map(|l| l.parse::<i64>().ok())
            .any(|due| due > cut_ms + 2000)
    })
    .await;
    assert_each_instant_ran_once(&ticks);
}

#[tokio::test]
async fn a_pause_survives_a_failover() {
    let store = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut s1, s2) = leader_and_standby(&store, dir.path(), &client).await;
    let s2_name = format!("127.0.0.1:{}", s2.http);
    let put = async |path: &str| {
        let response = client
            .put(format!("http://127.0.0.1:{}{path}", s2.http))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    };
    // Paused through the standby, which passes the request to the leader.
    assert_eq!(put("/v1/scheduler/pause").await, 200);
    let response = client
        .post(format!("http://127.0.0.1:{}/v1/scheduler/iso8601", s2.http))
        .json(&json!({"name": "held", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    s1.child.kill().await.unwrap();
    wait_until("s2 leads", async || {
        leader_of(&client, s2.http).await.as_deref() == Some(s2_name.as_str())
    })
    .await;
    let state = get(&client, s2.http, "/v1/scheduler/pause").await.unwrap();
    assert_eq!(state["paused"], true, "the new leader is paused: {state}");
    assert_eq!(
        put("/v1/scheduler/job/held").await,
        409,
        "and refuses a manual run"
    );
    assert_eq!(put("/v1/scheduler/resume").await, 200);
    assert_eq!(put("/v1/scheduler/job/held").await, 204);
}
