//! Server settings: defaults, then a TOML config file, then environment variables and flags.
//!
//! clap reads each flag's environment variable itself, so the order of precedence is
//! flag > environment > file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::placement::Resources;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is invalid: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("'{value}' is not a valid listen address (host:port): {reason}")]
    Listen { value: String, reason: String },
    #[error("{field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// `kairos server` flags. Every flag can also be set by its environment variable or in the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "KAIROS_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the SQLite store and task sandboxes [default: ./kairos-data].
    #[arg(long, env = "KAIROS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file with any of these settings (snake_case keys).
    #[arg(long, env = "KAIROS_CONFIG")]
    pub config: Option<PathBuf>,
    /// The host name this server advertises (leader id, task HOST) [default: the machine's].
    #[arg(long, env = "KAIROS_HOSTNAME")]
    pub hostname: Option<String>,
    /// Seconds before a failed task is retried [default: 60].
    #[arg(long, env = "KAIROS_FAILURE_RETRY")]
    pub failure_retry: Option<f64>,
    /// Default epsilon in seconds: how late a scheduled run may still start [default: 60].
    #[arg(long, env = "KAIROS_TASK_EPSILON")]
    pub task_epsilon: Option<f64>,
    /// Disable a job after this many final failures in a row; 0 never [default: 0].
    #[arg(long, env = "KAIROS_DISABLE_AFTER_FAILURES")]
    pub disable_after_failures: Option<u64>,
    /// Default cpus of a job [default: 0.1].
    #[arg(long, env = "KAIROS_TASK_CPUS")]
    pub task_cpus: Option<f64>,
    /// Default mem (MB) of a job [default: 128].
    #[arg(long, env = "KAIROS_TASK_MEM")]
    pub task_mem: Option<f64>,
    /// Default disk (MB) of a job [default: 256].
    #[arg(long, env = "KAIROS_TASK_DISK")]
    pub task_disk: Option<f64>,
    /// Default runAsUser of a job [default: root].
    #[arg(long, env = "KAIROS_USER")]
    pub user: Option<String>,
    /// Entries in /job/stat's taskStatHistory [default: 5].
    #[arg(long, env = "KAIROS_JOB_HISTORY_LIMIT")]
    pub job_history_limit: Option<u32>,
    /// Finished tasks (with output) kept per job [default: 100].
    #[arg(long, env = "KAIROS_TASK_HISTORY_PER_JOB")]
    pub task_history_per_job: Option<u32>,
    /// Bytes of stdout and of stderr kept per task [default: 65536].
    #[arg(long, env = "KAIROS_OUTPUT_LIMIT")]
    pub output_limit: Option<usize>,
    /// Seconds between SIGTERM and SIGKILL when a task is killed [default: 10].
    #[arg(long, env = "KAIROS_KILL_GRACE")]
    pub kill_grace: Option<f64>,
    /// Address where agents connect over gRPC [default: 0.0.0.0:8081].
    #[arg(long, env = "KAIROS_AGENT_LISTEN")]
    pub agent_listen: Option<String>,
    /// Run no built-in worker: tasks go to agents only.
    #[arg(long, env = "KAIROS_NO_LOCAL_WORKER")]
    pub no_local_worker: bool,
    /// Cpus the built-in worker offers [default: detected].
    #[arg(long, env = "KAIROS_WORKER_CPUS")]
    pub worker_cpus: Option<f64>,
    /// Memory (MB) the built-in worker offers [default: detected].
    #[arg(long, env = "KAIROS_WORKER_MEM")]
    pub worker_mem: Option<f64>,
    /// Disk (MB) the built-in worker offers [default: detected free space of the data directory].
    #[arg(long, env = "KAIROS_WORKER_DISK")]
    pub worker_disk: Option<f64>,
    /// An attribute of the built-in worker, KEY=VALUE (repeatable).
    #[arg(long = "worker-attribute", value_name = "KEY=VALUE")]
    pub worker_attributes: Vec<String>,
    /// Seconds without a heartbeat before an agent is lost [default: 15].
    #[arg(long, env = "KAIROS_WORKER_TIMEOUT")]
    pub worker_timeout: Option<f64>,
    /// Seconds between agent heartbeats [default: 2].
    #[arg(long, env = "KAIROS_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<f64>,
    /// Seconds all fetches of one task may take [default: 300].
    #[arg(long, env = "KAIROS_FETCH_TIMEOUT")]
    pub fetch_timeout: Option<f64>,
    /// Accept container parameters that escalate privilege (privileged, cap-add, device, …).
    #[arg(long, env = "KAIROS_ALLOW_PRIVILEGED_CONTAINERS")]
    pub allow_privileged_containers: bool,
    /// Keep state in PostgreSQL (`postgres://…`) instead of the embedded SQLite file; servers
    /// sharing one database elect a leader.
    #[arg(long, env = "KAIROS_STORE")]
    pub store: Option<String>,
    /// Seconds between leadership checks (election and lock liveness) [default: 1].
    #[arg(long, env = "KAIROS_ELECTION_INTERVAL")]
    pub election_interval: Option<f64>,
}

