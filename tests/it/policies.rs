//! Scheduling beyond Chronos, on the real server with real processes: concurrency policies,
//! retry delays and `retryOn`, pausing across a restart, catching up after a stop, and the
//! upcoming runs.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Harness, wait_until};

fn instant(task: &Value, field: &str) -> Option<DateTime<Utc>> {
    task[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A schedule repeating every `period` from one second from now.
fn every(period: &str) -> String {
    let start = Utc::now() + chrono::Duration::seconds(1);
    format!(
        "R/{}/{period}",
        start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

async fn tasks_in(h: &Harness, job: &str, state: &str) -> Vec<Value> {
    h.history(job)
        .await
        .into_iter()
        .filter(|t| t["state"] == state)
        .collect()
}

/// Whether any two tasks' runs overlap in time (an unfinished task runs until now).
fn overlapping(tasks: &[Value]) -> bool {
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = tasks
        .iter()
        .filter_map(|t| {
            Some((
                instant(t, "startedAt")?,
                instant(t, "finishedAt").unwrap_or_else(Utc::now),
            ))
        })
        .collect();
    spans.sort();
    spans.windows(2).any(|w| w[1].0 < w[0].1)
}

#[tokio::test]
async fn forbid_skips_a_run_due_while_one_runs_and_says_why() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "forbid", "command": "sleep 2.5", "schedule": every("PT1S"),
                    "concurrencyPolicy": "forbid"}),
    )
    .await;
    assert_eq!(h.job("forbid").await["concurrencyPolicy"], "forbid");
    wait_until("a run finished and others were skipped", async || {
        let history = h.history("forbid").await;
        history.iter().any(|t| t["state"] == "finished")
            && history.iter().filter(|t| t["state"] == "skipped").count() >= 2
    })
    .await;
    let skipped = tasks_in(&h, "forbid", "skipped").await;
    assert!(
        skipped
            .iter()
            .all(|t| t["message"].as_str().unwrap().contains("forbid")),
        "{skipped:?}"
    );
    let ran: Vec<Value> = h
        .history("forbid")
        .await
        .into_iter()
        .filter(|t| t["startedAt"].is_string())
        .collect();
    assert!(!overlapping(&ran), "no two runs at once: {ran:?}");
    assert!(
        ran.iter().all(|t| t["state"] != "queued"),
        "nothing waits under forbid"
    );
}

#[tokio::test]
async fn replace_kills_the_running_task_and_starts_the_new_one() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "replace", "command": "sleep 30", "schedule": every("PT2S"),
                    "concurrencyPolicy": "replace"}),
    )
    .await;
    wait_until("a run was replaced and its successor runs", async || {
        let history = h.history("replace").await;
        history
            .iter()
            .any(|t| t["state"] == "killed" && t["message"].as_str().unwrap_or("").contains("replaced"))
            && history.iter().any(|t| t["state"] == "running")
    })
    .await;
    let history = h.history("replace").await;
    let killed = history.iter().find(|t| t["state"] == "killed").unwrap();
    let newer = history
        .iter()
        .filter(|t| t["startedAt"].is_string())
        .find(|t| instant(t, "due") > instant(killed, "due"))
        .expect("the replacing run started");
    assert!(
        instant(newer, "startedAt") >= instant(killed, "finishedAt"),
        "the new run starts once the old one has ended: {killed} {newer}"
    );
    h.delete("/v1/scheduler/task/kill/replace").await;
}

#[tokio::test]
async fn queue_lets_one_run_wait_and_allow_runs_them_side_by_side() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "queue", "command": "sleep 1.5", "schedule": every("PT1S"),
                    "concurrencyPolicy": "queue"}),
    )
    .await;
    h.create(
        json!({"name": "allow", "command": "sleep 3", "schedule": every("PT1S"),
                    "concurrencyPolicy": "allow"}),
    )
    .await;
    // `concurrent` follows the policy, so Chronos clients read it right.
    assert_eq!(h.job("allow").await["concurrent"], true);
    assert_eq!(h.job("queue").await["concurrent"], false);
    wait_until("two allow runs at once", async || {
        tasks_in(&h, "allow", "running").await.len() >= 2
    })
    .await;
    wait_until("queue ran twice and skipped one", async || {
        let history = h.history("queue").await;
        history.iter().filter(|t| t["state"] == "finished").count() >= 2
            && history.iter().any(|t| t["state"] == "skipped")
    })
    .await;
    let queue = h.history("queue").await;
    let ran: Vec<Value> = queue
        .iter()
        .filter(|t| t["startedAt"].is_string())
        .cloned()
        .collect();
    assert!(!overlapping(&ran), "queue never overlaps: {ran:?}");
    let skipped = queue.iter().find(|t| t["state"] == "skipped").unwrap();
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .contains("had not started yet"),
        "{skipped}"
    );
    h.delete("/v1/scheduler/task/kill/allow").await;
}

