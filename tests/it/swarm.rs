//! The Docker Swarm backend against a real single-node Swarm, the one scripts/test makes on the
//! test engine: services as tasks, node labels as attributes, drained and paused nodes, kills,
//! a scheduler killed -9 and started again, and a cluster that also has an agent.
//!
//! The tests share the one node (its labels and availability), so they run one at a time; each
//! has a namespace of its own, so no test sees another's services.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::faults::{Proc, leader_of};
use super::ha::fresh_database;
use super::workers::{no_local_worker, spawn_agent, wait_for_worker};
use super::{Harness, wait_until};
use kairos::config::{ServerConfig, SwarmConfig};

static SWARM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `docker` CLI, which must succeed; its output.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The Swarm's one node. Whatever a test changes on it is undone when it is dropped, even when
/// the test fails.
struct Node {
    id: String,
    hostname: String,
    labels: Vec<String>,
}

impl Node {
    fn get() -> Node {
        let id = docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
        assert!(
            !id.is_empty(),
            "this Docker engine is in no Swarm: run scripts/test, which initialises a single-node Swarm"
        );
        let hostname = docker(&["node", "inspect", &id, "--format", "{{.Description.Hostname}}"]);
        Node {
            id,
            hostname,
            labels: Vec::new(),
        }
    }

    fn worker(&self) -> String {
        format!("swarm:{}", self.hostname)
    }

    fn label(&mut self, key: &str, value: &str) {
        docker(&[
            "node",
            "update",
            "--label-add",
            &format!("{key}={value}"),
            &self.id,
        ]);
        self.labels.push(key.to_owned());
    }

    fn availability(&self, availability: &str) {
        docker(&["node", "update", "--availability", availability, &self.id]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for key in &self.labels {
            let _ = std::process::Command::new("docker")
                .args(["node", "update", "--label-rm", key, &self.id])
                .output();
        }
        let _ = std::process::Command::new("docker")
            .args(["node", "update", "--availability", "active", &self.id])
            .output();
    }
}

/// A namespace no other test (or run) uses.
fn namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "kt{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn swarm_config(config: &mut ServerConfig, namespace: &str) {
    config.swarm = Some(SwarmConfig {
        namespace: namespace.to_owned(),
        node_disk: 100_000.0,
        poll: Duration::from_millis(200),
    });
}

/// A server whose only workers are the Swarm's nodes.
async fn start(namespace: &str, node: &Node, adjust: impl FnOnce(&mut ServerConfig)) -> Harness {
    let h = Harness::start_with(|c| {
        no_local_worker(c);
        swarm_config(c, namespace);
        adjust(c);
    })
    .await;
    wait_for_worker(&h, &node.worker(), "active").await;
    h
}

/// The services of a namespace.
fn services(namespace: &str, job: Option<&str>) -> Vec<String> {
    let owner = format!("label=kairos.owner={namespace}");
    let mut args = vec!["service", "ls", "-q", "--filter", &owner];
    let job = job.map(|job| format!("label=kairos.job={job}"));
    if let Some(job) = &job {
        args.extend(["--filter", job]);
    }
    docker(&args).lines().map(str::to_owned).collect()
}

async fn no_services_left(namespace: &str) {
    wait_until("every service of the test is removed", async || {
        services(namespace, None).is_empty()
    })
    .await;
}

/// A container job that runs when asked to (`PUT /job/<name>`), once.
fn job(name: &str, command: &str, extra: Value) -> Value {
    let mut job = json!({
        "name": name,
        "command": command,
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
        "retries": 0,
        "cpus": 0.1,
        "mem": 32,
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "BRIDGE"},
    });
    if let (Some(job), Value::Object(extra)) = (job.as_object_mut(), extra) {
        job.extend(extra);
    }
    job
}

async fn run(h: &Harness, name: &str) {
    let (status, body) = h.put(&format!("/v1/scheduler/job/{name}"), None).await;
    assert_eq!(status, 204, "running {name}: {body}");
}

