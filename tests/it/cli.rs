//! The client subcommands of the `kairos` binary, run as processes against real servers: every
//! subcommand in table and `--json` modes, the exit codes, the editor's reopen loop, a followed
//! task's output arriving before its end, export/import, and the import from a second server
//! acting as the Chronos.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Harness, free_port, wait_until};

/// What one run of the CLI did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// The binary with none of the client's variables from the environment of the tests.
fn command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kairos"));
    for var in [
        "KAIROS_SERVER",
        "KAIROS_TOKEN",
        "KAIROS_USER",
        "KAIROS_PASSWORD",
        "EDITOR",
    ] {
        command.env_remove(var);
    }
    command.kill_on_drop(true);
    command
}

async fn finish(command: &mut tokio::process::Command) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the CLI finishes within 60 s")
        .expect("the CLI starts");
    Run {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `kairos COMMAND --server BASE ARGS…`: the server right after the command word, so that it is
/// not taken for one of the arguments after `--`.
async fn kairos(base: &str, args: &[&str]) -> Run {
    finish(command().arg(args[0]).arg("--server").arg(base).args(&args[1..])).await
}

/// Both modes of a read-only subcommand: the table (checked by `table`) and the JSON.
async fn both(base: &str, args: &[&str], table: impl Fn(&str)) -> Value {
    let run = kairos(base, args).await.ok();
    table(&run.stdout);
    let mut with_json = args.to_vec();
    with_json.push("--json");
    kairos(base, &with_json).await.ok().json()
}

/// A command that waits for `gate` to exist, so the test decides when its task ends.
fn gated(gate: &Path, before: &str, after: &str) -> String {
    format!(
        "echo {before}; while [ ! -e {} ]; do sleep 0.05; done; echo {after}",
        gate.display()
    )
}

async fn running_task(h: &Harness, job: &str) -> String {
    let mut id = String::new();
    wait_until(&format!("{job} has a running task"), async || {
        match h.history(job).await.iter().find(|t| t["state"] == "running") {
            Some(task) => {
                id = task["taskId"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    id
}

#[tokio::test]
async fn jobs_subcommands_in_tables_and_json() {
    let h = Harness::start().await;
    let base = h.base.as_str();
    let gate = h.path("gate");
    let file = h.path("jobs.json");
    std::fs::write(
        &file,
        json!([
            {"name": "parent", "command": "echo from parent", "schedule": "R/2030-01-01T00:00:00Z/P1D", "owner": "ops@example.com"},
            {"name": "child", "command": "echo child", "parents": ["parent"]},
            {"name": "slow", "command": gated(&gate, "started", "done"), "schedule": "R/2030-01-01T00:00:00Z/P1D"},
            {"name": "broken", "command": "exit 3", "schedule": "R/2030-01-01T00:00:00Z/P1D", "retries": 0}
        ])
        .to_string(),
    )
    .unwrap();
    let added = kairos(base, &["jobs", "add", file.to_str().unwrap()]).await.ok();
    assert_eq!(
        added.stdout,
        "saved parent\nsaved child\nsaved slow\nsaved broken\n"
    );
    assert_eq!(h.job("child").await["parents"], json!(["parent"]));
    // One job from standard input, with --json.
    let mut stdin_add = command();
    stdin_add
        .args(["jobs", "add", "-", "--json", "--server", base])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = stdin_add.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut input,
        br#"{"name": "solo", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"}"#,
    )
    .await
    .unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!({"saved": ["solo"]})
    );

    // Run with arguments; the task carries them.
    let run = kairos(base, &["jobs", "run", "parent", "--", "--verbose", "x"])
        .await
        .ok();
    assert_eq!(run.stdout, "started parent\n");
    h.wait_job("parent", "its run succeeded", |j| j["successCount"] == 1)
        .await;
    h.wait_job("child", "it ran after its parent", |j| j["successCount"] == 1)
        .await;
    kairos(base, &["jobs", "run", "broken", "--json"]).await.ok();
    h.wait_job("broken", "its run failed", |j| j["errorCount"] == 1)
        .await;
    kairos(base, &["jobs", "run", "slow"]).await.ok();
    let slow_task = running_task(&h, "slow").await;

    // list: every job, then each filter.
    let all = both(base, &["jobs", "list"], |t| {
        let header = t.lines().next().unwrap();
        assert!(
            header.starts_with("NAME") && header.contains("STATE") && header.contains("LAST"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("child ") && l.contains("after parent")),
            "{t}"
        );
    })
    .await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["parent", "child", "slow", "broken", "solo"]);
    let running = both(base, &["jobs", "list", "--state", "running"], |t| {
        assert!(t.contains("slow") && !t.contains("parent"), "{t}");
    })
    .await;
    assert_eq!(running.as_array().unwrap().len(), 1);
    assert_eq!(running[0]["name"], "slow");
    assert_eq!(running[0]["state"], "1 running");
    let failing = both(base, &["jobs", "list", "--failing"], |t| {
        assert!(t.contains("broken") && t.contains("failure"), "{t}");
    })
    .await;
    assert_eq!(
        failing,
        json!([{"name": "broken", "status": "failure", "state": "idle",
        "schedule": "R/2030-01-01T00:00:00Z/P1D", "parents": [], "disabled": false}])
    );
    let found = both(base, &["jobs", "list", "--search", "CHILD"], |t| {
        assert_eq!(t.lines().count(), 2, "{t}");
    })
    .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    let idle = kairos(base, &["jobs", "list", "--state", "idle", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(idle.as_array().unwrap().len(), 4);

    // show: the job as a table, and exactly the server's JSON.
    let shown = both(base, &["jobs", "show", "parent"], |t| {
        assert!(t.contains("owner") && t.contains("ops@example.com"), "{t}");
        assert!(
            t.lines().any(|l| l.starts_with("successes") && l.ends_with(" 1")),
            "{t}"
        );
        // The last success in local time, not the ISO text.
        assert!(
            t.lines()
                .any(|l| l.starts_with("last success") && !l.contains('T')),
            "{t}"
        );
    })
    .await;
    assert_eq!(shown, h.job("parent").await);

    // tasks list: the run with its arguments in its id.
    let tasks = both(base, &["tasks", "list", "parent"], |t| {
        assert!(
            t.starts_with("TASK") && t.contains("finished") && t.contains("seconds"),
            "{t}"
        );
    })
    .await;
    assert!(
        tasks[0]["taskId"]
            .as_str()
            .unwrap()
            .ends_with(":parent:--verbose x"),
        "{tasks}"
    );
    let task_id = tasks[0]["taskId"].as_str().unwrap();
    let logs = kairos(base, &["tasks", "logs", task_id]).await.ok();
    assert_eq!(logs.stdout, "from parent --verbose x\n");
    let logs = kairos(base, &["tasks", "logs", task_id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(logs["stdout"], "from parent --verbose x\n");
    assert_eq!(logs["state"], "finished");

    // kill the running one.
    let killed = kairos(base, &["jobs", "kill", "slow", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(killed, json!({"ok": true, "action": "kill", "job": "slow"}));
    wait_until("the slow task is killed", async || {
        h.history("slow")
            .await
            .iter()
            .any(|t| t["taskId"] == slow_task.as_str() && t["state"] == "killed")
    })
    .await;

    // disable and enable: the flag flips, counters stay.
    assert_eq!(
        kairos(base, &["jobs", "disable", "parent"]).await.ok().stdout,
        "disabled parent\n"
    );
    let job = h.job("parent").await;
    assert_eq!(
        (job["disabled"].clone(), job["successCount"].clone()),
        (json!(true), json!(1))
    );
    kairos(base, &["jobs", "disable", "child"]).await.ok();
    assert_eq!(h.job("child").await["disabled"], true);
    assert_eq!(
        h.job("child").await["parents"],
        json!(["parent"]),
        "kept dependent"
    );
    let enabled = kairos(base, &["jobs", "enable", "parent", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(enabled["action"], "enable");
    let job = h.job("parent").await;
    assert_eq!(
        (job["disabled"].clone(), job["successCount"].clone()),
        (json!(false), json!(1))
    );

    // next: local times, and the server's instants.
    let next = both(base, &["jobs", "next", "parent", "--count", "3"], |t| {
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(t.starts_with("NEXT RUN"), "{t}");
    })
    .await;
    assert_eq!(
        next,
        json!([
            "2030-01-01T00:00:00.000Z",
            "2030-01-02T00:00:00.000Z",
            "2030-01-03T00:00:00.000Z"
        ])
    );
    let dependent = kairos(base, &["jobs", "next", "child"]).await.ok();
    assert!(
        dependent.stdout.contains("no scheduled runs"),
        "{}",
        dependent.stdout
    );

    // graph in its three formats, the same with --json.
    let (_, dot) = h.get_text("/v1/scheduler/graph/dot").await;
    assert_eq!(kairos(base, &["jobs", "graph"]).await.ok().stdout, dot);
    assert_eq!(kairos(base, &["jobs", "graph", "--json"]).await.ok().stdout, dot);
    let (_, csv) = h.get_text("/v1/scheduler/graph/csv").await;
    assert_eq!(
        kairos(base, &["jobs", "graph", "--format", "csv"])
            .await
            .ok()
            .stdout,
        csv
    );
    let svg = kairos(base, &["jobs", "graph", "--format", "svg"])
        .await
        .ok()
        .stdout;
    assert!(svg.contains("<svg") && svg.contains("parent"), "{svg}");

    // workers: the built-in one.
    let workers = both(base, &["workers"], |t| {
        assert!(
            t.starts_with("NAME") && t.contains("(built-in)") && t.contains("active"),
            "{t}"
        );
    })
    .await;
    assert_eq!(workers[0]["local"], true);

    // delete.
    assert_eq!(
        kairos(base, &["jobs", "delete", "solo"]).await.ok().stdout,
        "deleted solo\n"
    );
    assert_eq!(h.get("/v1/scheduler/job/solo").await.0, 400);
    std::fs::write(&gate, "").unwrap();
}

#[tokio::test]
async fn exit_codes_say_who_said_no() {
    let h = Harness::start().await;
    // 1: the server refused, with its message.
    let unknown = kairos(&h.base, &["jobs", "show", "nope"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("Job 'nope' not found"),
        "{}",
        unknown.stderr
    );
    let bad = h.path("bad.json");
    std::fs::write(
        &bad,
        r#"{"name": "bad", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D", "retries": -1}"#,
    )
    .unwrap();
    let refused = kairos(&h.base, &["jobs", "add", bad.to_str().unwrap()]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("job bad: field 'retries'"),
        "{}",
        refused.stderr
    );
    // 2: usage, from clap or from this side's input.
    for args in [
        &["jobs", "frobnicate"][..],
        &["jobs", "list", "--state", "sleeping"],
        &["jobs", "run"],
        &["import"],
    ] {
        let run = kairos(&h.base, args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    let missing = kairos(&h.base, &["jobs", "add", "/nonexistent/jobs.json"]).await;
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("/nonexistent/jobs.json"),
        "{}",
        missing.stderr
    );
    std::fs::write(&bad, "{not json").unwrap();
    assert_eq!(
        kairos(&h.base, &["jobs", "add", bad.to_str().unwrap()])
            .await
            .code,
        2
    );
    assert_eq!(kairos("ftp://example.com", &["workers"]).await.code, 2);
    // 3: nothing listens there; also through KAIROS_SERVER.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let unreachable = kairos(&nobody, &["jobs", "list"]).await;
    assert_eq!(unreachable.code, 3);
    assert!(
        unreachable.stderr.contains("cannot connect"),
        "{}",
        unreachable.stderr
    );
    let from_env = finish(
        command()
            .args(["workers", "--json"])
            .env("KAIROS_SERVER", &nobody),
    )
    .await;
    assert_eq!(from_env.code, 3);
    // And the variable is used: the same command reaches the server.
    let reached = finish(
        command()
            .args(["workers", "--json"])
            .env("KAIROS_SERVER", &h.base),
    )
    .await
    .ok();
    assert_eq!(reached.json()[0]["local"], true);
}

#[tokio::test]
async fn credentials_from_flags_and_environment() {
    let h = crate::security::secured().await;
    let base = h.base.as_str();
    let anonymous = kairos(base, &["jobs", "list"]).await;
    assert_eq!(anonymous.code, 1);
    assert!(anonymous.stderr.contains("401"), "{}", anonymous.stderr);
    let reader = crate::security::token(&h, "cli-reader", "read").await;
    kairos(base, &["jobs", "list", "--token", &reader]).await.ok();
    finish(
        command()
            .args(["jobs", "list", "--server", base])
            .env("KAIROS_TOKEN", &reader),
    )
    .await
    .ok();
    // A read token may not run a job: the server's refusal, exit 1.
    let job = h.path("job.json");
    std::fs::write(
        &job,
        r#"{"name": "guarded", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}"#,
    )
    .unwrap();
    let refused = kairos(base, &["jobs", "add", job.to_str().unwrap(), "--token", &reader]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    // Basic, by flags and by variables.
    kairos(
        base,
        &[
            "jobs",
            "add",
            job.to_str().unwrap(),
            "--user",
            "admin",
            "--password",
            "s3cret",
        ],
    )
    .await
    .ok();
    let listed = finish(
        command()
            .args(["jobs", "list", "--json", "--server", base])
            .env("KAIROS_USER", "admin")
            .env("KAIROS_PASSWORD", "s3cret"),
    )
    .await
    .ok();
    assert_eq!(listed.json()[0]["name"], "guarded");
    let wrong = kairos(base, &["jobs", "list", "--user", "admin", "--password", "wrong"]).await;
    assert_eq!(wrong.code, 1);
}

#[tokio::test]
async fn jobs_edit_shows_a_refusal_and_reopens_the_editor() {
    let h = Harness::start().await;
    h.create(json!({"name": "edited", "command": "echo old", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.post(
        "/v1/scheduler/iso8601",
        json!({"name": "edited", "command": "echo old",
        "schedule": "R/2030-01-01T00:00:00Z/P1D", "successCount": 4}),
    )
    .await;
    // The editor: the first time it writes a schedule the server refuses, the second time it
    // changes the command in what it was given; it counts its runs in a file.
    let count = h.path("count");
    let editor = h.path("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n\
             if [ $n = 1 ]; then sed -i 's|\"schedule\": \"[^\"]*\"|\"schedule\": \"R/not-a-date/P1D\"|' \"$1\"; \
             else sed -i -e 's|\"echo old\"|\"echo new\"|' -e 's|R/not-a-date/P1D|R/2031-01-01T00:00:00Z/P1D|' \"$1\"; fi\n",
            count = count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = finish(
        command()
            .args(["jobs", "edit", "edited", "--server", &h.base])
            .env("EDITOR", &editor),
    )
    .await
    .ok();
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().trim(),
        "2",
        "opened twice"
    );
    assert!(
        run.stderr.contains("field 'schedule'") && run.stderr.contains("Reopening"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "saved edited\n");
    let job = h.job("edited").await;
    assert_eq!(job["command"], "echo new");
    assert_eq!(job["schedule"], "R/2031-01-01T00:00:00Z/P1D");
    assert_eq!(
        job["successCount"], 4,
        "counters are not sent back, so they are kept"
    );

    // An editor that changes nothing leaves the job alone; one that fails is exit 2.
    let unchanged = finish(
        command()
            .args(["jobs", "edit", "edited", "--server", &h.base])
            .env("EDITOR", "true"),
    )
    .await
    .ok();
    assert_eq!(unchanged.stdout, "edited is unchanged\n");
    let failed = finish(
        command()
            .args(["jobs", "edit", "edited", "--server", &h.base])
            .env("EDITOR", "false"),
    )
    .await;
    assert_eq!(failed.code, 2, "{}", failed.stderr);
}

#[tokio::test]
async fn tasks_logs_follow_shows_output_before_the_task_ends() {
    let h = Harness::start().await;
    let gate = h.path("gate");
    let script = format!(
        "echo early; echo warn >&2; while [ ! -e {} ]; do sleep 0.05; done; echo late >&2",
        gate.display()
    );
    h.create(json!({"name": "gated", "command": script, "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;
    h.put("/v1/scheduler/job/gated", None).await;
    let task = running_task(&h, "gated").await;
    for json in [false, true] {
        let mut follower = command();
        follower.args(["tasks", "logs", &task, "--follow", "--server", &h.base]);
        if json {
            follower.arg("--json");
        }
        let mut child = follower
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("output within 20 s")
            .unwrap()
            .expect("a line");
        if json {
            assert_eq!(
                serde_json::from_str::<Value>(&first).unwrap(),
                json!({"event": "stdout", "data": "early\n"})
            );
        } else {
            assert_eq!(first, "early");
        }
        // The output came while the task still runs: the follower is still waiting.
        assert!(
            child.try_wait().unwrap().is_none(),
            "the follower ended before the task"
        );
        assert_eq!(h.history("gated").await[0]["state"], "running");
        if json {
            // The second follower sees the end once the gate opens.
            std::fs::write(&gate, "").unwrap();
        } else {
            // The first one stops being needed here; it is killed, not waited for.
            child.kill().await.unwrap();
            continue;
        }
        let mut rest = String::new();
        while let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
        {
            rest.push_str(&line);
            rest.push('\n');
        }
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        let events: Vec<Value> = rest.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(
            events.contains(&json!({"event": "stderr", "data": "late\n"})),
            "{rest}"
        );
        assert_eq!(events.last().unwrap()["event"], "end", "{rest}");
        assert_eq!(events.last().unwrap()["data"]["state"], "finished", "{rest}");
    }
    // Followed in table mode after the end: the whole output, then the end on stderr.
    let done = kairos(&h.base, &["tasks", "logs", &task, "--follow"]).await.ok();
    assert_eq!(done.stdout, "early\n");
    assert!(
        done.stderr.starts_with("warn\nlate\n") && done.stderr.contains("ended finished, exit code 0"),
        "{}",
        done.stderr
    );
    let unknown = kairos(&h.base, &["tasks", "logs", "ct:1:0:nope:", "--follow"]).await;
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    let malformed = kairos(&h.base, &["tasks", "logs", "not-a-task-id"]).await;
    assert_eq!(malformed.code, 1);
    assert!(
        malformed.stderr.contains("not a valid task id"),
        "{}",
        malformed.stderr
    );
}

#[tokio::test]
async fn export_then_import_round_trips_exactly_and_is_idempotent() {
    let source = Harness::start().await;
    source
        .create(
            json!({"name": "root", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D",
            "environmentVariables": [{"name": "A", "value": "1"}], "successCount": 7,
            "lastSuccess": "2026-01-01T00:00:00.000Z", "constraints": [["rack", "EQUALS", "r1"]]}),
        )
        .await;
    source
        .create(json!({"name": "mid", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;
    let (status, body) = source
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "leaf", "command": "true", "parents": ["mid"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    source
        .create(json!({"name": "late", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;
    // `mid` becomes a child of `late`, created after it: the export must put `late` first.
    let (status, body) = source
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "mid", "command": "true", "parents": ["root", "late"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let exported = kairos(&source.base, &["export"]).await.ok();
    let jobs = exported.json();
    let order: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["root", "late", "mid", "leaf"]);
    assert_eq!(jobs[0]["successCount"], 7);

    let target = Harness::start().await;
    let file = target.path("jobs.json");
    std::fs::write(&file, &exported.stdout).unwrap();
    let imported = kairos(&target.base, &["import", file.to_str().unwrap()])
        .await
        .ok();
    assert!(imported.stdout.contains("4 created"), "{}", imported.stdout);
    assert!(
        imported
            .stdout
            .contains("Every field of every job written was carried over."),
        "{}",
        imported.stdout
    );
    let again = kairos(&target.base, &["export"]).await.ok();
    assert_eq!(again.stdout, exported.stdout, "the export round-trips exactly");
    // Idempotent: a second import changes nothing.
    let second = kairos(&target.base, &["import", file.to_str().unwrap(), "--json"])
        .await
        .ok()
        .json();
    assert_eq!(
        second["summary"],
        json!({"created": 0, "updated": 0, "unchanged": 4, "differs": 0, "failed": 0})
    );
    assert_eq!(
        kairos(&target.base, &["export"]).await.ok().stdout,
        exported.stdout
    );
}

#[tokio::test]
async fn import_from_a_chronos_with_dry_run_prefix_skips_differences_and_overwrite() {
    let chronos = Harness::start().await;
    let target = Harness::start().await;
    chronos
        .create(json!({"name": "etl", "command": "./run.sh", "schedule": "R/2030-01-01T03:00:00Z/P1D",
            "scheduleTimeZone": "Europe/Paris", "cpus": 0.5, "mem": 64,
            "constraints": [["rack", "LIKE", "r[12]"]],
            "fetch": [{"uri": "https://example.com/etl.tgz", "extract": true, "executable": false, "cache": false}],
            "container": {"type": "DOCKER", "image": "python:3.12-slim", "network": "BRIDGE"},
            "environmentVariables": [{"name": "MODE", "value": "full"}],
            "errorCount": 2, "lastError": "2026-02-01T00:00:00.000Z", "errorsSinceLastSuccess": 2}))
        .await;
    let (status, _) = chronos
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "report", "command": "make report", "parents": ["etl"]}),
        )
        .await;
    assert_eq!(status, 204);
    let from = chronos.base.as_str();

    // Dry run: says what it would do, changes nothing.
    let dry = kairos(
        &target.base,
        &["import", "--from-chronos", from, "--prefix", "old-", "--dry-run"],
    )
    .await
    .ok();
    assert!(
        dry.stdout.contains("would create  old-etl") && dry.stdout.contains("dry run"),
        "{}",
        dry.stdout
    );
    assert_eq!(target.get("/v1/scheduler/jobs").await.1, json!([]));

    // The import: prefixed names and parents, every field and the counters.
    let done = kairos(
        &target.base,
        &["import", "--from-chronos", from, "--prefix", "old-", "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(done["summary"]["created"], 2, "{done}");
    assert_eq!(done["notCarriedOver"], json!([]), "{done}");
    let etl = target.job("old-etl").await;
    let mut expected = chronos.job("etl").await;
    expected["name"] = json!("old-etl");
    assert_eq!(etl, expected);
    assert_eq!(etl["errorCount"], 2);
    assert_eq!(target.job("old-report").await["parents"], json!(["old-etl"]));

    // Identical jobs are skipped.
    let again = kairos(
        &target.base,
        &["import", "--from-chronos", from, "--prefix", "old-"],
    )
    .await
    .ok();
    assert!(
        again.stdout.contains("0 created") && again.stdout.contains("2 unchanged"),
        "{}",
        again.stdout
    );

    // A job changed at the source differs: reported and left alone, then replaced with --overwrite.
    chronos
        .post(
            "/v1/scheduler/iso8601",
            json!({"name": "etl", "command": "./run.sh --v2", "schedule": "R/2030-01-01T03:00:00Z/P1D",
            "scheduleTimeZone": "Europe/Paris", "cpus": 0.5, "mem": 64}),
        )
        .await;
    let differs = kairos(
        &target.base,
        &["import", "--from-chronos", from, "--prefix", "old-"],
    )
    .await
    .ok();
    assert!(
        differs.stdout.contains("differs in command"),
        "{}",
        differs.stdout
    );
    assert!(differs.stdout.contains("1 differing"), "{}", differs.stdout);
    assert_eq!(target.job("old-etl").await["command"], "./run.sh");
    let replaced = kairos(
        &target.base,
        &[
            "import",
            "--from-chronos",
            from,
            "--prefix",
            "old-",
            "--overwrite",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(replaced["summary"]["updated"], 1, "{replaced}");
    assert_eq!(target.job("old-etl").await["command"], "./run.sh --v2");

    // An address that serves neither /v1/scheduler/jobs nor 2.x's /scheduler/jobs: the refusal.
    let missing = kairos(
        &target.base,
        &[
            "import",
            "--from-chronos",
            &format!("{from}/nothing-here"),
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("reading the jobs of"),
        "{}",
        missing.stderr
    );

    // Fields the target cannot keep are listed with why, and a refused job fails its children.
    let file = target.path("chronos.json");
    std::fs::write(
        &file,
        json!([
            {"name": "odd", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D", "mesosOnly": "x", "cpus": "0.25"},
            {"name": "bad", "command": "true", "schedule": "not a schedule"},
            {"name": "bad-child", "command": "true", "parents": ["bad"]}
        ])
        .to_string(),
    )
    .unwrap();
    let partial = kairos(&target.base, &["import", file.to_str().unwrap()]).await;
    assert_eq!(partial.code, 1, "{}", partial.stderr);
    assert!(partial.stdout.contains("Not carried over:"), "{}", partial.stdout);
    assert!(
        partial
            .stdout
            .lines()
            .any(|l| l.starts_with("odd") && l.contains("mesosOnly") && l.contains("no field")),
        "{}",
        partial.stdout
    );
    assert!(
        partial
            .stdout
            .lines()
            .any(|l| l.contains("failed") && l.contains("bad-child") && l.contains("parent bad")),
        "{}",
        partial.stdout
    );
    assert!(
        partial
            .stdout
            .lines()
            .any(|l| l.contains("failed") && l.contains("field 'schedule'")),
        "{}",
        partial.stdout
    );
    assert!(
        partial.stderr.contains("2 of 3 jobs could not be imported"),
        "{}",
        partial.stderr
    );
    assert_eq!(target.job("odd").await["cpus"], 0.25);
}

#[tokio::test]
async fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kairos"),
        ("fish", "complete -c kairos"),
    ] {
        let run = finish(command().args(["completions", shell])).await.ok();
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..run.stdout.len().min(300)]
        );
        assert!(
            run.stdout.contains("jobs") && run.stdout.contains("from-chronos"),
            "{shell}"
        );
    }
    let unknown = finish(command().args(["completions", "tcsh"])).await;
    assert_eq!(unknown.code, 2);
}

#[tokio::test]
async fn pause_resume_and_upcoming() {
    let h = Harness::start().await;
    h.create(json!({"name": "early", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H"}))
        .await;
    h.create(json!({"name": "late", "command": "true", "schedule": "R/2030-01-01T00:30:00Z/PT1H"}))
        .await;
    let state = both(&h.base, &["pause", "--status"], |t| {
        assert!(t.contains("running"), "{t}")
    })
    .await;
    assert_eq!(state["paused"], false);
    let state = both(&h.base, &["pause"], |t| {
        assert!(t.contains("paused since"), "{t}")
    })
    .await;
    assert_eq!(state["paused"], true);
    assert_eq!(
        h.get("/v1/scheduler/pause").await.1["paused"],
        true,
        "the server is paused"
    );
    // A manual run is refused while paused: the server said no, exit code 1.
    let run = kairos(&h.base, &["jobs", "run", "early"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("paused"), "{}", run.stderr);
    let state = both(&h.base, &["resume"], |t| assert!(t.contains("running"), "{t}")).await;
    assert_eq!(state["paused"], false);
    let runs = both(&h.base, &["upcoming", "--limit", "3"], |t| {
        let jobs: Vec<&str> = t
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(jobs, ["early", "late", "early"], "{t}");
    })
    .await;
    assert_eq!(runs[1]["at"], "2030-01-01T00:30:00.000Z");
    let runs = kairos(
        &h.base,
        &["upcoming", "--json", "--until", "2030-01-01T00:45:00Z"],
    )
    .await;
    assert_eq!(runs.ok().json().as_array().unwrap().len(), 2);
    let bad = kairos(&h.base, &["upcoming", "--until", "tonight"]).await;
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("until"), "{}", bad.stderr);
}