/// The same settings as read from the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    hostname: Option<String>,
    failure_retry: Option<f64>,
    task_epsilon: Option<f64>,
    disable_after_failures: Option<u64>,
    task_cpus: Option<f64>,
    task_mem: Option<f64>,
    task_disk: Option<f64>,
    user: Option<String>,
    job_history_limit: Option<u32>,
    task_history_per_job: Option<u32>,
    output_limit: Option<usize>,
    kill_grace: Option<f64>,
    agent_listen: Option<String>,
    no_local_worker: Option<bool>,
    worker_cpus: Option<f64>,
    worker_mem: Option<f64>,
    worker_disk: Option<f64>,
    // The flag is `--worker-attribute`; the plural reads better for a list, so both are keys.
    #[serde(alias = "worker_attribute")]
    worker_attributes: Option<Vec<String>>,
    worker_timeout: Option<f64>,
    heartbeat_interval: Option<f64>,
    fetch_timeout: Option<f64>,
    allow_privileged_containers: Option<bool>,
    store: Option<String>,
    election_interval: Option<f64>,
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub hostname: String,
    pub failure_retry: Duration,
    pub task_epsilon: Duration,
    pub disable_after_failures: u64,
    pub task_cpus: f64,
    pub task_mem: f64,
    pub task_disk: f64,
    pub user: String,
    pub job_history_limit: u32,
    pub task_history_per_job: u32,
    pub output_limit: usize,
    pub kill_grace: Duration,
    pub agent_listen: SocketAddr,
    /// The built-in worker's resources, or `None` with `--no-local-worker`.
    pub local_worker: Option<Resources>,
    pub worker_attributes: Vec<(String, String)>,
    pub worker_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub fetch_timeout: Duration,
    pub allow_privileged_containers: bool,
    /// A PostgreSQL URL, or `None` for the embedded SQLite store.
    pub store: Option<String>,
    pub election_interval: Duration,
}

fn address(text: String) -> Result<SocketAddr, Error> {
    text.parse().map_err(|e: std::net::AddrParseError| Error::Listen {
        reason: e.to_string(),
        value: text,
    })
}

/// Parses `KEY=VALUE` attributes.
///
/// # Errors
/// Fails on an entry without `=` or with an empty key.
pub fn attributes(items: &[String]) -> Result<Vec<(String, String)>, Error> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(Error::Invalid {
                field: "attribute",
                reason: format!("'{item}' is not KEY=VALUE"),
            }),
        })
        .collect()
}

/// Makes a working directory (the server's data directory, an agent's work directory) ready to
/// use: creates it when missing and returns it absolute.
///
/// Every path derived from it leaves the process (a Docker bind source, `MESOS_SANDBOX`, fetch
/// output), and Docker reads a relative bind source as a volume name; so the directory is
/// resolved once, at start-up, against the current directory.
///
/// # Errors
/// Fails when the directory cannot be created or resolved.
pub fn resolve_dir(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::canonicalize(dir)
}