/// The job's newest task, once it is in one of `states`.
async fn task_in(h: &Harness, name: &str, states: &[&str]) -> Value {
    let mut task = Value::Null;
    wait_until(&format!("{name} has a task {states:?}"), async || {
        task = h.history(name).await.first().cloned().unwrap_or(Value::Null);
        states.iter().any(|s| task["state"] == *s)
    })
    .await;
    task
}

async fn queued_reason(h: &Harness, name: &str) -> String {
    let mut reason = String::new();
    wait_until(&format!("{name} waits with a reason"), async || {
        reason = h.summary(name).await["queuedReason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !reason.is_empty()
    })
    .await;
    reason
}

#[tokio::test]
async fn a_task_is_a_pinned_one_replica_service_with_its_limits_and_labels_removed_when_done() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let h = start(&ns, &node, |_| {}).await;
    h.create(job(
        "limits",
        "echo started; sleep 2",
        json!({"cpus": 0.25, "mem": 64}),
    ))
    .await;
    run(&h, "limits").await;
    let task = task_in(&h, "limits", &["running"]).await;
    assert_eq!(task["worker"], node.worker());
    let mut found = Vec::new();
    wait_until("the service exists", async || {
        found = services(&ns, Some("limits"));
        !found.is_empty()
    })
    .await;
    let spec: Value = serde_json::from_str(&docker(&[
        "service",
        "inspect",
        &found[0],
        "--format",
        "{{json .Spec}}",
    ]))
    .expect("the service's spec is JSON");
    let template = &spec["TaskTemplate"];
    for side in ["Limits", "Reservations"] {
        assert_eq!(
            template["Resources"][side]["NanoCPUs"], 250_000_000,
            "{side}: {spec}"
        );
        assert_eq!(
            template["Resources"][side]["MemoryBytes"], 67_108_864,
            "{side}: {spec}"
        );
    }
    assert_eq!(template["RestartPolicy"]["Condition"], "none", "{spec}");
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 1, "{spec}");
    assert_eq!(
        template["Placement"]["Constraints"],
        json!([format!("node.id=={}", node.id)]),
        "{spec}"
    );
    assert_eq!(spec["Labels"]["kairos.job"], "limits");
    assert_eq!(spec["Labels"]["kairos.task"], task["taskId"]);
    // No worker on the same engine may take its container for one of its own.
    let container_labels = &template["ContainerSpec"]["Labels"];
    assert!(container_labels.get("kairos.owner").is_none(), "{spec}");
    let done = task_in(&h, "limits", &["finished", "failed"]).await;
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["stdout"], "started\n");
    no_services_left(&ns).await;
}

