//! TLS and trusted agents: HTTPS and the agents' gRPC with a CA and certificate made at test
//! time, agents refused without the shared token, the agent port's protected mode, and a standby
//! forwarding to the leader over HTTPS.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use kairos::agent::Token;
use kairos::tls::CertFiles;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{Harness, free_port, wait_until};

const TOKEN: &str = "agents-only-4f2c9";

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM files.
struct Pki {
    ca: PathBuf,
    files: CertFiles,
    ca_pem: String,
}

impl Pki {
    fn generate(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kairos test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            files: CertFiles {
                cert: write("server.pem", cert.pem()),
                key: write("server-key.pem", key.serialize_pem()),
            },
            ca_pem: ca.pem(),
        }
    }

    /// A client that trusts this CA only.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

/// A server with TLS on both ports, the agent token, and no built-in worker: tasks run on agents.
async fn start(pki: &Pki) -> Harness {
    let files = pki.files.clone();
    let mut h = Harness::start_with(move |config| {
        config.tls = Some(files);
        config.agent_token = Some(Token::new(TOKEN.to_owned()).unwrap());
        config.local_worker = None;
    })
    .await;
    h.client = pki.client();
    h
}

/// `kairos agent` with the test CA, `token` in its environment (none: no token), and its log in
/// `<name>.log`.
fn spawn_agent(h: &Harness, pki: &Pki, name: &str, token: Option<&str>) -> Child {
    let agent_addr = h.server.as_ref().unwrap().agent_addr;
    let log = std::fs::File::create(h.path(&format!("{name}.log"))).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .arg("agent")
        .args(["--server", &agent_addr.to_string(), "--name", name])
        .args(["--cpus", "2", "--mem", "1024", "--disk", "1000"])
        .arg("--ca-cert")
        .arg(&pki.ca)
        .arg("--work-dir")
        .arg(h.path(&format!("agent-{name}")))
        .env("KAIROS_LOG", "warn")
        .env_remove("KAIROS_AGENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("KAIROS_AGENT_TOKEN", token);
    }
    command.spawn().expect("the agent starts")
}

async fn worker_names(h: &Harness) -> Vec<String> {
    let (status, body) = h.get("/v1/scheduler/workers").await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["state"] == "active")
        .filter_map(|w| w["name"].as_str().map(str::to_owned))
        .collect()
}

fn log_of(h: &Harness, name: &str) -> String {
    std::fs::read_to_string(h.path(&format!("{name}.log"))).unwrap_or_default()
}

