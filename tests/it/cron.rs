//! Cron schedules end to end: the real server runs a job with a seconds field on each second
//! it names, no more and no less, and shows the expression as given.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{Harness, wait_until};

/// The due instants (epoch ms) of a job's scheduled first attempts, from its task history over
/// HTTP, in order.
async fn scheduled_dues(h: &Harness, name: &str) -> Vec<i64> {
    let mut dues: Vec<i64> = h
        .history(name)
        .await
        .iter()
        .filter(|t| t["scheduled"] == true && t["attempt"] == 0)
        .map(|t| {
            let id = t["taskId"].as_str().unwrap_or_default();
            id.split(':').nth(1).and_then(|ms| ms.parse().ok()).unwrap_or(0)
        })
        .collect();
    dues.sort_unstable();
    dues
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

#[tokio::test]
async fn a_cron_job_with_a_seconds_field_runs_on_each_second_it_names() {
    let h = Harness::start().await;
    // Three seconds a little ahead, not evenly spaced, named in the seconds field; every minute
    // and hour, so that the list repeats each minute.
    let first = (now_ms() / 1000 + 3) * 1000;
    let named = [first, first + 1000, first + 4000];
    let seconds: Vec<String> = named.iter().map(|ms| (ms / 1000 % 60).to_string()).collect();
    let listed = format!("{} * * * * *", seconds.join(","));
    // And every other second, all along.
    let stepped = "*/2 * * * * *";
    for (name, schedule) in [("listed", listed.as_str()), ("stepped", stepped)] {
        h.create(json!({
            "name": name,
            "command": "true",
            "schedule": schedule,
            "scheduleTimeZone": "Europe/Paris",
        }))
        .await;
    }
    let created = now_ms();
    assert!(created < first, "the job was created after its first second");

    wait_until("the three named seconds ran", async || {
        let finished = h
            .history("listed")
            .await
            .iter()
            .filter(|t| t["state"] == "finished")
            .count();
        finished >= 3
    })
    .await;
    let dues = scheduled_dues(&h, "listed").await;
    assert_eq!(
        dues.iter().take(3).copied().collect::<Vec<_>>(),
        named,
        "the named seconds, each once, in order (seconds {seconds:?})"
    );
    // Anything later is the next minute's first named second or after.
    assert!(dues.iter().skip(3).all(|d| *d >= named[0] + 60_000), "{dues:?}");

    wait_until("six runs every other second", async || {
        scheduled_dues(&h, "stepped").await.len() >= 6
    })
    .await;
    let dues = scheduled_dues(&h, "stepped").await;
    assert!(dues.iter().all(|d| d % 2000 == 0), "even seconds only: {dues:?}");
    assert!(
        dues.windows(2).all(|w| w[1] - w[0] == 2000),
        "every other second, none missing or twice: {dues:?}"
    );
    assert!(
        dues[0] >= created - 2000 && dues[0] <= created + 2000,
        "from the first even second after it was created ({created}): {dues:?}"
    );

    // The job shows its expression as given, and nothing of where it is.
    for name in ["listed", "stepped"] {
        let job = h.job(name).await;
        assert!(job.get("scheduleCursor").is_none(), "{job}");
        let (_, all) = h.get("/v1/scheduler/jobs").await;
        let listed_job = all
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == name))
            .cloned()
            .unwrap_or(Value::Null);
        assert!(listed_job.get("scheduleCursor").is_none(), "{listed_job}");
        assert_eq!(job["schedule"], listed_job["schedule"]);
    }
    assert_eq!(h.job("listed").await["schedule"], listed.as_str());
    assert_eq!(h.job("stepped").await["schedule"], stepped);
}

#[tokio::test]
async fn a_bad_cron_expression_is_refused_with_its_reason() {
    let h = Harness::start().await;
    let (status, body) = h
        .post(
            "/v1/scheduler/iso8601",
            json!({"name": "bad", "command": "true", "schedule": "61 * * * *"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("schedule") && text.contains("cron expression '61 * * * *' is invalid"),
        "{text}"
    );
}