#[tokio::test]
async fn output_exit_codes_and_what_swarm_cannot_run() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let h = start(&ns, &node, |c| c.output_limit = 1000).await;
    h.create(job("codes", "echo out; echo err >&2; exit 3", json!({})))
        .await;
    h.create(job("chatty", "yes kairos | head -c 5000", json!({})))
        .await;
    h.create(job(
        "noimage",
        "true",
        json!({"container": {"type": "DOCKER", "image": "kairos-test/none:latest", "network": "BRIDGE"}}),
    ))
    .await;
    h.create(job(
        "isolated",
        "true",
        json!({"container": {"type": "DOCKER", "image": "kairos-test/busybox:latest", "network": "NONE"}}),
    ))
    .await;
    for name in ["codes", "chatty", "noimage", "isolated"] {
        run(&h, name).await;
    }
    let codes = task_in(&h, "codes", &["failed", "finished"]).await;
    assert_eq!(codes["state"], "failed");
    assert_eq!(codes["exitCode"], 3);
    assert_eq!(codes["stdout"], "out\n");
    assert_eq!(codes["stderr"], "err\n");
    let chatty = task_in(&h, "chatty", &["failed", "finished"]).await;
    let stdout = chatty["stdout"].as_str().unwrap_or_default();
    assert!(stdout.starts_with("kairos\nkairos\n"), "{chatty}");
    assert!(
        stdout.contains("output truncated, 4000 more bytes dropped"),
        "{chatty}"
    );
    let noimage = task_in(&h, "noimage", &["failed", "finished"]).await;
    assert_eq!(noimage["state"], "failed");
    assert!(noimage["exitCode"].is_null(), "{noimage}");
    assert!(
        noimage["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("image"),
        "{noimage}"
    );
    let isolated = task_in(&h, "isolated", &["failed", "finished"]).await;
    assert!(
        isolated["message"]
            .as_str()
            .unwrap_or_default()
            .contains("NONE network"),
        "{isolated}"
    );
    // A command without a container, or a job that fetches, waits for an agent or the
    // built-in worker and says so.
    h.create(json!({"name": "plain", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    run(&h, "plain").await;
    let reason = queued_reason(&h, "plain").await;
    assert!(reason.contains("runs commands without a container"), "{reason}");
    no_services_left(&ns).await;
}

#[tokio::test]
async fn constraints_match_node_labels_and_a_changed_label_counts_at_once() {
    let _swarm = SWARM.lock().await;
    let mut node = Node::get();
    let ns = namespace();
    let rack = format!("{ns}-rack");
    node.label(&rack, "r1");
    let h = start(&ns, &node, |_| {}).await;
    let constrained = |name: &str, operator: &str, value: &str| {
        job(
            name,
            "echo on-$HOST",
            json!({"constraints": [[rack, operator, value]]}),
        )
    };
    h.create(constrained("equals", "EQUALS", "r1")).await;
    h.create(constrained("like", "LIKE", "r[0-9]")).await;
    h.create(constrained("unlike", "UNLIKE", "r1")).await;
    h.create(job(
        "host",
        "true",
        json!({"constraints": [["hostname", "EQUALS", node.hostname]]}),
    ))
    .await;
    for name in ["equals", "like", "unlike", "host"] {
        run(&h, name).await;
    }
    for name in ["equals", "like", "host"] {
        let task = task_in(&h, name, &["finished", "failed"]).await;
        assert_eq!(task["state"], "finished", "{task}");
        assert_eq!(task["worker"], node.worker());
    }
    let reason = queued_reason(&h, "unlike").await;
    assert!(
        reason.contains(&rack),
        "the reason names the constraint: {reason}"
    );
    // The node's label changes: the waiting task runs, without the node registering again.
    node.label(&rack, "r2");
    let task = task_in(&h, "unlike", &["finished", "failed"]).await;
    assert_eq!(task["state"], "finished", "{task}");
    no_services_left(&ns).await;
}

#[tokio::test]
async fn a_drained_node_loses_its_tasks_a_paused_one_keeps_them_and_both_queue_new_ones() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let h = start(&ns, &node, |_| {}).await;
    h.create(job("long", "sleep 300", json!({}))).await;
    h.create(job("later", "echo later", json!({}))).await;
    h.create(job("short", "sleep 2; echo short", json!({}))).await;
    run(&h, "long").await;
    task_in(&h, "long", &["running"]).await;

    node.availability("drain");
    let lost = task_in(&h, "long", &["lost"]).await;
    assert!(
        lost["message"].as_str().unwrap_or_default().contains("drained"),
        "{lost}"
    );
    run(&h, "later").await;
    queued_reason(&h, "later").await;
    node.availability("active");
    let later = task_in(&h, "later", &["finished", "failed"]).await;
    assert_eq!(later["stdout"], "later\n", "{later}");

    // Paused: what runs finishes, nothing new starts until the node is active again.
    run(&h, "short").await;
    // Running on the node, not only launched: Swarm assigns no pending task to a paused node.
    wait_until("short runs on the node", async || {
        services(&ns, Some("short")).first().is_some_and(|service| {
            docker(&["service", "ps", service, "--format", "{{.CurrentState}}"]).starts_with("Running")
        })
    })
    .await;
    node.availability("pause");
    wait_until("the paused node takes no new task", async || {
        let (_, workers) = h.get("/v1/scheduler/workers").await;
        workers
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["name"] == node.worker() && w["accepting"] == false)
    })
    .await;
    run(&h, "later").await;
    let short = task_in(&h, "short", &["finished", "failed"]).await;
    assert_eq!(short["stdout"], "short\n", "{short}");
    let reason = queued_reason(&h, "later").await;
    assert!(reason.contains("taking new tasks"), "{reason}");
    assert_eq!(h.history("later").await[0]["state"], "queued");
    node.availability("active");
    task_in(&h, "later", &["finished"]).await;
    no_services_left(&ns).await;
}

#[tokio::test]
async fn a_kill_or_a_time_limit_stops_the_service_with_sigterm_and_keeps_what_it_wrote() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let h = start(&ns, &node, |_| {}).await;
    h.create(job(
        "trapped",
        "trap 'echo got-term; exit 7' TERM; echo started; while true; do sleep 0.1; done",
        json!({}),
    ))
    .await;
    run(&h, "trapped").await;
    task_in(&h, "trapped", &["running"]).await;
    wait_until("the task has set its trap", async || {
        services(&ns, Some("trapped"))
            .first()
            .is_some_and(|service| docker(&["service", "logs", "--raw", service]).contains("started"))
    })
    .await;
    let (status, body) = h.delete("/v1/scheduler/task/kill/trapped").await;
    assert_eq!(status, 204, "{body}");
    let killed = task_in(&h, "trapped", &["killed", "failed", "finished"]).await;
    assert_eq!(killed["state"], "killed", "{killed}");
    assert_eq!(killed["stdout"], "started\ngot-term\n", "{killed}");
    no_services_left(&ns).await;

    // maxCompletionTime: Swarm has no time limit, so the scheduler stops the service itself.
    h.create(job(
        "overrun",
        "echo begun; sleep 300",
        json!({"maxCompletionTime": 2}),
    ))
    .await;
    run(&h, "overrun").await;
    let overrun = task_in(&h, "overrun", &["failed", "finished", "killed"]).await;
    assert_eq!(overrun["state"], "failed", "{overrun}");
    assert!(
        overrun["message"]
            .as_str()
            .unwrap_or_default()
            .contains("maxCompletionTime"),
        "{overrun}"
    );
    assert_eq!(overrun["stdout"], "begun\n", "{overrun}");
    no_services_left(&ns).await;
}