#[tokio::test]
async fn retries_wait_the_delay_times_the_backoff_up_to_the_cap() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "backoff", "command": "exit 3", "retries": 3, "schedule": "R1//PT1H",
                    "retryDelay": "PT1S", "retryBackoff": 2, "retryDelayMax": "PT3S"}),
    )
    .await;
    wait_until("four attempts failed", async || {
        tasks_in(&h, "backoff", "failed").await.len() == 4
    })
    .await;
    let mut attempts = tasks_in(&h, "backoff", "failed").await;
    attempts.sort_by_key(|t| t["attempt"].as_u64());
    let waits: Vec<i64> = attempts
        .windows(2)
        .map(|w| (instant(&w[1], "due").unwrap() - instant(&w[0], "finishedAt").unwrap()).num_milliseconds())
        .collect();
    // Each retry is due its delay after the attempt before it ended: 1 s, 2 s, then 4 s capped at 3 s.
    for (wait, want) in waits.iter().zip([1000, 2000, 3000]) {
        assert!((want..want + 50).contains(wait), "waits {waits:?}");
    }
    // The retry's due time is in its task id, as before.
    assert!(attempts[3]["taskId"].as_str().unwrap().starts_with(&format!(
        "ct:{}:3:backoff",
        instant(&attempts[3], "due").unwrap().timestamp_millis()
    )));
}