#[tokio::test]
async fn https_and_the_agent_protocol_run_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::generate(certs.path());
    let h = start(&pki).await;
    let addr = h.server.as_ref().unwrap().addr;
    assert!(h.base.starts_with("https://"), "{}", h.base);
    let (status, body) = h.get("/ping").await;
    assert_eq!((status, body), (200, json!("pong\n")));

    // Plain HTTP gets no answer, and a client that does not trust the CA does not connect.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/ping"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    let error = untrusting.get(h.url("/ping")).send().await.unwrap_err();
    assert!(format!("{error:?}").contains("InvalidCertificate"), "{error:?}");

    // An agent with the token and the CA attaches over TLS and runs a task.
    let _agent = spawn_agent(&h, &pki, "trusted", Some(TOKEN));
    wait_until("the agent is active", async || {
        worker_names(&h).await == ["trusted"]
    })
    .await;
    h.create(json!({"name": "over-tls", "command": "echo hello over TLS", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    assert_eq!(h.put("/v1/scheduler/job/over-tls", None).await.0, 204);
    h.wait_job("over-tls", "success", |j| j["successCount"] == 1)
        .await;
    let task = h.history("over-tls").await.remove(0);
    assert_eq!(
        (task["worker"].clone(), task["stdout"].clone()),
        (json!("trusted"), json!("hello over TLS\n"))
    );
    assert!(
        !log_of(&h, "trusted").contains("refused"),
        "{}",
        log_of(&h, "trusted")
    );

    // Over HTTPS too, the audit log knows where a change came from.
    let (status, audit) = h.get("/v1/scheduler/audit?job=over-tls").await;
    assert_eq!(status, 200, "{audit}");
    let sources: Vec<&Value> = audit.as_array().unwrap().iter().map(|e| &e["source"]).collect();
    assert!(
        !sources.is_empty() && sources.iter().all(|s| *s == "127.0.0.1"),
        "{audit}"
    );
}

#[tokio::test]
async fn agents_without_the_token_are_refused_and_never_get_work() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::generate(certs.path());
    let h = start(&pki).await;
    // A job is waiting for a worker before any agent shows up.
    h.create(json!({"name": "guarded", "command": "echo $HOST", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    assert_eq!(h.put("/v1/scheduler/job/guarded", None).await.0, 204);
    let _wrong = spawn_agent(&h, &pki, "rogue-wrong", Some("guessed-token"));
    let _missing = spawn_agent(&h, &pki, "rogue-missing", None);
    // Each says why it was refused, more than once (it keeps trying, and keeps being refused).
    for (name, why) in [
        ("rogue-wrong", "does not match the scheduler's --agent-token"),
        ("rogue-missing", "requires the agent token"),
    ] {
        wait_until(&format!("{name} logs its refusal twice"), async || {
            log_of(&h, name).matches("refused this agent's token").count() >= 2
        })
        .await;
        assert!(log_of(&h, name).contains(why), "{name}: {}", log_of(&h, name));
        assert!(
            !log_of(&h, name).contains("guessed-token"),
            "never logs its token"
        );
    }
    assert!(worker_names(&h).await.is_empty(), "{:?}", worker_names(&h).await);
    let waiting = h.summary("guarded").await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    let history = h.history("guarded").await;
    assert!(
        history
            .iter()
            .all(|t| t["state"] == "queued" && t["worker"] == "" && t["startedAt"].is_null()),
        "{history:?}"
    );

    // The agent with the token gets the job; the rogues are still not workers.
    let _trusted = spawn_agent(&h, &pki, "trusted", Some(TOKEN));
    h.wait_job("guarded", "success", |j| j["successCount"] == 1).await;
    let tasks = h.history("guarded").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["worker"], "trusted");
    assert_eq!(worker_names(&h).await, ["trusted"]);
}

/// `kairos server` on a fresh data directory with its log in `server.log`.
fn server_command(dir: &Path, listen: u16, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .arg("server")
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--no-local-worker"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .env_remove("KAIROS_AGENT_TOKEN")
        .env_remove("KAIROS_AGENT_LISTEN")
        .env_remove("KAIROS_INSECURE_NO_AUTH")
        .env("KAIROS_LOG", "info")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn an_open_agent_port_needs_the_token_or_insecure_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let output = server_command(dir.path(), free_port(), &["--agent-listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in [
        "--agent-listen",
        "--agent-token",
        "--insecure-no-auth",
        "127.0.0.1",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }

    // With the switch it starts, and says at once that it is unprotected.
    let port = free_port();
    let log = dir.path().join("server.log");
    let _server = server_command(
        dir.path(),
        port,
        &["--agent-listen", "0.0.0.0:0", "--insecure-no-auth"],
    )
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let client = reqwest::Client::new();
    wait_until("the server answers /ping", async || {
        client
            .get(format!("http://127.0.0.1:{port}/ping"))
            .send()
            .await
            .is_ok()
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("WARN") && text.contains("--insecure-no-auth"),
        "{text}"
    );

    // With the token, the same address needs no switch.
    let port = free_port();
    let _server = server_command(
        &dir.path().join("with-token"),
        port,
        &["--agent-listen", "0.0.0.0:0"],
    )
    .env("KAIROS_AGENT_TOKEN", TOKEN)
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_until("the server with a token answers /ping", async || {
        client
            .get(format!("http://127.0.0.1:{port}/ping"))
            .send()
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_standby_forwards_over_https_and_points_agents_to_the_leader_over_tls() {
    let store = crate::ha::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let client = pki.client();
    let spawn_server = |name: &str| {
        let (http, agent) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .arg("server")
            .args(["--store", &store, "--no-local-worker", "--hostname", "127.0.0.1"])
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .args(["--agent-listen", &format!("127.0.0.1:{agent}")])
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .arg("--tls-cert")
            .arg(&pki.files.cert)
            .arg("--tls-key")
            .arg(&pki.files.key)
            // Standbys trust the CA that signed the servers' certificates.
            .arg("--ca-cert")
            .arg(&pki.ca)
            .args(["--heartbeat-interval", "0.2", "--election-interval", "0.2"])
            .env("KAIROS_AGENT_TOKEN", TOKEN)
            .env("KAIROS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kairos server starts");
        (child, http, agent)
    };
    let get = async |port: u16, path: &str| -> Option<Value> {
        let response = client
            .get(format!("https://127.0.0.1:{port}{path}"))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    };
    let (_s1, s1_http, s1_agent) = spawn_server("s1");
    let leader = format!("127.0.0.1:{s1_http}");
    wait_until("s1 leads", async || {
        get(s1_http, "/leader")
            .await
            .is_some_and(|l| l["leader"] == leader)
    })
    .await;
    let (_s2, s2_http, s2_agent) = spawn_server("s2");
    wait_until("s2 names s1", async || {
        get(s2_http, "/leader")
            .await
            .is_some_and(|l| l["leader"] == leader)
    })
    .await;

    // The agent is given the standby first; the standby's hint (host:port) is followed over TLS.
    let _agent = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("agent")
        .args([
            "--server",
            &format!("127.0.0.1:{s2_agent},127.0.0.1:{s1_agent}"),
            "--name",
            "a",
        ])
        .args(["--cpus", "2", "--mem", "1024", "--disk", "1000", "--ca-cert"])
        .arg(&pki.ca)
        .arg("--work-dir")
        .arg(dir.path().join("agent"))
        .env("KAIROS_AGENT_TOKEN", TOKEN)
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts");
    // Every request below goes to the standby, which forwards it to the leader over HTTPS.
    wait_until("the agent attached to the leader", async || {
        get(s2_http, "/v1/scheduler/workers")
            .await
            .and_then(|w| w.as_array().cloned())
            .is_some_and(|w| w.iter().any(|w| w["name"] == "a" && w["state"] == "active"))
    })
    .await;
    let response = client
        .post(format!("https://127.0.0.1:{s2_http}/v1/scheduler/iso8601"))
        .json(&json!({"name": "via-standby", "command": "echo forwarded", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let response = client
        .put(format!(
            "https://127.0.0.1:{s2_http}/v1/scheduler/job/via-standby"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    wait_until("the job ran on the agent", async || {
        get(s2_http, "/v1/scheduler/job/via-standby")
            .await
            .is_some_and(|j| j["successCount"] == 1)
    })
    .await;
    let tasks = get(s2_http, "/v1/scheduler/job/via-standby/tasks").await.unwrap();
    assert_eq!(tasks[0]["worker"], "a", "{tasks}");
    assert_eq!(tasks[0]["stdout"], "forwarded\n", "{tasks}");
}
