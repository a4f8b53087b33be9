//! Runs one task as a local process in its own process group, with bounded output capture, a time
//! limit and kill.
//!
//! The executor knows nothing about jobs or schedules: it gets a [`LaunchSpec`] and reports one
//! [`Outcome`] through the callback when the process ends.

pub mod docker;
pub mod fetch;
pub mod live;
pub mod runner;
pub mod spawn;
pub mod swarm;
pub mod user;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::job::TaskId;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start '{program}': {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the sandbox {path}: {source}")]
    Sandbox {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the command is empty")]
    EmptyCommand,
    #[error(transparent)]
    User(#[from] user::Error),
}

/// What a worker lets its tasks reach on its host: the server's settings for its built-in
/// worker, an agent's own for its tasks (its host is the one exposed).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Containers may use privileged parameters and mount the Docker socket.
    pub allow_privileged: bool,
    /// Host paths a container may mount lie under one of these (`--allowed-host-path`).
    pub allowed_host_paths: Vec<PathBuf>,
    /// URI schemes fetches may use (`--fetch-schemes`); `file` covers absolute paths.
    pub fetch_schemes: Vec<String>,
}

/// The schemes fetches may use unless a worker is told otherwise.
pub const DEFAULT_FETCH_SCHEMES: [&str; 3] = ["http", "https", "file"];

impl Default for Policy {
    /// Nothing privileged, no host path, the default fetch schemes.
    fn default() -> Policy {
        Policy {
            allow_privileged: false,
            allowed_host_paths: Vec::new(),
            fetch_schemes: DEFAULT_FETCH_SCHEMES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Everything needed to start one task's process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub task_id: TaskId,
    /// With `shell`, the script given to `/bin/sh -c`; otherwise the program to run.
    pub command: String,
    pub shell: bool,
    /// Arguments for a program started without a shell.
    pub arguments: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The working directory, created before start and removed after the end.
    pub sandbox: PathBuf,
    /// Kill the task after this long (`maxCompletionTime`).
    pub time_limit: Option<Duration>,
    /// At most this many bytes of stdout and of stderr are kept.
    pub output_limit: usize,
    /// The job's `runAsUser`; `None` runs the task as the worker's own user.
    pub user: Option<String>,
}

/// How a task's process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub task_id: TaskId,
    /// The exit status; `None` when a signal ended the process.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// A sentence describing the end, kept with the task.
    pub fn describe(&self) -> String {
        match (self.timed_out, self.exit_code, self.signal) {
            (true, _, _) => "killed after exceeding maxCompletionTime".to_owned(),
            (false, Some(code), _) => format!("exited with status {code}"),
            (false, None, Some(signal)) => format!("killed by signal {signal}"),
            (false, None, None) => "ended without a status".to_owned(),
        }
    }
}

/// A started process; its pid is the id of its process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub pid: i32,
}

/// A directory name for a task's sandbox, derived from its id.
pub fn sandbox_name(task_id: &TaskId) -> String {
    task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect()
}

/// Starts the task as its `runAsUser` and returns at once; `on_exit` runs once when the
/// process has ended.
///
/// # Errors
/// Fails when the user cannot be had (see [`user::Identity::for_process`]), the sandbox cannot
/// be made or the program cannot be started; nothing runs then.
pub fn launch(spec: LaunchSpec, on_exit: impl FnOnce(Outcome) + Send + 'static) -> Result<Running, Error> {
    let identity = user::Identity::for_process(spec.user.as_deref())?;
    launch_as(spec, &identity, None, on_exit)
}

/// [`launch`] with the task's user already resolved; the output goes to `feed` too, as it is
/// written.
///
/// # Errors
/// As [`launch`].
pub fn launch_as(
    spec: LaunchSpec,
    identity: &user::Identity,
    feed: Option<live::Feed>,
    on_exit: impl FnOnce(Outcome) + Send + 'static,
) -> Result<Running, Error> {
    if spec.command.trim().is_empty() {
        return Err(Error::EmptyCommand);
    }
    let sandbox_error = |source| Error::Sandbox {
        path: spec.sandbox.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&spec.sandbox).map_err(sandbox_error)?;
    let credentials = identity.account().map(|account| spawn::Credentials {
        uid: account.uid,
        gid: account.gid,
        groups: account.groups.clone(),
    });
    if let Some(c) = &credentials {
        // The task writes its sandbox; what was fetched into it was handed over already.
        std::os::unix::fs::lchown(&spec.sandbox, Some(c.uid), Some(c.gid)).map_err(sandbox_error)?;
    }
    let (program, args) = if spec.shell {
        ("/bin/sh".into(), vec!["-c".into(), spec.command.clone().into()])
    } else {
        (
            spec.command.clone().into(),
            spec.arguments.iter().map(Into::into).collect(),
        )
    };
    // The account's HOME, USER and LOGNAME, unless the job sets its own.
    let env = identity
        .environment()
        .into_iter()
        .filter(|(key, _)| !spec.env.iter().any(|(k, _)| k == key))
        .chain(spec.env.iter().cloned())
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let child = spawn::spawn(&spawn::Spawn {
        program,
        args,
        env,
        cwd: spec.sandbox.clone(),
        credentials,
    })
    .map_err(|source| Error::Spawn {
        program: if spec.shell {
            "/bin/sh".to_owned()
        } else {
            spec.command.clone()
        },
        source,
    })?;
    let pid = child.pid;
    let stdout = pipe::Receiver::from_owned_fd(child.stdout).ok();
    let stderr = pipe::Receiver::from_owned_fd(child.stderr).ok();
    let exit = child.exit;
    let limit = spec.output_limit;
    let feed = feed.map(|feed| live::TaskFeed {
        task_id: spec.task_id.clone(),
        feed,
    });
    tokio::spawn(async move {
        let out = tokio::spawn(capture(
            stdout,
            limit,
            feed.clone().map(|f| (f, live::Stream::Stdout)),
        ));
        let err = tokio::spawn(capture(stderr, limit, feed.map(|f| (f, live::Stream::Stderr))));
        let mut timed_out = false;
        let exit = exit.wait();
        tokio::pin!(exit);
        let status = match spec.time_limit {
            Some(limit) => match tokio::time::timeout(limit, &mut exit).await {
                Ok(status) => status,
                Err(_) => {
                    timed_out = true;
                    signal_group(pid, libc::SIGKILL);
                    exit.await
                }
            },
            None => exit.await,
        };
        // Whatever the task left behind in its group dies with it, as in a Mesos container;
        // it would otherwise hold the output pipes open.
        signal_group(pid, libc::SIGKILL);
        let stdout = out.await.unwrap_or_default();
        let stderr = err.await.unwrap_or_default();
        let (exit_code, signal) = match status {
            Ok(spawn::Exit::Code(code)) => (Some(code), None),
            Ok(spawn::Exit::Signal(signal)) => (None, Some(signal)),
            Err(_) => (None, None),
        };
        remove_sandbox(spec.sandbox.clone());
        on_exit(Outcome {
            task_id: spec.task_id,
            exit_code,
            signal,
            timed_out,
            stdout,
            stderr,
        });
    });
    Ok(Running { pid })
}

/// Removes a finished task's sandbox on a thread of its own. A directory operation can wait tens
/// of milliseconds on the file system's journal while something else syncs; on the runtime's few
/// threads that stalled every launch behind it, and the blocking pool costs a thread hand-off per
/// task. Here a send wakes the thread only when it is idle.
pub fn remove_sandbox(path: PathBuf) {
    static REMOVER: OnceLock<Option<std::sync::mpsc::Sender<PathBuf>>> = OnceLock::new();
    let remove = |path: &PathBuf| {
        // Most sandboxes are left empty: one rmdir.
        if std::fs::remove_dir(path).is_err() {
            let _ = std::fs::remove_dir_all(path);
        }
    };
    let remover = REMOVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("kairos-sandboxes".to_owned())
            .spawn(move || rx.into_iter().for_each(|path| remove(&path)))
            .ok()
            .map(|_| tx)
    });
    let sent = remover.as_ref().is_some_and(|tx| tx.send(path.clone()).is_ok());
    if !sent {
        remove(&path);
    }
}

