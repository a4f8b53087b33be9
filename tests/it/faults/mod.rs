//! Proof under faults: real `kairos` processes under a nemesis (kill -9, SIGSTOP, a full disk, a
//! database that restarts or stalls), and a checker that reads what every client was told and
//! what every task wrote about itself.
//!
//! Each scenario prints a verdict table and fails on any failed row. `KAIROS_FAULTS_LONG=1` runs
//! the same code with more rounds (docs/reliability.md); `KAIROS_FAULTS_SEED` replays a run's
//! random choices, whose seed every table shows.

mod crash_loop;
mod db_faults;
mod failover;
mod frozen_leader;
mod full_disk;
mod partition;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// One scenario at a time: each loads the machine on its own, and its bounds are about kairos,
/// not about sharing two cores with another nemesis.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether to run the long mode (more rounds, longer freezes).
fn long() -> bool {
    std::env::var_os("KAIROS_FAULTS_LONG").is_some()
}

/// A small deterministic random source (xorshift64*), so a run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("KAIROS_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        Rng(seed.max(1))
    }

    fn seed(&self) -> u64 {
        self.0
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

/// The checker's findings for one scenario, printed as a table.
struct Verdict {
    scenario: &'static str,
    rows: Vec<(String, bool, String)>,
}

impl Verdict {
    fn new(scenario: &'static str, seed: u64) -> Verdict {
        let mut verdict = Verdict {
            scenario,
            rows: Vec::new(),
        };
        verdict.note("seed", seed.to_string());
        verdict
    }

    /// A row that states a fact rather than checks one.
    fn note(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.rows.push((what.to_owned(), true, detail.to_string()));
    }

    /// A checked row; its detail is cut to a line's length.
    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        let mut detail = detail.to_string();
        if detail.len() > 400 {
            let cut = (0..=400).rev().find(|i| detail.is_char_boundary(*i)).unwrap_or(0);
            detail.truncate(cut);
            detail.push_str(" …");
        }
        self.rows.push((what.to_owned(), ok, detail));
    }

    /// Prints the table (also to `target/faults/<scenario>.txt`) and fails on a failed row.
    fn finish(self) {
        let width = self.rows.iter().map(|(what, ..)| what.len()).max().unwrap_or(0);
        let mut table = format!("\n== {} ==\n", self.scenario);
        for (what, ok, detail) in &self.rows {
            let mark = if *ok { "ok  " } else { "FAIL" };
            let _ = writeln!(table, "{mark} {what:width$}  {detail}");
        }
        eprintln!("{table}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/faults");
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join(format!("{}.txt", self.scenario)), &table);
        }
        let failed: Vec<&str> = self.rows.iter().filter(|r| !r.1).map(|r| r.0.as_str()).collect();
        assert!(failed.is_empty(), "{}: failed {failed:?}{table}", self.scenario);
    }
}