#[tokio::test]
async fn after_a_kill_9_the_scheduler_takes_its_services_back() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Proc::server_on(
        dir.path(),
        &["--swarm", "--no-local-worker", "--heartbeat-interval", "0.3"],
        "127.0.0.1",
        &[("KAIROS_SWARM_NAMESPACE", &ns), ("KAIROS_SWARM_POLL", "0.2")],
    );
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let h = Harness::attach(server.base());
    wait_for_worker(&h, &node.worker(), "active").await;
    h.create(job("long", "sleep 6; echo long-done", json!({}))).await;
    h.create(job("short", "sleep 1; echo short-done; exit 4", json!({})))
        .await;
    run(&h, "long").await;
    run(&h, "short").await;
    let long = task_in(&h, "long", &["running"]).await;
    task_in(&h, "short", &["running"]).await;

    server.kill().await;
    // While it is down: the short task ends, and a service of this namespace appears that no
    // task of the scheduler's explains.
    docker(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--no-resolve-image",
        "--name",
        &format!("{ns}-stray"),
        "--label",
        &format!("kairos.owner={ns}"),
        "--label",
        "kairos.task=ct:1:0:nobody:",
        "--label",
        &format!("kairos.node={}", node.id),
        "--replicas",
        "1",
        "--restart-condition",
        "none",
        "kairos-test/busybox:latest",
        "sleep",
        "300",
    ]);
    wait_until("the short task's container has exited", async || {
        services(&ns, Some("short")).first().is_some_and(|service| {
            docker(&["service", "ps", service, "--format", "{{.CurrentState}}"]).starts_with("Failed")
        })
    })
    .await;

    server.start();
    server.wait_ready(&client).await;
    let short = task_in(&h, "short", &["failed", "finished", "lost"]).await;
    assert_eq!(short["state"], "failed", "{short}");
    assert_eq!(short["exitCode"], 4, "{short}");
    assert_eq!(short["stdout"], "short-done\n", "{short}");
    let done = task_in(&h, "long", &["finished", "failed", "lost"]).await;
    assert_eq!(done["taskId"], long["taskId"], "the same task went on: {done}");
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["stdout"], "long-done\n", "{done}");
    no_services_left(&ns).await;
    server.kill().await;
}