/// The identity of a worker kept in `dir` (`worker-id`), made on first use: it labels the
/// worker's containers, so that after a restart it adopts its own and no one else's, and it tells
/// a restarted agent from another agent under the same name.
///
/// # Errors
/// Fails when the file cannot be read or written.
pub fn worker_identity(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("worker-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// What this machine offers: all cpus, all memory, the free disk under `dir`.
pub fn detect_resources(dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(1024.0, |kb| (kb / 1024.0).floor());
    let disk = free_disk_mb(dir).unwrap_or(10_240.0);
    Resources { cpus, mem, disk }
}

fn free_disk_mb(dir: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    // A relative directory that does not exist yet (the default `kairos-data` on a first start)
    // would run out of parents before reaching one that exists.
    let mut probe = std::path::absolute(dir).ok()?;
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let path = std::ffi::CString::new(probe.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own and reads the NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| (stat.f_bavail as f64 * stat.f_frsize as f64 / (1024.0 * 1024.0)).floor())
}

fn seconds(field: &'static str, value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value).map_err(|e| Error::Invalid {
        field,
        reason: e.to_string(),
    })
}

/// The machine's host name, for the leader id and the tasks' `HOST`.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl ServerConfig {
    /// Merges flags (and their environment variables) over the file over the defaults.
    ///
    /// # Errors
    /// Fails on an unreadable or invalid file and on invalid values.
    pub fn load(args: &ServerArgs) -> Result<ServerConfig, Error> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let text = |flag: &Option<String>, from_file: Option<String>, default: &str| {
            flag.clone().or(from_file).unwrap_or_else(|| default.to_owned())
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("kairos-data"));
        let local_worker = if args.no_local_worker || file.no_local_worker.unwrap_or(false) {
            None
        } else {
            let detected = detect_resources(&data_dir);
            Some(Resources {
                cpus: args.worker_cpus.or(file.worker_cpus).unwrap_or(detected.cpus),
                mem: args.worker_mem.or(file.worker_mem).unwrap_or(detected.mem),
                disk: args.worker_disk.or(file.worker_disk).unwrap_or(detected.disk),
            })
        };
        let worker_attributes = if args.worker_attributes.is_empty() {
            attributes(&file.worker_attributes.unwrap_or_default())?
        } else {
            attributes(&args.worker_attributes)?
        };
        let secs = |field, flag: Option<f64>, from_file: Option<f64>, default: f64| {
            seconds(field, flag.or(from_file).unwrap_or(default))
        };
        let config = ServerConfig {
            listen: address(text(&args.listen, file.listen, "0.0.0.0:8080"))?,
            agent_listen: address(text(&args.agent_listen, file.agent_listen, "0.0.0.0:8081"))?,
            data_dir,
            hostname: args
                .hostname
                .clone()
                .or(file.hostname)
                .unwrap_or_else(machine_hostname),
            failure_retry: secs("failure_retry", args.failure_retry, file.failure_retry, 60.0)?,
            task_epsilon: secs("task_epsilon", args.task_epsilon, file.task_epsilon, 60.0)?,
            disable_after_failures: args
                .disable_after_failures
                .or(file.disable_after_failures)
                .unwrap_or(0),
            task_cpus: args.task_cpus.or(file.task_cpus).unwrap_or(0.1),
            task_mem: args.task_mem.or(file.task_mem).unwrap_or(128.0),
            task_disk: args.task_disk.or(file.task_disk).unwrap_or(256.0),
            user: text(&args.user, file.user, "root"),
            job_history_limit: args.job_history_limit.or(file.job_history_limit).unwrap_or(5),
            task_history_per_job: args
                .task_history_per_job
                .or(file.task_history_per_job)
                .unwrap_or(100),
            output_limit: args.output_limit.or(file.output_limit).unwrap_or(64 * 1024),
            kill_grace: secs("kill_grace", args.kill_grace, file.kill_grace, 10.0)?,
            local_worker,
            worker_attributes,
            worker_timeout: secs("worker_timeout", args.worker_timeout, file.worker_timeout, 15.0)?,
            heartbeat_interval: secs(
                "heartbeat_interval",
                args.heartbeat_interval,
                file.heartbeat_interval,
                2.0,
            )?,
            fetch_timeout: secs("fetch_timeout", args.fetch_timeout, file.fetch_timeout, 300.0)?,
            allow_privileged_containers: args.allow_privileged_containers
                || file.allow_privileged_containers.unwrap_or(false),
            store: args
                .store
                .clone()
                .or(file.store)
                .filter(|s| !s.is_empty() && s != "sqlite"),
            election_interval: secs(
                "election_interval",
                args.election_interval,
                file.election_interval,
                1.0,
            )?,
        };
        if let Some(url) = &config.store
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(Error::Invalid {
                field: "store",
                reason: "use a postgres:// URL, or leave it unset for the embedded SQLite store".to_owned(),
            });
        }
        for (field, value) in [
            ("task_cpus", config.task_cpus),
            ("task_mem", config.task_mem),
            ("task_disk", config.task_disk),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::Invalid {
                    field,
                    reason: format!("{value} is not a positive number"),
                });
            }
        }
        Ok(config)
    }

    /// A configuration for tests and embedding: loopback on a free port, the given data directory.
    pub fn for_data_dir(data_dir: &Path) -> ServerConfig {
        let args = ServerArgs {
            listen: Some("127.0.0.1:0".to_owned()),
            agent_listen: Some("127.0.0.1:0".to_owned()),
            data_dir: Some(data_dir.to_owned()),
            ..ServerArgs::default()
        };
        // The defaults above are valid, so this cannot fail.
        ServerConfig::load(&args).unwrap_or_else(|e| unreachable!("default config is valid: {e}"))
    }
}

