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
    // A small neighbourhood is drawn on the job page itself, the job marked among its relatives.
    assert!(
        child.contains("<svg") && child.contains("href=\"/jobs/parent\""),
        "{child}"
    );
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

/// A job for the login tests, created with the admin's credentials.
async fn ui_job(h: &Harness) {
    let (admin, password) = crate::security::ADMIN;
    let response = h
        .client
        .post(h.url("/v1/scheduler/iso8601"))
        .basic_auth(admin, Some(password))
        .json(&json!({"name": "ui-job", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 204);
}

/// A client that keeps no cookies and follows no redirects, so each step is seen as it is.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in through the form; the session cookie's `name=value`.
async fn log_in(h: &Harness, user: &str, password: &str) -> String {
    let client = bare_client();
    let response = client
        .post(h.url("/login"))
        .form(&[("user", user), ("password", password), ("next", "/workers")])
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 303, "logging in as {user}");
    assert_eq!(response.headers()["location"], "/workers");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

/// The page at `path` seen with the session `cookie`.
async fn page_as(h: &Harness, cookie: &str, path: &str) -> (u16, String) {
    let response = bare_client()
        .get(h.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.text().await.expect("body"))
}

/// The CSRF token a page carries for its script.
fn csrf_of(page: &str) -> String {
    let start = page.find("<meta name=\"csrf\" content=\"").expect("a csrf meta") + 27;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn pages_send_strangers_to_the_login_form_and_a_session_needs_its_csrf_token_for_changes() {
    use crate::security::{ADMIN, secured};
    let h = secured().await;
    ui_job(&h).await;
    let response = bare_client().get(h.url("/jobs/ui-job?x=1")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/login?next=%2Fjobs%2Fui-job%3Fx%3D1"
    );
    // The API itself still answers 401 in JSON.
    let (status, body) = h.get("/v1/scheduler/jobs").await;
    assert_eq!(status, 401, "{body}");

    let form = bare_client()
        .get(h.url("/login?next=/queue"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let form = form.text().await.unwrap();
    assert!(
        form.contains("name=\"password\"") && form.contains("value=\"/queue\""),
        "{form}"
    );
    let wrong = bare_client()
        .post(h.url("/login"))
        .form(&[("user", "admin"), ("password", "nope"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(
        wrong.headers().get("www-authenticate").is_none(),
        "no Basic challenge: a browser would ask again in a dialog"
    );
    assert!(wrong.text().await.unwrap().contains("wrong user or password"));
    let offsite = bare_client()
        .post(h.url("/login"))
        .form(&[
            ("user", ADMIN.0),
            ("password", ADMIN.1),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(offsite.headers()["location"], "/", "never leads off the site");

    let cookie = log_in(&h, ADMIN.0, ADMIN.1).await;
    let (status, page) = page_as(&h, &cookie, "/jobs/ui-job").await;
    assert_eq!(status, 200);
    for admin_only in [
        "data-toggle",
        "/jobs/ui-job/edit",
        "Delete",
        "href=\"/audit\"",
        "Log out",
    ] {
        assert!(page.contains(admin_only), "an admin sees {admin_only}");
    }
    let csrf = csrf_of(&page);
    assert!(csrf.len() > 32, "{csrf}");
    // A change with the cookie alone is refused; with the page's token it goes through.
    let run = |token: Option<&str>| {
        let mut request = bare_client()
            .put(h.url("/v1/scheduler/job/ui-job"))
            .header("cookie", cookie.clone());
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        request.send()
    };
    let refused = run(None).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("CSRF"));
    assert_eq!(run(Some("kairos_forged")).await.unwrap().status(), 403);
    assert_eq!(run(Some(&csrf)).await.unwrap().status(), 204);
    // Reads need no token.
    let (status, _) = page_as(&h, &cookie, "/v1/scheduler/jobs").await;
    assert_eq!(status, 200);

    // Logging out needs the token too, and ends the session.
    let out = bare_client()
        .post(h.url("/logout"))
        .header("cookie", cookie.clone())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = page_as(&h, &cookie, "/jobs/ui-job").await;
    assert_eq!(status, 303, "the old cookie is worth nothing");
}

#[tokio::test]
async fn buttons_follow_the_role_and_the_audit_page_is_for_admins() {
    use crate::security::{secured, token};
    let h = secured().await;
    ui_job(&h).await;
    let reader = token(&h, "viewer", "read").await;
    let operator = token(&h, "oncall", "operate").await;

    let reader_cookie = log_in(&h, "anyone", &reader).await;
    let (_, page) = page_as(&h, &reader_cookie, "/jobs/ui-job").await;
    assert!(page.contains("Next runs"), "a reader sees the job");
    // Attributes, not the names the page's script looks for.
    for hidden in ["Run now", "data-call=\"", "data-toggle=\"", "href=\"/audit\""] {
        assert!(!page.contains(hidden), "a reader does not see {hidden}");
    }
    let (status, _) = page_as(&h, &reader_cookie, "/audit").await;
    assert_eq!(status, 403);

    let operator_cookie = log_in(&h, "anyone", &operator).await;
    let (_, page) = page_as(&h, &operator_cookie, "/jobs/ui-job").await;
    for shown in ["Run now", "Kill", "Mark success"] {
        assert!(page.contains(shown), "an operator sees {shown}");
    }
    for hidden in ["data-toggle=\"", "/edit", "Delete the job", "href=\"/audit\""] {
        assert!(!page.contains(hidden), "an operator does not see {hidden}");
    }
    let (status, _) = page_as(&h, &operator_cookie, "/jobs/ui-job/edit").await;
    assert_eq!(status, 403);

    let admin_cookie = log_in(&h, crate::security::ADMIN.0, crate::security::ADMIN.1).await;
    let (status, audit) = page_as(&h, &admin_cookie, "/audit?job=ui-job").await;
    assert_eq!(status, 200);
    assert!(
        audit.contains("POST /v1/scheduler/iso8601") && audit.contains(">admin<"),
        "{audit}"
    );

    // Revoking the token ends the sessions made with it.
    let admin = crate::security::basic(crate::security::ADMIN.0, crate::security::ADMIN.1);
    let (status, _) =
        crate::security::call(&h, "DELETE", "/v1/scheduler/tokens/oncall", Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = page_as(&h, &operator_cookie, "/jobs/ui-job").await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn the_task_page_shows_the_record_and_output_and_unknown_pages_answer_json() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "counted", "command": "echo out-line; echo err-line >&2",
        "schedule": "R1/2030-01-01T00:00:00Z/PT1H", "dataProcessingJobType": true}),
    )
    .await;
    h.put("/v1/scheduler/job/counted", None).await;
    h.wait_job("counted", "it ran", |j| j["successCount"] == 1).await;
    let task = h.history("counted").await[0]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = page(&h, "/jobs/counted").await;
    assert!(
        job.contains(&format!("href=\"/tasks/{}\"", task.replace(':', "%3A"))),
        "{job}"
    );
    let shown = page(&h, &format!("/tasks/{task}")).await;
    for part in [
        "out-line",
        "err-line",
        "finished",
        "Elements processed",
        "href=\"/jobs/counted\"",
    ] {
        assert!(shown.contains(part), "the task page shows {part}");
    }
    assert!(
        !shown.contains("data-follow=\""),
        "a finished task is not followed"
    );

    for path in [
        "/jobs/nobody",
        "/tasks/ct:1:0:nobody:",
        "/tasks/nonsense",
        "/jobs/nobody/edit",
    ] {
        let response = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json", "{path}");
    }
}

#[tokio::test]
async fn a_paused_scheduler_is_shown_with_a_way_out_for_admins_and_the_queue_shows_what_comes() {
    use crate::security::{ADMIN, basic, call, secured, token};
    let h = secured().await;
    let admin = basic(ADMIN.0, ADMIN.1);
    let soon = json!({"name": "soon", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"});
    let (status, _) = call(&h, "POST", "/v1/scheduler/iso8601", Some(&admin), Some(soon)).await;
    assert_eq!(status, 204);
    let operator = token(&h, "oncall", "operate").await;
    let reader = token(&h, "viewer", "read").await;
    // Pausing is for admins only.
    let as_operator = format!("Bearer {operator}");
    let (status, _) = call(&h, "PUT", "/v1/scheduler/pause", Some(&as_operator), None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&h, "PUT", "/v1/scheduler/pause", Some(&admin), None).await;
    assert_eq!(status, 200);

    let admin_cookie = log_in(&h, ADMIN.0, ADMIN.1).await;
    let (_, jobs) = page_as(&h, &admin_cookie, "/").await;
    assert!(jobs.contains("The scheduler is paused"), "{jobs}");
    assert!(
        jobs.contains("data-url=\"/v1/scheduler/resume\""),
        "an admin can resume"
    );
    let reader_cookie = log_in(&h, "anyone", &reader).await;
    let (_, queue) = page_as(&h, &reader_cookie, "/queue").await;
    assert!(queue.contains("The scheduler is paused"));
    assert!(
        !queue.contains("data-url=\"/v1/scheduler/resume\""),
        "a reader cannot"
    );
    assert!(
        queue.contains("Coming up")
            && queue.contains("2030-01-01 00:00:00 UTC")
            && queue.contains("2030-01-01 01:00:00 UTC"),
        "{queue}"
    );

    let (status, _) = call(&h, "PUT", "/v1/scheduler/resume", Some(&admin), None).await;
    assert_eq!(status, 200);
    let (_, queue) = page_as(&h, &admin_cookie, "/queue").await;
    assert!(!queue.contains("The scheduler is paused"));
    assert!(
        queue.contains("data-url=\"/v1/scheduler/pause\""),
        "an admin can pause from the queue"
    );
}