#[tokio::test]
async fn retry_on_retries_only_the_failures_it_names() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "on75", "command": "exit \"$CODE\"", "retries": 2, "schedule": "R1//PT1H",
                    "retryOn": [75], "environmentVariables": [{"name": "CODE", "value": "1"}]}),
    )
    .await;
    h.wait_job("on75", "failed", |j| j["errorCount"] == 1).await;
    assert_eq!(h.history("on75").await.len(), 1, "exit 1 is not retried");
    let (status, body) = h
        .post(
            "/v1/scheduler/iso8601",
            json!({"name": "bad", "command": "true", "retryOn": ["sometimes"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "retryOn", "{body}");
    h.create(
        json!({"name": "on75b", "command": "exit 75", "retries": 2, "schedule": "R1//PT1H",
                    "retryOn": [75], "retryDelay": "PT0.1S"}),
    )
    .await;
    wait_until("both retries ran", async || {
        tasks_in(&h, "on75b", "failed").await.len() == 3
    })
    .await;
}

#[tokio::test]
async fn a_pause_stops_new_runs_survives_a_restart_and_resumes() {
    let mut h = Harness::start().await;
    let (status, body) = h.get("/v1/scheduler/pause").await;
    assert_eq!((status, body["paused"].clone()), (200, json!(false)));
    let (status, body) = h.put("/v1/scheduler/pause", None).await;
    assert_eq!((status, body["paused"].clone()), (200, json!(true)), "{body}");
    h.create(json!({"name": "tick", "command": "true", "schedule": every("PT1S"), "epsilon": "PT30S"}))
        .await;
    let (status, body) = h.put("/v1/scheduler/job/tick", None).await;
    assert_eq!(status, 409, "a manual run is refused while paused: {body}");
    assert!(body["message"].as_str().unwrap().contains("paused"), "{body}");

    h.restart().await;
    let (_, body) = h.get("/v1/scheduler/pause").await;
    assert_eq!(body["paused"], true, "the pause survives a restart");
    // The schedule's first runs fall due while paused; none starts.
    let first_due = {
        let next = h.get("/v1/scheduler/job/tick/next?count=1").await.1;
        DateTime::parse_from_rfc3339(next[0].as_str().unwrap()).unwrap()
    };
    wait_until("two runs fell due", async || {
        Utc::now() > first_due + chrono::Duration::seconds(2)
    })
    .await;
    assert!(h.history("tick").await.is_empty(), "nothing ran while paused");

    let (status, body) = h.put("/v1/scheduler/resume", None).await;
    assert_eq!((status, body["paused"].clone()), (200, json!(false)));
    // Within epsilon, the missed run runs on resume.
    wait_until("tick ran after the resume", async || {
        !tasks_in(&h, "tick", "finished").await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn catch_up_runs_the_newest_missed_occurrences_after_a_stop() {
    let mut h = Harness::start().await;
    h.create(
        json!({"name": "cu", "command": "true", "schedule": every("PT1S"), "epsilon": "PT0.5S",
                    "catchUp": true, "catchUpLimit": 3}),
    )
    .await;
    h.create(json!({"name": "plain", "command": "true", "schedule": every("PT1S"), "epsilon": "PT0.5S"}))
        .await;
    wait_until("both ran once", async || {
        !tasks_in(&h, "cu", "finished").await.is_empty()
            && !tasks_in(&h, "plain", "finished").await.is_empty()
    })
    .await;
    let server = h.server.take().unwrap();
    server.shutdown().await;
    let stopped = Utc::now();
    // Down for five occurrences.
    wait_until("five seconds passed", async || {
        Utc::now() > stopped + chrono::Duration::seconds(5)
    })
    .await;
    let restarting = Utc::now();
    h.restart().await;
    // Runs due while the server was down that ran after it came back: the newest three missed
    // (catchUpLimit), and perhaps one due within epsilon (0.5 s) of the start, which would run
    // anyway. Exactly three are caught up is checked in the engine's own tests, where the
    // start's instant is known; here it is only known to lie after `restarting`.
    let late = |history: Vec<Value>| -> Vec<Value> {
        history
            .into_iter()
            .filter(|t| {
                instant(t, "due").is_some_and(|d| d > stopped && d < restarting)
                    && instant(t, "startedAt").is_some_and(|s| s > restarting)
            })
            .collect()
    };
    wait_until("three missed runs caught up", async || {
        late(h.history("cu").await)
            .iter()
            .filter(|t| t["state"] == "finished")
            .count()
            >= 3
    })
    .await;
    let caught_up = late(h.history("cu").await);
    assert!(
        (3..=4).contains(&caught_up.len()),
        "at most catchUpLimit late runs, and one on time: {caught_up:?}"
    );
    let mut by_start = caught_up.clone();
    by_start.sort_by_key(|t| instant(t, "startedAt"));
    let dues: Vec<_> = by_start.iter().map(|t| instant(t, "due")).collect();
    assert!(dues.windows(2).all(|w| w[0] < w[1]), "oldest first: {dues:?}");
    // Five were due while it was down; the oldest of them did not run.
    let earliest_run = dues[0].unwrap();
    assert!(
        earliest_run > stopped + chrono::Duration::seconds(1),
        "the oldest missed runs are dropped: {dues:?}"
    );
    // Without catch-up the missed runs are skipped, as in Chronos.
    let plain_late = late(h.history("plain").await);
    assert!(plain_late.len() <= 1, "only a run within epsilon: {plain_late:?}");
}

#[tokio::test]
async fn upcoming_lists_the_next_runs_of_every_job_in_time_order() {
    let h = Harness::start().await;
    h.create(json!({"name": "hourly", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"}))
        .await;
    h.create(json!({"name": "half", "command": "true", "schedule": "R/2030-01-01T00:30:00Z/PT1H"}))
        .await;
    h.create(json!({"name": "off", "command": "true", "schedule": "R/2030-01-01T00:10:00Z/PT1H", "disabled": true}))
        .await;
    let (status, body) = h.get("/v1/scheduler/upcoming?limit=5").await;
    assert_eq!(status, 200);
    let runs: Vec<(String, String)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["job"].as_str().unwrap().to_owned(),
                r["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("hourly", "2030-01-01T00:00:00.000Z"),
        ("half", "2030-01-01T00:30:00.000Z"),
        ("hourly", "2030-01-01T01:00:00.000Z"),
        ("half", "2030-01-01T01:30:00.000Z"),
        ("hourly", "2030-01-01T02:00:00.000Z"),
    ];
    assert_eq!(
        runs,
        want.map(|(j, t)| (j.to_owned(), t.to_owned())),
        "disabled jobs are left out"
    );
    let (_, body) = h.get("/v1/scheduler/upcoming?until=2030-01-01T01:00:00Z").await;
    assert_eq!(body.as_array().unwrap().len(), 3, "until is inclusive: {body}");
    for bad in ["limit=0", "limit=10001", "limit=x", "until=tonight"] {
        let (status, body) = h.get(&format!("/v1/scheduler/upcoming?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["field"] == "limit" || body["field"] == "until",
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn new_fields_are_checked_and_left_out_of_chronos_jobs() {
    let h = Harness::start().await;
    h.create(json!({"name": "plain", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"}))
        .await;
    let plain = h.job("plain").await;
    for field in [
        "concurrencyPolicy",
        "retryDelay",
        "retryBackoff",
        "retryDelayMax",
        "retryOn",
        "catchUp",
        "catchUpLimit",
    ] {
        assert!(
            plain.get(field).is_none(),
            "{field} is left out while it has its default: {plain}"
        );
    }
    for (body, field) in [
        (json!({"concurrencyPolicy": "sometimes"}), "concurrencyPolicy"),
        (json!({"retryDelay": "soon"}), "retryDelay"),
        (json!({"retryDelayMax": "P1M"}), "retryDelayMax"),
        (json!({"retryBackoff": 0.5}), "retryBackoff"),
        (json!({"catchUpLimit": 0}), "catchUpLimit"),
        (json!({"retryOn": "exit"}), "retryOn"),
    ] {
        let mut job = json!({"name": "bad", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"});
        job.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (status, answer) = h.post("/v1/scheduler/iso8601", job).await;
        assert_eq!((status, answer["field"].as_str()), (400, Some(field)), "{answer}");
    }
    assert_eq!(
        h.get("/v1/scheduler/job/bad").await.0,
        400,
        "nothing half-written"
    );
}
