//! Notifications with real receivers: email to an SMTP server (aiosmtpd from PyPI, started here),
//! webhooks to an HTTP sink in the test that checks each signature, a sink that is down and comes
//! back, and two servers on PostgreSQL where a failover neither repeats nor loses a notification.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use warp::Filter;

use crate::{Harness, free_port, wait_until};

const SECRET: &str = "s3cret-for-tests";

/// One POST the sink received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event: String,
    body: Value,
    /// Whether the sink was up and answered 204 (else it answered 503).
    accepted: bool,
}

/// A webhook receiver on loopback: checks every signature, records every POST, and answers 503
/// while it is "down".
#[derive(Clone, Default)]
struct WebhookSink {
    received: Arc<Mutex<Vec<Received>>>,
    down: Arc<AtomicBool>,
}

impl WebhookSink {
    /// Serves on `listener` until the test ends.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let sink = self.clone();
        let route = warp::post()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |path: warp::path::FullPath, headers: warp::http::HeaderMap, body: bytes::Bytes| {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    // The receiver's side of the signature, with the hmac crate, not kairos' code.
                    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
                    mac.update(&body);
                    let expected = format!("sha256={}", hex(&mac.finalize().into_bytes()));
                    assert_eq!(header("x-kairos-signature"), expected, "a valid signature");
                    assert_eq!(header("content-type"), "application/json");
                    let accepted = !sink.down.load(Ordering::SeqCst);
                    sink.received.lock().unwrap().push(Received {
                        path: path.as_str().to_owned(),
                        event: header("x-kairos-event"),
                        body: serde_json::from_slice(&body).expect("a JSON body"),
                        accepted,
                    });
                    let status = if accepted {
                        warp::http::StatusCode::NO_CONTENT
                    } else {
                        warp::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    warp::reply::with_status(warp::reply(), status)
                },
            );
        tokio::spawn(warp::serve(route).incoming(listener).run());
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many times each path accepted a delivery.
    fn accepted_by_path(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.received().into_iter().filter(|r| r.accepted) {
            *counts.entry(r.path).or_default() += 1;
        }
        counts
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sample of `/metrics?format=prometheus`.
async fn metric(h: &Harness, series: &str) -> f64 {
    let (_, text) = h.get_text("/metrics?format=prometheus").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The job's one task id, once it has ended.
async fn ended_task(h: &Harness, job: &str) -> Value {
    h.wait_job(job, "its run failed", |j| j["errorCount"] == 1).await;
    let history = h.history(job).await;
    assert_eq!(history.len(), 1, "{history:?}");
    history[0].clone()
}

#[tokio::test]
async fn webhooks_are_signed_retried_while_the_sink_is_down_and_arrive_once() {
    // Nothing listens on the sink's port yet: every attempt is refused until it comes up.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let h = Harness::start_with(|c| {
        c.notify.webhook = Some(format!("{base}/server"));
        c.notify.secret = Some(kairos::notify::Secret::new(SECRET.to_owned()));
        c.notify.first_retry = Duration::from_millis(100);
    })
    .await;
    h.create(json!({
        "name": "broken", "command": "echo 'the disk is full' >&2; exit 3", "retries": 0, "schedule": "R1//PT1H",
        "notifications": [
            {"webhook": format!("{base}/job"), "on": ["failure"]},
            {"webhook": format!("{base}/slack"), "format": "slack"},
            {"webhook": format!("{base}/successes"), "on": ["success"]}
        ]
    }))
    .await;
    let task = ended_task(&h, "broken").await;
    let failures = r#"kairos_notification_failures_total{channel="webhook"}"#;
    wait_until("three deliveries failed twice or more", async || {
        metric(&h, failures).await >= 6.0
    })
    .await;
    assert_eq!(
        metric(&h, r#"kairos_notifications_sent_total{channel="webhook"}"#).await,
        0.0
    );

    let sink = WebhookSink::default();
    sink.serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let sent = r#"kairos_notifications_sent_total{channel="webhook"}"#;
    wait_until("the three webhooks are delivered", async || {
        metric(&h, sent).await == 3.0
    })
    .await;
    // Each was done once delivered: nothing more arrives, and each arrived once.
    let expected: HashMap<String, usize> = ["/server", "/job", "/slack"]
        .into_iter()
        .map(|p| (p.to_owned(), 1))
        .collect();
    assert_eq!(sink.accepted_by_path(), expected, "{:?}", sink.received());
    assert_eq!(
        metric(&h, r#"kairos_notifications_abandoned_total{channel="webhook"}"#).await,
        0.0
    );

    let received = sink.received();
    let json_body = &received.iter().find(|r| r.path == "/job").unwrap().body;
    let task_id = task["taskId"].as_str().unwrap();
    assert_eq!(json_body["kind"], "failure");
    assert_eq!(json_body["job"], "broken");
    assert_eq!(json_body["taskId"], task_id);
    assert_eq!(json_body["exitCode"], 3);
    assert_eq!(json_body["worker"], "kairos-test");
    assert_eq!(json_body["attempt"], 0);
    assert!(json_body["durationMs"].as_i64().is_some(), "{json_body}");
    assert!(
        json_body["stderrTail"]
            .as_str()
            .unwrap()
            .contains("the disk is full")
    );
    assert!(json_body["due"].as_str().unwrap().ends_with('Z'));
    let link = json_body["link"].as_str().unwrap();
    assert!(
        link.starts_with("http://kairos-test:") && link.contains("/tasks/ct%3A"),
        "{link}"
    );
    // The event id is the header and the payload's id, the same for every sink of the event.
    let server_body = &received.iter().find(|r| r.path == "/server").unwrap().body;
    assert_eq!(server_body, json_body, "the same payload");
    for r in &received {
        if r.path != "/slack" {
            assert_eq!(r.event, json_body["id"].as_str().unwrap());
        }
    }
    let slack = &received.iter().find(|r| r.path == "/slack").unwrap();
    assert_eq!(slack.event, json_body["id"].as_str().unwrap());
    let text = slack.body["text"].as_str().unwrap();
    assert_eq!(slack.body.as_object().unwrap().len(), 1, "Slack wants only text");
    assert!(
        text.contains("job broken failed (exit code 3)") && text.contains(link),
        "{text}"
    );

    // A success now is a recovery: the job's default sinks and the success listener get it.
    let (status, _) = h
        .post(
            "/v1/scheduler/iso8601",
            json!({"name": "broken", "command": "true", "retries": 0, "schedule": "R0/2030-01-01T00:00:00Z/P1D",
                   "notifications": [{"webhook": format!("{base}/successes"), "on": ["success"]}]}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = h.put("/v1/scheduler/job/broken", None).await;
    assert_eq!(status, 204);
    wait_until("the recovery is delivered", async || {
        metric(&h, sent).await == 5.0
    })
    .await;
    let recovered: Vec<_> = sink
        .received()
        .into_iter()
        .filter(|r| r.body["kind"] == "recovery")
        .map(|r| r.path)
        .collect();
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    assert!(recovered.contains(&"/server".to_owned()) && recovered.contains(&"/successes".to_owned()));
}

/// The aiosmtpd sink, killed with the test.
struct SmtpSink {
    _child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

async fn start_smtp_sink() -> SmtpSink {
    let python = std::env::var("KAIROS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/notify/smtp_sink.py");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(&python)
        .arg(script)
        .arg(port.to_string())
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} (set KAIROS_PYTHON to a python with aiosmtpd): {e}"));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    assert!(
        matches!(&ready, Ok(Ok(Some(line))) if line == "ready"),
        "the SMTP sink did not start (is aiosmtpd installed? scripts/test installs it): {ready:?}"
    );
    SmtpSink {
        _child: child,
        port,
        dir,
    }
}

#[tokio::test]
async fn a_final_failure_is_mailed_to_the_owners() {
    let smtp = start_smtp_sink().await;
    let h = Harness::start_with(|c| {
        c.notify.mail = Some(kairos::notify::Mail {
            host: "127.0.0.1".to_owned(),
            port: smtp.port,
            from: "kairos@example.com".to_owned(),
            user: None,
            password: None,
            ssl: false,
        });
    })
    .await;
    h.create(json!({
        "name": "nightly", "command": "echo 'cannot reach the warehouse' >&2; exit 7", "retries": 0,
        "owner": "ops@example.com, dev@example.com", "schedule": "R1//PT1H"
    }))
    .await;
    let task = ended_task(&h, "nightly").await;
    let first = smtp.dir.path().join("0.json");
    wait_until("the email arrives", async || first.exists()).await;
    let mail: Value = serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    assert_eq!(mail["from"], "kairos@example.com");
    assert_eq!(mail["to"], json!(["ops@example.com", "dev@example.com"]));
    assert_eq!(mail["subject"], "kairos: job nightly failed (exit code 7)");
    let body = mail["body"].as_str().unwrap();
    let task_id = task["taskId"].as_str().unwrap();
    let encoded: String = task_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let link = format!("{}/tasks/{encoded}", h.base.replace("127.0.0.1", "kairos-test"));
    for part in [
        "Job:       nightly",
        &format!("Task:      {task_id}"),
        "Worker:    kairos-test",
        "Exit code: 7",
        "Duration:  ",
        "cannot reach the warehouse",
        &format!("Link:      {link}"),
    ] {
        assert!(body.contains(part), "{part:?} in:\n{body}");
    }
    assert!(mail["messageId"].as_str().unwrap().ends_with("@example.com>"));
    wait_until("it is counted", async || {
        metric(&h, r#"kairos_notifications_sent_total{channel="email"}"#).await == 1.0
    })
    .await;
    assert_eq!(
        std::fs::read_dir(smtp.dir.path()).unwrap().count(),
        1,
        "one message"
    );
}

/// A `kairos server` process on the shared database, with its built-in worker.
fn spawn_server(store: &str, dir: &std::path::Path, name: &str, hook: &str) -> (Child, u16) {
    let http = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("server")
        .args(["--store", store, "--hostname", "127.0.0.1"])
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--agent-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--election-interval", "0.2", "--notify-retry-delay", "0.1"])
        .args(["--notify-webhook", hook])
        .env("KAIROS_WEBHOOK_SECRET", SECRET)
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kairos server starts");
    (child, http)
}

async fn leader_of(client: &reqwest::Client, port: u16) -> Option<String> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/v1/scheduler/leader"))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["leader"].as_str().map(str::to_owned)
}

/// Notices not yet done in the shared outbox.
async fn pending_notices(store: &str) -> i64 {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(store).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM notices WHERE state = 'pending'")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failover_neither_repeats_nor_loses_a_notification() {
    let store = crate::ha::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let sink = WebhookSink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    sink.serve(listener);

    let (mut first, first_port) = spawn_server(&store, dir.path(), "s1", &hook);
    let first_name = format!("127.0.0.1:{first_port}");
    wait_until("s1 leads", async || {
        leader_of(&client, first_port).await.as_deref() == Some(first_name.as_str())
    })
    .await;
    let (_second, second_port) = spawn_server(&store, dir.path(), "s2", &hook);
    wait_until("s2 follows s1", async || {
        leader_of(&client, second_port).await.as_deref() == Some(first_name.as_str())
    })
    .await;
    let create = async |name: &str| {
        let response = client
            .post(format!("http://127.0.0.1:{second_port}/v1/scheduler/iso8601"))
            .json(&json!({"name": name, "command": "exit 1", "retries": 0, "schedule": "R1//PT1H"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);
    };
    let events_of = |job: &str| -> Vec<Received> {
        sink.received()
            .into_iter()
            .filter(|r| r.body["job"] == job)
            .collect()
    };

    // Delivered by the first leader and recorded done before it dies.
    create("before").await;
    wait_until("the first failure is delivered", async || {
        events_of("before").iter().any(|r| r.accepted)
    })
    .await;
    wait_until("and recorded done", async || pending_notices(&store).await == 0).await;

    // Committed but not delivered: the sink refuses until the first leader is gone.
    sink.down.store(true, Ordering::SeqCst);
    create("during").await;
    wait_until("the second failure is being retried", async || {
        events_of("during").len() >= 2
    })
    .await;
    first.kill().await.unwrap();
    sink.down.store(false, Ordering::SeqCst);
    let second_name = format!("127.0.0.1:{second_port}");
    wait_until("s2 leads", async || {
        leader_of(&client, second_port).await.as_deref() == Some(second_name.as_str())
    })
    .await;
    wait_until("the new leader delivers what was left", async || {
        events_of("during").iter().any(|r| r.accepted)
    })
    .await;
    wait_until("and records it done", async || pending_notices(&store).await == 0).await;

    let accepted = |job: &str| events_of(job).into_iter().filter(|r| r.accepted).count();
    assert_eq!(accepted("before"), 1, "not sent again by the new leader");
    assert_eq!(accepted("during"), 1);
    assert_eq!(
        events_of("before").len(),
        1,
        "the new leader never even tried the delivered one"
    );
    let ids: std::collections::HashSet<String> = sink.received().into_iter().map(|r| r.event).collect();
    assert_eq!(ids.len(), 2, "one event id per failure");
}