/// Asks the task's whole process group to stop, and kills it for good after `grace`.
pub fn kill(running: Running, grace: Duration) {
    signal_group(running.pid, libc::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        signal_group(running.pid, libc::SIGKILL);
    });
}

fn signal_group(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: killpg only sends a signal; an already-gone group yields ESRCH, which is fine.
        unsafe {
            libc::killpg(pid, signal);
        }
    }
}

/// Reads a pipe to its end, keeping the first `limit` bytes and noting how much was dropped.
/// What is kept also goes to the feed as it comes.
async fn capture(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
    feed: Option<(live::TaskFeed, live::Stream)>,
) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Bounded::new(limit);
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let new = kept.push(&buf[..n]);
                if let Some((feed, stream)) = &feed {
                    feed.push(*stream, new);
                }
            }
        }
    }
    kept.finish()
}

/// The first `limit` bytes of an output and a count of the rest; processes and containers keep
/// their output alike.
struct Bounded {
    kept: Vec<u8>,
    dropped: usize,
    limit: usize,
}

impl Bounded {
    fn new(limit: usize) -> Bounded {
        Bounded {
            kept: Vec::new(),
            dropped: 0,
            limit,
        }
    }

    /// Keeps what fits of `bytes`, and returns that part.
    fn push<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let room = self.limit.saturating_sub(self.kept.len());
        let kept = &bytes[..bytes.len().min(room)];
        self.kept.extend_from_slice(kept);
        self.dropped += bytes.len() - kept.len();
        kept
    }

    fn finish(self) -> String {
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!(
                "\n[kairos: output truncated, {} more bytes dropped]\n",
                self.dropped
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, shell: bool, arguments: &[&str]) -> LaunchSpec {
        LaunchSpec {
            task_id: TaskId::new(1, 0, "t", ""),
            command: command.to_owned(),
            shell,
            arguments: arguments.iter().map(|s| s.to_string()).collect(),
            env: vec![("KAIROS_TEST".to_owned(), "yes".to_owned())],
            sandbox: std::env::temp_dir().join(format!(
                "kairos-exec-{}-{}",
                std::process::id(),
                command.len()
            )),
            time_limit: None,
            output_limit: 16,
            user: None,
        }
    }

    async fn run(spec: LaunchSpec) -> Outcome {
        let (tx, rx) = tokio::sync::oneshot::channel();
        launch(spec, move |o| {
            let _ = tx.send(o);
        })
        .expect("launch");
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("ended")
            .expect("outcome")
    }

    #[tokio::test]
    async fn shell_tasks_see_env_and_report_status() {
        let out = run(spec("echo $KAIROS_TEST; exit 3", true, &[])).await;
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stdout, "yes\n");
        assert!(!out.success());
    }

    #[tokio::test]
    async fn programs_get_arguments_without_a_shell() {
        let out = run(spec("/bin/echo", false, &["a;b", "$HOME"])).await;
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout, "a;b $HOME\n", "no shell expansion happened");
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let out = run(spec("head -c 100 /dev/zero | tr '\\0' x", true, &[])).await;
        assert!(out.stdout.starts_with(&"x".repeat(16)));
        assert!(out.stdout.contains("84 more bytes dropped"), "{}", out.stdout);
    }

    #[tokio::test]
    async fn time_limit_kills_the_group() {
        let mut s = spec("sleep 30 & sleep 30", true, &[]);
        s.time_limit = Some(Duration::from_millis(200));
        let out = run(s).await;
        assert!(out.timed_out);
        assert!(!out.success());
    }

    #[tokio::test]
    async fn kill_ends_the_process_group() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let running = launch(spec("sleep 30; echo never", true, &[]), move |o| {
            let _ = tx.send(o);
        })
        .expect("launch");
        kill(running, Duration::from_secs(5));
        let out = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("ended")
            .expect("outcome");
        assert_eq!(out.signal, Some(libc::SIGTERM));
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn missing_programs_fail_to_launch() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let err = launch(spec("/nonexistent/prog", false, &[]), |_| {}).expect_err("must fail");
            assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
        });
    }

    #[tokio::test]
    async fn tasks_run_as_their_user_with_its_home_and_a_writable_sandbox() {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            // A worker without root runs tasks as itself; `user` tests that rule.
            return;
        }
        let mut s = spec(
            "id -un; id -u; echo $HOME $USER $LOGNAME; echo x > mine && echo wrote",
            true,
            &[],
        );
        s.user = Some("nobody".to_owned());
        s.output_limit = 4096;
        let out = run(s).await;
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        let nobody = user::lookup("nobody").unwrap().unwrap();
        assert_eq!(
            out.stdout,
            format!(
                "nobody\n{}\n{} nobody nobody\nwrote\n",
                nobody.uid,
                nobody.home.display()
            )
        );
    }

    #[tokio::test]
    async fn a_user_missing_on_the_worker_fails_the_launch_by_name() {
        let mut s = spec("true", true, &[]);
        s.user = Some("kairos-no-such-user".to_owned());
        let error = launch(s, |_| {}).expect_err("must fail");
        // SAFETY: geteuid only reads the process's credentials.
        let text = if unsafe { libc::geteuid() } == 0 {
            "runAsUser 'kairos-no-such-user' does not exist on this worker"
        } else {
            "only root can start a task as another user"
        };
        assert!(error.to_string().contains(text), "{error}");
    }
}
