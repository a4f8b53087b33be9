//! Workers: agents as real `kairos agent` processes, placement by constraints and resources,
//! lost agents, Docker containers and fetch.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{Harness, lines, wait_until};

/// Starts `kairos agent` against the harness' server.
pub(crate) fn spawn_agent(h: &Harness, name: &str, extra: &[&str]) -> Child {
    let agent_addr = h.server.as_ref().unwrap().agent_addr;
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("agent")
        .args([
            "--server",
            &agent_addr.to_string(),
            "--name",
            name,
            "--hostname",
            &format!("host-{name}"),
        ])
        .args(["--cpus", "2", "--mem", "1024", "--disk", "1000"])
        .arg("--work-dir")
        .arg(h.path(&format!("agent-{name}")))
        .args(extra)
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts")
}

async fn workers(h: &Harness) -> Vec<Value> {
    let (status, body) = h.get("/v1/scheduler/workers").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

pub(crate) async fn wait_for_worker(h: &Harness, name: &str, state: &str) {
    wait_until(&format!("worker {name} is {state}"), async || {
        workers(h)
            .await
            .iter()
            .any(|w| w["name"] == name && w["state"] == state)
    })
    .await;
}

pub(crate) fn no_local_worker(config: &mut kairos::config::ServerConfig) {
    config.local_worker = None;
}

#[tokio::test]
async fn the_built_in_worker_is_listed() {
    let h = Harness::start().await;
    let list = workers(&h).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let local = &list[0];
    assert_eq!(
        (
            local["name"].clone(),
            local["local"].clone(),
            local["state"].clone()
        ),
        (json!("kairos-test"), json!(true), json!("active"))
    );
    assert!(local["total"]["cpus"].as_f64().unwrap() >= 1.0);
    assert_eq!(local["used"]["cpus"], 0.0);
}

#[tokio::test]
async fn constraints_send_tasks_to_the_matching_agent() {
    let h = Harness::start_with(no_local_worker).await;
    let _a = spawn_agent(&h, "a", &["--attribute", "rack=r1"]);
    let _b = spawn_agent(&h, "b", &["--attribute", "rack=r2"]);
    wait_for_worker(&h, "a", "active").await;
    wait_for_worker(&h, "b", "active").await;
    let b = workers(&h).await.into_iter().find(|w| w["name"] == "b").unwrap();
    assert_eq!(b["attributes"], json!({"rack": "r2"}));
    assert_eq!(b["total"], json!({"cpus": 2.0, "mem": 1024.0, "disk": 1000.0}));
    let cases = [
        ("on-r2", json!([["rack", "EQUALS", "r2"]]), "host-b"),
        ("on-r1", json!([["rack", "LIKE", "r[0-1]"]]), "host-a"),
        ("not-r1", json!([["rack", "UNLIKE", "r1"]]), "host-b"),
        ("by-host", json!([["hostname", "EQUALS", "host-a"]]), "host-a"),
    ];
    for (name, constraints, _) in &cases {
        h.create(json!({"name": name, "command": "echo $HOST", "constraints": constraints, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
            .await;
        assert_eq!(h.put(&format!("/v1/scheduler/job/{name}"), None).await.0, 204);
    }
    for (name, _, host) in cases {
        h.wait_job(name, "success", |j| j["successCount"] == 1).await;
        let task = h.history(name).await.remove(0);
        assert_eq!(task["stdout"], format!("{host}\n"), "{name}");
        assert_eq!(task["worker"], host.trim_start_matches("host-"), "{name}");
    }
}

#[tokio::test]
async fn an_unplaceable_task_waits_then_runs_when_a_matching_agent_joins() {
    let h = Harness::start_with(no_local_worker).await;
    let _a = spawn_agent(&h, "a", &["--attribute", "rack=r1"]);
    wait_for_worker(&h, "a", "active").await;
    h.create(json!({"name": "gpu", "command": "true", "constraints": [["gpu", "EQUALS", "yes"]], "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.create(
        json!({"name": "huge", "command": "true", "cpus": 64, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    h.put("/v1/scheduler/job/gpu", None).await;
    h.put("/v1/scheduler/job/huge", None).await;
    wait_until("both wait with a reason", async || {
        let gpu = h.summary("gpu").await;
        let huge = h.summary("huge").await;
        gpu["state"] == "queued" && gpu["queuedReason"].is_string() && huge["queuedReason"].is_string()
    })
    .await;
    let reason = h.summary("gpu").await["queuedReason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("gpu"), "{reason}");
    let huge_reason = h.summary("huge").await["queuedReason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(huge_reason.contains("64"), "{huge_reason}");
    // A matching worker joins: the waiting task starts on it; the oversized one keeps waiting.
    let _g = spawn_agent(&h, "g", &["--attribute", "gpu=yes"]);
    h.wait_job("gpu", "success after the agent joined", |j| {
        j["successCount"] == 1
    })
    .await;
    assert_eq!(h.history("gpu").await[0]["worker"], "g");
    assert_eq!(h.summary("huge").await["state"], "queued");
    assert_eq!(h.job("huge").await["errorCount"], 0, "waiting is not failing");
}

#[tokio::test]
async fn resources_are_never_overcommitted() {
    let h = Harness::start_with(no_local_worker).await;
    let _a = spawn_agent(&h, "a", &[]);
    wait_for_worker(&h, "a", "active").await;
    // The agent has 2 cpus: two 1-cpu tasks fit, a third waits for one of them to end.
    let gate = h.path("gate");
    for i in 0..3 {
        let command = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
        h.create(json!({"name": format!("w{i}"), "command": command, "cpus": 1, "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
        h.put(&format!("/v1/scheduler/job/w{i}"), None).await;
    }
    wait_until("two run and one waits", async || {
        let mut states = Vec::new();
        for i in 0..3 {
            states.push(
                h.summary(&format!("w{i}")).await["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        states.iter().filter(|s| *s == "1 running").count() == 2
            && states.iter().filter(|s| *s == "queued").count() == 1
    })
    .await;
    let a = workers(&h).await.remove(0);
    assert_eq!(a["used"]["cpus"], 2.0);
    std::fs::write(&gate, "open").unwrap();
    for i in 0..3 {
        h.wait_job(&format!("w{i}"), "success", |j| j["successCount"] == 1)
            .await;
    }
    wait_until("resources are released", async || {
        workers(&h).await[0]["used"]["cpus"] == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_killed_agent_gets_its_task_retried_on_another() {
    let h = Harness::start_with(no_local_worker).await;
    let mut a = spawn_agent(&h, "a", &["--attribute", "pool=x"]);
    wait_for_worker(&h, "a", "active").await;
    let pid_file = h.path("first.pid");
    // On host-a the task hangs; anywhere else it succeeds.
    let command = format!(
        "if [ \"$HOST\" = host-a ]; then echo $$ > {}; sleep 60; fi; echo done on $HOST",
        pid_file.display()
    );
    h.create(json!({"name": "survivor", "command": command, "retries": 2, "constraints": [["pool", "EQUALS", "x"]], "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/survivor", None).await;
    wait_until("the task runs on a", async || !lines(&pid_file).is_empty()).await;
    let _b = spawn_agent(&h, "b", &["--attribute", "pool=x"]);
    wait_for_worker(&h, "b", "active").await;
    a.kill().await.unwrap();
    wait_for_worker(&h, "a", "lost").await;
    let job = h
        .wait_job("survivor", "success on b", |j| j["successCount"] == 1)
        .await;
    assert_eq!(job["errorCount"], 0);
    let history = h.history("survivor").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        (history[0]["worker"].clone(), history[0]["state"].clone()),
        (json!("b"), json!("finished"))
    );
    assert_eq!(
        (history[1]["worker"].clone(), history[1]["state"].clone()),
        (json!("a"), json!("lost"))
    );
    assert_eq!(history[0]["stdout"], "done on host-b\n");
    // The first attempt's shell died with its agent.
    let pid: i32 = lines(&pid_file)[0].parse().unwrap();
    // SAFETY: signal 0 only probes; SIGKILL to the group cleans up the orphaned sleep.
    wait_until(
        "the task's shell died with its agent",
        async || unsafe { libc::kill(pid, 0) } != 0,
    )
    .await;
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}

#[tokio::test]
async fn a_returning_agent_keeps_its_running_task() {
    let h = Harness::start_with(|c| {
        c.local_worker = None;
        c.worker_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    let _a = spawn_agent(&h, "a", &[]);
    wait_for_worker(&h, "a", "active").await;
    let gate = h.path("gate");
    let started = h.path("started");
    let command = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo finished",
        started.display(),
        gate.display()
    );
    h.create(json!({"name": "long", "command": command, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/long", None).await;
    // Running on the agent, not only recorded as running (it is sent once its launch is marked).
    wait_until("the task runs", async || started.exists()).await;
    assert_eq!(h.summary("long").await["state"], "1 running");
    // The scheduler restarts; the agent reconnects and reports the task as still running.
    let mut h = h;
    h.restart_keeping_agent_port().await;
    wait_for_worker(&h, "a", "active").await;
    assert_eq!(h.summary("long").await["state"], "1 running");
    std::fs::write(&gate, "open").unwrap();
    let job = h.wait_job("long", "success", |j| j["successCount"] == 1).await;
    assert_eq!(job["errorCount"], 0);
    let history = h.history("long").await;
    assert_eq!(history.len(), 1, "not run twice: {history:?}");
    assert_eq!(history[0]["stdout"], "finished\n");
}

fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn container_jobs_run_in_docker_with_their_limits() {
    let h = Harness::start().await;
    h.create(json!({
        "name": "boxed",
        "command": "echo in-container; sleep 30",
        "cpus": 0.5,
        "mem": 64,
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "NONE"},
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/boxed", None).await;
    let mut container = String::new();
    wait_until("the container runs", async || {
        let task = h.history("boxed").await;
        let Some(id) = task.first().and_then(|t| t["taskId"].as_str().map(str::to_owned)) else {
            return false;
        };
        container = docker(&["ps", "-q", "--filter", &format!("label=kairos.task_id={id}")]);
        !container.is_empty()
    })
    .await;
    let limits = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.NetworkMode}}",
        &container,
    ]);
    assert_eq!(limits, format!("500000000 {} none", 64 * 1024 * 1024));
    assert_eq!(h.delete("/v1/scheduler/task/kill/boxed").await.0, 204);
    wait_until("the task is killed", async || {
        h.history("boxed").await[0]["state"] == "killed"
    })
    .await;
    wait_until("the container is removed", async || {
        docker(&["ps", "-aq", "--filter", &format!("id={container}")]).is_empty()
    })
    .await;
    let task = h.history("boxed").await.remove(0);
    assert_eq!(task["stdout"], "in-container\n");

    h.create(json!({
        "name": "boxed-fail",
        "command": "echo out; echo err >&2; exit 3",
        "retries": 0,
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest"},
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/boxed-fail", None).await;
    h.wait_job("boxed-fail", "final failure", |j| j["errorCount"] == 1)
        .await;
    let task = h.history("boxed-fail").await.remove(0);
    assert_eq!(
        (
            task["exitCode"].clone(),
            task["stdout"].clone(),
            task["stderr"].clone()
        ),
        (json!(3), json!("out\n"), json!("err\n"))
    );
}

#[tokio::test]
async fn privileged_container_parameters_are_refused() {
    let h = Harness::start().await;
    for parameter in [
        json!({"key": "privileged", "value": "true"}),
        json!({"key": "cap-add", "value": "SYS_ADMIN"}),
        json!({"key": "volume", "value": "/var/run/docker.sock:/var/run/docker.sock"}),
    ] {
        let (status, body) = h
            .post("/v1/scheduler/iso8601", json!({"name": "escalate", "command": "true", "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "parameters": [parameter]}}))
            .await;
        assert_eq!(status, 400, "{parameter}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("container.parameters"),
            "{body}"
        );
    }
    // The socket (or a directory holding it) as a volume is refused the same way.
    for host_path in ["/var/run/docker.sock", "/run", "/"] {
        let (status, body) = h
            .post("/v1/scheduler/iso8601", json!({"name": "escalate", "command": "true", "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest",
                "volumes": [{"hostPath": host_path, "containerPath": "/host", "mode": "RW"}]}}))
            .await;
        assert_eq!(status, 400, "{host_path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("container.volumes"),
            "{body}"
        );
    }
    let (_, jobs) = h.get("/v1/scheduler/jobs").await;
    assert_eq!(jobs, json!([]));
    let allowed = Harness::start_with(|c| c.allow_privileged_containers = true).await;
    let (status, body) = allowed
        .post("/v1/scheduler/iso8601", json!({"name": "escalate", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D", "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "parameters": [{"key": "privileged", "value": "true"}]}}))
        .await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test]
async fn fetched_files_are_in_the_sandbox_and_a_failed_fetch_fails_the_task() {
    let h = Harness::start().await;
    let source = h.path("input.txt");
    std::fs::write(&source, "payload\n").unwrap();
    h.create(json!({
        "name": "reader",
        "command": "cat input.txt; cat $MESOS_SANDBOX/copy.txt",
        "fetch": [{"uri": format!("file://{}", source.display())}, {"uri": source.display().to_string(), "output_file": "copy.txt"}],
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.create(json!({
        "name": "missing",
        "command": "true",
        "retries": 0,
        "uris": [h.path("nope.txt").display().to_string()],
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/reader", None).await;
    h.put("/v1/scheduler/job/missing", None).await;
    h.wait_job("reader", "success", |j| j["successCount"] == 1).await;
    assert_eq!(h.history("reader").await[0]["stdout"], "payload\npayload\n");
    h.wait_job("missing", "failure", |j| j["errorCount"] == 1).await;
    let task = h.history("missing").await.remove(0);
    assert!(task["message"].as_str().unwrap().contains("fetch"), "{task}");
    assert!(task["message"].as_str().unwrap().contains("nope.txt"), "{task}");
}

/// Whether the tests run as root, the only user that can start tasks as another.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// A task as `nobody` must reach its sandbox under the data directory, as an operator would
/// arrange it (a temporary directory is private to its owner).
fn let_users_through(h: &Harness) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn tasks_run_as_their_run_as_user_and_a_missing_user_fails_the_task() {
    let h = Harness::start().await;
    let_users_through(&h);
    h.create(json!({
        "name": "as-nobody",
        "command": "id -un; id -u; echo $HOME; echo x > mine && echo wrote",
        "runAsUser": "nobody",
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.create(json!({
        "name": "as-ghost",
        "command": "echo never",
        "runAsUser": "kairos-no-such-user",
        "retries": 0,
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/as-ghost", None).await;
    h.wait_job("as-ghost", "failure", |j| j["errorCount"] == 1).await;
    let task = h.history("as-ghost").await.remove(0);
    let expected = if running_as_root() {
        "runAsUser 'kairos-no-such-user' does not exist on this worker"
    } else {
        "only root can start a task as another user"
    };
    assert!(task["message"].as_str().unwrap().contains(expected), "{task}");
    assert_eq!(task["stdout"], "", "nothing ran");
    if !running_as_root() {
        return;
    }
    h.put("/v1/scheduler/job/as-nobody", None).await;
    h.wait_job("as-nobody", "success", |j| j["successCount"] == 1)
        .await;
    let nobody = kairos::executor::user::lookup("nobody")
        .unwrap()
        .expect("the host has 'nobody'");
    assert_ne!(nobody.uid, 0);
    assert_eq!(
        h.history("as-nobody").await[0]["stdout"],
        format!("nobody\n{}\n{}\nwrote\n", nobody.uid, nobody.home.display()),
        "id -u is nobody's, with its home, and the sandbox is its own"
    );
}

#[tokio::test]
async fn a_file_the_tasks_user_cannot_read_is_not_fetched() {
    use std::os::unix::fs::PermissionsExt;
    if !running_as_root() {
        // Without root the worker cannot take on another user's rights; it runs tasks as itself.
        return;
    }
    let h = Harness::start().await;
    let_users_through(&h);
    let secret = h.path("secret.txt");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = h.path("public.txt");
    std::fs::write(&public, "for all\n").unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (name, user, uri) in [
        ("steal", "nobody", format!("file://{}", secret.display())),
        ("steal-path", "nobody", secret.display().to_string()),
        ("share", "nobody", format!("file://{}", public.display())),
        ("own", "root", format!("file://{}", secret.display())),
    ] {
        h.create(json!({
            "name": name,
            "command": "cat *.txt",
            "runAsUser": user,
            "retries": 0,
            "fetch": [{"uri": uri}],
            "schedule": "R0/2030-01-01T00:00:00Z/P1D",
        }))
        .await;
        h.put(&format!("/v1/scheduler/job/{name}"), None).await;
    }
    for name in ["steal", "steal-path"] {
        h.wait_job(name, "failure", |j| j["errorCount"] == 1).await;
        let task = h.history(name).await.remove(0);
        let message = task["message"].as_str().unwrap();
        assert!(message.contains("runAsUser 'nobody' may not read"), "{task}");
        assert!(message.contains("secret.txt"), "{task}");
        assert_eq!(task["stdout"], "", "the task never ran");
    }
    h.wait_job("share", "success", |j| j["successCount"] == 1).await;
    assert_eq!(h.history("share").await[0]["stdout"], "for all\n");
    h.wait_job("own", "success", |j| j["successCount"] == 1).await;
    assert_eq!(h.history("own").await[0]["stdout"], "root only\n");
}

#[tokio::test]
async fn host_paths_are_refused_outside_the_allowed_prefixes_at_the_api_and_on_the_worker() {
    let mut h = Harness::start_with(|c| c.allowed_host_paths = vec!["/srv/kairos".into()]).await;
    let job = |host_path: &str| {
        json!({"name": "mount", "command": "true", "retries": 0, "schedule": "R0/2030-01-01T00:00:00Z/P1D",
            "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest",
                "volumes": [{"hostPath": host_path, "containerPath": "/host", "mode": "RO"}]}})
    };
    for refused in ["/etc", "/srv/kairos/../../etc", "/srv/kairos-other"] {
        let (status, body) = h.post("/v1/scheduler/iso8601", job(refused)).await;
        assert_eq!(status, 400, "{refused}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("field 'container.volumes': "), "{body}");
        assert!(
            message.contains("/srv/kairos"),
            "names the allowed prefix: {body}"
        );
    }
    let (status, body) = h
        .post("/v1/scheduler/iso8601", json!({"name": "mount", "command": "true", "container": {"type": "DOCKER",
            "image": "kairos-test/busybox:latest", "parameters": [{"key": "volume", "value": "/etc:/host-etc"}]}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("container.parameters"),
        "{body}"
    );
    let (_, jobs) = h.get("/v1/scheduler/jobs").await;
    assert_eq!(jobs, json!([]));

    // A job stored while the prefix was allowed: the worker refuses it once it no longer is.
    h.create(job("/srv/kairos/data")).await;
    h.config.allowed_host_paths.clear();
    h.restart().await;
    h.put("/v1/scheduler/job/mount", None).await;
    h.wait_job("mount", "failure", |j| j["errorCount"] == 1).await;
    let task = h.history("mount").await.remove(0);
    let message = task["message"].as_str().unwrap();
    assert!(message.contains("the container is refused"), "{task}");
    assert!(
        message.contains("host path '/srv/kairos/data' is refused"),
        "{task}"
    );
}

#[tokio::test]
async fn fetch_schemes_limit_what_jobs_may_fetch() {
    let h = Harness::start_with(|c| c.fetch_schemes = vec!["https".to_owned()]).await;
    for (field, body) in [
        (
            "fetch",
            json!({"name": "f", "command": "true", "fetch": [{"uri": "file:///etc/passwd"}]}),
        ),
        (
            "fetch",
            json!({"name": "f", "command": "true", "fetch": [{"uri": "/etc/passwd"}]}),
        ),
        (
            "uris",
            json!({"name": "f", "command": "true", "uris": ["http://example.com/x"]}),
        ),
    ] {
        let (status, reply) = h.post("/v1/scheduler/iso8601", body).await;
        assert_eq!(status, 400, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("field '{field}': ")), "{reply}");
        assert!(
            message.contains("is not allowed here (allowed: https)"),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn a_lost_agent_that_returns_has_its_stale_task_killed() {
    let h = Harness::start_with(no_local_worker).await;
    let a = spawn_agent(&h, "a", &["--attribute", "pool=x"]);
    wait_for_worker(&h, "a", "active").await;
    let pid_file = h.path("stale.pid");
    let command = format!(
        "if [ \"$HOST\" = host-a ]; then echo $$ > {}; sleep 60; fi; echo done on $HOST",
        pid_file.display()
    );
    h.create(json!({"name": "partitioned", "command": command, "constraints": [["pool", "EQUALS", "x"]], "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/partitioned", None).await;
    wait_until("the task runs on a", async || !lines(&pid_file).is_empty()).await;
    let stale: i32 = lines(&pid_file)[0].parse().unwrap();
    // Freeze the agent: its heartbeats stop, as in a network partition, but its task keeps running.
    let agent_pid = a.id().unwrap() as i32;
    // SAFETY: stopping and resuming our own child process.
    unsafe { libc::kill(agent_pid, libc::SIGSTOP) };
    wait_for_worker(&h, "a", "lost").await;
    let _b = spawn_agent(&h, "b", &["--attribute", "pool=x"]);
    h.wait_job("partitioned", "success on b", |j| j["successCount"] == 1)
        .await;
    assert_eq!(
        unsafe { libc::kill(stale, 0) },
        0,
        "the stale task still runs while its agent is frozen"
    );
    unsafe { libc::kill(agent_pid, libc::SIGCONT) };
    // The agent comes back, reports the task it still runs, and is told to kill it.
    wait_for_worker(&h, "a", "active").await;
    wait_until(
        "the stale task is killed",
        async || unsafe { libc::kill(stale, 0) } != 0,
    )
    .await;
    let job = h.job("partitioned").await;
    assert_eq!(
        (job["successCount"].clone(), job["errorCount"].clone()),
        (json!(1), json!(0))
    );
    drop(a);
}

// ----- Reconciliation with real agents on one Docker engine -----

/// `kairos agent` with its own work directory (its identity lives there) and its log in a file.
fn spawn_agent_in(h: &Harness, name: &str, dir: &str, extra: &[&str]) -> Child {
    let agent_addr = h.server.as_ref().unwrap().agent_addr;
    let log = std::fs::File::create(h.path(&format!("{dir}.log"))).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("agent")
        .args(["--server", &agent_addr.to_string(), "--name", name])
        .args(["--hostname", &format!("host-{dir}")])
        .args(["--cpus", "2", "--mem", "1024", "--disk", "1000"])
        .arg("--work-dir")
        .arg(h.path(dir))
        .args(extra)
        .env("KAIROS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts")
}

fn reconciling(config: &mut kairos::config::ServerConfig) {
    config.local_worker = None;
    config.worker_timeout = std::time::Duration::from_secs(2);
}

/// The ids of the containers of a task (running or not).
fn containers(task_id: &str) -> Vec<String> {
    let listed = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=kairos.task_id={task_id}"),
    ]);
    listed.lines().map(str::to_owned).collect()
}

async fn newest_task(h: &Harness, name: &str) -> Value {
    h.history(name).await.into_iter().next().unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_restarted_agent_touches_only_its_own_containers_and_removes_what_it_kills() {
    let h = Harness::start_with(reconciling).await;
    let mut a2 = spawn_agent_in(&h, "a2", "a2", &["--attribute", "pool=x"]);
    wait_for_worker(&h, "a2", "active").await;
    h.create(
        json!({"name": "lc1", "command": "sleep 30", "retries": 2, "constraints": [["pool", "EQUALS", "x"]],
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "NONE"},
        "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    h.put("/v1/scheduler/job/lc1", None).await;
    let mut first = String::new();
    wait_until("the container runs on a2", async || {
        first = newest_task(&h, "lc1").await["taskId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !first.is_empty()
            && !docker(&["ps", "-q", "--filter", &format!("label=kairos.task_id={first}")]).is_empty()
    })
    .await;
    a2.kill().await.unwrap();
    wait_for_worker(&h, "a2", "lost").await;
    // The retry runs on a3, which shares the engine.
    let _a3 = spawn_agent_in(&h, "a3", "a3", &["--attribute", "pool=x"]);
    let mut retry = String::new();
    wait_until("the retry runs on a3", async || {
        let task = newest_task(&h, "lc1").await;
        retry = task["taskId"].as_str().unwrap_or_default().to_owned();
        task["worker"] == "a3" && task["state"] == "running" && retry != first
    })
    .await;
    wait_until("the retry's container runs", async || {
        !docker(&["ps", "-q", "--filter", &format!("label=kairos.task_id={retry}")]).is_empty()
    })
    .await;
    // a2 comes back: it adopts its own old container, which the scheduler no longer wants, so
    // that one is killed and removed; a3's is not touched.
    let _a2 = spawn_agent_in(&h, "a2", "a2", &["--attribute", "pool=x"]);
    wait_for_worker(&h, "a2", "active").await;
    wait_until("a2's stale container is gone", async || {
        containers(&first).is_empty()
    })
    .await;
    let task = newest_task(&h, "lc1").await;
    assert_eq!(
        (task["taskId"].as_str(), task["state"].as_str()),
        (Some(retry.as_str()), Some("running")),
        "{task}"
    );
    assert!(!docker(&["ps", "-q", "--filter", &format!("label=kairos.task_id={retry}")]).is_empty());
    assert_eq!(h.delete("/v1/scheduler/task/kill/lc1").await.0, 204);
    wait_until("the retry is killed and removed", async || {
        containers(&retry).is_empty()
    })
    .await;
}

#[tokio::test]
async fn an_agent_back_within_the_timeout_reports_how_its_container_ended() {
    let h = Harness::start_with(reconciling).await;
    let mut a4 = spawn_agent_in(&h, "a4", "a4", &[]);
    wait_for_worker(&h, "a4", "active").await;
    h.create(
        json!({"name": "adopted", "command": "echo early; sleep 3; echo late; exit 5", "retries": 0,
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "NONE"},
        "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    h.put("/v1/scheduler/job/adopted", None).await;
    let mut id = String::new();
    wait_until("the container runs", async || {
        id = newest_task(&h, "adopted").await["taskId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !id.is_empty() && !docker(&["ps", "-q", "--filter", &format!("label=kairos.task_id={id}")]).is_empty()
    })
    .await;
    a4.kill().await.unwrap();
    let _a4 = spawn_agent_in(&h, "a4", "a4", &[]);
    let job = h
        .wait_job("adopted", "the end is recorded", |j| j["errorCount"] == 1)
        .await;
    assert_eq!(job["successCount"], 0);
    let task = newest_task(&h, "adopted").await;
    assert_eq!(
        (
            task["taskId"].as_str(),
            task["state"].as_str(),
            task["exitCode"].as_i64()
        ),
        (Some(id.as_str()), Some("failed"), Some(5)),
        "{task}"
    );
    assert_eq!(task["stdout"], "early\nlate\n");
    assert_eq!(h.history("adopted").await.len(), 1, "run once");
    assert!(containers(&id).is_empty(), "removed");
    let used = workers(&h).await.into_iter().find(|w| w["name"] == "a4").unwrap()["used"]["cpus"].clone();
    assert_eq!(used, json!(0.0));
}

#[tokio::test]
async fn a_frozen_agent_that_thaws_has_its_stale_container_killed_and_removed() {
    let h = Harness::start_with(reconciling).await;
    let a = spawn_agent_in(&h, "fa", "fa", &["--attribute", "pool=y"]);
    wait_for_worker(&h, "fa", "active").await;
    h.create(json!({"name": "frozen", "command": "if [ \"$HOST\" = host-fa ]; then sleep 60; fi; echo done", "retries": 1,
        "constraints": [["pool", "EQUALS", "y"]],
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "NONE"},
        "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/frozen", None).await;
    let mut stale = String::new();
    wait_until("the container runs on fa", async || {
        stale = newest_task(&h, "frozen").await["taskId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !stale.is_empty()
            && !docker(&["ps", "-q", "--filter", &format!("label=kairos.task_id={stale}")]).is_empty()
    })
    .await;
    let pid = a.id().unwrap() as i32;
    // SAFETY: stopping and resuming our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_for_worker(&h, "fa", "lost").await;
    let _b = spawn_agent_in(&h, "fb", "fb", &["--attribute", "pool=y"]);
    h.wait_job("frozen", "success on fb", |j| j["successCount"] == 1)
        .await;
    assert_eq!(
        containers(&stale).len(),
        1,
        "the stale container runs while its agent is frozen"
    );
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for_worker(&h, "fa", "active").await;
    wait_until("the stale container is killed and removed", async || {
        containers(&stale).is_empty()
    })
    .await;
    let job = h.job("frozen").await;
    assert_eq!(
        (job["successCount"].clone(), job["errorCount"].clone()),
        (json!(1), json!(0))
    );
    drop(a);
}

#[tokio::test]
async fn a_second_agent_under_a_live_name_is_refused_until_the_first_is_lost() {
    let h = Harness::start_with(reconciling).await;
    let mut first = spawn_agent_in(&h, "twin", "twin-1", &["--attribute", "copy=1"]);
    wait_for_worker(&h, "twin", "active").await;
    let gate = h.path("gate");
    h.create(json!({"name": "steady", "command": format!("while [ ! -e {} ]; do sleep 0.05; done; echo ok", gate.display()),
        "retries": 0, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/steady", None).await;
    wait_until("the task runs", async || {
        h.summary("steady").await["state"] == "1 running"
    })
    .await;
    // A clone of the machine: same name, another identity and other attributes.
    let _second = spawn_agent_in(&h, "twin", "twin-2", &["--attribute", "copy=2"]);
    let log = h.path("twin-2.log");
    wait_until("the second agent is told why it is refused", async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("refused this agent's name")
    })
    .await;
    let listed = workers(&h).await;
    let twin = listed.iter().find(|w| w["name"] == "twin").unwrap();
    assert_eq!(
        (twin["hostname"].as_str(), twin["attributes"]["copy"].as_str()),
        (Some("host-twin-1"), Some("1"))
    );
    std::fs::write(&gate, "").unwrap();
    let job = h.wait_job("steady", "success", |j| j["successCount"] == 1).await;
    assert_eq!(job["errorCount"], 0, "the first agent's task was not disturbed");
    // Once the first is gone past the timeout, the second takes the name over.
    first.kill().await.unwrap();
    wait_until("the second agent holds the name", async || {
        workers(&h)
            .await
            .iter()
            .any(|w| w["name"] == "twin" && w["state"] == "active" && w["hostname"] == "host-twin-2")
    })
    .await;
}
