//! The load tool: starts real `kairos server` processes on loopback, drives them through the public
//! API, and prints (and optionally writes) a table of figures next to baselines measured in the same run.
//!
//! Run through `scripts/bench`, which builds the release binary first. `--quick` shrinks every
//! scenario so the whole run takes about a minute; `--out FILE` writes the markdown table there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Sizes of each scenario.
struct Plan {
    tasks: usize,
    lag_jobs: usize,
    lag_seconds: u64,
    scale_jobs: usize,
    graph_jobs: usize,
    containers: usize,
    /// Container tasks through Docker Swarm.
    swarm: usize,
    history_rows: usize,
    /// Jobs created at a steady rate in the SQLite log scenario (run only when named).
    wal_jobs: usize,
}

struct Row {
    figure: String,
    value: String,
    baseline: String,
    target: String,
    verdict: String,
}

struct Server {
    child: Child,
    base: String,
}

fn kairos_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // target/<profile>/examples/load -> target/<profile>/kairos
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("kairos"))
        .expect("kairos next to examples")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(data: &Path, extra: &[&str]) -> Res<Server> {
    let port = free_port();
    let agent = free_port();
    let child = Command::new(kairos_binary())
        .arg("server")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--agent-listen",
            &format!("127.0.0.1:{agent}"),
        ])
        .arg("--data-dir")
        .arg(data)
        .args(["--hostname", "127.0.0.1", "--task-history-per-job", "1000000"])
        .args(extra)
        .env("KAIROS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{}/ping", server.base)).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(server)
}

impl Server {
    async fn stop(mut self) -> Res<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(())
    }

    fn rss_mb(&self) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// Runs `count` requests with `parallel` in flight; returns the elapsed time.
async fn fan_out<F, Fut>(count: usize, parallel: usize, make: F) -> Res<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Res<()>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(parallel));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let fut = make(i);
        handles.push(tokio::spawn(async move {
            let result = fut.await;
            drop(permit);
            result
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(started.elapsed())
}

/// POSTs a JSON body and expects a success status.
async fn post_json(client: &reqwest::Client, url: String, body: &Value) -> Res<()> {
    expect_ok(client.post(url).json(body).send().await?).await
}

async fn expect_ok(response: reqwest::Response) -> Res<()> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        )
        .into())
    }
}

