//! A task's output through `GET /v1/scheduler/task/<id>/output`: a snapshot, and followed live
//! as Server-Sent Events, from the built-in worker and from an agent.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Harness, wait_until};

/// Reads Server-Sent Events from a response, one at a time.
pub(crate) struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub(crate) async fn open(client: &reqwest::Client, url: &str) -> Events {
        let response = client.get(url).send().await.expect("request");
        assert_eq!(response.status(), 200, "following {url}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(kind, "text/event-stream", "{url}");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's name and data (keep-alive comments skipped); `None` when the stream
    /// ends. Fails after 20 s without one.
    pub(crate) async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if block.lines().all(|l| l.starts_with(':')) {
                    continue;
                }
                return Some((name, data));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("an event within 20 s")
                .expect("the stream reads");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk?));
        }
    }

    /// Reads events until `stop` holds for one, gathering stdout and stderr on the way; returns
    /// the stopping event's name and data.
    pub(crate) async fn until(
        &mut self,
        out: &mut [String; 2],
        mut stop: impl FnMut(&str, &[String; 2]) -> bool,
    ) -> (String, String) {
        while let Some((name, data)) = self.next().await {
            match name.as_str() {
                "stdout" | "stderr" => {
                    let text: String = serde_json::from_str(&data).expect("a JSON string");
                    out[usize::from(name == "stderr")].push_str(&text);
                }
                "reset" => *out = [String::new(), String::new()],
                _ => {}
            }
            if stop(&name, out) {
                return (name, data);
            }
        }
        panic!("the stream ended first; read {out:?}");
    }
}