/// Polls `check` every 50 ms for at most `bound`; returns how long it took, or `None`.
async fn within(bound: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let began = Instant::now();
    loop {
        if check().await {
            return Some(began.elapsed());
        }
        if began.elapsed() >= bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `kairos` process the nemesis can kill, freeze and start again with the same arguments.
pub(crate) struct Proc {
    child: Option<Child>,
    /// What runs `kairos`, if anything (`ip netns exec <ns>`, say).
    wrap: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log: PathBuf,
    http: u16,
    agent: u16,
}

impl Proc {
    /// `kairos server` in `dir`, as users start it, on its own loopback ports.
    fn server(dir: &Path, args: &[&str]) -> Proc {
        Proc::server_on(dir, args, "127.0.0.1", &[])
    }

    /// `kairos server` whose agent listener is on `agent_host`, with `env` added.
    pub(crate) fn server_on(dir: &Path, args: &[&str], agent_host: &str, env: &[(&str, &str)]) -> Proc {
        std::fs::create_dir_all(dir).unwrap();
        let (http, agent) = (listen_port(), listen_port());
        let mut proc = Proc {
            child: None,
            wrap: Vec::new(),
            args: ["server"].iter().chain(args).map(|s| s.to_string()).collect(),
            env: [
                ("KAIROS_LISTEN", format!("127.0.0.1:{http}")),
                ("KAIROS_AGENT_LISTEN", format!("{agent_host}:{agent}")),
                ("KAIROS_HOSTNAME", "127.0.0.1".to_owned()),
            ]
            .into_iter()
            .chain(env.iter().map(|(k, v)| (*k, (*v).to_owned())))
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            dir: dir.to_owned(),
            log: dir.join("kairos.log"),
            http,
            agent,
        };
        proc.start();
        proc
    }

    /// `kairos agent` in `dir`, given these servers' agent ports.
    fn agent(dir: &Path, name: &str, servers: &[u16]) -> Proc {
        let list: Vec<String> = servers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut agent = Proc::agent_at(dir, name, &list.join(","), &[], &[], &[]);
        agent.start();
        agent
    }

    /// `kairos agent` attaching to `servers` (`host:port,…`), with `extra` arguments and `env`,
    /// run through `wrap`; not started yet.
    fn agent_at(
        dir: &Path,
        name: &str,
        servers: &str,
        extra: &[&str],
        wrap: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        std::fs::create_dir_all(dir).unwrap();
        let args = [
            "agent", "--server", servers, "--name", name, "--cpus", "8", "--mem", "8192", "--disk", "1000000",
        ];
        Proc {
            child: None,
            wrap: wrap.iter().map(|s| s.to_string()).collect(),
            args: args.iter().chain(extra).map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dir: dir.to_owned(),
            log: dir.join("agent.log"),
            http: 0,
            agent: 0,
        }
    }

    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let kairos = env!("CARGO_BIN_EXE_kairos").to_owned();
        let mut program = self.wrap.iter().chain([&kairos]);
        let child = Command::new(program.next().unwrap())
            .args(program)
            .args(&self.args)
            .env("KAIROS_LOG", "warn,kairos::server=info")
            .envs(self.env.iter().cloned())
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("kairos starts");
        self.child = Some(child);
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().and_then(Child::id).expect("running") as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// kill -9, and reap it.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn restart(&mut self) {
        self.kill().await;
        self.start();
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub(crate) fn name(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    pub(crate) async fn wait_ready(&self, client: &reqwest::Client) {
        let ping = format!("{}/ping", self.base());
        // A port can be bound before the server serves: each try gets a short timeout.
        let up = within(Duration::from_secs(60), async || {
            client
                .get(&ping)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            up.is_some(),
            "kairos did not answer /ping; its log: {}",
            tail(&self.log)
        );
    }
}

/// A free loopback port below Linux's ephemeral range (32768 and up). A server killed and
/// started again must find its port free, and the port of a fresh `free_port()` is one the
/// kernel also hands out to outgoing connections, which the clients open by the thousand.
fn listen_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    loop {
        let offset = u32::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let port = 20_000 + ((std::process::id().wrapping_mul(37) + offset) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The end of a log, for failure messages: its errors, then its last lines, without the frames
/// of a backtrace.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("at ") && !l.contains("::{") && !l.contains("__rust"))
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("ERROR") || l.starts_with("Error") || l.contains("panicked"))
        .copied()
        .collect();
    let errors = &errors[errors.len().saturating_sub(10)..];
    format!(
        "{}\n...\n{}",
        errors.join("\n"),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

pub(crate) async fn leader_of(client: &reqwest::Client, proc: &Proc) -> Option<String> {
    let response = client
        .get(format!("{}/v1/scheduler/leader", proc.base()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["leader"].as_str().map(str::to_owned)
}

/// A job that runs every second from `first_ms`, each run appending its own task id to `log`.
/// `catchUp` asks for every instant, so an instant that never runs is a fault, not a policy.
fn tick_job(name: &str, first_ms: i64, log: &Path) -> Value {
    let start = chrono::DateTime::from_timestamp_millis(first_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "name": name,
        "command": format!("echo \"$mesos_task_id\" >> {}", log.display()),
        "schedule": format!("R/{start}/PT1S"),
        "epsilon": "PT60S",
        "catchUp": true,
        "catchUpLimit": 100,
        "cpus": 0.01,
        "mem": 1,
        "disk": 0,
    })
}

/// One run a task recorded: its job, instant and attempt, from its Chronos task id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Run {
    job: String,
    due_ms: i64,
    attempt: u32,
}

impl Run {
    fn parse(line: &str) -> Option<Run> {
        let mut parts = line.trim().splitn(5, ':');
        (parts.next()? == "ct").then_some(())?;
        let due_ms = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        let job = parts.next()?.to_owned();
        Some(Run { job, due_ms, attempt })
    }

    fn task_id(&self) -> String {
        format!("ct:{}:{}:{}:", self.due_ms, self.attempt, self.job)
    }
}

fn runs(log: &Path) -> Vec<Run> {
    crate::lines(log).iter().filter_map(|l| Run::parse(l)).collect()
}

/// Checks exactly-once over what the tick tasks wrote, for the instants `first_ms..=last_ms`
/// of each job: no instant's run started twice, and none missed. An instant's run is its
/// attempt 0 (a retry is due at its own time, so it has an id of its own); a run that was
/// started but lost with its worker or with the scheduler before it wrote is not missed when
/// its task is recorded as lost or failed in `states` (task id → stored state): the retry
/// policy takes it from there, and the retries are counted.
fn check_ticks(
    verdict: &mut Verdict,
    jobs: &[String],
    first_ms: i64,
    last_ms: i64,
    ran: &[Run],
    states: &HashMap<String, String>,
) {
    let mut seen: BTreeSet<(&str, i64)> = BTreeSet::new();
    let mut twice = Vec::new();
    for run in ran.iter().filter(|r| r.attempt == 0) {
        if !seen.insert((run.job.as_str(), run.due_ms)) {
            twice.push(run.task_id());
        }
    }
    let retries = ran.iter().filter(|r| r.attempt > 0).count();
    let mut missed = Vec::new();
    let mut lost = 0;
    let mut expected = 0;
    for job in jobs {
        let mut due = first_ms;
        while due <= last_ms {
            expected += 1;
            if !seen.contains(&(job.as_str(), due)) {
                let id = Run {
                    job: job.clone(),
                    due_ms: due,
                    attempt: 0,
                }
                .task_id();
                match states.get(&id).map(String::as_str) {
                    Some("lost" | "failed") => lost += 1,
                    state => missed.push(format!("{id} ({})", state.unwrap_or("no record"))),
                }
            }
            due += 1000;
        }
    }
    let sample = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    verdict.note(
        "instants due in the window",
        format!("{expected} ({} jobs)", jobs.len()),
    );
    verdict.check(
        "no instant missed",
        missed.is_empty(),
        format!("{} missed {}", missed.len(), sample(&missed)),
    );
    verdict.check(
        "no instant started twice",
        twice.is_empty(),
        format!("{} twice {}", twice.len(), sample(&twice)),
    );
    verdict.note(
        "started, then lost with its worker",
        format!("{lost} (recorded lost; {retries} retry runs written)"),
    );
}

/// Jobs that run every second from a whole second, each run writing its own task id to `log`.
struct Ticks {
    log: PathBuf,
    jobs: Vec<String>,
    first_ms: i64,
}

impl Ticks {
    /// Creates `count` tick jobs through `base`, from the next whole second at least `ahead`.
    async fn create(
        client: &reqwest::Client,
        base: &str,
        dir: &Path,
        count: usize,
        ahead: Duration,
    ) -> Ticks {
        let log = dir.join("ticks.log");
        let first_ms = next_second(ahead);
        let jobs: Vec<String> = (0..count).map(|i| format!("tick-{i:03}")).collect();
        for name in &jobs {
            create(client, base, &tick_job(name, first_ms, &log)).await;
        }
        Ticks { log, jobs, first_ms }
    }

    /// Waits (at most `bound`) until every job has run past `last_ms`.
    async fn settle(&self, verdict: &mut Verdict, last_ms: i64, bound: Duration) {
        let settled = wait_for_ticks(&self.log, &self.jobs, last_ms + 2000, bound).await;
        verdict.check(
            "runs go on after the faults",
            settled,
            "every job ran past the window",
        );
    }

    /// Checks the instants up to `last_ms` (see [`check_ticks`]).
    fn check(&self, verdict: &mut Verdict, last_ms: i64, states: &HashMap<String, String>) {
        check_ticks(
            verdict,
            &self.jobs,
            self.first_ms,
            last_ms,
            &runs(&self.log),
            states,
        );
    }
}

/// Checks that every request got an answer within `bound`, and one that `ok` accepts.
fn check_answers(
    verdict: &mut Verdict,
    what: &str,
    bound: Duration,
    answers: &[(Duration, Option<u16>)],
    ok: impl Fn(u16) -> bool,
) {
    let slowest = answers.iter().map(|(t, _)| *t).max().unwrap_or_default();
    let unavailable = answers.iter().filter(|(_, s)| *s == Some(503)).count();
    let bad: Vec<String> = answers
        .iter()
        .filter(|(_, s)| !s.is_some_and(&ok))
        .map(|(t, s)| format!("{s:?} after {t:?}"))
        .collect();
    verdict.check(
        &format!("{what} answered within {bound:?}"),
        slowest <= bound,
        format!(
            "{} requests, {unavailable} got 503, slowest {slowest:?}",
            answers.len()
        ),
    );
    verdict.check(
        "every answer is a success or 503",
        bad.is_empty(),
        format!("{} others {:?}", bad.len(), &bad[..bad.len().min(5)]),
    );
}

/// The jobs a server has, as `/v1/scheduler/jobs` lists them.
async fn jobs(client: &reqwest::Client, base: &str) -> Vec<Value> {
    client
        .get(format!("{base}/v1/scheduler/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The names of the jobs a server has.
async fn job_names(client: &reqwest::Client, base: &str) -> Vec<String> {
    jobs(client, base)
        .await
        .iter()
        .filter_map(|j| j["name"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until every job wrote a run due at or after `through_ms`.
async fn wait_for_ticks(log: &Path, jobs: &[String], through_ms: i64, bound: Duration) -> bool {
    within(bound, async || {
        let ran = runs(log);
        jobs.iter()
            .all(|job| ran.iter().any(|r| &r.job == job && r.due_ms >= through_ms))
    })
    .await
    .is_some()
}

/// The next whole second at least `ahead` from now, in epoch ms.
fn next_second(ahead: Duration) -> i64 {
    let now = chrono::Utc::now().timestamp_millis() + ahead.as_millis() as i64;
    (now / 1000 + 1) * 1000
}

/// Posts a job, insisting on its acknowledgement.
async fn create(client: &reqwest::Client, base: &str, body: &Value) {
    let response = client
        .post(format!("{base}/v1/scheduler/iso8601"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        204,
        "{body}: {:?}",
        response.text().await
    );
}

/// The JSON answer at `url`, or `None` when none came (the server is down, say).
async fn get_json(client: &reqwest::Client, url: String) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// A worker's state as `/v1/scheduler/workers` shows it (`active`, `lost`, …).
async fn worker_state(client: &reqwest::Client, base: &str, name: &str) -> Option<String> {
    let workers = get_json(client, format!("{base}/v1/scheduler/workers")).await?;
    workers
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["state"].as_str().map(str::to_owned))
}

/// Waits (at most 30 s) until the worker `name` is in `state`.
async fn wait_worker(client: &reqwest::Client, base: &str, name: &str, state: &str) -> Option<Duration> {
    within(Duration::from_secs(30), async || {
        worker_state(client, base, name).await.as_deref() == Some(state)
    })
    .await
}