async fn counter(client: &reqwest::Client, base: &str, name: &str) -> Res<u64> {
    let url = format!("{base}/metrics?prefix={name}");
    let metrics: Value = client.get(url).send().await?.json().await?;
    Ok(metrics["counters"][name]["count"].as_u64().unwrap_or(0))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// GETs `count` URLs (`url(i)`) one after another, each body read in full, and returns their times
/// in milliseconds, sorted, with the last body. A few untimed requests go first: the first one opens
/// the connection. `check(i, body)` sees every body, outside the timing.
/// `GET /upcoming` over every job: the next 100 runs, and what runs in the first hour.
async fn upcoming(client: &reqwest::Client, base: &str, jobs: usize, rows: &mut Vec<Row>) -> Res<()> {
    for (query, count) in [
        ("limit=100", 100),
        (
            "until=2030-01-01T00:59:59Z&limit=10000",
            (0..jobs).filter(|i| i % 1440 < 60).count().min(10000),
        ),
    ] {
        let (times, _) = time_gets(
            client,
            200,
            |_| format!("{base}/v1/scheduler/upcoming?{query}"),
            |_, body| {
                let runs: Value = serde_json::from_str(body)?;
                let listed = runs.as_array().map_or(0, Vec::len);
                if listed == count {
                    Ok(())
                } else {
                    Err(format!("/upcoming?{query} listed {listed} runs, not {count}").into())
                }
            },
        )
        .await?;
        let p99 = percentile(&times, 0.99);
        rows.push(Row {
            figure: format!("`GET /upcoming?{query}` over {jobs} jobs ({count} runs)"),
            value: format!("p50 {:.1} ms, p99 {p99:.1} ms", percentile(&times, 0.5)),
            baseline: "—".to_owned(),
            target: "p99 ≤ 50 ms".to_owned(),
            verdict: verdict(p99 <= 50.0),
        });
    }
    Ok(())
}

async fn time_gets(
    client: &reqwest::Client,
    count: usize,
    url: impl Fn(usize) -> String,
    check: impl Fn(usize, &str) -> Res<()>,
) -> Res<(Vec<f64>, String)> {
    const UNTIMED: usize = 5;
    let mut times = Vec::with_capacity(count);
    let mut body = String::new();
    for i in 0..UNTIMED + count {
        let started = Instant::now();
        let response = client.get(url(i)).send().await?;
        let ok = response.status().is_success();
        body = response.text().await?;
        let elapsed = started.elapsed();
        if !ok {
            return Err(format!("GET {}: {body}", url(i)).into());
        }
        check(i, &body)?;
        if i >= UNTIMED {
            times.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times, body))
}

fn verdict(ok: bool) -> String {
    if ok {
        "met".to_owned()
    } else {
        "**not met**".to_owned()
    }
}

/// How the runs of `create_and_run_once` are started.
#[derive(Clone, Copy)]
enum Trigger {
    /// `PUT /job/<name>` for each job, `in_flight` at a time.
    Api,
    /// Every job scheduled once at the same instant, after all are created: the scheduler alone
    /// works during the measurement, with no load-tool requests competing for the cores.
    Schedule,
}

/// Creates `count` jobs named `<prefix><i>` (fields from `fields(i)`), runs each once and waits
/// until every task has ended; returns tasks per second from the first run's start.
async fn create_and_run_once(
    client: &reqwest::Client,
    base: &str,
    prefix: &str,
    count: usize,
    in_flight: usize,
    trigger: Trigger,
    fields: impl Fn(usize) -> Value,
) -> Res<f64> {
    // Creation runs at thousands of jobs a second; the instant leaves it ample time.
    let instant = chrono::Utc::now() + chrono::Duration::milliseconds(2000 + count as i64);
    let schedule = match trigger {
        Trigger::Api => "R0/2030-01-01T00:00:00Z/P1D".to_owned(),
        Trigger::Schedule => format!(
            "R1/{}/PT1S",
            instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    };
    let bodies: Vec<Value> = (0..count)
        .map(|i| {
            let mut body = fields(i);
            body["name"] = json!(format!("{prefix}{i}"));
            body["schedule"] = json!(schedule);
            body
        })
        .collect();
    let bodies = Arc::new(bodies);
    fan_out(count, in_flight, |i| {
        let (client, base, bodies) = (client.clone(), base.to_owned(), bodies.clone());
        async move { post_json(&client, format!("{base}/v1/scheduler/iso8601"), &bodies[i]).await }
    })
    .await?;
    let before = counter(client, base, "kairos.tasks.ended").await?;
    let started = match trigger {
        Trigger::Api => {
            let started = Instant::now();
            fan_out(count, in_flight, |i| {
                let (client, base, prefix) = (client.clone(), base.to_owned(), prefix.to_owned());
                async move {
                    expect_ok(
                        client
                            .put(format!("{base}/v1/scheduler/job/{prefix}{i}"))
                            .send()
                            .await?,
                    )
                    .await
                }
            })
            .await?;
            started
        }
        Trigger::Schedule => {
            let ahead = (instant - chrono::Utc::now()).to_std().map_err(|_| {
                "creating the jobs took longer than planned; the runs began during it".to_owned()
            })?;
            tokio::time::sleep(ahead).await;
            Instant::now()
        }
    };
    while counter(client, base, "kairos.tasks.ended").await? < before + count as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Raw process spawning: `/bin/sh -c true`, `count` times, `parallel` at once.
async fn raw_spawn_rate(count: usize, parallel: usize) -> Res<f64> {
    let elapsed = fan_out(count, parallel, |_| async {
        Command::new("/bin/sh").args(["-c", "true"]).status().await?;
        Ok(())
    })
    .await?;
    Ok(count as f64 / elapsed.as_secs_f64())
}

async fn launch_throughput(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let server = start_server(&work.join("throughput"), &[]).await?;
    let client = reqwest::Client::new();
    let workers: Value = client
        .get(format!("{}/v1/scheduler/workers", server.base))
        .send()
        .await?
        .json()
        .await?;
    let cpus = workers[0]["total"]["cpus"].as_f64().unwrap_or(1.0);
    // Each task asks for 0.1 cpu, so this is how many run at once.
    let parallel = ((cpus / 0.1).floor() as usize).max(1);
    let jobs = plan.tasks;
    let rate = create_and_run_once(
        &client,
        &server.base,
        "t",
        jobs,
        32,
        Trigger::Schedule,
        |_| json!({"command": "true"}),
    )
    .await?;
    server.stop().await?;
    let raw = raw_spawn_rate(jobs, parallel).await?;
    rows.push(Row {
        figure: format!("launch throughput (`true`, {parallel} at once, every task recorded)"),
        value: format!("{rate:.0} tasks/s"),
        baseline: format!("{raw:.0} spawns/s raw; ratio {:.2}", rate / raw),
        target: "≥ 0.60 of raw and ≥ 1,000/s".to_owned(),
        verdict: verdict(rate / raw >= 0.6 && rate >= 1000.0),
    });
    Ok(())
}

/// Compiles `scripts/lagprobe.c` into `work`; `None` where there is no C compiler (or not x86-64).
async fn build_lag_probe(work: &Path) -> Option<PathBuf> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return None;
    }
    let source = work.join("lagprobe.c");
    let probe = work.join("lagprobe");
    std::fs::write(&source, include_str!("../scripts/lagprobe.c")).ok()?;
    let status = Command::new("cc")
        .args([
            "-O2",
            "-static",
            "-nostdlib",
            "-fno-stack-protector",
            "-fno-builtin",
            "-o",
        ])
        .arg(&probe)
        .arg(&source)
        .status()
        .await
        .ok()?;
    status.success().then_some(probe)
}

async fn scheduling_lag(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let server = start_server(&work.join("lag"), &["--task-cpus", "0.01"]).await?;
    let client = reqwest::Client::new();
    let log = work.join("lag.log");
    let base = server.base.clone();
    // The task reads the clock as its first act: a libc-free probe, or bash where no C compiler is.
    let (program, arguments, measured_by) = match build_lag_probe(work).await {
        Some(probe) => (
            probe.display().to_string(),
            vec![log.display().to_string()],
            "lag measured by each task (scripts/lagprobe.c, a libc-free probe reading the clock first)",
        ),
        None => (
            "/bin/bash".to_owned(),
            vec![
                "-c".to_owned(),
                format!("echo $EPOCHREALTIME $CHRONOS_JOB_RUN_TIME >> {}", log.display()),
            ],
            "lag measured by each task (bash $EPOCHREALTIME, which adds bash's start-up)",
        ),
    };
    // Jobs start on the next whole second, spread evenly over it, so load is steady.
    let first = (chrono::Utc::now().timestamp_millis() / 1000 + 2) * 1000;
    let jobs = plan.lag_jobs;
    fan_out(jobs, 32, |i| {
        let (client, base, program, arguments) =
            (client.clone(), base.clone(), program.clone(), arguments.clone());
        let start = first + (i as i64 * 1000 / jobs as i64);
        async move {
            let start = chrono::DateTime::from_timestamp_millis(start)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let body = json!({"name": format!("lag{i}"), "command": program, "shell": false,
                "arguments": arguments, "cpus": 0.01, "schedule": format!("R/{start}/PT1S")});
            post_json(&client, format!("{base}/v1/scheduler/iso8601"), &body).await
        }
    })
    .await?;
    let window_end = first + plan.lag_seconds as i64 * 1000;
    tokio::time::sleep(Duration::from_millis(
        (window_end - chrono::Utc::now().timestamp_millis() + 3000).max(0) as u64,
    ))
    .await;
    server.stop().await?;
    if let Some(keep) = std::env::var_os("KAIROS_LOAD_KEEP_LAG_LOG") {
        let _ = std::fs::copy(&log, keep);
    }
    let mut lags = Vec::new();
    let mut runs = std::collections::HashSet::new();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace();
        let (Some(started), Some(due)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(started), Ok(due)) = (started.parse::<f64>(), due.parse::<i64>()) else {
            continue;
        };
        if due < first + 1000 || due >= window_end {
            continue;
        }
        lags.push(started * 1000.0 - due as f64);
        runs.insert(line.split_whitespace().nth(1).map(str::to_owned));
    }
    lags.sort_by(f64::total_cmp);
    let expected = jobs * (plan.lag_seconds as usize - 1);
    let (p50, p99, max) = (
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
    );
    rows.push(Row {
        figure: format!(
            "scheduling lag ({jobs} jobs on R//PT1S for {} s)",
            plan.lag_seconds
        ),
        value: format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; {} of {expected} runs",
            lags.len()
        ),
        baseline: measured_by.to_owned(),
        target: "p50 ≤ 2, p99 ≤ 10, max ≤ 50 ms, none skipped".to_owned(),
        verdict: verdict(p50 <= 2.0 && p99 <= 10.0 && max <= 50.0 && lags.len() >= expected),
    });
    Ok(())
}

