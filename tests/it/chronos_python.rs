//! An existing Chronos client, `chronos-python` from PyPI, drives kairos unchanged.
//!
//! The README's test command installs the client into `target/compat-venv` and points
//! `KAIROS_PYTHON` at it; without that, `python3` must have `chronos` importable.

use crate::Harness;

#[tokio::test]
async fn chronos_python_client_works_unchanged() {
    // Its full job mounts the host path /srv, refused unless under an allowed prefix.
    run(
        Harness::start_with(|c| c.allowed_host_paths = vec!["/srv".into()]).await,
        &[],
    )
    .await;
}

#[tokio::test]
async fn chronos_python_client_works_with_credentials_and_is_refused_without() {
    let h = Harness::start_with(|c| {
        c.http_credentials = Some(kairos::auth::Credentials::parse("py:secret").unwrap());
        c.allowed_host_paths = vec!["/srv".into()];
    })
    .await;
    run(h, &["py", "secret"]).await;
}

async fn run(h: Harness, credentials: &[&str]) {
    let python = std::env::var("KAIROS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/chronos_python_compat.py"
    );
    let address = h.server.as_ref().unwrap().addr.to_string();
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&address)
        .args(credentials)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "chronos-python run failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("compatibility: ok"));
}
