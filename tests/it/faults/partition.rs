//! An agent partition: one agent runs in a network namespace of its own, joined to the scheduler
//! by a veth pair, and the test cuts the link while the agent runs tasks, then heals it. Tasks
//! lost with the agent must be retried on the other agent, the stale copies killed when the
//! agent returns, and no run recorded as succeeded twice, even when a stale copy finished while
//! its agent was cut off.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Proc, Rng, Ticks, Verdict, create, long, wait_worker, within};

/// The agents' shared secret: an agent listener that is not on loopback needs one.
const TOKEN: &str = "partition-test-token-0123456789abcdef";
/// Tasks per round that are still running when the agent comes back (their copies are stale).
const LONG_JOBS: usize = 4;
/// Tasks per round that finish while their agent is cut off (their ends come too late).
const SHORT_JOBS: usize = 4;
const TICK_JOBS: usize = 10;
/// How long a short task's first attempt runs: past the cut, before the heal.
const SHORT_SECONDS: u64 = 5;

/// A network namespace joined to this one by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_link: String,
    host_ip: String,
}

impl Netns {
    fn new() -> Netns {
        let n = std::process::id() % 250 + 1;
        let netns = Netns {
            name: format!("kairos-fault-{n}"),
            host_link: format!("kfh{n}"),
            host_ip: format!("10.213.{n}.1"),
        };
        netns.remove(); // what a killed earlier run may have left
        let inner = format!("kfa{n}");
        let ns = netns.name.as_str();
        for args in [
            vec!["netns", "add", ns],
            vec![
                "link",
                "add",
                &netns.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
            ],
            vec!["link", "set", &inner, "netns", ns],
            vec![
                "addr",
                "add",
                &format!("{}/30", netns.host_ip),
                "dev",
                &netns.host_link,
            ],
            vec!["link", "set", &netns.host_link, "up"],
            vec![
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.213.{n}.2/30"),
                "dev",
                &inner,
            ],
            vec!["-n", ns, "link", "set", &inner, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
        ] {
            ip(&args);
        }
        netns
    }

    /// Cuts the agent off: its end of the link stays up, but nothing crosses.
    fn cut(&self) {
        ip(&["link", "set", &self.host_link, "down"]);
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_link, "up"]);
    }

    fn remove(&self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job of one run, `first_ms` from now, whose first attempt sleeps `seconds` (or until killed)
/// and whose retries end at once. Every attempt writes `start <task id> <shell pid> <host>`
/// when it starts and `done <task id>` when it ends.
fn round_job(name: &str, first_ms: i64, seconds: u64, log: &Path) -> Value {
    let start = chrono::DateTime::from_timestamp_millis(first_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let log = log.display();
    json!({
        "name": name,
        "command": format!(
            "echo \"start $mesos_task_id $$ $HOST\" >> {log}; \
             case \"$mesos_task_id\" in ct:*:0:*) sleep {seconds};; esac; \
             echo \"done $mesos_task_id\" >> {log}"
        ),
        "schedule": format!("R1/{start}/PT1H"),
        "epsilon": "PT60S",
        "retries": 3,
        "cpus": 0.01,
        "mem": 1,
        "disk": 0,
    })
}

/// One stored task: its job, attempt, state and worker.
#[derive(Debug, Clone)]
struct Task {
    job: String,
    attempt: i64,
    state: String,
    worker: String,
}

async fn tasks(db: &Path) -> HashMap<String, Task> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String, i64, String, String)> =
        sqlx::query_as("SELECT id, job, attempt, state, worker FROM tasks")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, job, attempt, state, worker)| {
            let task = Task {
                job,
                attempt,
                state,
                worker,
            };
            (id, task)
        })
        .collect()
}

/// What the round tasks wrote: per task id, the shell's pid and host it started on, and whether
/// it wrote its end.
#[derive(Debug, Default, Clone)]
struct Written {
    pid: i32,
    host: String,
    done: bool,
}