/// What authentication costs: the same job creation and launches against a server without
/// credentials and one with `--http-credentials`, whose client authenticates every request
/// (Basic), whose changes are audited and whose tasks get a task token.
async fn auth_cost(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let jobs = plan.scale_jobs / 5;
    // Off, on, on, off: each side runs once early and once late, so what changes over a run
    // (the page cache, the machine's other work) falls on both alike.
    let mut rates = [(0.0, 0.0); 2];
    for (i, credentials) in [None, Some("bench:bench"), Some("bench:bench"), None]
        .into_iter()
        .enumerate()
    {
        let extra: Vec<&str> = credentials
            .map(|c| vec!["--http-credentials", c])
            .unwrap_or_default();
        let server = start_server(&work.join(format!("auth-{i}")), &extra).await?;
        let mut headers = reqwest::header::HeaderMap::new();
        if credentials.is_some() {
            // base64("bench:bench")
            headers.insert("authorization", "Basic YmVuY2g6YmVuY2g=".parse()?);
        }
        let client = reqwest::Client::builder().default_headers(headers).build()?;
        let base = server.base.clone();
        let elapsed = fan_out(jobs, 64, |n| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let body = json!({"name": format!("c-{n:06}"), "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"});
                post_json(&client, format!("{base}/v1/scheduler/iso8601"), &body).await
            }
        })
        .await?;
        let create = jobs as f64 / elapsed.as_secs_f64();
        let launch = create_and_run_once(
            &client,
            &base,
            "l",
            plan.tasks,
            32,
            Trigger::Schedule,
            |_| json!({"command": "true"}),
        )
        .await?;
        server.stop().await?;
        let side = &mut rates[usize::from(credentials.is_some())];
        side.0 += create / 2.0;
        side.1 += launch / 2.0;
    }
    let ((create_off, launch_off), (create_on, launch_on)) = (rates[0], rates[1]);
    let (create_ratio, launch_ratio) = (create_on / create_off, launch_on / launch_off);
    rows.push(Row {
        figure: format!(
            "authentication on: {jobs} jobs created (64 in flight) and {} scheduled launches, every request authenticated, every change audited",
            plan.tasks
        ),
        value: format!("{create_on:.0} jobs/s, {launch_on:.0} tasks/s"),
        baseline: format!(
            "{create_off:.0} jobs/s, {launch_off:.0} tasks/s without; ratios {create_ratio:.2}, {launch_ratio:.2}"
        ),
        target: "≥ 0.95 of without".to_owned(),
        verdict: verdict(create_ratio >= 0.95 && launch_ratio >= 0.95),
    });
    Ok(())
}

