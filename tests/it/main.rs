//! Integration tests: the real server on a free loopback port, driven over HTTP, running real processes.

mod api;
mod binary;
mod browser;
mod chronos_python;
mod cli;
mod cron;
mod faults;
mod ha;
mod lifecycle;
mod metrics;
mod notify;
mod openapi;
mod output;
mod policies;
mod readme;
mod schemathesis;
mod security;
mod swarm;
mod tls;
mod ui;
mod ui_flows;
mod workers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kairos::config::ServerConfig;
use kairos::server::Server;
use serde_json::Value;

/// A server on its own data directory, and a client for it.
pub struct Harness {
    pub server: Option<Server>,
    /// The configuration it was started with, for restarts.
    pub config: ServerConfig,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub base: String,
}

pub fn test_config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::for_data_dir(dir);
    // Quick retries, kills and heartbeats keep the tests short; the semantics are the same.
    config.failure_retry = Duration::from_millis(100);
    config.kill_grace = Duration::from_secs(2);
    config.hostname = "kairos-test".to_owned();
    config.worker_timeout = Duration::from_millis(1500);
    config.heartbeat_interval = Duration::from_millis(200);
    config
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        let base = base_url(&config, &server);
        Harness {
            server: Some(server),
            config,
            dir,
            client: reqwest::Client::new(),
            base,
        }
    }

    /// A client of a server that runs elsewhere (a `kairos` process the test started).
    pub fn attach(base: String) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        Harness {
            server: None,
            config: test_config(dir.path()),
            dir,
            client: reqwest::Client::new(),
            base,
        }
    }

    /// Stops the server and starts a new one with the same configuration and data directory.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let server = Server::start(self.config.clone()).await.expect("server restarts");
        self.base = base_url(&self.config, &server);
        self.server = Some(server);
    }

    /// Restarts on the same agent port, so running agents find the new server.
    pub async fn restart_keeping_agent_port(&mut self) {
        if let Some(server) = &self.server {
            self.config.agent_listen = server.agent_addr;
        }
        self.restart().await;
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        read("POST", path, response).await
    }

    pub async fn put(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.put(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        read("PUT", path, request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        read(
            "GET",
            path,
            self.client.get(self.url(path)).send().await.expect("request"),
        )
        .await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("request");
        let status = response.status().as_u16();
        let kind = content_type(&response);
        let text = response.text().await.expect("body");
        openapi::check_answer("GET", path, status, &kind, &text);
        (status, text)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        read(
            "DELETE",
            path,
            self.client.delete(self.url(path)).send().await.expect("request"),
        )
        .await
    }

    /// Creates a scheduled job, asserting success.
    pub async fn create(&self, job: Value) {
        let (status, body) = self.post("/v1/scheduler/iso8601", job).await;
        assert_eq!(status, 204, "creating a job: {body}");
    }

    pub async fn job(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/scheduler/job/{name}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The summary entry of a job.
    pub async fn summary(&self, name: &str) -> Value {
        let (_, body) = self.get("/v1/scheduler/jobs/summary").await;
        body["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    /// Polls a job until `check` holds, failing after 20 s.
    pub async fn wait_job(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            last = self.job(name).await;
            if check(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {name}: {what}; last seen {last}");
    }

    pub async fn history(&self, name: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/scheduler/job/{name}/tasks?limit=100"))
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }
}

/// The server's address as a URL: `https` when it serves TLS.
fn base_url(config: &ServerConfig, server: &Server) -> String {
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{}", server.addr)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The answer's status and body, which must be what `docs/openapi.json` promises for it.
async fn read(method: &str, path: &str, response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let kind = content_type(&response);
    let text = response.text().await.expect("body");
    openapi::check_answer(method, path, status, &kind, &text);
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// Polls until `check` returns true, failing after 20 s.
pub async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