/// The one task of a job, once it has one.
pub(crate) async fn only_task(h: &Harness, job: &str) -> String {
    let mut id = String::new();
    wait_until("the job has a task", async || {
        match h.history(job).await.first() {
            Some(task) => {
                id = task["taskId"].as_str().unwrap_or_default().to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    id
}

/// A job that writes a line to each output, waits for `gate` to exist, then writes more.
pub(crate) fn gated(name: &str, gate: &std::path::Path) -> Value {
    json!({
        "name": name,
        "schedule": "R1/2030-01-01T00:00:00Z/PT1H",
        "command": format!(
            "echo first; echo warn >&2; while [ ! -e {} ]; do sleep 0.05; done; echo second",
            gate.display()
        ),
        "owner": "ops@example.com",
    })
}

#[tokio::test]
async fn a_running_tasks_output_is_followed_live_to_its_end() {
    let h = Harness::start().await;
    let gate = h.path("gate");
    h.create(gated("live", &gate)).await;
    let (status, _) = h.put("/v1/scheduler/job/live", None).await;
    assert_eq!(status, 204);
    let task = only_task(&h, "live").await;
    let url = h.url(&format!("/v1/scheduler/task/{task}/output?follow=true"));
    let mut events = Events::open(&h.client, &url).await;
    let mut out = [String::new(), String::new()];
    events
        .until(&mut out, |_, out| out[0] == "first\n" && out[1] == "warn\n")
        .await;
    // The first lines came while the task still runs: it waits for the gate.
    let (_, record) = h.get(&format!("/v1/scheduler/task/{task}")).await;
    assert_eq!(record["state"], "running", "{record}");
    let (status, snapshot) = h.get(&format!("/v1/scheduler/task/{task}/output")).await;
    assert_eq!(status, 200);
    assert_eq!(snapshot["live"], true, "{snapshot}");
    assert_eq!(snapshot["stdout"], "first\n", "{snapshot}");

    std::fs::write(&gate, "").expect("open the gate");
    let (_, end) = events.until(&mut out, |name, _| name == "end").await;
    let end: Value = serde_json::from_str(&end).expect("end is JSON");
    assert_eq!(end["state"], "finished", "{end}");
    assert_eq!(end["exitCode"], 0, "{end}");
    assert_eq!(out, ["first\nsecond\n".to_owned(), "warn\n".to_owned()]);
    assert_eq!(events.next().await, None, "the stream ends with the task");

    // Afterwards the snapshot is the record.
    let (_, snapshot) = h.get(&format!("/v1/scheduler/task/{task}/output")).await;
    assert_eq!(snapshot["live"], false, "{snapshot}");
    assert_eq!(snapshot["state"], "finished");
    assert_eq!(snapshot["stdout"], "first\nsecond\n");
}

#[tokio::test]
async fn a_finished_tasks_output_is_sent_whole_then_the_end() {
    let h = Harness::start().await;
    h.create(json!({"name": "done", "schedule": "R1/2030-01-01T00:00:00Z/PT1H",
        "command": "printf 'line one\\nline \"two\" é\\n'; exit 3", "owner": "ops@example.com"}))
        .await;
    h.put("/v1/scheduler/job/done", None).await;
    h.wait_job("done", "its failure is counted", |j| j["errorCount"] == 1)
        .await;
    let task = only_task(&h, "done").await;
    let url = h.url(&format!("/v1/scheduler/task/{task}/output?follow=true"));
    let mut events = Events::open(&h.client, &url).await;
    let mut out = [String::new(), String::new()];
    let (_, end) = events.until(&mut out, |name, _| name == "end").await;
    assert_eq!(out[0], "line one\nline \"two\" é\n");
    let end: Value = serde_json::from_str(&end).expect("end is JSON");
    assert_eq!(
        (end["state"].as_str(), end["exitCode"].as_i64()),
        (Some("failed"), Some(3)),
        "{end}"
    );
}

#[tokio::test]
async fn output_of_malformed_or_unknown_tasks_is_refused() {
    let h = Harness::start().await;
    let (status, body) = h.get("/v1/scheduler/task/nonsense/output").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a valid task id"),
        "{body}"
    );
    let (status, body) = h
        .get("/v1/scheduler/task/ct:1:0:nobody:/output?follow=true")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("ct:1:0:nobody:"),
        "{body}"
    );
}

#[tokio::test]
async fn an_agents_task_output_is_followed_live() {
    use crate::workers::{no_local_worker, spawn_agent, wait_for_worker};
    let h = Harness::start_with(no_local_worker).await;
    let _agent = spawn_agent(&h, "remote", &[]);
    wait_for_worker(&h, "remote", "active").await;
    let gate = h.path("agent-gate");
    h.create(gated("on-agent", &gate)).await;
    h.put("/v1/scheduler/job/on-agent", None).await;
    let task = only_task(&h, "on-agent").await;
    let url = h.url(&format!("/v1/scheduler/task/{task}/output?follow=true"));
    let mut events = Events::open(&h.client, &url).await;
    let mut out = [String::new(), String::new()];
    events.until(&mut out, |_, out| out[0] == "first\n").await;
    let (_, record) = h.get(&format!("/v1/scheduler/task/{task}")).await;
    assert_eq!(record["state"], "running", "the line came live: {record}");
    std::fs::write(&gate, "").expect("open the gate");
    events.until(&mut out, |name, _| name == "end").await;
    assert_eq!(out, ["first\nsecond\n".to_owned(), "warn\n".to_owned()]);
    // The agent's heartbeats say how much live output it had to drop: none, at this pace.
    let metrics = h
        .client
        .get(h.url("/metrics?format=prometheus"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nkairos_agent_output_dropped_total{worker=\"remote\"} 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_containers_output_is_followed_live_until_it_is_killed() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "boxed", "schedule": "R1/2030-01-01T00:00:00Z/PT1H",
        "command": "echo first; sleep 60", "owner": "ops@example.com",
        "container": {"type": "DOCKER", "image": "kairos-test/busybox:latest"}}),
    )
    .await;
    h.put("/v1/scheduler/job/boxed", None).await;
    let task = only_task(&h, "boxed").await;
    let url = h.url(&format!("/v1/scheduler/task/{task}/output?follow=true"));
    let mut events = Events::open(&h.client, &url).await;
    let mut out = [String::new(), String::new()];
    events.until(&mut out, |_, out| out[0] == "first\n").await;
    let (status, _) = h.delete("/v1/scheduler/task/kill/boxed").await;
    assert_eq!(status, 204);
    let (_, end) = events.until(&mut out, |name, _| name == "end").await;
    let end: Value = serde_json::from_str(&end).expect("end is JSON");
    assert_eq!(end["state"], "killed", "{end}");
    assert_eq!(out[0], "first\n");
}
