//! Secure by default: credentials and roles on every route class, tokens and their secrets,
//! task tokens, browser safety, protected mode and the audit log, over real HTTP.

use serde_json::{Value, json};

use crate::{Harness, lines, wait_until};

pub(crate) const ADMIN: (&str, &str) = ("admin", "s3cret");

pub(crate) async fn secured() -> Harness {
    Harness::start_with(|c| {
        c.http_credentials = Some(kairos::auth::Credentials::parse("admin:s3cret").unwrap());
    })
    .await
}

/// A request with the given `Authorization`, answered as (status, body).
pub(crate) async fn call(
    h: &Harness,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = h.client.request(method.parse().unwrap(), h.url(path));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub(crate) async fn token(h: &Harness, name: &str, role: &str) -> String {
    let (status, body) = call(
        h,
        "POST",
        "/v1/scheduler/tokens",
        Some(&basic(ADMIN.0, ADMIN.1)),
        Some(json!({"name": name, "role": role})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_route_class_answers_by_role() {
    let h = secured().await;
    let admin = basic(ADMIN.0, ADMIN.1);
    let read = format!("Bearer {}", token(&h, "reader", "read").await);
    let operate = format!("Bearer {}", token(&h, "operator", "operate").await);
    // An operate token works as the password of Basic too, for clients that only know Basic.
    let operate_basic = basic("anything", operate.trim_start_matches("Bearer "));
    let job = json!({"name": "guarded", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"});
    // (method, path, body, the weakest role that may)
    let routes: Vec<(&str, &str, Option<Value>, &str)> = vec![
        ("GET", "/v1/scheduler/jobs", None, "read"),
        ("GET", "/scheduler/jobs/summary", None, "read"),
        ("GET", "/metrics", None, "read"),
        ("PUT", "/v1/scheduler/job/guarded", None, "operate"),
        ("DELETE", "/v1/scheduler/task/kill/guarded", None, "operate"),
        ("POST", "/v1/scheduler/iso8601", Some(job.clone()), "admin"),
        ("GET", "/v1/scheduler/tokens", None, "admin"),
        ("GET", "/v1/scheduler/audit", None, "admin"),
    ];
    call(
        &h,
        "POST",
        "/v1/scheduler/iso8601",
        Some(&admin),
        Some(job.clone()),
    )
    .await;
    let order = ["read", "operate", "admin"];
    for (method, path, body, weakest) in routes {
        let (status, reply) = call(&h, method, path, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {path} without credentials: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("authentication is required"),
            "{reply}"
        );
        let (status, _) = call(&h, method, path, Some(&basic("admin", "wrong")), body.clone()).await;
        assert_eq!(status, 401, "{method} {path} with a wrong password");
        for (role, auth) in [
            ("read", &read),
            ("operate", &operate),
            ("operate", &operate_basic),
            ("admin", &admin),
        ] {
            let allowed = order.iter().position(|r| *r == role) >= order.iter().position(|r| *r == weakest);
            let (status, reply) = call(&h, method, path, Some(auth), body.clone()).await;
            if allowed {
                assert!(
                    (200..300).contains(&status),
                    "{method} {path} as {role}: {status} {reply}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}: {reply}");
                assert!(
                    reply["message"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("needs the {weakest} role")),
                    "{reply}"
                );
            }
        }
    }
    // /ping and /leader need nothing.
    assert_eq!(call(&h, "GET", "/ping", None, None).await.0, 200);
    assert_eq!(call(&h, "GET", "/leader", None, None).await.0, 200);
    // A 401 says how to authenticate.
    let response = h.client.get(h.url("/v1/scheduler/jobs")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"kairos\"");
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_revocable() {
    let h = secured().await;
    let admin = basic(ADMIN.0, ADMIN.1);
    let secret = token(&h, "ci", "read").await;
    let (status, body) = call(
        &h,
        "POST",
        "/v1/scheduler/tokens",
        Some(&admin),
        Some(json!({"name": "ci", "role": "admin"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = call(
        &h,
        "POST",
        "/v1/scheduler/tokens",
        Some(&admin),
        Some(json!({"name": "bad name!", "role": "read"})),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str().unwrap().contains("'name'")),
        (400, true),
        "{body}"
    );
    let (status, body) = call(
        &h,
        "POST",
        "/v1/scheduler/tokens",
        Some(&admin),
        Some(json!({"name": "x", "role": "root"})),
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str().unwrap().contains("'role'")),
        (400, true),
        "{body}"
    );
    let bearer = format!("Bearer {secret}");
    assert_eq!(
        call(&h, "GET", "/v1/scheduler/jobs", Some(&bearer), None).await.0,
        200
    );
    let (_, listed) = call(&h, "GET", "/v1/scheduler/tokens", Some(&admin), None).await;
    assert_eq!(listed[0]["name"], "ci");
    assert_eq!(listed[0]["role"], "read");
    assert!(
        !listed.to_string().contains(&secret),
        "a secret is never returned twice"
    );
    // The store keeps only a hash.
    let db = std::fs::read(h.path("kairos.db")).unwrap_or_default();
    let wal = std::fs::read(h.path("kairos.db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle)
    );
    assert_eq!(
        call(&h, "DELETE", "/v1/scheduler/tokens/ci", Some(&admin), None)
            .await
            .0,
        204
    );
    assert_eq!(
        call(&h, "GET", "/v1/scheduler/jobs", Some(&bearer), None).await.0,
        401
    );
    assert_eq!(
        call(&h, "DELETE", "/v1/scheduler/tokens/ci", Some(&admin), None)
            .await
            .0,
        404
    );
    // Tokens survive a restart.
    let kept = token(&h, "kept", "read").await;
    let mut h = h;
    h.restart().await;
    assert_eq!(
        call(
            &h,
            "GET",
            "/v1/scheduler/jobs",
            Some(&format!("Bearer {kept}")),
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_paused() {
    let h = secured().await;
    let wrong = basic("admin", "guess");
    // Asking without credentials is not a failure.
    for _ in 0..12 {
        assert_eq!(call(&h, "GET", "/v1/scheduler/jobs", None, None).await.0, 401);
    }
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(call(&h, "GET", "/v1/scheduler/jobs", Some(&wrong), None).await.0);
    }
    assert_eq!(&statuses[..10], [401; 10]);
    assert_eq!(&statuses[10..], [429, 429]);
    // Even the right password waits out the pause.
    assert_eq!(
        call(
            &h,
            "GET",
            "/v1/scheduler/jobs",
            Some(&basic(ADMIN.0, ADMIN.1)),
            None
        )
        .await
        .0,
        429
    );
}

#[tokio::test]
async fn an_async_task_completes_itself_with_its_own_token_only() {
    let h = secured().await;
    let admin = basic(ADMIN.0, ADMIN.1);
    let out = h.path("token");
    let command = format!("echo \"$mesos_task_id $KAIROS_TASK_TOKEN\" > {}", out.display());
    let job = json!({"name": "selfdone", "command": command, "async": true, "schedule": "R0/2030-01-01T00:00:00Z/P1D"});
    assert_eq!(
        call(&h, "POST", "/v1/scheduler/iso8601", Some(&admin), Some(job))
            .await
            .0,
        204
    );
    assert_eq!(
        call(&h, "PUT", "/v1/scheduler/job/selfdone", Some(&admin), None)
            .await
            .0,
        204
    );
    wait_until("the task wrote its token", async || !lines(&out).is_empty()).await;
    let line = lines(&out).remove(0);
    let (task_id, task_token) = line.split_once(' ').unwrap();
    let bearer = format!("Bearer {task_token}");
    let encoded = task_id.replace(':', "%3A");
    // The task's token reads nothing and completes no other task.
    assert_eq!(
        call(&h, "GET", "/v1/scheduler/jobs", Some(&bearer), None).await.0,
        403
    );
    let other = "ct%3A1%3A0%3Aselfdone%3A";
    let (status, body) = call(
        &h,
        "PUT",
        &format!("/v1/scheduler/task/{other}"),
        Some(&bearer),
        Some(json!({"statusCode": 0})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    wait_until("the task waits", async || {
        let (_, t) = call(
            &h,
            "GET",
            &format!("/v1/scheduler/task/{encoded}"),
            Some(&admin),
            None,
        )
        .await;
        t["state"] == "waiting"
    })
    .await;
    let (status, body) = call(
        &h,
        "PUT",
        &format!("/v1/scheduler/task/{encoded}"),
        Some(&bearer),
        Some(json!({"statusCode": 0})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (_, job) = call(&h, "GET", "/v1/scheduler/job/selfdone", Some(&admin), None).await;
    assert_eq!(job["successCount"], 1);
    // Once the task has ended its token completes nothing more.
    let (status, _) = call(
        &h,
        "PUT",
        &format!("/v1/scheduler/task/{encoded}"),
        Some(&bearer),
        Some(json!({"statusCode": 0})),
    )
    .await;
    assert_eq!(status, 400);
    let progress = format!("/v1/scheduler/job/selfdone/task/{encoded}/progress");
    let (status, body) = call(
        &h,
        "POST",
        &progress,
        Some(&bearer),
        Some(json!({"numAdditionalElementsProcessed": 1})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("has ended"), "{body}");
}

#[tokio::test]
async fn browsers_cannot_create_jobs_and_only_allowed_origins_read() {
    let h = Harness::start_with(|c| {
        c.cors_origins = vec!["https://ops.example.com".to_owned()];
        c.max_body_bytes = 4096;
    })
    .await;
    let job = r#"{"name": "from-a-page", "command": "id", "schedule": "R1//PT1S"}"#;
    for kind in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = h
            .client
            .post(h.url("/v1/scheduler/iso8601"))
            .header("content-type", kind)
            .body(job)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{kind}");
    }
    let big = json!({"name": "big", "command": "x".repeat(5000), "schedule": "R0/2030-01-01T00:00:00Z/P1D"});
    assert_eq!(h.post("/v1/scheduler/iso8601", big).await.0, 413);
    let (_, jobs) = h.get("/v1/scheduler/jobs").await;
    assert_eq!(jobs, json!([]), "nothing was created");
    let with_origin = |origin: &'static str| {
        h.client
            .get(h.url("/v1/scheduler/jobs"))
            .header("origin", origin)
            .send()
    };
    let allowed = with_origin("https://ops.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    let other = with_origin("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn every_change_is_audited_with_who_and_how_it_went() {
    let h = secured().await;
    let admin = basic(ADMIN.0, ADMIN.1);
    let operator = format!("Bearer {}", token(&h, "op", "operate").await);
    let job = json!({"name": "audited", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"});
    call(&h, "POST", "/v1/scheduler/iso8601", Some(&admin), Some(job)).await;
    call(&h, "PUT", "/v1/scheduler/job/audited", Some(&operator), None).await;
    call(
        &h,
        "PUT",
        "/v1/scheduler/job/success/audited",
        Some(&operator),
        None,
    )
    .await;
    call(
        &h,
        "DELETE",
        "/v1/scheduler/task/kill/audited",
        Some(&operator),
        None,
    )
    .await;
    call(&h, "PUT", "/v1/scheduler/job/nope", Some(&operator), None).await;
    call(&h, "DELETE", "/v1/scheduler/job/audited", Some(&admin), None).await;
    let (status, entries) = call(&h, "GET", "/v1/scheduler/audit?limit=50", Some(&admin), None).await;
    assert_eq!(status, 200, "{entries}");
    let seen: Vec<(String, String, String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["principal"].as_str().unwrap().to_owned(),
                format!(
                    "{} {}",
                    e["method"].as_str().unwrap(),
                    e["route"].as_str().unwrap()
                ),
                e["job"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("admin", "POST /v1/scheduler/tokens", "", "ok"),
        ("admin", "POST /v1/scheduler/iso8601", "audited", "ok"),
        ("token:op", "PUT /v1/scheduler/job/audited", "audited", "ok"),
        (
            "token:op",
            "PUT /v1/scheduler/job/success/audited",
            "audited",
            "ok",
        ),
        (
            "token:op",
            "DELETE /v1/scheduler/task/kill/audited",
            "audited",
            "ok",
        ),
        (
            "token:op",
            "PUT /v1/scheduler/job/nope",
            "nope",
            "Job 'nope' not found",
        ),
        ("admin", "DELETE /v1/scheduler/job/audited", "audited", "ok"),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(entries[0]["source"], "127.0.0.1");
    let (_, of_op) = call(
        &h,
        "GET",
        "/v1/scheduler/audit?principal=token:op",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(of_op.as_array().unwrap().len(), 4);
    let (status, _) = call(&h, "GET", "/v1/scheduler/audit", Some(&operator), None).await;
    assert_eq!(status, 403, "the audit log is for admins");
}

#[tokio::test]
async fn the_binary_refuses_a_network_address_without_credentials() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["server", "--listen", "0.0.0.0:0", "--agent-listen", "127.0.0.1:0"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--http-credentials") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}
