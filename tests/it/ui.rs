//! The web UI's pages over real HTTP: the jobs table (search, filters, sorting, pages), a job's
//! page and the graph page.

use serde_json::json;

use crate::{Harness, wait_until};

async fn page(h: &Harness, path: &str) -> String {
    let response = h.client.get(h.url(path)).send().await.expect("request");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8",
        "{path}"
    );
    response.text().await.expect("body")
}

#[tokio::test]
async fn the_jobs_page_searches_filters_sorts_and_pages() {
    let h = Harness::start().await;
    for i in 0..120 {
        let owner = if i % 3 == 0 {
            "ops@example.com"
        } else {
            "data@example.com"
        };
        h.create(
            json!({"name": format!("job-{i:03}"), "command": format!("echo {i}"), "owner": owner,
                        "schedule": "R5/2030-01-01T09:00:00Z/PT1H"}),
        )
        .await;
    }
    h.create(
        json!({"name": "odd", "command": "echo '<b>bold</b>'", "owner": "<script>alert(1)</script>",
                    "schedule": "R/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;

    let first = page(&h, "/").await;
    assert!(first.contains("121 jobs match"), "{first}");
    assert!(first.contains("Page 1 of 3"), "{first}");
    assert!(first.contains("href=\"/jobs/job-000\"") && !first.contains("href=\"/jobs/job-050\""));
    assert!(
        first.contains("every hour from 1 Jan 2030 09:00 UTC, 5 runs left"),
        "{first}"
    );
    // Text from jobs is escaped, never markup.
    let odd = page(&h, "/?q=odd").await;
    assert!(!odd.contains("<script>alert"), "{odd}");
    assert!(odd.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{odd}");

    let second = page(&h, "/?page=2").await;
    assert!(second.contains("href=\"/jobs/job-050\"") && second.contains("Page 2 of 3"));
    // Search by name, command and owner, case-insensitively.
    let by_owner = page(&h, "/?q=OPS%40example").await;
    assert!(by_owner.contains("40 jobs match"), "{by_owner}");
    let by_command = page(&h, "/?q=echo%20119").await;
    assert!(by_command.contains("1 jobs match") && by_command.contains("/jobs/job-119"));
    // Sorting, descending.
    let sorted = page(&h, "/?sort=name&desc=true").await;
    let odd = sorted.find("/jobs/odd").expect("odd is first");
    let last = sorted.find("/jobs/job-119").expect("job-119 follows");
    assert!(odd < last);
    // Filters by outcome: nothing has run.
    assert!(page(&h, "/?outcome=success").await.contains("No jobs match"));
    // The refresh fetches only the table.
    let partial = page(&h, "/?partial=true&q=odd").await;
    assert!(
        partial.starts_with("<table>") && partial.contains("/jobs/odd"),
        "{partial}"
    );
    // An unknown sort is refused, naming the field.
    let (status, body) = h.get("/?sort=colour").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("'sort'"), "{body}");
}

#[tokio::test]
async fn a_job_page_shows_its_runs_to_come_its_tasks_and_its_graph() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "parent", "command": "echo from parent", "schedule": "R2/2030-01-01T00:00:00Z/PT1H"}),
    )
    .await;
    let (status, body) = h
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "child", "command": "true", "parents": ["parent"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(h.put("/v1/scheduler/job/parent", None).await.0, 204);
    h.wait_job("parent", "success", |j| j["successCount"] == 1).await;

    let parent = page(&h, "/jobs/parent").await;
    assert!(
        parent.contains("<time datetime=\"2030-01-01T00:00:00.000Z\">"),
        "{parent}"
    );
    assert!(
        parent.contains("<time datetime=\"2030-01-01T01:00:00.000Z\">"),
        "{parent}"
    );
    assert!(
        parent.contains("<span class=\"state finished\">finished</span>"),
        "{parent}"
    );
    assert!(parent.contains("href=\"/graph?job=parent\""), "{parent}");
    let child = page(&h, "/jobs/child").await;
    assert!(child.contains("after parent"), "{child}");
    assert!(child.contains("None scheduled"), "{child}");
    let (status, _) = h.get("/jobs/nope").await;
    assert_eq!(status, 400);

    let graph = page(&h, "/graph?job=child").await;
    assert!(
        graph.contains("<svg")
            && graph.contains("href=\"/jobs/parent\"")
            && graph.contains("href=\"/jobs/child\"")
    );
}

#[tokio::test]
async fn the_workers_page_shows_resources_and_the_queue_page_says_why_tasks_wait() {
    let h = Harness::start().await;
    // Larger than any worker: it waits, and the queue page says why.
    h.create(
        json!({"name": "huge", "command": "true", "cpus": 100000, "schedule": "R0/2030-01-01T00:00:00Z/P1D"}),
    )
    .await;
    assert_eq!(h.put("/v1/scheduler/job/huge", None).await.0, 204);
    h.create(json!({"name": "sleeper", "command": "sleep 30", "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    assert_eq!(h.put("/v1/scheduler/job/sleeper", None).await.0, 204);
    wait_until("the sleeper runs", async || {
        h.summary("sleeper").await["state"] == "1 running"
    })
    .await;

    let workers = page(&h, "/workers").await;
    assert!(
        workers.contains("built-in") && workers.contains("state active"),
        "{workers}"
    );
    assert!(
        workers.contains("aria-label=\"cpus: 0.1 of"),
        "the sleeper's cpus are used: {workers}"
    );
    assert!(workers.contains(":sleeper:"), "its task is listed: {workers}");

    let queue = page(&h, "/queue").await;
    assert!(queue.contains("href=\"/jobs/huge\""), "{queue}");
    assert!(
        queue.contains("cpus"),
        "the reason names what is missing: {queue}"
    );
    assert!(
        !queue.contains("href=\"/jobs/sleeper\""),
        "a running task does not wait: {queue}"
    );
    assert_eq!(h.delete("/v1/scheduler/task/kill/sleeper").await.0, 204);
}