fn read_file(path: &Path) -> Result<FileConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| Error::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_chronos_like() {
        let c = ServerConfig::load(&ServerArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.data_dir, PathBuf::from("kairos-data"));
        assert_eq!(c.failure_retry, Duration::from_secs(60));
        assert_eq!((c.task_cpus, c.task_mem, c.task_disk), (0.1, 128.0, 256.0));
    }

    #[test]
    fn free_disk_is_read_for_a_relative_directory_that_does_not_exist_yet() {
        let missing = Path::new("kairos-test-missing-dir/sub");
        assert!(!missing.exists());
        assert!(free_disk_mb(missing).is_some_and(|mb| mb > 0.0));
    }

    #[test]
    fn a_worker_keeps_its_identity_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let id = worker_identity(dir.path()).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(worker_identity(dir.path()).unwrap(), id, "kept");
        assert_ne!(
            worker_identity(other.path()).unwrap(),
            id,
            "another directory, another worker"
        );
    }

    #[test]
    fn working_directories_are_created_and_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let resolved = resolve_dir(&nested).unwrap();
        assert!(
            resolved.is_absolute() && resolved.is_dir(),
            "{}",
            resolved.display()
        );
        // A relative path resolves against the current directory.
        let relative = resolve_dir(Path::new(".")).unwrap();
        assert_eq!(relative, std::env::current_dir().unwrap().canonicalize().unwrap());
        // A file in the way is an error, not a silent fallback.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(resolve_dir(&file.join("sub")).is_err());
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\nfailure_retry = 5\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(path),
            data_dir: Some("/tmp/y".into()),
            ..ServerArgs::default()
        };
        let c = ServerConfig::load(&args).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/y"));
        assert_eq!(c.failure_retry, Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = ServerConfig::load(&ServerArgs {
            config: Some(path),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = ServerConfig::load(&ServerArgs {
            listen: Some("nope".into()),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = ServerConfig::load(&ServerArgs {
            task_mem: Some(-1.0),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("task_mem"), "{err}");
    }
}