async fn scale(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let data = work.join("scale");
    let server = start_server(&data, &[]).await?;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let jobs = plan.scale_jobs;
    let elapsed = fan_out(jobs, 64, |i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            // Names in an order unrelated to creation, as in life: the jobs page sorts by name,
            // and names created in order would hand it an already sorted list.
            // Daily at a minute of the day of their own, so `/upcoming` merges many instants.
            let (hour, minute) = (i % 1440 / 60, i % 60);
            let body = json!({"name": format!("job-{:06}", (i * 7919) % jobs), "command": format!("echo report {i}"), "owner": "ops@example.com",
                "schedule": format!("R/2030-01-01T{hour:02}:{minute:02}:00Z/P1D")});
            post_json(&client, format!("{base}/v1/scheduler/iso8601"), &body).await
        }
    })
    .await?;
    let create_rate = jobs as f64 / elapsed.as_secs_f64();
    rows.push(Row {
        figure: format!("create {jobs} jobs through the API (64 in flight)"),
        value: format!("{create_rate:.0} jobs/s"),
        baseline: "—".to_owned(),
        target: "≥ 2,000 jobs/s".to_owned(),
        verdict: verdict(create_rate >= 2000.0),
    });
    let rss = server.rss_mb();
    rows.push(Row {
        figure: format!("resident memory with {jobs} jobs"),
        value: format!("{rss:.0} MB"),
        baseline: "—".to_owned(),
        target: "≤ 300 MB".to_owned(),
        verdict: verdict(rss <= 300.0),
    });
    let mut times = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        let found: Value = client
            .get(format!(
                "{base}/v1/scheduler/jobs/search?name=job-{:06}&limit=10",
                (i * 7919) % jobs
            ))
            .send()
            .await?
            .json()
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(
            found.as_array().is_some_and(|a| !a.is_empty()),
            "search found nothing"
        );
    }
    times.sort_by(f64::total_cmp);
    let p99 = percentile(&times, 0.99);
    rows.push(Row {
        figure: format!("`GET /jobs/search?name=` over {jobs} jobs"),
        value: format!("p50 {:.1} ms, p99 {p99:.1} ms", percentile(&times, 0.5)),
        baseline: "—".to_owned(),
        target: "p99 ≤ 20 ms".to_owned(),
        verdict: verdict(p99 <= 20.0),
    });
    upcoming(&client, &base, jobs, rows).await?;
    ui_jobs_page(&client, &base, jobs, rows).await?;
    let started = Instant::now();
    let body = client
        .get(format!("{base}/v1/scheduler/jobs"))
        .send()
        .await?
        .bytes()
        .await?;
    let list = started.elapsed();
    rows.push(Row {
        figure: format!(
            "`GET /jobs` with {jobs} jobs ({:.0} MB of JSON)",
            body.len() as f64 / 1e6
        ),
        value: format!("{:.0} ms", list.as_secs_f64() * 1000.0),
        baseline: "—".to_owned(),
        target: "≤ 1 s".to_owned(),
        verdict: verdict(list <= Duration::from_secs(1)),
    });
    server.stop().await?;
    let started = Instant::now();
    let again = start_server(&data, &[]).await?;
    let restart = started.elapsed();
    let count = client
        .get(format!("{}/v1/scheduler/jobs/summary", again.base))
        .send()
        .await?
        .json::<Value>()
        .await?["jobs"]
        .as_array()
        .map_or(0, Vec::len);
    again.stop().await?;
    rows.push(Row {
        figure: format!("restart to serving with {jobs} jobs (process start to first `/ping`)"),
        value: format!("{:.2} s ({count} jobs back)", restart.as_secs_f64()),
        baseline: "—".to_owned(),
        target: "≤ 3 s".to_owned(),
        verdict: verdict(restart <= Duration::from_secs(3) && count == jobs),
    });
    Ok(())
}

