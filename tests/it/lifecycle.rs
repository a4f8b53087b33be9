//! Tasks end to end: schedules, dependencies, retries, async completion, kill, output and restart.

use serde_json::json;

use crate::{Harness, lines, wait_until};

#[tokio::test]
async fn r3_every_second_runs_exactly_three_times() {
    let h = Harness::start().await;
    let log = h.path("runs.log");
    h.create(json!({
        "name": "tick",
        "command": format!("echo $mesos_task_id >> {}", log.display()),
        "schedule": "R3//PT1S",
    }))
    .await;
    let job = h
        .wait_job("tick", "three successes", |j| j["successCount"] == 3)
        .await;
    // No runs remain, so nothing more can happen.
    assert!(job["schedule"].as_str().unwrap().starts_with("R0/"), "{job}");
    assert_eq!(h.summary("tick").await["state"], "idle");
    let runs = lines(&log);
    assert_eq!(runs.len(), 3, "{runs:?}");
    // Each run is its own scheduled instant, one second apart.
    let dues: Vec<i64> = runs
        .iter()
        .map(|id| id.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(dues[1] - dues[0], 1000);
    assert_eq!(dues[2] - dues[1], 1000);
    assert_eq!(job["errorCount"], 0);
}

#[tokio::test]
async fn a_child_runs_once_after_both_parents() {
    let h = Harness::start().await;
    let log = h.path("child.log");
    for parent in ["p1", "p2"] {
        h.create(json!({"name": parent, "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
            .await;
    }
    let (status, body) = h
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "child", "command": format!("echo ran >> {}", log.display()), "parents": ["p1", "p2"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(h.put("/v1/scheduler/job/p1", None).await.0, 204);
    h.wait_job("p1", "success", |j| j["successCount"] == 1).await;
    // The fan-out happens in the same step as the parent's success, so the child would be queued by now.
    assert_eq!(h.summary("child").await["state"], "idle");
    assert!(h.history("child").await.is_empty());
    assert_eq!(h.put("/v1/scheduler/job/p2", None).await.0, 204);
    h.wait_job("child", "one success", |j| j["successCount"] == 1)
        .await;
    assert_eq!(lines(&log), vec!["ran"]);
    // Both parents must succeed again before the next run.
    assert_eq!(h.put("/v1/scheduler/job/p1", None).await.0, 204);
    h.wait_job("p1", "second success", |j| j["successCount"] == 2)
        .await;
    assert_eq!(h.job("child").await["successCount"], 1);
    // Marking a parent successful unblocks the chain, as in Chronos.
    let (status, text) = h.put("/v1/scheduler/job/success/p2", None).await;
    assert_eq!((status, text), (200, json!("marked job p2 as successful: true")));
    h.wait_job("child", "second success", |j| j["successCount"] == 2)
        .await;
    assert_eq!(lines(&log).len(), 2);
}

#[tokio::test]
async fn a_failing_parent_does_not_start_its_child_unless_soft_error() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "bad", "command": "exit 1", "retries": 0, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    h.create(json!({"name": "soft", "command": "exit 1", "retries": 0, "softError": true, "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
    for (name, parent) in [("after-bad", "bad"), ("after-soft", "soft")] {
        let (status, body) = h
            .post(
                "/v1/scheduler/dependency",
                json!({"name": name, "command": "true", "parents": [parent]}),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    h.put("/v1/scheduler/job/bad", None).await;
    h.put("/v1/scheduler/job/soft", None).await;
    h.wait_job("bad", "final failure", |j| j["errorCount"] == 1).await;
    h.wait_job("after-soft", "run after a soft error", |j| j["successCount"] == 1)
        .await;
    assert_eq!(h.job("after-bad").await["successCount"], 0);
    assert!(h.history("after-bad").await.is_empty());
    assert_eq!(h.summary("bad").await["status"], "failure");
}

#[tokio::test]
async fn failures_are_retried_then_counted_once() {
    let h = Harness::start().await;
    let log = h.path("attempts.log");
    h.create(json!({
        "name": "flaky",
        "command": format!("echo $CHRONOS_JOB_RUN_ATTEMPT >> {}; exit 7", log.display()),
        "retries": 2,
        "schedule": "R1//PT1H",
    }))
    .await;
    let job = h
        .wait_job("flaky", "final failure", |j| j["errorCount"] == 1)
        .await;
    assert_eq!(job["errorsSinceLastSuccess"], 1);
    assert_ne!(job["lastError"], "");
    assert_eq!(lines(&log), vec!["0", "1", "2"]);
    let history = h.history("flaky").await;
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .all(|t| t["state"] == "failed" && t["exitCode"] == 7),
        "{history:?}"
    );
    // The retry policy does not depend on the last outcome: a second run is retried too.
    h.put("/v1/scheduler/job/flaky", None).await;
    h.wait_job("flaky", "second final failure", |j| j["errorCount"] == 2)
        .await;
    assert_eq!(lines(&log).len(), 6);
}

#[tokio::test]
async fn async_tasks_wait_for_their_completion_call() {
    let h = Harness::start().await;
    let id_file = h.path("task-id");
    h.create(json!({
        "name": "remote",
        "command": format!("echo -n $mesos_task_id > {}", id_file.display()),
        "async": true,
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/remote", None).await;
    wait_until("the task wrote its id", async || !lines(&id_file).is_empty()).await;
    let task_id = lines(&id_file)[0].clone();
    // The process has ended, but the task runs until it is completed.
    wait_until("the task waits", async || {
        h.history("remote")
            .await
            .first()
            .is_some_and(|t| t["state"] == "waiting")
    })
    .await;
    assert_eq!(h.summary("remote").await["state"], "1 running");
    assert_eq!(h.job("remote").await["successCount"], 0);
    // Task ids hold ':' and must be URL-encoded in the path; both prefixes work.
    let encoded = task_id.replace(':', "%3A");
    let (status, body) = h
        .put(
            &format!("/scheduler/task/{encoded}"),
            Some(json!({"statusCode": 0})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let job = h.job("remote").await;
    assert_eq!(job["successCount"], 1);
    assert_eq!(h.summary("remote").await["state"], "idle");
    // A second completion of the same task is refused.
    let (status, _) = h
        .put(
            &format!("/v1/scheduler/task/{encoded}"),
            Some(json!({"statusCode": 0})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = h
        .put("/v1/scheduler/task/not-a-task", Some(json!({"statusCode": 0})))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn kill_ends_the_whole_process_group() {
    let h = Harness::start().await;
    let pid_file = h.path("pids");
    h.create(json!({
        "name": "stuck",
        "command": format!("sleep 300 & echo $! > {}; wait", pid_file.display()),
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/stuck", None).await;
    wait_until("the task runs", async || !lines(&pid_file).is_empty()).await;
    assert_eq!(h.summary("stuck").await["state"], "1 running");
    let grandchild: i32 = lines(&pid_file)[0].parse().unwrap();
    let (status, _) = h.delete("/v1/scheduler/task/kill/stuck").await;
    assert_eq!(status, 204);
    wait_until("the task is killed", async || {
        h.history("stuck")
            .await
            .first()
            .is_some_and(|t| t["state"] == "killed")
    })
    .await;
    // SAFETY: signal 0 only checks whether the process exists.
    wait_until(
        "the background child is gone",
        async || unsafe { libc::kill(grandchild, 0) } != 0,
    )
    .await;
    let job = h.job("stuck").await;
    assert_eq!(
        (job["successCount"].clone(), job["errorCount"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(h.summary("stuck").await["state"], "idle");
    // Killing a job with nothing running is fine too.
    assert_eq!(h.delete("/v1/scheduler/task/kill/stuck").await.0, 204);
}

#[tokio::test]
async fn tasks_get_chronos_environment_arguments_and_captured_output() {
    let h = Harness::start().await;
    h.create(json!({
        "name": "env",
        "command": "echo $CHRONOS_JOB_NAME $CHRONOS_RESOURCE_MEM $CHRONOS_RESOURCE_CPU $CHRONOS_JOB_OWNER $FOO $HOST; echo oops >&2",
        "owner": "me@x",
        "mem": 5,
        "cpus": 2,
        "environmentVariables": [{"name": "FOO", "value": "bar"}, {"name": "CHRONOS_RESOURCE_MEM", "value": "ignored"}],
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.create(json!({
        "name": "direct",
        "command": "/bin/echo",
        "shell": false,
        "arguments": ["a;b", "$HOME"],
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/env", None).await;
    h.put("/v1/scheduler/job/direct?arguments=extra%20words", None)
        .await;
    h.wait_job("env", "success", |j| j["successCount"] == 1).await;
    h.wait_job("direct", "success", |j| j["successCount"] == 1).await;
    let task = h.history("env").await.remove(0);
    assert_eq!(task["stdout"], "env 5.0 2.0 me@x bar kairos-test\n");
    assert_eq!(task["stderr"], "oops\n");
    assert_eq!(task["exitCode"], 0);
    let direct = h.history("direct").await.remove(0);
    assert_eq!(
        direct["stdout"], "a;b $HOME extra words\n",
        "no shell interpreted anything"
    );
    assert!(
        direct["taskId"]
            .as_str()
            .unwrap()
            .ends_with(":direct:extra words"),
        "{direct}"
    );
    // One task with its output, by id.
    let id = direct["taskId"]
        .as_str()
        .unwrap()
        .replace(':', "%3A")
        .replace(' ', "%20");
    let (status, one) = h.get(&format!("/v1/scheduler/task/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["stdout"], direct["stdout"]);
    // Stats come from the recorded durations.
    let (_, stat) = h.get("/v1/scheduler/job/stat/env").await;
    assert_eq!(stat["histogram"]["count"], 1);
    assert_eq!(stat["taskStatHistory"][0]["status"], "Success");
}

#[tokio::test]
async fn progress_adds_to_the_task_count() {
    let h = Harness::start().await;
    h.create(json!({"name": "data", "command": "true", "dataProcessingJobType": true, "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
    h.create(json!({"name": "plain", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/data", None).await;
    h.wait_job("data", "success", |j| j["successCount"] == 1).await;
    let task_id = h.history("data").await[0]["taskId"].as_str().unwrap().to_owned();
    let path = format!(
        "/v1/scheduler/job/data/task/{}/progress",
        task_id.replace(':', "%3A")
    );
    for n in [5, 7] {
        let (status, body) = h.post(&path, json!({"numAdditionalElementsProcessed": n})).await;
        assert_eq!(status, 204, "{body}");
    }
    assert_eq!(h.history("data").await[0]["numElementsProcessed"], 12);
    let (_, stat) = h.get("/v1/scheduler/job/stat/data").await;
    assert_eq!(stat["taskStatHistory"][0]["numElementsProcessed"], 12);
    let cases = [
        (
            "/v1/scheduler/job/data/task/ct%3A1%3A0%3Adata%3A/progress",
            json!({"numAdditionalElementsProcessed": 1}),
            "not found",
        ),
        (
            path.as_str(),
            json!({"numAdditionalElementsProcessed": -1}),
            "negative",
        ),
        (
            "/v1/scheduler/job/plain/task/ct%3A1%3A0%3Aplain%3A/progress",
            json!({"numAdditionalElementsProcessed": 1}),
            "not enabled to track data",
        ),
        (
            "/v1/scheduler/job/data/task/garbage/progress",
            json!({"numAdditionalElementsProcessed": 1}),
            "not a valid task id",
        ),
        (
            "/v1/scheduler/job/nope/task/ct%3A1%3A0%3Anope%3A/progress",
            json!({"numAdditionalElementsProcessed": 1}),
            "not found",
        ),
    ];
    for (path, body, needle) in cases {
        let (status, answer) = h.post(path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{path}: {answer}"
        );
    }
}

/// Issue 19: two increments of i64::MAX used to leave a REAL in SQLite that panicked every read
/// of the job's tasks, for good. The count now saturates, and the job stays readable across restarts.
#[tokio::test]
async fn progress_saturates_and_the_job_stays_readable_after_a_restart() {
    let mut h = Harness::start().await;
    h.create(json!({"name": "big", "command": "true", "dataProcessingJobType": true, "schedule": "R0/2030-01-01T00:00:00Z/P1D"})).await;
    h.put("/v1/scheduler/job/big", None).await;
    h.wait_job("big", "success", |j| j["successCount"] == 1).await;
    let task_id = h.history("big").await[0]["taskId"].as_str().unwrap().to_owned();
    let path = format!(
        "/v1/scheduler/job/big/task/{}/progress",
        task_id.replace(':', "%3A")
    );
    for _ in 0..2 {
        let (status, body) = h
            .post(&path, json!({"numAdditionalElementsProcessed": i64::MAX}))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    // Beyond i64 is refused, not wrapped.
    let (status, body) = h
        .post(
            &path,
            json!({"numAdditionalElementsProcessed": 9223372036854775808u64}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("numAdditionalElementsProcessed"),
        "{body}"
    );
    for round in ["before", "after"] {
        assert_eq!(
            h.history("big").await[0]["numElementsProcessed"],
            i64::MAX,
            "{round} the restart"
        );
        let (status, stat) = h.get("/v1/scheduler/job/stat/big").await;
        assert_eq!(status, 200, "{round} the restart: {stat}");
        assert_eq!(stat["taskStatHistory"][0]["numElementsProcessed"], i64::MAX);
        h.restart().await;
    }
}

#[tokio::test]
async fn concurrent_false_never_overlaps() {
    let h = Harness::start().await;
    let log = h.path("overlap.log");
    let command = format!("echo start >> {0}; sleep 0.3; echo end >> {0}", log.display());
    h.create(json!({"name": "serial", "command": command, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/serial", None).await;
    wait_until("the first run starts", async || !lines(&log).is_empty()).await;
    // A second trigger while running waits for the first to end.
    h.put("/v1/scheduler/job/serial", None).await;
    assert_eq!(h.summary("serial").await["state"], "1 running");
    h.wait_job("serial", "two runs", |j| j["successCount"] == 2).await;
    assert_eq!(lines(&log), vec!["start", "end", "start", "end"]);
}

#[tokio::test]
async fn a_restart_keeps_jobs_counters_repeats_and_dependency_progress() {
    let mut h = Harness::start().await;
    let log = h.path("restart.log");
    h.create(json!({
        "name": "twice",
        "command": format!("echo run >> {}", log.display()),
        "schedule": "R2//PT2S",
    }))
    .await;
    for parent in ["pa", "pb"] {
        h.create(json!({"name": parent, "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
            .await;
    }
    let (status, _) = h
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "kid", "command": "true", "parents": ["pa", "pb"]}),
        )
        .await;
    assert_eq!(status, 204);
    h.put("/v1/scheduler/job/pa", None).await;
    h.wait_job("pa", "success", |j| j["successCount"] == 1).await;
    let first = h.wait_job("twice", "first run", |j| j["successCount"] == 1).await;
    assert!(first["schedule"].as_str().unwrap().starts_with("R1/"), "{first}");

    h.restart().await;

    let job = h.job("twice").await;
    assert!(job["successCount"].as_u64().unwrap() >= 1);
    assert_eq!(h.job("pa").await["successCount"], 1);
    // The remaining repeat runs after the restart, and no more.
    let done = h
        .wait_job("twice", "second run", |j| j["successCount"] == 2)
        .await;
    assert!(done["schedule"].as_str().unwrap().starts_with("R0/"), "{done}");
    assert_eq!(lines(&log).len(), 2);
    // pa's success before the restart still counts for kid.
    h.put("/v1/scheduler/job/pb", None).await;
    h.wait_job("kid", "run after both parents", |j| j["successCount"] == 1)
        .await;
}

#[tokio::test]
async fn disabled_jobs_do_not_run_on_schedule() {
    let h = Harness::start().await;
    let log = h.path("disabled.log");
    h.create(json!({"name": "off", "command": format!("echo x >> {}", log.display()), "disabled": true, "schedule": "R//PT1S"})).await;
    h.create(json!({"name": "on", "command": "true", "schedule": "R2//PT1S"}))
        .await;
    // Two seconds of schedule pass for the enabled job; the disabled one stays untouched.
    h.wait_job("on", "two runs", |j| j["successCount"] == 2).await;
    assert!(lines(&log).is_empty());
    assert!(h.history("off").await.is_empty());
    assert!(
        h.job("off").await["schedule"].as_str().unwrap().starts_with("R/"),
        "not advanced"
    );
}

#[tokio::test]
async fn purge_drops_every_queued_task_and_lets_running_ones_finish() {
    let h = Harness::start().await;
    let gate = h.path("gate");
    h.create(json!({
        "name": "busy",
        "command": format!("while [ ! -e {} ]; do sleep 0.01; done", gate.display()),
        "schedule": "R0/2030-01-01T00:00:00Z/P1D",
    }))
    .await;
    h.put("/v1/scheduler/job/busy", None).await;
    wait_until("the first run runs", async || {
        h.summary("busy").await["state"] == "1 running"
    })
    .await;
    // concurrent: false, so this one waits behind it.
    h.put("/v1/scheduler/job/busy?arguments=--second", None).await;
    assert_eq!(h.history("busy").await.len(), 2);
    let (status, body) = h.delete("/scheduler/task/all").await;
    assert_eq!(status, 204, "{body}");
    let history = h.history("busy").await;
    let queued = history
        .iter()
        .find(|t| t["taskId"].as_str().unwrap().ends_with("--second"))
        .unwrap();
    assert_eq!(queued["state"], "killed", "{queued}");
    assert!(queued["message"].as_str().unwrap().contains("purged"), "{queued}");
    std::fs::write(&gate, "").unwrap();
    let job = h
        .wait_job("busy", "the running one finishes", |j| j["successCount"] == 1)
        .await;
    assert_eq!(job["errorCount"], 0);
    assert_eq!(h.history("busy").await.len(), 2, "the purged run never started");
}