#[tokio::test]
async fn a_mixed_cluster_sends_each_task_where_it_can_run() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let h = start(&ns, &node, |_| {}).await;
    let mut agent = spawn_agent(&h, "mixed", &[]);
    wait_for_worker(&h, "mixed", "active").await;
    let fetched = h.path("fetched.txt");
    std::fs::write(&fetched, "fetched\n").expect("write");
    h.create(json!({"name": "plain", "command": "echo plain", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.create(job(
        "boxed",
        "true",
        json!({"constraints": [["hostname", "EQUALS", node.hostname]]}),
    ))
    .await;
    h.create(job(
        "fetching",
        "cat fetched.txt",
        json!({"fetch": [{"uri": format!("file://{}", fetched.display())}]}),
    ))
    .await;
    for name in ["plain", "boxed", "fetching"] {
        run(&h, name).await;
    }
    let plain = task_in(&h, "plain", &["finished", "failed"]).await;
    assert_eq!(plain["worker"], "mixed", "{plain}");
    let boxed = task_in(&h, "boxed", &["finished", "failed"]).await;
    assert_eq!(boxed["worker"], node.worker(), "{boxed}");
    let fetching = task_in(&h, "fetching", &["finished", "failed"]).await;
    assert_eq!(fetching["worker"], "mixed", "{fetching}");
    assert_eq!(fetching["stdout"], "fetched\n", "{fetching}");

    agent.kill().await.expect("the agent stops");
    wait_for_worker(&h, "mixed", "lost").await;
    run(&h, "plain").await;
    let reason = queued_reason(&h, "plain").await;
    assert!(reason.contains("runs commands without a container"), "{reason}");
    no_services_left(&ns).await;
}

#[tokio::test]
async fn under_ha_only_the_leader_drives_swarm_and_a_new_leader_takes_the_services_over() {
    let _swarm = SWARM.lock().await;
    let node = Node::get();
    let ns = namespace();
    let store = fresh_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "--store",
        &store,
        "--swarm",
        "--no-local-worker",
        "--heartbeat-interval",
        "0.3",
        "--election-interval",
        "0.2",
        "--leader-lease",
        "2",
    ];
    let env = [
        ("KAIROS_SWARM_NAMESPACE", ns.as_str()),
        ("KAIROS_SWARM_POLL", "0.2"),
        ("KAIROS_LOG", "warn,kairos::server=info,kairos::swarm=info"),
    ];
    let client = reqwest::Client::new();
    let mut first = Proc::server_on(&dir.path().join("first"), &args, "127.0.0.1", &env);
    first.wait_ready(&client).await;
    wait_until("the first server leads", async || {
        leader_of(&client, &first).await == Some(first.name())
    })
    .await;
    let mut second = Proc::server_on(&dir.path().join("second"), &args, "127.0.0.1", &env);
    second.wait_ready(&client).await;
    // Requests go through the standby, which forwards them once it knows the leader.
    wait_until("the second server knows the leader", async || {
        leader_of(&client, &second).await == Some(first.name())
    })
    .await;
    let h = Harness::attach(second.base());
    wait_for_worker(&h, &node.worker(), "active").await;
    h.create(job("long", "sleep 4; echo long-done", json!({}))).await;
    run(&h, "long").await;
    let long = task_in(&h, "long", &["running"]).await;
    let standby_log = dir.path().join("second").join("kairos.log");
    let log = || std::fs::read_to_string(&standby_log).unwrap_or_default();
    assert!(
        !log().contains("Running container tasks on Docker Swarm"),
        "a standby must not drive Swarm: {}",
        log()
    );

    first.kill().await;
    wait_until("the second server leads", async || {
        leader_of(&client, &second).await == Some(second.name())
    })
    .await;
    let done = task_in(&h, "long", &["finished", "failed", "lost"]).await;
    assert_eq!(done["taskId"], long["taskId"], "{done}");
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["stdout"], "long-done\n", "{done}");
    assert!(
        log().contains("Running container tasks on Docker Swarm"),
        "{}",
        log()
    );
    no_services_left(&ns).await;
    second.kill().await;
}