/// The web UI's jobs page over the scale scenario's jobs (`job-<6 digits>`, each running
/// `echo report <i>`, all owned by `ops@example.com`): the first page, and searches matching one
/// job, many by command and all by owner. Each shows one page of rows sorted by name, as a browser
/// asks for it.
async fn ui_jobs_page(client: &reqwest::Client, base: &str, jobs: usize, rows: &mut Vec<Row>) -> Res<()> {
    const REQUESTS: usize = 300;
    const PAGE_ROWS: usize = 50;
    fn shown(body: &str) -> usize {
        body.matches("<tr><th scope=\"row\">").count()
    }
    // The full page says "<n> jobs match."
    fn matching(body: &str) -> Option<usize> {
        body.split(" jobs match.")
            .next()?
            .rsplit('>')
            .next()?
            .parse()
            .ok()
    }
    fn expect(body: &str, want_total: usize) -> Res<()> {
        let want_shown = want_total.min(PAGE_ROWS);
        if shown(body) == want_shown && matching(body) == Some(want_total) {
            Ok(())
        } else {
            Err(format!(
                "the jobs page shows {} rows of {:?} matching jobs, not {want_shown} of {want_total}",
                shown(body),
                matching(body)
            )
            .into())
        }
    }
    let mut push = |figure: String, times: &[f64]| {
        let p99 = percentile(times, 0.99);
        rows.push(Row {
            figure,
            value: format!("p50 {:.1} ms, p99 {p99:.1} ms", percentile(times, 0.5)),
            baseline: "—".to_owned(),
            target: "p99 ≤ 50 ms".to_owned(),
            verdict: verdict(p99 <= 50.0),
        });
    };
    let (times, body) = time_gets(client, REQUESTS, |_| format!("{base}/"), |_, b| expect(b, jobs)).await?;
    push(
        format!(
            "jobs page `GET /` with {jobs} jobs (first {PAGE_ROWS} rows by name, {:.0} kB)",
            body.len() as f64 / 1e3
        ),
        &times,
    );
    let (times, _) = time_gets(
        client,
        REQUESTS,
        |i| format!("{base}/?q=job-{:06}", (i * 104_729) % jobs),
        |_, b| expect(b, 1),
    )
    .await?;
    push(
        format!("jobs page search over {jobs} jobs, a name (`?q=job-012345`, 1 match)"),
        &times,
    );
    // "report 3" matches the commands of jobs 3, 30–39, 300–399, …: 11,111 of 100,000.
    let starting: Vec<usize> = (0..10)
        .map(|digit| {
            (0..jobs)
                .filter(|k| k.to_string().starts_with(&digit.to_string()))
                .count()
        })
        .collect();
    let (times, _) = time_gets(
        client,
        REQUESTS,
        |i| format!("{base}/?q=report%20{}", 1 + i % 9),
        |i, b| expect(b, starting[1 + i % 9]),
    )
    .await?;
    let (fewest, most) = (starting[1..].iter().min(), starting[1..].iter().max());
    let matches = match (fewest, most) {
        (Some(a), Some(b)) if a == b => format!("{a} matches each"),
        (Some(a), Some(b)) => format!("{a} to {b} matches"),
        _ => String::new(),
    };
    push(
        format!("jobs page search over {jobs} jobs, command text (`?q=report 1` to `report 9`, {matches})"),
        &times,
    );
    let (times, _) = time_gets(
        client,
        REQUESTS,
        |_| format!("{base}/?q=ops@example"),
        |_, b| expect(b, jobs),
    )
    .await?;
    push(
        format!(
            "jobs page search over {jobs} jobs, owner text (`?q=ops@example`, all {jobs} match, on the owner alone)"
        ),
        &times,
    );
    Ok(())
}

/// Jobs of the graph scenario with no parents.
const GRAPH_ROOTS: usize = 10;
/// Jobs in the graph when its SVG is measured, on the way to the plan's size.
const SVG_JOBS: usize = 1000;

/// The parents of graph job `i`, drawn from the first `before` jobs: distinct, spread over all of
/// them by a fixed hash (so every run builds the same graph).
fn graph_parents(i: usize, before: usize) -> Vec<String> {
    let count = graph_parent_count(i);
    let mut chosen: Vec<usize> = Vec::with_capacity(count);
    for k in 0..count as u64 {
        // splitmix64 of (i, k).
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(k);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let mut parent = ((x ^ (x >> 31)) % before as u64) as usize;
        while chosen.contains(&parent) {
            parent = (parent + 1) % before;
        }
        chosen.push(parent);
    }
    chosen.into_iter().map(|p| format!("g{p}")).collect()
}

/// Two parents each, and three for the first `2 · GRAPH_ROOTS` jobs after the roots, so that a
/// graph of n jobs has exactly 2n edges.
fn graph_parent_count(i: usize) -> usize {
    match i {
        _ if i < GRAPH_ROOTS => 0,
        _ if i < 3 * GRAPH_ROOTS => 3,
        _ => 2,
    }
}

/// Adds graph jobs `from..to` (`from` ≥ the roots), in waves so that every parent exists before
/// its children are posted. Waves of at most 100 keep the parents' range close to "any earlier
/// job" while 32 requests stay in flight.
async fn add_graph_jobs(client: &reqwest::Client, base: &str, from: usize, to: usize) -> Res<()> {
    let mut done = from;
    while done < to {
        let end = (done + done.min(100)).min(to);
        let (client, base) = (client.clone(), base.to_owned());
        fan_out(end - done, 32, move |k| {
            let i = done + k;
            let (client, base) = (client.clone(), base.clone());
            async move {
                let body =
                    json!({"name": format!("g{i}"), "command": "true", "parents": graph_parents(i, done)});
                post_json(&client, format!("{base}/v1/scheduler/dependency"), &body).await
            }
        })
        .await?;
        done = end;
    }
    Ok(())
}