fn written(log: &Path) -> HashMap<String, Written> {
    let mut by_id: HashMap<String, Written> = HashMap::new();
    for line in crate::lines(log) {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("start"), Some(id)) => {
                let entry = by_id.entry(id.to_owned()).or_default();
                entry.pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                entry.host = parts.next().unwrap_or_default().to_owned();
            }
            (Some("done"), Some(id)) => by_id.entry(id.to_owned()).or_default().done = true,
            _ => {}
        }
    }
    by_id
}

/// Whether the process `pid` still runs the task `task_id` (a pid can be reused).
fn runs_task(pid: i32, task_id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|b| *b == 0)
            .any(|var| var == format!("mesos_task_id={task_id}").as_bytes())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_loses_nothing_and_runs_nothing_twice() {
    let _serial = super::SERIAL.lock().await;
    let rounds = if long() { 12 } else { 4 };
    let mut rng = Rng::new();
    let mut verdict = Verdict::new("agent-partition", rng.seed());
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Agents reach the server on every address: the cut-off one through the veth pair.
    let server = Proc::server_on(
        &dir.path().join("server"),
        &[
            "--no-local-worker",
            "--worker-timeout",
            "3",
            "--heartbeat-interval",
            "0.5",
            "--failure-retry",
            "1",
            "--task-history-per-job",
            "100000",
        ],
        "0.0.0.0",
        &[("KAIROS_AGENT_TOKEN", TOKEN)],
    );
    server.wait_ready(&client).await;
    let base = server.base();
    let db = dir.path().join("server/kairos-data/kairos.db");
    let token = [("KAIROS_AGENT_TOKEN", TOKEN)];
    let wrap = ["ip", "netns", "exec", netns.name.as_str()];
    let mut cut_off = Proc::agent_at(
        &dir.path().join("p"),
        "p",
        &format!("{}:{}", netns.host_ip, server.agent),
        &["--hostname", "host-p"],
        &wrap,
        &token,
    );
    cut_off.start();
    // q joins once p holds each round's tasks.
    let mut other = Proc::agent_at(
        &dir.path().join("q"),
        "q",
        &format!("127.0.0.1:{}", server.agent),
        &["--hostname", "host-q"],
        &[],
        &token,
    );
    let attached = wait_worker(&client, &base, "p", "active").await;
    assert!(
        attached.is_some(),
        "p never attached: {}",
        super::tail(&cut_off.log)
    );

    let ticks = Ticks::create(&client, &base, dir.path(), TICK_JOBS, Duration::from_secs(2)).await;
    let log = dir.path().join("rounds.log");
    // First attempts of the rounds whose cut outlasted the worker timeout, and of the brief ones.
    let (mut long_ids, mut short_ids, mut blip_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut round_jobs = Vec::new();
    let (mut retried_in, mut killed_in) = (Vec::new(), Vec::new());
    let (mut not_retried, mut not_killed, mut disturbed) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Every third cut is a blip, shorter than the worker timeout: nothing may be lost.
        let blip = round % 3 == 2;
        // The round's tasks start on p, the only agent attached.
        let first_ms = super::next_second(Duration::from_millis(500));
        let mut ids = Vec::new();
        for (kind, count, seconds) in [("long", LONG_JOBS, 600), ("short", SHORT_JOBS, SHORT_SECONDS)] {
            for i in 0..count {
                let name = format!("r{round}-{kind}-{i}");
                create(&client, &base, &round_job(&name, first_ms, seconds, &log)).await;
                let id = format!("ct:{first_ms}:0:{name}:");
                let list = match (blip, kind) {
                    (true, _) => &mut blip_ids,
                    (false, "long") => &mut long_ids,
                    (false, _) => &mut short_ids,
                };
                list.push(id.clone());
                ids.push(id);
                round_jobs.push(name);
            }
        }
        let started = within(Duration::from_secs(20), async || {
            let written = written(&log);
            ids.iter()
                .all(|id| written.get(id).is_some_and(|w| w.host == "host-p"))
        })
        .await;
        assert!(
            started.is_some(),
            "round {round}: the tasks did not start on p; they wrote {:?}; the agent's log: {}",
            written(&log),
            super::tail(&cut_off.log),
        );
        other.start();
        assert!(
            wait_worker(&client, &base, "q", "active").await.is_some(),
            "q never attached: {}",
            super::tail(&other.log)
        );

        // The cut falls anywhere in the next two heartbeats.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 1000))).await;
        netns.cut();
        let cut = Instant::now();
        if blip {
            tokio::time::sleep(Duration::from_secs(1)).await;
            netns.heal();
            // The tasks go on where they run: the short ones finish on p, the long ones run on.
            let kept = within(Duration::from_secs(20), async || {
                let stored = tasks(&db).await;
                let on_p = |id: &String, state: &str| {
                    stored
                        .get(id)
                        .is_some_and(|t| t.state == state && t.worker == "p")
                };
                ids.iter().all(|id| {
                    on_p(
                        id,
                        if id.contains("-long-") {
                            "running"
                        } else {
                            "finished"
                        },
                    )
                }) && !stored
                    .values()
                    .any(|t| t.job.starts_with(&format!("r{round}-")) && t.attempt > 0)
            })
            .await;
            if kept.is_none() {
                disturbed.push(format!("round {round}"));
            }
            // Done with the long ones: killed through the API, as an operator would.
            for name in round_jobs
                .iter()
                .filter(|n| n.starts_with(&format!("r{round}-long-")))
            {
                let url = format!("{base}/v1/scheduler/task/kill/{name}");
                let status = client.delete(url).send().await.unwrap().status();
                assert!(status.is_success(), "kill {name}: {status}");
            }
        } else {
            // Every first attempt is lost with p and retried on q, and the short ones finish on
            // p, unseen, before the link comes back.
            let retried = within(Duration::from_secs(30), async || {
                let written = written(&log);
                let stored = tasks(&db).await;
                // A retry is due at its own time, so it has an id of its own.
                ids.iter().all(|id| {
                    let job = &stored.get(id).map(|t| t.job.clone()).unwrap_or_default();
                    stored.get(id).is_some_and(|t| t.state == "lost")
                        && stored.iter().any(|(retry, t)| {
                            &t.job == job
                                && t.attempt > 0
                                && t.state == "finished"
                                && t.worker == "q"
                                && written.get(retry).is_some_and(|w| w.host == "host-q" && w.done)
                        })
                }) && ids
                    .iter()
                    .filter(|id| id.contains("-short-"))
                    .all(|id| written.get(id).is_some_and(|w| w.done))
            })
            .await;
            match retried {
                Some(_) => retried_in.push(cut.elapsed()),
                None => not_retried.push(format!("round {round}")),
            }
            netns.heal();
        }
        let healed = Instant::now();
        // Whatever still runs on p of this round is stale now (lost, or killed by request).
        let back = wait_worker(&client, &base, "p", "active").await;
        let written_now = written(&log);
        let stale: Vec<(String, i32)> = ids
            .iter()
            .filter(|id| id.contains("-long-"))
            .map(|id| (id.clone(), written_now[id].pid))
            .collect();
        let killed = within(Duration::from_secs(20), async || {
            stale.iter().all(|(id, pid)| !runs_task(*pid, id))
        })
        .await;
        match (back, killed) {
            (Some(_), Some(_)) if !blip => killed_in.push(healed.elapsed()),
            (Some(_), Some(_)) => {}
            _ => not_killed.push(format!(
                "round {round}: back {back:?}, still running {:?}",
                stale
                    .iter()
                    .filter(|(id, pid)| runs_task(*pid, id))
                    .collect::<Vec<_>>()
            )),
        }
        // q leaves (kill -9) so that the next round's tasks start on p again; its tick tasks in
        // flight are lost and retried, which the tick check allows.
        other.kill().await;
        let gone = wait_worker(&client, &base, "q", "lost").await;
        assert!(gone.is_some(), "round {round}: q was never declared lost");
    }
    let last_ms = (chrono::Utc::now().timestamp_millis() / 1000) * 1000;
    let blips = blip_ids.len() / (LONG_JOBS + SHORT_JOBS);
    verdict.note(
        "partitions",
        format!(
            "{} cuts of p past the worker timeout, {blips} of 1 s, each healed",
            rounds - blips
        ),
    );
    let slowest = |d: &[Duration]| d.iter().max().copied().unwrap_or_default();
    verdict.check(
        "tasks lost with the agent are retried elsewhere",
        not_retried.is_empty(),
        format!(
            "{} first attempts lost and retried on q; slowest round {:?} after the cut; failed {not_retried:?}",
            long_ids.len() + short_ids.len(),
            slowest(&retried_in)
        ),
    );
    verdict.check(
        "stale copies are killed on heal",
        not_killed.is_empty(),
        format!(
            "{} still running when p came back, all killed; slowest {:?} after the heal; {not_killed:?}",
            long_ids.len(),
            slowest(&killed_in)
        ),
    );
    verdict.check(
        "a cut shorter than the worker timeout disturbs nothing",
        disturbed.is_empty(),
        format!(
            "{} tasks went on on p, none lost or retried; failed {disturbed:?}",
            blip_ids.len()
        ),
    );

    // Let the server hear every late end before the records are read.
    other.start();
    ticks.settle(&mut verdict, last_ms, Duration::from_secs(60)).await;
    let stored = tasks(&db).await;
    let written = written(&log);
    let ended_unseen: Vec<&String> = short_ids
        .iter()
        .filter(|id| written.get(*id).is_some_and(|w| w.done))
        .collect();
    let stale_kept: Vec<String> = short_ids
        .iter()
        .chain(&long_ids)
        .filter(|id| stored.get(*id).is_none_or(|t| t.state != "lost"))
        .map(|id| format!("{id} {:?}", stored.get(id).map(|t| &t.state)))
        .collect();
    verdict.check(
        "late ends of stale copies are ignored",
        stale_kept.is_empty() && ended_unseen.len() == short_ids.len(),
        format!(
            "{} finished while cut off, all still recorded lost; otherwise {stale_kept:?}",
            ended_unseen.len()
        ),
    );
    // Each round job runs once (R1): whatever its attempts, one success at most. The long ones
    // of the blips were killed, so they have none.
    let mut successes: BTreeMap<&str, usize> = round_jobs.iter().map(|j| (j.as_str(), 0)).collect();
    for task in stored.values().filter(|t| t.state == "finished") {
        if let Some(count) = successes.get_mut(task.job.as_str()) {
            *count += 1;
        }
    }
    let killed_by_request =
        |job: &str| job.contains("-long-") && blip_ids.iter().any(|id| id.contains(&format!(":{job}:")));
    let wrong: Vec<String> = successes
        .iter()
        .filter(|(job, n)| **n != usize::from(!killed_by_request(job)))
        .map(|(job, n)| format!("{job} ×{n}"))
        .collect();
    verdict.check(
        "no run recorded as succeeded twice",
        wrong.is_empty(),
        format!(
            "{} round jobs, each succeeded once (the blips' killed ones none); otherwise {wrong:?}",
            round_jobs.len()
        ),
    );
    let states: HashMap<String, String> = stored
        .iter()
        .map(|(id, t)| (id.clone(), t.state.clone()))
        .collect();
    let attempts = stored.values().filter(|t| t.attempt > 0).count();
    verdict.note("retry attempts recorded", attempts);
    ticks.check(&mut verdict, last_ms, &states);
    cut_off.kill().await;
    other.kill().await;
    verdict.finish();
}
