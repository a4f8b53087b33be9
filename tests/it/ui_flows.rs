//! What people do in the web UI, in headless Chromium: make a job in the editor and run it, read a
//! task's output while it runs, disable a job and kill its task, see a refusal next to its field,
//! and log in through the form. Each flow saves screenshots under `target/ui-screenshots`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::Browser;
use crate::output::{gated, only_task};
use crate::{Harness, wait_until};

/// The task page of `task`, as the job page links it.
fn task_path(task: &str) -> String {
    format!("/tasks/{}", task.replace(':', "%3A"))
}

/// Accepts the confirmation a button asks for, once the browser shows it.
async fn accept_confirmation(b: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match b.client.accept_alert().await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "no confirmation came up: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes a job in the editor, runs it now with arguments, and reads its output on the task page.
/// Screenshots are named with `shots` first (the browser's name, or nothing for Chromium).
async fn make_run_and_read(h: &Harness, b: &Browser, shots: &str) {
    let name = format!("{shots}made-in-ui");
    // From the jobs page to the editor by its link, as a visitor finds it.
    b.goto("/").await;
    b.click("a[href='/new']").await;
    b.wait_for_location("the editor", |l| l == "/new").await;
    b.type_into("#f-name", &name).await;
    b.type_into("#f-command", "echo hello-from-the-ui").await;
    b.type_into("#f-schedule", "R/2030-01-01T00:00:00Z/P1D").await;
    b.type_into("#f-owner", "ops@example.com").await;
    b.screenshot(&format!("{shots}editor")).await;
    b.press_enter("#f-owner").await;
    let page = format!("/jobs/{name}");
    b.wait_for_location("the new job's page", |l| l == page).await;
    let job = h.job(&name).await;
    assert_eq!(job["command"], "echo hello-from-the-ui", "{job}");
    assert_eq!(job["owner"], "ops@example.com", "{job}");
    assert_eq!(job["shell"], true, "{job}");

    // Run now, with arguments: a shell job gets them after its command.
    b.type_into("#run-args", "--and-these").await;
    b.click(&format!(
        "button[data-call='PUT'][data-url='/v1/scheduler/job/{name}']"
    ))
    .await;
    h.wait_job(&name, "the run from the UI ended", |j| j["successCount"] == 1)
        .await;
    let task = only_task(h, &name).await;

    // The job page links the task; its page shows what it wrote.
    b.goto(&page).await;
    b.click(&format!("a[href='{}']", task_path(&task))).await;
    b.wait_for_location("the task page", |l| l == task_path(&task))
        .await;
    let out = b.wait_for_text("#stdout", "hello-from-the-ui").await;
    assert!(
        out.contains("--and-these"),
        "the arguments reached the command: {out:?}"
    );
    assert_eq!(b.text("#task-state").await, "finished");
    b.screenshot(&format!("{shots}task")).await;
}

/// Opens a running task's page and watches its output arrive before and after it goes on.
async fn follow_live(h: &Harness, b: &Browser, shots: &str) {
    let name = format!("{shots}streamed");
    let gate = h.path(&format!("{name}-gate"));
    h.create(gated(&name, &gate)).await;
    h.put(&format!("/v1/scheduler/job/{name}"), None).await;
    let task = only_task(h, &name).await;

    b.goto(&task_path(&task)).await;
    // The first lines arrive while the task waits for its gate: it is still running.
    b.wait_for_text("#stdout", "first").await;
    b.wait_for_text("#stderr", "warn").await;
    assert_eq!(b.text("#task-state").await, "running");
    let record = h.get(&format!("/v1/scheduler/task/{task}/output")).await.1;
    assert_eq!(record["state"], "running", "the task had not ended: {record}");
    b.screenshot(&format!("{shots}task-live")).await;

    std::fs::write(&gate, b"").expect("gate");
    let out = b.wait_for_text("#stdout", "second").await;
    assert_eq!(out.matches("first").count(), 1, "no line twice: {out:?}");
    b.wait_for_text("#task-state", "finished").await;
    b.wait_for_text("#live", "ended").await;
}

#[tokio::test]
async fn a_job_made_in_the_editor_runs_now_with_arguments_and_its_output_is_on_the_task_page() {
    let h = Harness::start().await;
    let b = Browser::open(&h.base).await;
    make_run_and_read(&h, &b, "").await;
    b.close().await;
}

#[tokio::test]
async fn a_running_tasks_output_appears_on_its_page_while_it_runs() {
    let h = Harness::start().await;
    let b = Browser::open(&h.base).await;
    follow_live(&h, &b, "").await;
    b.close().await;
}

/// The same flows in Firefox: the pages use nothing Chromium alone has.
#[tokio::test]
async fn firefox_makes_runs_and_follows_jobs_too() {
    let h = Harness::start().await;
    let b = Browser::open_firefox(&h.base).await;
    make_run_and_read(&h, &b, "firefox-").await;
    follow_live(&h, &b, "firefox-").await;
    b.goto("/").await;
    b.wait_for_text("#jobs", "firefox-streamed").await;
    b.screenshot("firefox-jobs").await;
    b.close().await;
}

#[tokio::test]
async fn a_job_is_disabled_and_its_running_task_killed_from_its_page() {
    let h = Harness::start().await;
    h.create(json!({"name": "long", "command": "sleep 300",
        "schedule": "R/2030-01-01T00:00:00Z/P1D", "owner": "ops@example.com"}))
        .await;
    h.put("/v1/scheduler/job/long", None).await;
    let task = only_task(&h, "long").await;
    wait_until("the task runs", async || {
        h.history("long").await[0]["state"] == "running"
    })
    .await;

    let b = Browser::open(&h.base).await;
    b.goto("/jobs/long").await;
    b.click("button[data-call='DELETE'][data-url='/v1/scheduler/task/kill/long']")
        .await;
    accept_confirmation(&b).await;
    wait_until("the task is killed", async || {
        h.history("long").await[0]["state"] == "killed"
    })
    .await;
    assert_eq!(h.history("long").await[0]["taskId"], task.as_str());

    // Loaded again, so that the click below cannot meet the reload that follows the kill.
    b.goto("/jobs/long").await;
    b.wait_for_text("main", "killed").await;
    b.wait_for_text("button[data-toggle='long']", "Disable").await;
    b.click("button[data-toggle='long']").await;
    b.wait_for_text("button[data-toggle='long']", "Enable").await;
    let job = h.job("long").await;
    assert_eq!(job["disabled"], true, "{job}");
    assert_eq!(job["command"], "sleep 300", "the rest of the job is kept: {job}");
    b.close().await;
}

#[tokio::test]
async fn a_refused_field_is_marked_next_to_it_and_nothing_is_saved() {
    let h = Harness::start().await;
    let b = Browser::open(&h.base).await;
    b.goto("/new").await;
    b.type_into("#f-name", "badly-scheduled").await;
    b.type_into("#f-command", "true").await;
    b.type_into("#f-schedule", "R/not-a-date/PT1H").await;
    b.click("#editor button[type='submit']").await;
    let error = b
        .wait_for_text("[data-field='schedule'] .error", "schedule")
        .await;
    assert!(!error.is_empty());
    let invalid = b
        .client
        .execute(
            "return document.getElementById('f-schedule').getAttribute('aria-invalid');",
            vec![],
        )
        .await
        .expect("reads the attribute");
    assert_eq!(invalid, "true");
    assert_eq!(
        b.text("[data-field='name'] .error").await,
        "",
        "only the named field is marked"
    );
    assert_eq!(b.location().await, "/new", "the form stays, with what was typed");
    b.screenshot("editor-error").await;
    let (status, _) = h.get("/v1/scheduler/job/badly-scheduled").await;
    assert_eq!(status, 400, "no job was saved");

    // Broken JSON in the free-form box is caught before anything is sent.
    b.client
        .execute("document.getElementById('f-json').value = '{oops';", vec![])
        .await
        .expect("sets the box");
    b.click("#editor button[type='submit']").await;
    b.wait_for_text("[data-field='json'] .error", "not valid JSON")
        .await;
    b.close().await;
}

#[tokio::test]
async fn people_log_in_through_the_form_and_land_where_they_were_going() {
    let h = crate::security::secured().await;
    h.client
        .post(h.url("/v1/scheduler/iso8601"))
        .basic_auth(crate::security::ADMIN.0, Some(crate::security::ADMIN.1))
        .json(&json!({"name": "guarded", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .send()
        .await
        .expect("created")
        .error_for_status()
        .expect("accepted");

    let b = Browser::open(&h.base).await;
    b.goto("/jobs/guarded").await;
    b.wait_for_location("the login form", |l| l.starts_with("/login?next="))
        .await;
    b.screenshot("login").await;
    b.type_into("#user", crate::security::ADMIN.0).await;
    b.type_into("#password", "wrong").await;
    b.press_enter("#password").await;
    let refusal = b.text("#login-error").await;
    assert!(!refusal.is_empty(), "the form says why");
    assert!(
        b.location().await.starts_with("/login"),
        "a wrong password stays on the form"
    );

    b.type_into("#user", crate::security::ADMIN.0).await;
    b.type_into("#password", crate::security::ADMIN.1).await;
    b.press_enter("#password").await;
    b.wait_for_location("the job page", |l| l == "/jobs/guarded")
        .await;
    // The session cookie is out of the page's reach.
    let seen = b
        .client
        .execute("return document.cookie;", vec![])
        .await
        .expect("reads cookies");
    assert_eq!(seen, "", "HttpOnly: scripts see no cookie");

    // An admin's session reaches the audit page, which lists the job's creation.
    b.click("a[href='/audit']").await;
    b.wait_for_text("main", "POST /v1/scheduler/iso8601").await;
    b.screenshot("audit").await;

    b.click("form[action='/logout'] button").await;
    b.wait_for_location("the login form", |l| l.starts_with("/login"))
        .await;
    b.goto("/jobs/guarded").await;
    b.wait_for_location("the login form again", |l| l.starts_with("/login?next="))
        .await;
    b.close().await;
}