async fn graph(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let server = start_server(&work.join("graph"), &[]).await?;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let jobs = plan.graph_jobs;
    for i in 0..GRAPH_ROOTS.min(jobs) {
        let body =
            json!({"name": format!("g{i}"), "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"});
        post_json(&client, format!("{base}/v1/scheduler/iso8601"), &body).await?;
    }
    // The SVG first, on the graph's first thousand jobs: a picture of 10,000 boxes is not one
    // anybody reads, and the UI's target is set for 1,000 jobs and 2,000 edges.
    let drawn = SVG_JOBS.min(jobs);
    add_graph_jobs(&client, &base, GRAPH_ROOTS.min(jobs), drawn).await?;
    let count = |svg: &str, mark: &str| svg.matches(mark).count();
    let want_edges: usize = (0..drawn).map(graph_parent_count).sum();
    let (times, svg) = time_gets(
        &client,
        200,
        |_| format!("{base}/v1/scheduler/graph/svg"),
        |_, svg| {
            let (boxes, curves) = (count(svg, "<g class=\"node "), count(svg, "<path class=\"edge"));
            if boxes == drawn && curves == want_edges {
                Ok(())
            } else {
                Err(
                    format!("the SVG draws {boxes} jobs and {curves} edges, not {drawn} and {want_edges}")
                        .into(),
                )
            }
        },
    )
    .await?;
    let max = times.last().copied().unwrap_or(f64::MAX);
    rows.push(Row {
        figure: format!(
            "`GET /graph/svg`, {drawn} jobs, {} edges ({:.0} kB of SVG)",
            count(&svg, "<path class=\"edge"),
            svg.len() as f64 / 1e3
        ),
        value: format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {max:.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        ),
        baseline: "—".to_owned(),
        target: "≤ 300 ms".to_owned(),
        verdict: verdict(max <= 300.0),
    });
    add_graph_jobs(&client, &base, drawn, jobs).await?;
    let mut times = Vec::new();
    let mut edges = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let dot = client
            .get(format!("{base}/v1/scheduler/graph/dot"))
            .send()
            .await?
            .text()
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        edges = dot.lines().filter(|l| l.contains("->")).count();
    }
    times.sort_by(f64::total_cmp);
    server.stop().await?;
    let median = percentile(&times, 0.5);
    rows.push(Row {
        figure: format!("`GET /graph/dot`, {jobs} jobs, {edges} edges"),
        value: format!(
            "median {median:.1} ms, max {:.1} ms",
            times.last().copied().unwrap_or(0.0)
        ),
        baseline: "—".to_owned(),
        target: "≤ 100 ms".to_owned(),
        verdict: verdict(times.last().copied().unwrap_or(f64::MAX) <= 100.0),
    });
    Ok(())
}

async fn containers(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let image = "kairos-test/busybox:latest";
    let docker_ok = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !docker_ok {
        rows.push(Row {
            figure: "Docker tasks".to_owned(),
            value: "not measured: no Docker engine or test image (run tests/docker_image.sh)".to_owned(),
            baseline: "—".to_owned(),
            target: "≥ 1.0× `docker run --rm`".to_owned(),
            verdict: "not measured".to_owned(),
        });
        return Ok(());
    }
    let parallel = 4;
    let server = start_server(
        &work.join("containers"),
        &["--worker-cpus", "4", "--task-cpus", "1"],
    )
    .await?;
    let client = reqwest::Client::new();
    let count = plan.containers;
    let rate = create_and_run_once(&client, &server.base, "c", count, 16, Trigger::Api, |_| {
        json!({"command": "true", "cpus": 1, "mem": 64, "container": {"type": "DOCKER", "image": image, "network": "NONE"}})
    })
    .await?;
    server.stop().await?;
    let elapsed = fan_out(count, parallel, |_| async move {
        let status = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--cpus",
                "1",
                "--memory",
                "64m",
                image,
                "true",
            ])
            .stdout(Stdio::null())
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err("docker run failed".into())
        }
    })
    .await?;
    let cli = count as f64 / elapsed.as_secs_f64();
    rows.push(Row {
        figure: format!("Docker tasks (`true` in busybox, {parallel} at once)"),
        value: format!("{rate:.1} tasks/s"),
        baseline: format!("{cli:.1}/s with `docker run --rm`; ratio {:.2}", rate / cli),
        target: "≥ 1.0×".to_owned(),
        verdict: verdict(rate / cli >= 1.0),
    });
    Ok(())
}

