//! Database faults under HA: PostgreSQL of its own (started by the test) is restarted, killed
//! with SIGKILL, and slowed or stalled by a TCP proxy in front of it, while two servers and an
//! agent run jobs every second and clients write through both servers. No acknowledged write may
//! be lost, no instant may run twice or be missed, a leader must lead again within a bound after
//! each fault, and every request must get an answer (2xx or 503) within a bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::failover::{cluster, task_states};
use super::{Proc, Rng, Ticks, Verdict, check_answers, job_names, leader_of, within};

/// `--store-timeout` (5 s) plus the standby's extra second, and slack for a loaded machine.
const ANSWER_BOUND: Duration = Duration::from_secs(8);
/// After a fault ends: the lease (5 s), a poll, an engine's start, and reconnecting.
const LEAD_AGAIN_BOUND: Duration = Duration::from_secs(15);

/// A TCP proxy in front of PostgreSQL that can add latency to every chunk, or stall.
#[derive(Clone, Default)]
struct Proxy {
    delay_ms: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: u16) -> (Proxy, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy::default();
        let shared = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(shared.clone().pipe(cr, sw));
                tokio::spawn(shared.clone().pipe(sr, cw));
            }
        });
        (proxy, port)
    }

    async fn pipe(self, mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = self.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            while self.stalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// A PostgreSQL cluster of this test's own, through `scripts/postgres.sh`.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path) -> Postgres {
        std::fs::create_dir_all(dir).unwrap();
        // The server runs as `postgres`, which must reach its directory.
        use std::os::unix::fs::PermissionsExt;
        let mut ancestor = Some(dir);
        while let Some(path) = ancestor {
            if path.starts_with(std::env::temp_dir()) && path != std::env::temp_dir() {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
            }
            ancestor = path.parent();
        }
        let port = super::listen_port();
        let mut postgres = Postgres {
            dir: dir.to_owned(),
            port,
        };
        postgres.up();
        postgres
    }

    /// Starts it (again); after a SIGKILL its orphaned backends may hold on for a moment.
    fn up(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh");
        let mut tries = 0;
        let output = loop {
            let output = std::process::Command::new("bash")
                .arg(&script)
                .env("KAIROS_PG_DIR", &self.dir)
                .env("KAIROS_PG_PORT", self.port.to_string())
                .output()
                .expect("postgres.sh runs");
            tries += 1;
            if output.status.success() || tries == 10 {
                break output;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8_lossy(&output.stdout);
        let port = url
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok());
        assert_eq!(
            port,
            Some(self.port),
            "PostgreSQL came back on another port: {url}"
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| e.path().join("bin/pg_ctl"))
            .expect("Debian's PostgreSQL");
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bindir)
            .arg("-D")
            .arg(&self.dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?}");
    }

    /// SIGKILL of the postmaster; its backends go with it.
    fn kill(&self) {
        let pid: i32 = std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // SAFETY: a signal to the test's own PostgreSQL.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    fn url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c"])
            .arg(format!(
                "pg_ctl -D {} stop -m immediate 2>/dev/null || true",
                self.dir.display()
            ))
            .status();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("postmaster.pid"))
            && let Some(pid) = pid.lines().next().and_then(|p| p.parse::<i32>().ok())
        {
            // SAFETY: the test's own PostgreSQL.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Whether either server names a leader that says it leads.
async fn someone_leads(client: &reqwest::Client, servers: &[&Proc]) -> bool {
    for server in servers {
        if leader_of(client, server).await == Some(server.name()) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restarts_kills_and_stalls_lose_nothing() {
    let _serial = super::SERIAL.lock().await;
    let rng = Rng::new();
    let mut verdict = Verdict::new("database-faults", rng.seed());
    let dir = tempfile::tempdir().unwrap();
    let mut postgres = Postgres::start(&dir.path().join("pg"));
    let (proxy, proxy_port) = Proxy::start(postgres.port).await;
    let store = postgres.url(proxy_port);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (a, b, _agent) = cluster(dir.path(), &store, &client).await;
    let ticks = Ticks::create(&client, &a.base(), dir.path(), 5, Duration::from_secs(2)).await;

    // Clients write through both servers; each create has a name of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(Duration, Option<u16>, String)>::new()));
    let mut load = Vec::new();
    for (worker, base) in [a.base(), b.base(), a.base(), b.base()].into_iter().enumerate() {
        let (client, stop, answers) = (client.clone(), stop.clone(), answers.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("w{worker}-{n}");
                let body = json!({"name": name, "command": "true", "schedule": "R/2099-01-01T00:00:00Z/P1D"});
                let began = Instant::now();
                let status = client
                    .post(format!("{base}/v1/scheduler/iso8601"))
                    .json(&body)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                answers.lock().await.push((began.elapsed(), status, name));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    let servers = [&a, &b];
    let mut recoveries = Vec::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for fault in ["restart", "kill -9", "latency 200 ms", "stall 10 s"] {
        match fault {
            "restart" => postgres.pg_ctl(&["restart", "-m", "fast", "-w"]),
            "kill -9" => {
                postgres.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                postgres.up();
            }
            "latency 200 ms" => {
                proxy.delay_ms.store(200, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(8)).await;
                proxy.delay_ms.store(0, Ordering::Relaxed);
            }
            _ => {
                proxy.stalled.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(10)).await;
                proxy.stalled.store(false, Ordering::Relaxed);
            }
        }
        let led = within(LEAD_AGAIN_BOUND, async || someone_leads(&client, &servers).await).await;
        recoveries.push(format!("{fault}: {led:?}"));
        verdict.check(
            &format!("a leader within {LEAD_AGAIN_BOUND:?} after {fault}"),
            led.is_some(),
            format!("{led:?}"),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let last_ms = (chrono::Utc::now().timestamp_millis() / 1000) * 1000;
    let answers = answers.lock().await.clone();
    let timed: Vec<(Duration, Option<u16>)> = answers.iter().map(|(t, s, _)| (*t, *s)).collect();
    check_answers(&mut verdict, "every create", ANSWER_BOUND, &timed, |s| {
        s == 204 || s == 503
    });
    let led = within(LEAD_AGAIN_BOUND, async || someone_leads(&client, &servers).await).await;
    assert!(led.is_some(), "no leader at the end");
    let leader = if leader_of(&client, &a).await == Some(a.name()) {
        &a
    } else {
        &b
    };
    let names = job_names(&client, &leader.base()).await;
    let lost: Vec<&String> = answers
        .iter()
        .filter(|(_, s, n)| *s == Some(204) && !names.contains(n))
        .map(|(_, _, n)| n)
        .collect();
    verdict.check(
        "acknowledged writes survive",
        lost.is_empty(),
        format!(
            "{} acknowledged; lost {lost:?}",
            answers.iter().filter(|a| a.1 == Some(204)).count()
        ),
    );
    ticks.settle(&mut verdict, last_ms, Duration::from_secs(60)).await;
    ticks.check(&mut verdict, last_ms, &task_states(&store).await);
    drop((a, b));
    verdict.finish();
}
