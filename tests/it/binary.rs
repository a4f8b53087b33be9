//! The `kairos` binary itself: configuration from flags and environment, and a clean stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use crate::{free_port, wait_until};

#[tokio::test]
async fn the_binary_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file_data = dir.path().join("file-data");
    let config = dir.path().join("kairos.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:1\"\nhostname = \"from-file\"\ndata_dir = {file_data:?}\n"),
    )
    .unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        // The listen address and host name come from the environment, the data directory from a
        // flag, each beating the file.
        .env("KAIROS_CONFIG", &config)
        .env("KAIROS_LISTEN", format!("127.0.0.1:{port}"))
        .env("KAIROS_HOSTNAME", "bin-test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kairos starts");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until("the binary answers /ping", async || {
        client.get(format!("{base}/ping")).send().await.is_ok()
    })
    .await;
    let leader: serde_json::Value = client
        .get(format!("{base}/leader"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(leader["leader"], format!("bin-test:{port}"));
    let response = client
        .post(format!("{base}/v1/scheduler/iso8601"))
        .json(
            &serde_json::json!({"name": "kept", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    // SAFETY: sending SIGTERM to our own child process.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(data.join("kairos.db").exists());
    assert!(!file_data.exists(), "the flag beat the file");
}

#[tokio::test]
async fn the_binary_rejects_bad_settings() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["server", "--listen", "not-an-address"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not-an-address") && stderr.contains("--listen"),
        "{stderr}"
    );
    // An agent needs a scheduler's address from a flag, its variable or its file.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("agent")
        .env_remove("KAIROS_SERVER")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--server") && stderr.contains("KAIROS_SERVER"),
        "{stderr}"
    );
}