/// Runs the `docker` CLI; its stdout, or an error with its stderr.
async fn docker_cli(args: &[&str]) -> Res<String> {
    let out = Command::new("docker").args(args).output().await?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// Container tasks through Docker Swarm: kairos (`--swarm`, the node as its only worker)
/// against the same work done with the `docker` CLI at the same parallelism, each task a
/// one-replica service that is created, watched to its end, read and removed.
async fn swarm(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    let image = "kairos-test/busybox:latest";
    let figure = "Swarm tasks (`true` in busybox, one node)";
    // A Swarm manager costs the machine (about a fifth of launch throughput in this VM), so the
    // Swarm is made for this scenario alone and left after it, unless one was there before.
    let state = docker_cli(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .await
        .unwrap_or_default();
    let made = state == "inactive"
        && docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"])
            .await
            .is_ok();
    let node = docker_cli(&["info", "--format", "{{.Swarm.NodeID}}"])
        .await
        .unwrap_or_default();
    if node.is_empty() {
        rows.push(Row {
            figure: figure.to_owned(),
            value: "not measured: no Docker engine, or it cannot make a Swarm".to_owned(),
            baseline: "—".to_owned(),
            target: "≥ 1.0× `docker service create`".to_owned(),
            verdict: "not measured".to_owned(),
        });
        return Ok(());
    }
    let measured = swarm_against_cli(plan, work, image, figure, &node).await;
    if made {
        docker_cli(&["swarm", "leave", "--force"]).await?;
        // Leaving keeps the bridge Swarm made for its containers' outside traffic.
        let _ = docker_cli(&["network", "rm", "docker_gwbridge"]).await;
    }
    rows.push(measured?);
    Ok(())
}

async fn swarm_against_cli(plan: &Plan, work: &Path, image: &str, figure: &str, node: &str) -> Res<Row> {
    // 16 at once both ways: a two-cpu node holds 16 tasks of 0.125 cpu.
    let parallel = 16;
    let count = plan.swarm;
    let server = start_server(
        &work.join("swarm"),
        &["--swarm", "--no-local-worker", "--swarm-namespace", "kairos-load"],
    )
    .await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let workers: Value = client
            .get(format!("{}/v1/scheduler/workers", server.base))
            .send()
            .await?
            .json()
            .await?;
        let ready = workers.as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w["runs"] == "containers" && w["state"] == "active")
        });
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the Swarm node did not join as a worker".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = create_and_run_once(&client, &server.base, "s", count, parallel, Trigger::Api, |_| {
        json!({"command": "true", "cpus": 0.125, "mem": 32, "container": {"type": "DOCKER", "image": image, "network": "BRIDGE"}})
    })
    .await?;
    server.stop().await?;
    let constraint = format!("node.id=={node}");
    let elapsed = fan_out(count, parallel, |i| {
        let (constraint, image) = (constraint.clone(), image.to_owned());
        async move {
            let name = format!("kairos-load-cli-{i}");
            docker_cli(&[
                "service",
                "create",
                "--detach",
                "--quiet",
                "--no-resolve-image",
                "--name",
                &name,
                "--replicas",
                "1",
                "--restart-condition",
                "none",
                "--reserve-cpu",
                "0.125",
                "--limit-cpu",
                "0.125",
                "--reserve-memory",
                "32m",
                "--limit-memory",
                "32m",
                "--constraint",
                &constraint,
                &image,
                "true",
            ])
            .await?;
            loop {
                let state = docker_cli(&["service", "ps", &name, "--format", "{{.CurrentState}}"]).await?;
                if state.starts_with("Complete")
                    || state.starts_with("Failed")
                    || state.starts_with("Rejected")
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            docker_cli(&["service", "logs", "--raw", &name]).await?;
            docker_cli(&["service", "rm", &name]).await?;
            Ok(())
        }
    })
    .await?;
    let cli = count as f64 / elapsed.as_secs_f64();
    Ok(Row {
        figure: format!("{figure}, {parallel} at once"),
        value: format!("{rate:.1} tasks/s"),
        baseline: format!(
            "{cli:.1}/s with `docker service create`, `ps`, `logs`, `rm`; ratio {:.2}",
            rate / cli
        ),
        target: "≥ 1.0×".to_owned(),
        verdict: verdict(rate / cli >= 1.0),
    })
}

