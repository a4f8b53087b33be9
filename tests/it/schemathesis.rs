//! schemathesis (PyPI) against the real `kairos server`: requests generated from
//! `docs/openapi.json` for every operation, and no answer may be a 5xx, time out, or differ from
//! what the spec promises (status, content type, headers, body schema).
//!
//! `scripts/test` installs schemathesis into `target/schemathesis-venv` and points
//! `KAIROS_SCHEMATHESIS` at its `st` command.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::free_port;
use crate::security::{ADMIN, basic};

/// Generated cases per operation in the fuzzing and stateful phases (the coverage phase adds its
/// own, a few thousand in all): enough to reach every refusal the spec lists, few enough that
/// the runs stay within a couple of minutes on two cores.
const EXAMPLES: &str = "50";
/// Where every answer is a refusal (401, 403), a few suffice.
const REFUSED_EXAMPLES: &str = "10";

/// A fixed seed makes a failure reproducible; change it (or run `st` by hand) to explore.
const SEED: &str = "20261201";

/// The checks that apply to an API read as leniently as Chronos reads it. Left out:
/// `negative_data_rejection` and `positive_data_acceptance`, since the spec cannot say what the
/// server accepts (Chronos takes numbers in strings and `null` as absent, answers 400 for a job
/// that does not exist, and a schedule's grammar is not a JSON schema); `ignored_auth` runs where
/// authentication is on (without it, loopback needs none by design); the other authorization
/// checks need a second user's objects, and tests/it/security.rs covers every route by role.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

#[tokio::test]
async fn schemathesis_finds_nothing_with_the_default_settings() {
    let server = Kairos::start(&[]).await;
    server.pause(None).await;
    server.schemathesis(EXAMPLES, &[]).await;
    server.nothing_ran(None).await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_with_authentication() {
    let credentials = format!("{}:{}", ADMIN.0, ADMIN.1);
    let server = Kairos::start(&["--http-credentials", &credentials]).await;
    let admin = basic(ADMIN.0, ADMIN.1);
    server.pause(Some(&admin)).await;
    server.schemathesis(EXAMPLES, &["--auth", &credentials]).await;
    server.nothing_ran(Some(&admin)).await;
    // A read-only token: every change is a 403, which must be as the spec says too.
    let answer = server
        .client
        .post(format!("{}/v1/scheduler/tokens", server.base))
        .header("authorization", &admin)
        .json(&serde_json::json!({"name": "schemathesis-reader", "role": "read"}))
        .send()
        .await
        .expect("a token");
    assert_eq!(answer.status(), 201);
    let token: serde_json::Value = answer.json().await.expect("the token");
    let bearer = format!(
        "Authorization: Bearer {}",
        token["token"].as_str().expect("a secret")
    );
    // Its own credentials only: schemathesis would otherwise try made-up ones, and ten wrong
    // attempts a minute pause the address (429) for the rest of the run.
    let own = ["--generation-with-security-parameters", "false"];
    server
        .schemathesis(REFUSED_EXAMPLES, &[&own[..], &["-H", &bearer]].concat())
        .await;
    // Last, as nobody: every 401 and its `WWW-Authenticate`, and no route that skips the guard.
    let checks = format!("{CHECKS},ignored_auth");
    server
        .schemathesis(REFUSED_EXAMPLES, &[&own[..], &["--checks", &checks]].concat())
        .await;
}

/// The `kairos` binary started as users start it: `kairos server` in a fresh directory.
struct Kairos {
    /// Killed when dropped.
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
}

impl Kairos {
    async fn start(extra: &[&str]) -> Kairos {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("kairos.log")).expect("log file");
        let port = free_port();
        // Generated jobs carry random commands, containers and fetch URLs, which a worker would
        // run on this machine. So this server has no built-in worker (and no agent can attach
        // without knowing its port), and the scheduler is paused before schemathesis starts:
        // nothing launches, and the manual runs it asks for are refused with 409.
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .arg("server")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--agent-listen", "127.0.0.1:0"])
            .arg("--no-local-worker")
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("kairos starts");
        let server = Kairos {
            _child: child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        let ping = format!("{}/ping", server.base);
        crate::wait_until("the binary answers /ping", async || {
            server.client.get(&ping).send().await.is_ok()
        })
        .await;
        server
    }

    async fn pause(&self, auth: Option<&str>) {
        let mut request = self.client.put(format!("{}/v1/scheduler/pause", self.base));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let answer = request.send().await.expect("pause");
        assert_eq!(
            answer.status(),
            200,
            "pausing: {}",
            answer.text().await.unwrap_or_default()
        );
    }

    /// The pause held (schemathesis cannot resume: that operation is excluded) and no task
    /// started.
    async fn nothing_ran(&self, auth: Option<&str>) {
        let get = |path: &str| {
            let request = self.client.get(format!("{}{path}", self.base));
            match auth {
                Some(auth) => request.header("authorization", auth),
                None => request,
            }
        };
        let state: serde_json::Value = get("/v1/scheduler/pause")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["paused"], true, "{state}");
        let metrics: serde_json::Value = get("/metrics").send().await.unwrap().json().await.unwrap();
        assert_eq!(
            metrics["counters"]["kairos.tasks.started"]["count"], 0,
            "{metrics}"
        );
    }

    /// Runs schemathesis on the spec the server serves, failing with its report on any finding.
    /// `extra` comes last, so a `--checks` there replaces [`CHECKS`].
    async fn schemathesis(&self, examples: &str, extra: &[&str]) {
        let st = std::env::var("KAIROS_SCHEMATHESIS").unwrap_or_else(|_| {
            panic!(
                "KAIROS_SCHEMATHESIS is not set: run scripts/test, which installs schemathesis into \
                 target/schemathesis-venv and sets it to its `st`"
            )
        });
        let run = tokio::process::Command::new(&st)
            .arg("run")
            .arg(format!("{}/openapi.json", self.base))
            .args(["--checks", CHECKS])
            .args(["--max-examples", examples, "--seed", SEED])
            // A hang is a failure, not a slow test.
            .args(["--request-timeout", "10"])
            // `/scheduler/...` is the same router as `/v1/scheduler/...`; testing both doubles the
            // time and finds nothing more. Resuming would let generated jobs start.
            .args(["--exclude-path-regex", "^/scheduler/|/resume$"])
            .args(["--generation-database", "none", "--no-color"])
            .args(extra)
            // Its reports and caches go to the temp dir, not the repository.
            .current_dir(self.dir.path())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(240), run)
            .await
            .unwrap_or_else(|_| panic!("schemathesis ran over 4 minutes{}", self.log_tail()))
            .unwrap_or_else(|e| panic!("cannot run {st}: {e} (run scripts/test to install it)"));
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "schemathesis found problems ({}):\n{report}{}",
            output.status,
            self.log_tail()
        );
        println!("{report}");
    }

    /// The end of the server's log, for a failure's message.
    fn log_tail(&self) -> String {
        tail(&self.dir.path().join("kairos.log"), 40)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    format!(
        "\nthe server's log (last {lines} lines):\n{}",
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}
