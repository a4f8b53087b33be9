//! The README as a new user follows it: the `kairos` binary started from a fresh current
//! directory with the default, relative data and work directories, running a Docker job.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{free_port, wait_until};

/// `kairos ARGS` in `cwd`, as a user types it; only the ports are moved off the defaults, so
/// that tests running side by side don't collide. Its log goes to `cwd/kairos.log`.
fn kairos(cwd: &Path, args: &[&str], http: u16, agent: u16) -> Child {
    let log = std::fs::File::create(cwd.join(format!("{}.log", args[0]))).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(args)
        .current_dir(cwd)
        .env("KAIROS_LISTEN", format!("127.0.0.1:{http}"))
        .env("KAIROS_AGENT_LISTEN", format!("127.0.0.1:{agent}"))
        .env("KAIROS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("kairos starts")
}

/// The README's container job, reading a fetched file by a relative path from its sandbox.
fn container_job(name: &str, fetched: &Path) -> Value {
    json!({
        "name": name,
        "command": "pwd; cat inner.txt; echo \"$MESOS_SANDBOX\"",
        "schedule": "R1//PT1S",
        "retries": 0,
        "fetch": [{"uri": format!("file://{}", fetched.display())}],
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "NONE"},
    })
}

async fn run_container_job(base: &str, name: &str, fetched: &Path, logs: &[&Path]) {
    let client = reqwest::Client::new();
    wait_until("the server answers /ping", async || {
        client.get(format!("{base}/ping")).send().await.is_ok()
    })
    .await;
    let response = client
        .post(format!("{base}/v1/scheduler/iso8601"))
        .json(&container_job(name, fetched))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 204);
    let mut task = Value::Null;
    wait_until("the container task ends", async || {
        let tasks: Value = client
            .get(format!("{base}/v1/scheduler/job/{name}/tasks"))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        task = tasks[0].clone();
        matches!(
            task["state"].as_str(),
            Some("finished" | "failed" | "lost" | "killed")
        )
    })
    .await;
    let logs: Vec<String> = logs
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert_eq!(task["state"], "finished", "{task}\nlogs:\n{}", logs.join("\n"));
    // The container starts in its sandbox, where the fetched file is, mounted at Mesos' path.
    assert_eq!(
        task["stdout"], "/mnt/mesos/sandbox\ninner\n/mnt/mesos/sandbox\n",
        "{task}"
    );
}

#[tokio::test]
async fn a_container_job_runs_with_the_servers_default_data_directory() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let fetched = cwd.path().join("inner.txt");
    std::fs::write(&fetched, "inner\n").unwrap();
    let http = free_port();
    let _server = kairos(cwd.path(), &["server"], http, free_port());
    run_container_job(
        &format!("http://127.0.0.1:{http}"),
        "readme-local",
        &fetched,
        &[&cwd.path().join("server.log")],
    )
    .await;
    // The store is where the README says: ./kairos-data.
    assert!(cwd.path().join("kairos-data/kairos.db").exists());
}

#[tokio::test]
async fn a_container_job_runs_on_an_agent_with_its_default_work_directory() {
    let server_dir = tempfile::tempdir().expect("temp dir");
    let agent_dir = tempfile::tempdir().expect("temp dir");
    let fetched = agent_dir.path().join("inner.txt");
    std::fs::write(&fetched, "inner\n").unwrap();
    let (http, agent_port) = (free_port(), free_port());
    let _server = kairos(
        server_dir.path(),
        &["server", "--no-local-worker"],
        http,
        agent_port,
    );
    let server_addr = format!("127.0.0.1:{agent_port}");
    let _agent = kairos(
        agent_dir.path(),
        &["agent", "--server", &server_addr, "--name", "readme-agent"],
        free_port(),
        free_port(),
    );
    run_container_job(
        &format!("http://127.0.0.1:{http}"),
        "readme-agent",
        &fetched,
        &[
            &server_dir.path().join("server.log"),
            &agent_dir.path().join("agent.log"),
        ],
    )
    .await;
    assert!(agent_dir.path().join("kairos-agent/sandbox").is_dir());
}