async fn history(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    use kairos::store::{SqliteStore, Store, TaskRecord, TaskState, Write};
    let empty = work.join("history");
    let server = start_server(&empty, &[]).await?;
    let client = reqwest::Client::new();
    let body = json!({"name": "h", "command": "true", "schedule": "R0/2030-01-01T00:00:00Z/P1D"});
    post_json(&client, format!("{}/v1/scheduler/iso8601", server.base), &body).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = server.rss_mb();
    server.stop().await?;
    // The same data directory (with its write-ahead log), now filled with finished tasks.
    let store = SqliteStore::open(&empty).await?;
    let rows_wanted = plan.history_rows;
    let mut written = 0;
    while written < rows_wanted {
        let batch: Vec<Write> = (written..(written + 10_000).min(rows_wanted))
            .map(|i| {
                Write::PutTask(TaskRecord {
                    id: kairos::job::TaskId::new(i as i64, 0, "h", ""),
                    job: "h".to_owned(),
                    attempt: 0,
                    due_ms: i as i64,
                    arguments: String::new(),
                    state: TaskState::Finished,
                    created_ms: i as i64,
                    started_ms: Some(i as i64),
                    finished_ms: Some(i as i64 + 5),
                    exit_code: Some(0),
                    message: "exited with status 0".to_owned(),
                    stdout: "a line of output\n".to_owned(),
                    stderr: String::new(),
                    elements_processed: 0,
                    worker: "127.0.0.1".to_owned(),
                    scheduled: true,
                })
            })
            .collect();
        written += batch.len();
        store.commit(&batch).await?;
    }
    drop(store);
    let server = start_server(&empty, &[]).await?;
    let started = Instant::now();
    let recent: Value = client
        .get(format!("{}/v1/scheduler/job/h/tasks?limit=20", server.base))
        .send()
        .await?
        .json()
        .await?;
    let query = started.elapsed();
    if recent.as_array().map_or(0, Vec::len) != 20 {
        return Err(format!("reading the history failed: {recent}").into());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_full = server.rss_mb();
    server.stop().await?;
    rows.push(Row {
        figure: format!("memory with {rows_wanted} finished tasks in the store"),
        value: format!(
            "{rss_full:.0} MB (latest 20 tasks read in {:.1} ms)",
            query.as_secs_f64() * 1000.0
        ),
        baseline: format!("{rss_empty:.0} MB with none"),
        target: "memory does not grow with history".to_owned(),
        verdict: verdict(rss_full <= rss_empty * 1.5 + 20.0),
    });
    Ok(())
}

/// The SQLite log under sustained writes: `wal_jobs` creates at 2,000/s (64 in flight), the size
/// of `kairos.db-wal` sampled every 100 ms. Passive checkpoints alone let it grow to gigabytes
/// under such a load; the truncating checkpoint past 64 MiB must hold it near that.
async fn wal(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Res<()> {
    const RATE: f64 = 2000.0;
    let data = work.join("wal");
    let server = start_server(&data, &[]).await?;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    let jobs = plan.wal_jobs;
    let log = data.join("kairos.db-wal");
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (log, sampling) = (log.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut largest = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&log).map_or(0, |m| m.len()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            largest
        })
    };
    let began = tokio::time::Instant::now();
    let elapsed = fan_out(jobs, 64, |i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            // Paced: request i goes out at i / RATE seconds, whatever the answers' speed.
            tokio::time::sleep_until(began + Duration::from_secs_f64(i as f64 / RATE)).await;
            let (hour, minute) = (i % 1440 / 60, i % 60);
            let body = json!({"name": format!("job-{i:07}"), "command": format!("echo report {i}"), "owner": "ops@example.com",
                "schedule": format!("R/2030-01-01T{hour:02}:{minute:02}:00Z/P1D")});
            post_json(&client, format!("{base}/v1/scheduler/iso8601"), &body).await
        }
    })
    .await?;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let largest = sampler.await?;
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len()) as f64 / 1e6;
    let (db, left) = (size(&data.join("kairos.db")), size(&log));
    server.stop().await?;
    let rate = jobs as f64 / elapsed.as_secs_f64();
    let bound = 64.0 * 1_048_576.0;
    rows.push(Row {
        figure: format!("SQLite log while {jobs} jobs are created at {rate:.0}/s"),
        value: format!(
            "largest {:.0} MB, {left:.0} MB at the end, beside a {db:.0} MB database",
            largest as f64 / 1e6
        ),
        baseline: "—".to_owned(),
        target: "≤ 64 MiB plus one checkpoint's writes".to_owned(),
        // What lands during the truncating checkpoint's copy comes on top of the 64 MiB.
        verdict: verdict((largest as f64) <= 2.0 * bound),
    });
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = kairos::config::detect_resources(Path::new("/")).mem;
    format!("{cores} cores ({cpu}), {:.0} GiB memory", mem / 1024.0)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "load [--quick] [--out FILE] [--only throughput|lag|scale|auth|graph|containers|swarm|history|wal]\n\
             Starts kairos servers (target/release/kairos) and measures them; the table goes to \
             stdout, and into FILE's results section with --out."
        );
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let plan = if quick {
        Plan {
            tasks: 1000,
            lag_jobs: 200,
            lag_seconds: 10,
            scale_jobs: 10_000,
            graph_jobs: 2_000,
            containers: 20,
            swarm: 20,
            history_rows: 100_000,
            wal_jobs: 100_000,
        }
    } else {
        Plan {
            tasks: 5000,
            lag_jobs: 1000,
            lag_seconds: 60,
            scale_jobs: 100_000,
            graph_jobs: 10_000,
            containers: 100,
            swarm: 100,
            history_rows: 1_000_000,
            wal_jobs: 1_000_000,
        }
    };
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    // Each scenario's duration goes to stderr, to plan runs by; the table is stdout's.
    macro_rules! scenario {
        ($name:literal, $measure:ident) => {
            if run($name) {
                let started = Instant::now();
                $measure(&plan, work.path(), &mut rows).await?;
                eprintln!("{}: {:.0} s", $name, started.elapsed().as_secs_f64());
            }
        };
    }
    scenario!("throughput", launch_throughput);
    scenario!("lag", scheduling_lag);
    scenario!("scale", scale);
    scenario!("auth", auth_cost);
    scenario!("graph", graph);
    scenario!("containers", containers);
    scenario!("swarm", swarm);
    scenario!("history", history);
    // Minutes long, so only when asked for by name (`--only wal`).
    if only.as_deref() == Some("wal") {
        let started = Instant::now();
        wal(&plan, work.path(), &mut rows).await?;
        eprintln!("wal: {:.0} s", started.elapsed().as_secs_f64());
    }
    let mut table =
        String::from("| figure | measured | baseline (same run) | target | |\n|---|---|---|---|---|\n");
    for row in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.figure, row.value, row.baseline, row.target, row.verdict
        ));
    }
    let report = format!(
        "Machine: {}.\nRun: `{}` on {}.\n\n{table}",
        machine(),
        if quick {
            "scripts/bench --quick"
        } else {
            "scripts/bench"
        },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("{report}");
    if let Some(out) = out {
        // Replace the generated section of the document, keeping the prose around it.
        let (begin, end) = ("<!-- load:begin -->", "<!-- load:end -->");
        let current = std::fs::read_to_string(&out).unwrap_or_default();
        let updated = match (current.find(begin), current.find(end)) {
            (Some(b), Some(e)) if b < e => format!("{}{begin}\n{report}{}", &current[..b], &current[e..]),
            _ => format!("{begin}\n{report}{end}\n"),
        };
        std::fs::write(out, updated)?;
    }
    Ok(())
}
