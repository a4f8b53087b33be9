//! Settings of `kairos server` and `kairos agent`, each declared once in a `settings!` list and
//! read from a flag, its environment variable, a TOML file or its default, in that order.
//!
//! From one declaration come the clap flag (with its environment variable), the config-file key,
//! the default, the help text and the row of the README's settings table. clap reads the
//! environment itself, so the order of precedence is flag > environment > file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::Token;
use crate::agent::worker::AgentConfig;
use crate::placement::Resources;
use crate::tls::CertFiles;

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
    #[error("{setting} is invalid: {reason}")]
    Invalid {
        setting: &'static Setting,
        reason: String,
    },
    #[error("{setting} is required")]
    Missing { setting: &'static Setting },
    #[error(
        "{setting} is {address}, which other machines can reach, but {credential} is not set: anyone \
         who reaches it would be trusted. Set {credential}, listen on a loopback address such as \
         127.0.0.1, or pass --insecure-no-auth (KAIROS_INSECURE_NO_AUTH) to run unprotected anyway"
    )]
    Unprotected {
        setting: &'static Setting,
        address: SocketAddr,
        credential: &'static Setting,
    },
}

/// One setting as help, docs and error messages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The config-file key; the flag is this in kebab-case.
    pub key: &'static str,
    pub env: Option<&'static str>,
    /// What the flag's value looks like (`KEY=VALUE`), where the key does not say enough.
    pub value_name: Option<&'static str>,
    pub default: Fallback,
    /// What the setting means, a lower-case phrase (it is also a README table cell).
    pub help: &'static str,
}

/// What a setting is when no flag, variable or file sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// This text, read as the flag's value would be.
    Value(&'static str),
    /// No value; the code decides, as the text describes ("detected", "off", …).
    Unset(&'static str),
}

impl Setting {
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }

    fn default_text(&self) -> &'static str {
        match self.default {
            Fallback::Value(text) | Fallback::Unset(text) => text,
        }
    }

    /// The `--help` line: the README's phrase as a sentence, with the default clap cannot show
    /// (a clap default would hide the file's value).
    fn clap_help(&self) -> String {
        sentence(self.help, self.default_text())
    }

    fn markdown_row(&self) -> String {
        let flag = match self.value_name {
            Some(value) => format!("{} {value}", self.flag()),
            None => self.flag(),
        };
        let env = self.env.map(|env| format!("`{env}`")).unwrap_or_default();
        let default = match self.default {
            Fallback::Value(text) => format!("`{text}`"),
            Fallback::Unset(text) => text.to_owned(),
        };
        format!("| `{flag}` | {env} | {default} | {} |\n", self.help)
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.flag())?;
        match self.env {
            Some(env) => write!(f, " ({env}, key {} in the config file)", self.key),
            None => write!(f, " (key {} in the config file)", self.key),
        }
    }
}

fn sentence(phrase: &str, default: &str) -> String {
    let mut chars = phrase.chars();
    let first = chars
        .next()
        .map(|c| c.to_uppercase().to_string())
        .unwrap_or_default();
    format!("{first}{} [default: {default}]", chars.as_str())
}

fn config_help() -> String {
    sentence(CONFIG_HELP, "none")
}

const CONFIG_HELP: &str = "a TOML file with any of the settings below, keyed in snake_case";

/// The settings of one command, for docs.
#[derive(Debug)]
pub struct Table {
    pub command: &'static str,
    /// The environment variable of `--config`.
    pub config_env: &'static str,
    pub settings: &'static [Setting],
}

impl Table {
    /// The README's table: flag, environment, default, meaning; `--config` first.
    pub fn markdown(&self) -> String {
        let mut table = String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
        let example = self.settings.iter().map(|s| format!("`{}`", s.key)).take(2);
        table.push_str(&format!(
            "| `--config` | `{}` | none | {CONFIG_HELP} ({}, …) |\n",
            self.config_env,
            example.collect::<Vec<_>>().join(", ")
        ));
        for setting in self.settings {
            table.push_str(&setting.markdown_row());
        }
        table
    }
}

/// How values of a setting's type come from the command line.
trait Value: Sized {
    const ACTION: clap::ArgAction = clap::ArgAction::Set;

    /// What the command line says, if it says anything.
    fn given(flag: Option<Self>) -> Option<Self> {
        flag
    }
}

impl Value for String {}
impl Value for PathBuf {}
impl Value for f64 {}
impl Value for u64 {}
impl Value for u32 {}
impl Value for usize {}

/// Repeatable: every occurrence adds one; given on the command line, they replace the file's.
impl Value for Vec<String> {
    const ACTION: clap::ArgAction = clap::ArgAction::Append;
}

/// A switch: present turns it on. Absent (clap's `false`) says nothing, so the file can still
/// turn it on; nothing turns it off once a source has.
impl Value for bool {
    const ACTION: clap::ArgAction = clap::ArgAction::SetTrue;

    fn given(flag: Option<Self>) -> Option<Self> {
        flag.filter(|on| *on)
    }
}

/// Declares a command's settings, one entry each:
///
/// ```text
/// /// meaning, a lower-case phrase (help and README)
/// key: Type, default "text" | unset "what happens", [env "VAR",] [value "NAME",] [alias "key"];
/// ```
///
/// and from them derives:
/// - `$args`, the clap flags: `--key-in-kebab-case`, reading `VAR`, `Option<Type>` each, plus
///   `--config FILE`;
/// - `$file`, the config file: `key` (and `alias`) each, unknown keys rejected;
/// - `$merged`, each value after precedence: `Type` with a default (parsed from the text as a
///   flag would be), `Option<Type>` when `unset`; and one [`Setting`] per entry as an associated
///   constant of the same name (`Merged::key`), for error messages;
/// - `$table`, the [`Table`] the README is checked against.
macro_rules! settings {
    (
        $(#[doc = $doc:literal])*
        $table:ident: $command:literal,
        flags $args:ident, file $file:ident, merged $merged:ident, config env $config_env:literal;
        $(
            $(#[doc = $help:literal])+
            $key:ident: $ty:ty, $fallback:ident $fallback_text:literal
                $(, env $env:literal)? $(, value $value_name:literal)? $(, alias $alias:literal)?;
        )+
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $args {
            #[arg(long, env = $config_env, help = config_help())]
            pub config: Option<PathBuf>,
            $(
                #[arg(
                    long,
                    $(env = $env,)?
                    $(value_name = $value_name,)?
                    action = <$ty as Value>::ACTION,
                    help = $merged::$key.clap_help(),
                )]
                pub $key: Option<$ty>,
            )+
        }

        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $file {
            $(
                $(#[serde(alias = $alias)])?
                $key: Option<$ty>,
            )+
        }

        #[derive(Debug)]
        struct $merged {
            $($key: settings!(@type $fallback $ty),)+
        }

        #[allow(non_upper_case_globals)]
        impl $merged {
            $(
                const $key: Setting = Setting {
                    key: stringify!($key),
                    env: settings!(@option $($env)?),
                    value_name: settings!(@option $($value_name)?),
                    default: settings!(@fallback $fallback $fallback_text),
                    help: concat!($($help),+).trim_ascii(),
                };
            )+

            /// Applies the order of precedence: the command line (flag, then environment),
            /// then the file, then the default.
            fn merge(args: &$args, file: $file) -> Result<Self, Error> {
                Ok($merged {
                    $(
                        $key: settings!(
                            @value $fallback,
                            Value::given(args.$key.clone()).or(file.$key),
                            &$merged::$key
                        ),
                    )+
                })
            }
        }

        pub const $table: Table = Table {
            command: $command,
            config_env: $config_env,
            settings: &[$($merged::$key),+],
        };
    };
    (@type default $ty:ty) => { $ty };
    (@type unset $ty:ty) => { Option<$ty> };
    (@fallback default $text:literal) => { Fallback::Value($text) };
    (@fallback unset $text:literal) => { Fallback::Unset($text) };
    (@value default, $given:expr, $setting:expr) => {
        match $given {
            Some(value) => value,
            None => parse_default($setting)?,
        }
    };
    (@value unset, $given:expr, $setting:expr) => { $given };
    (@option) => { None };
    (@option $text:literal) => { Some($text) };
}

/// A default, read from its text as the flag's value would be.
fn parse_default<T: std::str::FromStr>(setting: &'static Setting) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    let text = setting.default_text();
    text.parse().map_err(|e: T::Err| Error::Invalid {
        setting,
        reason: format!("the default '{text}' does not parse: {e}"),
    })
}

settings! {
    /// `kairos server` settings; each flag also reads its environment variable.
    SERVER_SETTINGS: "server",
    flags ServerArgs, file ServerFile, merged ServerSettings, config env "KAIROS_CONFIG";

    /// address of the HTTP API; an address other than loopback needs `--http-credentials` (or `--insecure-no-auth`)
    listen: String, unset "127.0.0.1:8080", env "KAIROS_LISTEN";
    /// `USER:PASSWORD` of the admin (HTTP Basic, as Chronos' `--http_credentials`); turns authentication on for every route but `/ping`, `/leader` and `/openapi.json`
    http_credentials: String, unset "none", env "KAIROS_HTTP_CREDENTIALS";
    /// serve without authentication on any address (a warning is logged at start)
    insecure_no_auth: bool, unset "off", env "KAIROS_INSECURE_NO_AUTH";
    /// a web origin allowed to call the API from a browser (repeatable; none by default)
    cors_origin: Vec<String>, unset "none", value "ORIGIN";
    /// largest request body accepted, in bytes (larger ones get `413`)
    max_body_bytes: usize, default "1048576", env "KAIROS_MAX_BODY_BYTES";
    /// days the audit log keeps its entries
    audit_retention_days: u32, default "90", env "KAIROS_AUDIT_RETENTION_DAYS";
    /// SQLite store and task sandboxes
    data_dir: PathBuf, default "kairos-data", env "KAIROS_DATA_DIR";
    /// advertised in `/leader` and as the tasks' `HOST`
    hostname: String, unset "the machine's", env "KAIROS_HOSTNAME";
    /// seconds before a failed task is retried
    failure_retry: f64, default "60", env "KAIROS_FAILURE_RETRY";
    /// default `epsilon` in seconds: how late a missed run may still start
    task_epsilon: f64, default "60", env "KAIROS_TASK_EPSILON";
    /// disable a job after this many final failures in a row (0: never)
    disable_after_failures: u64, default "0", env "KAIROS_DISABLE_AFTER_FAILURES";
    /// default cpus of a job
    task_cpus: f64, default "0.1", env "KAIROS_TASK_CPUS";
    /// default mem (MB) of a job
    task_mem: f64, default "128", env "KAIROS_TASK_MEM";
    /// default disk (MB) of a job
    task_disk: f64, default "256", env "KAIROS_TASK_DISK";
    /// default `runAsUser` of a job
    user: String, default "root", env "KAIROS_USER";
    /// entries of `taskStatHistory` in `/job/stat`
    job_history_limit: u32, default "5", env "KAIROS_JOB_HISTORY_LIMIT";
    /// finished tasks (with output) kept per job; older ones are pruned hourly
    task_history_per_job: u32, default "100", env "KAIROS_TASK_HISTORY_PER_JOB";
    /// bytes of stdout and of stderr kept per task
    output_limit: usize, default "65536", env "KAIROS_OUTPUT_LIMIT";
    /// seconds between SIGTERM and SIGKILL when a task is killed
    kill_grace: f64, default "10", env "KAIROS_KILL_GRACE";
    /// where agents connect (gRPC); an address other machines can reach needs `--agent-token` (or `--insecure-no-auth`)
    agent_listen: String, unset "`0.0.0.0:8081` with `--agent-token`, else `127.0.0.1:8081`", env "KAIROS_AGENT_LISTEN";
    /// the secret agents must present to attach (give the agents the same); prefer the variable or the file to the flag, which `ps` shows
    agent_token: String, unset "none: agents are not authenticated", env "KAIROS_AGENT_TOKEN";
    /// PEM certificate chain: serve HTTPS, and the agents' gRPC over TLS (with `--tls-key`)
    tls_cert: PathBuf, unset "plain HTTP and gRPC", env "KAIROS_TLS_CERT";
    /// PEM private key of `--tls-cert`
    tls_key: PathBuf, unset "none", env "KAIROS_TLS_KEY";
    /// PEM certificates a standby trusts when it forwards requests to the leader over HTTPS
    ca_cert: PathBuf, unset "those in `--tls-cert`, and the public roots", env "KAIROS_CA_CERT";
    /// run no built-in worker; tasks go to agents only
    no_local_worker: bool, unset "off", env "KAIROS_NO_LOCAL_WORKER";
    /// run container tasks on Docker Swarm too: the engine `DOCKER_HOST` names (or the local one) must be a Swarm manager, and its ready nodes become workers
    swarm: bool, unset "off", env "KAIROS_SWARM";
    /// the `kairos.owner` label of this cluster's Swarm services; servers of one cluster share it, two clusters on one Swarm must not
    swarm_namespace: String, default "kairos", env "KAIROS_SWARM_NAMESPACE";
    /// disk (MB) each Swarm node offers (Swarm reports none); a node label `kairos.disk_mb` overrides it
    swarm_node_disk: f64, default "10240", env "KAIROS_SWARM_NODE_DISK";
    /// seconds between reads of the Swarm tasks (one request for all of them)
    swarm_poll: f64, default "0.5", env "KAIROS_SWARM_POLL";
    /// cpus the built-in worker offers
    worker_cpus: f64, unset "detected", env "KAIROS_WORKER_CPUS";
    /// memory (MB) the built-in worker offers
    worker_mem: f64, unset "detected", env "KAIROS_WORKER_MEM";
    /// disk (MB) the built-in worker offers
    worker_disk: f64, unset "free space of the data directory", env "KAIROS_WORKER_DISK";
    // The key `worker_attributes` reads better for a list in the file, so both are keys.
    /// an attribute of the built-in worker (repeatable)
    worker_attribute: Vec<String>, unset "none", value "KEY=VALUE", alias "worker_attributes";
    /// seconds without a heartbeat before an agent is lost and its tasks retried elsewhere
    worker_timeout: f64, default "15", env "KAIROS_WORKER_TIMEOUT";
    /// seconds between agent heartbeats
    heartbeat_interval: f64, default "2", env "KAIROS_HEARTBEAT_INTERVAL";
    /// seconds the fetches of one task may take
    fetch_timeout: f64, default "300", env "KAIROS_FETCH_TIMEOUT";
    /// accept container parameters that escalate privilege (privileged, cap-add, device, …), the Docker socket and any host path
    allow_privileged_containers: bool, unset "off", env "KAIROS_ALLOW_PRIVILEGED_CONTAINERS";
    /// a host directory under which containers may mount host paths (repeatable)
    allowed_host_path: Vec<String>, unset "none", value "PATH", alias "allowed_host_paths";
    /// the URI schemes fetches may use, comma-separated (`file` covers absolute paths)
    fetch_schemes: String, default "http,https,file", env "KAIROS_FETCH_SCHEMES";
    /// a `postgres://` URL: keep all state in PostgreSQL and elect a leader among the servers sharing it
    store: String, unset "embedded SQLite", env "KAIROS_STORE";
    /// seconds between leadership checks (election and lease renewal)
    election_interval: f64, default "1", env "KAIROS_ELECTION_INTERVAL";
    /// seconds a leader's lease lasts without renewal: a standby takes over a leader that cannot renew it (frozen, cut off) this long after its last renewal
    leader_lease: f64, default "5", env "KAIROS_LEADER_LEASE";
    /// seconds a request waits for the store (and a standby for the leader) before it is answered `503`; changes pending meanwhile are kept and retried
    store_timeout: f64, default "5", env "KAIROS_STORE_TIMEOUT";
    /// also export per-job series in `/metrics?format=prometheus` (their number grows with the number of jobs)
    metrics_per_job: bool, unset "off", env "KAIROS_METRICS_PER_JOB";
    /// `text` for people, or `json`: one JSON object per line, for log shippers
    log_format: String, default "text", env "KAIROS_LOG_FORMAT";
    /// `host:port` of the SMTP server that mails notifications to job owners (Chronos' `--mail_server`)
    mail_server: String, unset "none: no email", env "KAIROS_MAIL_SERVER", value "HOST:PORT";
    /// the sender of notification email
    mail_from: String, unset "`kairos@` and `--hostname`", env "KAIROS_MAIL_FROM";
    /// the user kairos logs in to the SMTP server as
    mail_user: String, unset "none: no login", env "KAIROS_MAIL_USER";
    /// the password of `--mail-user`; prefer the variable or the file to the flag, which `ps` shows
    mail_password: String, unset "none", env "KAIROS_MAIL_PASSWORD";
    /// TLS from the first byte (SMTPS, as Chronos' `--mail_ssl`); without it, STARTTLS when the server offers it
    mail_ssl: bool, unset "off", env "KAIROS_MAIL_SSL";
    /// a URL that every notice the owners get is also posted to, as JSON
    notify_webhook: String, unset "none", env "KAIROS_NOTIFY_WEBHOOK", value "URL";
    /// signs webhook bodies: `X-Kairos-Signature: sha256=<hex HMAC-SHA256 of the body>`; prefer the variable or the file to the flag, which `ps` shows
    webhook_secret: String, unset "none: unsigned", env "KAIROS_WEBHOOK_SECRET";
    /// the web UI's address as people reach it, for the links in notifications
    public_url: String, unset "`http(s)://`, `--hostname` and the port of `--listen`", env "KAIROS_PUBLIC_URL", value "URL";
    /// seconds one notification delivery attempt may take
    notify_timeout: f64, default "10", env "KAIROS_NOTIFY_TIMEOUT";
    /// seconds before a failed notification is retried; the wait doubles each time, up to 10 minutes, for an hour
    notify_retry_delay: f64, default "5", env "KAIROS_NOTIFY_RETRY_DELAY";
}

settings! {
    /// `kairos agent` settings; each flag with a variable also reads it.
    AGENT_SETTINGS: "agent",
    flags AgentArgs, file AgentFile, merged AgentSettings, config env "KAIROS_AGENT_CONFIG";

    /// the schedulers' agent addresses (their `--agent-listen`), `host:port[,host:port…]`; the agent attaches to whichever leads
    server: String, unset "none (required)", env "KAIROS_SERVER";
    /// this worker's name
    name: String, unset "the host name", env "KAIROS_AGENT_NAME";
    /// the host name reported to the scheduler
    hostname: String, unset "the machine's", env "KAIROS_AGENT_HOSTNAME";
    /// an attribute for constraints (repeatable)
    attribute: Vec<String>, unset "none", value "KEY=VALUE", alias "attributes";
    /// cpus offered
    cpus: f64, unset "detected";
    /// memory (MB) offered
    mem: f64, unset "detected";
    /// disk (MB) offered
    disk: f64, unset "free space of the work directory";
    /// sandboxes and the fetch cache (made absolute and created at start)
    work_dir: PathBuf, default "kairos-agent", env "KAIROS_AGENT_DIR";
    /// seconds all fetches of one task may take
    fetch_timeout: f64, default "300";
    /// run containers with privileged parameters, the Docker socket or any host path (the scheduler's check is repeated here)
    allow_privileged_containers: bool, unset "off";
    /// a host directory under which containers may mount host paths (repeatable)
    allowed_host_path: Vec<String>, unset "none", value "PATH", alias "allowed_host_paths";
    /// the URI schemes fetches may use, comma-separated (`file` covers absolute paths)
    fetch_schemes: String, default "http,https,file";
    /// the scheduler's `--agent-token`; prefer the variable or the file to the flag, which `ps` shows
    agent_token: String, unset "none", env "KAIROS_AGENT_TOKEN";
    /// PEM certificates the scheduler's must chain to: connect over TLS, trusting only these
    ca_cert: PathBuf, unset "TLS with the public roots for `https://` addresses, else plain", env "KAIROS_CA_CERT";
    /// `text` for people, or `json`: one JSON object per line, for log shippers
    log_format: String, default "text", env "KAIROS_LOG_FORMAT";
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The admin's credentials; `None` serves without authentication (loopback only, unless
    /// `insecure_no_auth`).
    pub http_credentials: Option<crate::auth::Credentials>,
    pub insecure_no_auth: bool,
    /// Web origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub audit_retention: Duration,
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
    /// The secret agents must present; `None` admits any agent (see `load` for when that is allowed).
    pub agent_token: Option<Token>,
    /// HTTPS and gRPC over TLS with this certificate and key; plain without.
    pub tls: Option<CertFiles>,
    /// What a standby trusts when forwarding to the leader; `None`: the certificates of `tls`.
    pub ca_cert: Option<PathBuf>,
    /// The built-in worker's resources, or `None` with `--no-local-worker`.
    pub local_worker: Option<Resources>,
    /// Run container tasks on Docker Swarm as well, or not (`None`).
    pub swarm: Option<SwarmConfig>,
    pub worker_attributes: Vec<(String, String)>,
    pub worker_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub fetch_timeout: Duration,
    pub allow_privileged_containers: bool,
    /// Host paths containers may mount lie under one of these (absolute, `.` and `..` resolved).
    pub allowed_host_paths: Vec<PathBuf>,
    /// The URI schemes fetches may use, lower-case.
    pub fetch_schemes: Vec<String>,
    /// A PostgreSQL URL, or `None` for the embedded SQLite store.
    pub store: Option<String>,
    pub election_interval: Duration,
    /// A leader's lease; at least three election intervals.
    pub leader_lease: Duration,
    /// How long a request waits for the store, or a standby for the leader, before a `503`.
    pub store_timeout: Duration,
    /// Export per-job series in the Prometheus format.
    pub metrics_per_job: bool,
    pub log_format: LogFormat,
    /// Notifications; its `public_url` is empty when `public_url` below is unset.
    pub notify: crate::notify::Settings,
    /// The UI's address for links; `None`: made from the address the server listens on.
    pub public_url: Option<String>,
}

/// The Swarm backend's settings (`--swarm`).
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmConfig {
    pub namespace: String,
    /// MB of disk a node offers.
    pub node_disk: f64,
    pub poll: Duration,
}

/// How the log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`), for log shippers.
    Json,
}

fn log_format(setting: &'static Setting, text: &str) -> Result<LogFormat, Error> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(Error::Invalid {
            setting,
            reason: format!("'{other}' is not a log format (text, json)"),
        }),
    }
}

fn swarm_config(s: &ServerSettings) -> Result<Option<SwarmConfig>, Error> {
    type S = ServerSettings;
    if !s.swarm.unwrap_or(false) {
        return Ok(None);
    }
    let namespace = s.swarm_namespace.trim();
    if namespace.is_empty() || namespace.len() > 64 || namespace.contains(['=', ',']) {
        return Err(Error::Invalid {
            setting: &S::swarm_namespace,
            reason: "give 1 to 64 characters without '=' or ','".to_owned(),
        });
    }
    let poll = seconds(&S::swarm_poll, positive(&S::swarm_poll, s.swarm_poll)?)?;
    Ok(Some(SwarmConfig {
        namespace: namespace.to_owned(),
        node_disk: positive(&S::swarm_node_disk, s.swarm_node_disk)?,
        poll,
    }))
}

fn address(setting: &'static Setting, text: String) -> Result<SocketAddr, Error> {
    text.parse()
        .map_err(|e: std::net::AddrParseError| Error::Invalid {
            setting,
            reason: format!("'{text}' is not a host:port address: {e}"),
        })
}

/// The agent token, if set; its text never appears in an error.
fn token(setting: &'static Setting, text: Option<String>) -> Result<Option<Token>, Error> {
    text.map(|text| {
        Token::new(text).map_err(|why| Error::Invalid {
            setting,
            reason: why.to_owned(),
        })
    })
    .transpose()
}

/// Where agents connect. Without a token only this machine may attach: the default is loopback,
/// and another address is refused unless `--insecure-no-auth` accepts the risk.
fn agent_listen(
    text: Option<String>,
    token: Option<&Token>,
    insecure_no_auth: bool,
) -> Result<SocketAddr, Error> {
    type S = ServerSettings;
    let default = if token.is_some() {
        "0.0.0.0:8081"
    } else {
        "127.0.0.1:8081"
    };
    let address = address(&S::agent_listen, text.unwrap_or_else(|| default.to_owned()))?;
    if token.is_none() && !address.ip().is_loopback() && !insecure_no_auth {
        return Err(Error::Unprotected {
            setting: &S::agent_listen,
            address,
            credential: &S::agent_token,
        });
    }
    Ok(address)
}

/// The SMTP settings: `host:port` (port 25, or 465 with SSL, when left out) and a sender address.
/// The password is never part of an error.
fn mail(
    server: &str,
    from: String,
    user: Option<String>,
    password: Option<String>,
    ssl: bool,
) -> Result<crate::notify::Mail, Error> {
    type S = ServerSettings;
    let invalid = |setting, reason: String| Error::Invalid { setting, reason };
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| invalid(&S::mail_server, format!("'{server}' is not host:port")))?;
            (host, port)
        }
        None if ssl => (server, 465),
        None => (server, 25),
    };
    if host.is_empty() {
        return Err(invalid(&S::mail_server, format!("'{server}' has no host")));
    }
    crate::notify::email::check_address(&from).map_err(|reason| invalid(&S::mail_from, reason))?;
    if password.is_some() && user.is_none() {
        return Err(invalid(
            &S::mail_password,
            "it needs --mail-user as well".to_owned(),
        ));
    }
    Ok(crate::notify::Mail {
        host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        port,
        from,
        user,
        password: password.map(crate::notify::Secret::new),
        ssl,
    })
}

/// The certificate and key, both or neither; and `--ca-cert` only beside them.
fn cert_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<&PathBuf>,
) -> Result<Option<CertFiles>, Error> {
    type S = ServerSettings;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(CertFiles { cert, key })),
        (Some(_), None) => Err(Error::Invalid {
            setting: &S::tls_cert,
            reason: "it needs --tls-key (KAIROS_TLS_KEY) as well".to_owned(),
        }),
        (None, Some(_)) => Err(Error::Invalid {
            setting: &S::tls_key,
            reason: "it needs --tls-cert (KAIROS_TLS_CERT) as well".to_owned(),
        }),
        (None, None) if ca.is_some() => Err(Error::Invalid {
            setting: &S::ca_cert,
            reason: "it is only used with --tls-cert and --tls-key".to_owned(),
        }),
        (None, None) => Ok(None),
    }
}

fn seconds(setting: &'static Setting, value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value).map_err(|e| Error::Invalid {
        setting,
        reason: format!("{value} seconds: {e}"),
    })
}

/// A lease must outlast a few renewals, or a leader would lose it between two of them.
fn lease(lease: Duration, interval: Duration) -> Result<Duration, Error> {
    if lease >= interval * 3 {
        Ok(lease)
    } else {
        Err(Error::Invalid {
            setting: &ServerSettings::leader_lease,
            reason: format!(
                "{} seconds: it must be at least three election intervals ({} seconds)",
                lease.as_secs_f64(),
                (interval * 3).as_secs_f64()
            ),
        })
    }
}

fn positive(setting: &'static Setting, value: f64) -> Result<f64, Error> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::Invalid {
            setting,
            reason: format!("{value} is not a positive number"),
        })
    }
}

/// Parses `KEY=VALUE` attributes.
fn attributes(setting: &'static Setting, items: &[String]) -> Result<Vec<(String, String)>, Error> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(Error::Invalid {
                setting,
                reason: format!("'{item}' is not KEY=VALUE"),
            }),
        })
        .collect()
}

/// Absolute directories, with `.` and `..` resolved so that a prefix means what it says.
fn host_paths(setting: &'static Setting, items: &[String]) -> Result<Vec<PathBuf>, Error> {
    items
        .iter()
        .map(|item| {
            let path = Path::new(item.trim());
            if !path.is_absolute() {
                return Err(Error::Invalid {
                    setting,
                    reason: format!("'{item}' is not an absolute path"),
                });
            }
            let mut clean = PathBuf::from("/");
            for component in path.components() {
                match component {
                    std::path::Component::Normal(part) => clean.push(part),
                    std::path::Component::ParentDir => {
                        clean.pop();
                    }
                    _ => {}
                }
            }
            Ok(clean)
        })
        .collect()
}

/// A comma-separated list of the schemes kairos can fetch.
fn fetch_schemes(setting: &'static Setting, text: &str) -> Result<Vec<String>, Error> {
    let known = crate::executor::DEFAULT_FETCH_SCHEMES;
    let mut schemes = Vec::new();
    for scheme in text
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
    {
        if !known.contains(&scheme.as_str()) {
            return Err(Error::Invalid {
                setting,
                reason: format!("'{scheme}' is not a scheme kairos fetches ({})", known.join(", ")),
            });
        }
        if !schemes.contains(&scheme) {
            schemes.push(scheme);
        }
    }
    Ok(schemes)
}

fn read_file<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, Error> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| Error::Parse {
        path: path.display().to_string(),
        source,
    })
}

impl ServerConfig {
    /// Merges flags (and their environment variables) over the file over the defaults.
    ///
    /// # Errors
    /// Fails on an unreadable or invalid file and on invalid values.
    pub fn load(args: &ServerArgs) -> Result<ServerConfig, Error> {
        type S = ServerSettings;
        let s = S::merge(args, read_file(args.config.as_deref())?)?;
        let swarm = swarm_config(&s)?;
        let local_worker = if s.no_local_worker.unwrap_or(false) {
            None
        } else {
            let detected = detect_resources(&s.data_dir);
            Some(Resources {
                cpus: s.worker_cpus.unwrap_or(detected.cpus),
                mem: s.worker_mem.unwrap_or(detected.mem),
                disk: s.worker_disk.unwrap_or(detected.disk),
            })
        };
        let store = s.store.filter(|url| !url.is_empty() && url != "sqlite");
        if let Some(url) = &store
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(Error::Invalid {
                setting: &S::store,
                reason: "use a postgres:// URL, or leave it unset for the embedded SQLite store".to_owned(),
            });
        }
        let listen = address(
            &S::listen,
            s.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
        )?;
        let http_credentials = s
            .http_credentials
            .map(|text| {
                crate::auth::Credentials::parse(&text).map_err(|e| Error::Invalid {
                    setting: &S::http_credentials,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let insecure_no_auth = s.insecure_no_auth.unwrap_or(false);
        // Protected mode, as Redis has: without credentials, only this machine may connect.
        if http_credentials.is_none() && !insecure_no_auth && !listen.ip().is_loopback() {
            return Err(Error::Unprotected {
                setting: &S::listen,
                address: listen,
                credential: &S::http_credentials,
            });
        }
        let agent_token = token(&S::agent_token, s.agent_token)?;
        let tls = cert_files(s.tls_cert, s.tls_key, s.ca_cert.as_ref())?;
        let hostname = s.hostname.unwrap_or_else(machine_hostname);
        let public_url = s
            .public_url
            .map(|url| {
                crate::notify::check_url(&url)
                    .map(|()| url.trim_end_matches('/').to_owned())
                    .map_err(|reason| Error::Invalid {
                        setting: &S::public_url,
                        reason,
                    })
            })
            .transpose()?;
        Ok(ServerConfig {
            listen,
            http_credentials,
            insecure_no_auth,
            cors_origins: s.cors_origin.unwrap_or_default(),
            max_body_bytes: s.max_body_bytes,
            audit_retention: Duration::from_secs(u64::from(s.audit_retention_days) * 86_400),
            data_dir: s.data_dir,
            hostname: hostname.clone(),
            failure_retry: seconds(&S::failure_retry, s.failure_retry)?,
            task_epsilon: seconds(&S::task_epsilon, s.task_epsilon)?,
            disable_after_failures: s.disable_after_failures,
            task_cpus: positive(&S::task_cpus, s.task_cpus)?,
            task_mem: positive(&S::task_mem, s.task_mem)?,
            task_disk: positive(&S::task_disk, s.task_disk)?,
            user: s.user,
            job_history_limit: s.job_history_limit,
            task_history_per_job: s.task_history_per_job,
            output_limit: s.output_limit,
            kill_grace: seconds(&S::kill_grace, s.kill_grace)?,
            agent_listen: agent_listen(s.agent_listen, agent_token.as_ref(), insecure_no_auth)?,
            agent_token,
            tls,
            ca_cert: s.ca_cert,
            local_worker,
            swarm,
            worker_attributes: attributes(&S::worker_attribute, &s.worker_attribute.unwrap_or_default())?,
            worker_timeout: seconds(&S::worker_timeout, s.worker_timeout)?,
            heartbeat_interval: seconds(&S::heartbeat_interval, s.heartbeat_interval)?,
            fetch_timeout: seconds(&S::fetch_timeout, s.fetch_timeout)?,
            allow_privileged_containers: s.allow_privileged_containers.unwrap_or(false),
            allowed_host_paths: host_paths(&S::allowed_host_path, &s.allowed_host_path.unwrap_or_default())?,
            fetch_schemes: fetch_schemes(&S::fetch_schemes, &s.fetch_schemes)?,
            store,
            election_interval: seconds(&S::election_interval, s.election_interval)?,
            leader_lease: lease(
                seconds(&S::leader_lease, s.leader_lease)?,
                seconds(&S::election_interval, s.election_interval)?,
            )?,
            store_timeout: seconds(&S::store_timeout, positive(&S::store_timeout, s.store_timeout)?)?,
            metrics_per_job: s.metrics_per_job.unwrap_or(false),
            log_format: log_format(&S::log_format, &s.log_format)?,
            notify: crate::notify::Settings {
                mail: s
                    .mail_server
                    .map(|server| {
                        mail(
                            &server,
                            s.mail_from.unwrap_or_else(|| format!("kairos@{hostname}")),
                            s.mail_user,
                            s.mail_password,
                            s.mail_ssl.unwrap_or(false),
                        )
                    })
                    .transpose()?,
                webhook: s
                    .notify_webhook
                    .map(|url| {
                        crate::notify::check_url(&url)
                            .map(|()| url)
                            .map_err(|reason| Error::Invalid {
                                setting: &S::notify_webhook,
                                reason,
                            })
                    })
                    .transpose()?,
                secret: s.webhook_secret.map(crate::notify::Secret::new),
                public_url: public_url.clone().unwrap_or_default(),
                timeout: seconds(
                    &S::notify_timeout,
                    positive(&S::notify_timeout, s.notify_timeout)?,
                )?,
                first_retry: seconds(
                    &S::notify_retry_delay,
                    positive(&S::notify_retry_delay, s.notify_retry_delay)?,
                )?,
                window: crate::notify::RETRY_WINDOW,
            },
            public_url,
        })
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

// `AgentConfig` belongs to the agent; reading it from settings belongs here, beside the server's.
impl AgentConfig {
    /// Merges flags (and their environment variables) over the file over the defaults.
    ///
    /// # Errors
    /// Fails on an unreadable or invalid file, on invalid values and without a server address.
    pub fn load(args: &AgentArgs) -> Result<AgentConfig, Error> {
        type S = AgentSettings;
        let s = S::merge(args, read_file(args.config.as_deref())?)?;
        let server = s.server.ok_or(Error::Missing { setting: &S::server })?;
        let hostname = s.hostname.unwrap_or_else(machine_hostname);
        let detected = detect_resources(&s.work_dir);
        Ok(AgentConfig {
            server,
            name: s.name.unwrap_or_else(|| hostname.clone()),
            hostname,
            attributes: attributes(&S::attribute, &s.attribute.unwrap_or_default())?,
            resources: Resources {
                cpus: s.cpus.unwrap_or(detected.cpus),
                mem: s.mem.unwrap_or(detected.mem),
                disk: s.disk.unwrap_or(detected.disk),
            },
            work_dir: s.work_dir,
            fetch_timeout: seconds(&S::fetch_timeout, s.fetch_timeout)?,
            policy: crate::executor::Policy {
                allow_privileged: s.allow_privileged_containers.unwrap_or(false),
                allowed_host_paths: host_paths(
                    &S::allowed_host_path,
                    &s.allowed_host_path.unwrap_or_default(),
                )?,
                fetch_schemes: fetch_schemes(&S::fetch_schemes, &s.fetch_schemes)?,
            },
            token: token(&S::agent_token, s.agent_token)?,
            ca_cert: s.ca_cert,
            log_format: log_format(&S::log_format, &s.log_format)?,
        })
    }
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

/// The machine's host name, for the leader id and the tasks' `HOST`.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_address_needs_credentials_or_an_explicit_opt_out() {
        let open = |extra: fn(&mut ServerArgs)| {
            let mut args = ServerArgs {
                listen: Some("0.0.0.0:8080".to_owned()),
                ..ServerArgs::default()
            };
            extra(&mut args);
            ServerConfig::load(&args)
        };
        let err = open(|_| {}).unwrap_err();
        assert!(matches!(err, Error::Unprotected { .. }), "{err}");
        assert!(err.to_string().contains("--http-credentials"), "{err}");
        let with_credentials = open(|a| a.http_credentials = Some("admin:secret".to_owned())).unwrap();
        assert_eq!(with_credentials.http_credentials.unwrap().user, "admin");
        assert!(
            open(|a| a.insecure_no_auth = Some(true))
                .unwrap()
                .insecure_no_auth
        );
        let err = open(|a| a.http_credentials = Some("no-colon".to_owned())).unwrap_err();
        assert!(err.to_string().contains("http-credentials"), "{err}");
    }

    #[test]
    fn defaults_are_chronos_like() {
        let c = ServerConfig::load(&ServerArgs::default()).unwrap();
        // Protected mode: without credentials only this machine may connect.
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.http_credentials, None);
        assert_eq!(c.max_body_bytes, 1 << 20);
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

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("kairos.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Parses a command line as clap does for `kairos server` / `kairos agent`.
    fn parse<A: clap::Args + clap::FromArgMatches>(line: &[&str]) -> A {
        let command = A::augment_args(clap::Command::new("kairos"));
        A::from_arg_matches(&command.try_get_matches_from(line).unwrap()).unwrap()
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "kill_grace = 3\nuser = \"file-user\"\nworker_attribute = [\"rack=file\"]\nno_local_worker = true\n",
        );
        let config = path.to_str().unwrap();
        let c = ServerConfig::load(&parse(&["kairos", "--config", config])).unwrap();
        assert_eq!(c.kill_grace, Duration::from_secs(3), "file");
        assert_eq!(c.user, "file-user", "file");
        assert_eq!(
            c.worker_attributes,
            [("rack".to_owned(), "file".to_owned())],
            "file"
        );
        assert!(c.local_worker.is_none(), "the file turns the switch on");
        assert_eq!(c.job_history_limit, 5, "default");
        let c = ServerConfig::load(&parse(&[
            "kairos",
            "--config",
            config,
            "--kill-grace",
            "7",
            "--worker-attribute",
            "rack=a",
            "--worker-attribute",
            "zone=b",
        ]))
        .unwrap();
        assert_eq!(c.kill_grace, Duration::from_secs(7), "flag");
        assert_eq!(c.user, "file-user", "file");
        assert_eq!(
            c.worker_attributes,
            [
                ("rack".to_owned(), "a".to_owned()),
                ("zone".to_owned(), "b".to_owned())
            ],
            "the flags replace the file's list"
        );
    }

    #[test]
    fn the_agent_reads_flags_over_its_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let path = write(
            &dir,
            &format!(
                "server = \"file:8081\"\nname = \"file-name\"\nattributes = [\"gpu=yes\"]\ncpus = 2\nwork_dir = {work:?}\n"
            ),
        );
        let config = path.to_str().unwrap();
        let a = AgentConfig::load(&parse(&["kairos", "--config", config, "--cpus", "3"])).unwrap();
        assert_eq!(a.server, "file:8081", "file");
        assert_eq!(a.name, "file-name", "file");
        assert_eq!(
            a.attributes,
            [("gpu".to_owned(), "yes".to_owned())],
            "the plural key"
        );
        assert_eq!(a.resources.cpus, 3.0, "flag");
        assert_eq!(a.work_dir, work, "file");
        assert_eq!(a.fetch_timeout, Duration::from_secs(300), "default");
        let a = AgentConfig::load(&parse(&["kairos", "--server", "s:1", "--hostname", "h"])).unwrap();
        assert_eq!(a.server, "s:1");
        assert_eq!(a.name, "h", "the name defaults to the host name");
        assert_eq!(a.work_dir, PathBuf::from("kairos-agent"), "default");
    }

    #[test]
    fn an_agent_without_a_server_is_refused_naming_the_setting() {
        let err = AgentConfig::load(&AgentArgs::default()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("--server") && message.contains("KAIROS_SERVER"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "listen = \"127.0.0.1:1\"\nheartbeat_interval_s = 2\n");
        let err = ServerConfig::load(&ServerArgs {
            config: Some(path.clone()),
            ..ServerArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("heartbeat_interval_s"), "{err}");
        // A server key is not an agent key.
        std::fs::write(&path, "server = \"s:1\"\nlisten = \"x\"\n").unwrap();
        let err = AgentConfig::load(&AgentArgs {
            config: Some(path),
            ..AgentArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[&str]); 8] = [
            (
                "failure_retry = -1\n",
                &["--failure-retry", "KAIROS_FAILURE_RETRY", "failure_retry"],
            ),
            ("agent_listen = \"nowhere\"\n", &["--agent-listen", "nowhere"]),
            ("task_disk = 0\n", &["--task-disk", "task_disk"]),
            ("task_mem = \"lots\"\n", &["task_mem", "lots"]),
            (
                "worker_attributes = [\"rack\"]\n",
                &["--worker-attribute", "'rack' is not KEY=VALUE"],
            ),
            (
                "allowed_host_paths = [\"srv\"]\n",
                &["--allowed-host-path", "'srv' is not an absolute path"],
            ),
            (
                "log_format = \"xml\"\n",
                &["--log-format", "KAIROS_LOG_FORMAT", "'xml' is not a log format"],
            ),
            (
                "fetch_schemes = \"http,ftp\"\n",
                &[
                    "--fetch-schemes",
                    "KAIROS_FETCH_SCHEMES",
                    "'ftp' is not a scheme kairos fetches",
                ],
            ),
        ];
        for (file, expected) in cases {
            let err = ServerConfig::load(&ServerArgs {
                config: Some(write(&dir, file)),
                ..ServerArgs::default()
            })
            .unwrap_err();
            let message = format!(
                "{err}: {}",
                std::error::Error::source(&err)
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            );
            for part in expected {
                assert!(message.contains(part), "{file}: {message}");
            }
        }
        let err =
            AgentConfig::load(&parse(&["kairos", "--server", "s:1", "--fetch-timeout=-5"])).unwrap_err();
        assert!(err.to_string().contains("--fetch-timeout"), "{err}");
    }

    #[test]
    fn every_default_parses() {
        let c = ServerConfig::load(&ServerArgs::default()).unwrap();
        assert_eq!(c.output_limit, 65536);
        assert_eq!(c.election_interval, Duration::from_secs(1));
        assert!(c.store.is_none() && !c.allow_privileged_containers && c.local_worker.is_some());
        assert!(c.allowed_host_paths.is_empty());
        assert_eq!(c.fetch_schemes, ["http", "https", "file"]);
        assert_eq!(c.user, "root", "the default runAsUser");
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.metrics_per_job);
        let a = AgentConfig::load(&parse(&["kairos", "--server", "s:1"])).unwrap();
        assert_eq!(a.fetch_timeout, Duration::from_secs(300));
        assert_eq!(a.log_format, LogFormat::Text);
        let a = AgentConfig::load(&parse(&["kairos", "--server", "s:1", "--log-format", "JSON"])).unwrap();
        assert_eq!(a.log_format, LogFormat::Json);
        let c = ServerConfig::load(&parse(&["kairos", "--metrics-per-job", "--log-format", "json"])).unwrap();
        assert!(c.metrics_per_job && c.log_format == LogFormat::Json);
        assert_eq!(a.policy, crate::executor::Policy::default());
    }

    #[test]
    fn host_paths_and_fetch_schemes_are_read_for_server_and_agent() {
        let c = ServerConfig::load(&ServerArgs {
            allowed_host_path: Some(vec!["/srv/data/".to_owned(), "/scratch/../tmp/x".to_owned()]),
            fetch_schemes: Some(" HTTPS , http,https".to_owned()),
            ..ServerArgs::default()
        })
        .unwrap();
        assert_eq!(
            c.allowed_host_paths,
            [PathBuf::from("/srv/data"), PathBuf::from("/tmp/x")]
        );
        assert_eq!(c.fetch_schemes, ["https", "http"]);
        let a = AgentConfig::load(&parse(&[
            "kairos",
            "--server",
            "s:1",
            "--allowed-host-path",
            "/srv",
            "--allow-privileged-containers",
            "--fetch-schemes",
            "https",
        ]))
        .unwrap();
        assert_eq!(
            a.policy,
            crate::executor::Policy {
                allow_privileged: true,
                allowed_host_paths: vec![PathBuf::from("/srv")],
                fetch_schemes: vec!["https".to_owned()],
            }
        );
    }

    #[test]
    fn the_agent_port_is_loopback_unless_agents_must_present_a_token() {
        let c = ServerConfig::load(&ServerArgs::default()).unwrap();
        assert_eq!(c.agent_listen.to_string(), "127.0.0.1:8081");
        assert!(c.agent_token.is_none() && !c.insecure_no_auth);
        let c = ServerConfig::load(&parse(&["kairos", "--agent-token", "t0ken"])).unwrap();
        assert_eq!(c.agent_listen.to_string(), "0.0.0.0:8081");
        assert!(c.agent_token.is_some_and(|t| t.matches(b"t0ken")));
        let err = ServerConfig::load(&parse(&["kairos", "--agent-listen", "0.0.0.0:9000"])).unwrap_err();
        let message = err.to_string();
        for part in [
            "--agent-listen",
            "0.0.0.0:9000",
            "--agent-token (KAIROS_AGENT_TOKEN",
            "127.0.0.1",
            "--insecure-no-auth",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        let c = ServerConfig::load(&parse(&[
            "kairos",
            "--agent-listen",
            "0.0.0.0:9000",
            "--insecure-no-auth",
        ]))
        .unwrap();
        assert_eq!(c.agent_listen.to_string(), "0.0.0.0:9000");
        assert!(c.insecure_no_auth);
        for loopback in ["127.0.0.2:9000", "[::1]:9000"] {
            assert!(
                ServerConfig::load(&parse(&["kairos", "--agent-listen", loopback])).is_ok(),
                "{loopback}"
            );
        }
    }

    #[test]
    fn agent_tokens_are_checked_and_never_shown() {
        let err = ServerConfig::load(&parse(&["kairos", "--agent-token", "has space"])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("--agent-token") && !message.contains("has space"),
            "{message}"
        );
        let c = ServerConfig::load(&parse(&["kairos", "--agent-token", "hunter2"])).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let a =
            AgentConfig::load(&parse(&["kairos", "--server", "s:1", "--agent-token", "hunter2"])).unwrap();
        assert!(a.token.as_ref().is_some_and(|t| t.matches(b"hunter2")));
        assert!(!format!("{a:?}").contains("hunter2"));
        let a = AgentConfig::load(&parse(&["kairos", "--server", "s:1"])).unwrap();
        assert!(a.token.is_none() && a.ca_cert.is_none());
    }

    #[test]
    fn tls_takes_a_certificate_with_its_key() {
        let c = ServerConfig::load(&parse(&["kairos", "--tls-cert", "c.pem", "--tls-key", "k.pem"])).unwrap();
        assert_eq!(
            c.tls,
            Some(CertFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(ServerConfig::load(&ServerArgs::default()).unwrap().tls.is_none());
        for (line, expected) in [
            (&["kairos", "--tls-cert", "c.pem"][..], "--tls-key"),
            (&["kairos", "--tls-key", "k.pem"][..], "--tls-cert"),
            (&["kairos", "--ca-cert", "ca.pem"][..], "--ca-cert"),
        ] {
            let err = ServerConfig::load(&parse(line)).unwrap_err();
            assert!(err.to_string().contains(expected), "{line:?}: {err}");
        }
    }

    /// The flags clap knows, as the tables show them.
    fn clap_flags<A: clap::Args>() -> Vec<(String, Option<String>, Option<String>)> {
        let command = A::augment_args(clap::Command::new("kairos"));
        command
            .get_arguments()
            .map(|arg| {
                (
                    format!("--{}", arg.get_long().unwrap()),
                    arg.get_env().map(|env| env.to_string_lossy().into_owned()),
                    arg.get_help().map(ToString::to_string),
                )
            })
            .collect()
    }

    #[test]
    fn the_tables_describe_the_flags_clap_parses() {
        for (table, flags) in [
            (&SERVER_SETTINGS, clap_flags::<ServerArgs>()),
            (&AGENT_SETTINGS, clap_flags::<AgentArgs>()),
        ] {
            let mut expected = vec![(
                "--config".to_owned(),
                Some(table.config_env.to_owned()),
                Some(config_help()),
            )];
            expected.extend(
                table
                    .settings
                    .iter()
                    .map(|s| (s.flag(), s.env.map(str::to_owned), Some(s.clap_help()))),
            );
            assert_eq!(flags, expected, "{}", table.command);
        }
        assert_eq!(
            ServerSettings::worker_timeout.clap_help(),
            "Seconds without a heartbeat before an agent is lost and its tasks retried elsewhere [default: 15]"
        );
    }

    /// `readme` with each command's settings table replaced by the rendered one.
    fn render_readme(readme: &str) -> String {
        let mut out = readme.to_owned();
        for table in [&SERVER_SETTINGS, &AGENT_SETTINGS] {
            let begin = format!("<!-- settings: {} -->\n", table.command);
            let end = format!("<!-- end settings: {} -->", table.command);
            let start = out
                .find(&begin)
                .unwrap_or_else(|| panic!("README.md lacks {begin}"))
                + begin.len();
            let stop = start
                + out[start..]
                    .find(&end)
                    .unwrap_or_else(|| panic!("README.md lacks {end}"));
            out.replace_range(start..stop, &table.markdown());
        }
        out
    }

    #[test]
    fn the_readme_shows_the_declared_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let rendered = render_readme(&readme);
        if rendered != readme && std::env::var_os("KAIROS_UPDATE_README").is_some() {
            std::fs::write(&path, &rendered).unwrap();
            return;
        }
        assert!(
            rendered == readme,
            "README.md's settings tables differ from the declarations in src/config.rs; \
             `KAIROS_UPDATE_README=1 cargo test --lib config::tests::the_readme` rewrites them. Expected:\n\n{}\n{}",
            SERVER_SETTINGS.markdown(),
            AGENT_SETTINGS.markdown()
        );
    }

    #[test]
    fn a_readme_row_that_disagrees_is_caught() {
        let readme = "intro\n<!-- settings: server -->\n| old |\n<!-- end settings: server -->\n\
                      <!-- settings: agent -->\n<!-- end settings: agent -->\nafter\n";
        let rendered = render_readme(readme);
        assert!(
            rendered.starts_with("intro\n<!-- settings: server -->\n| flag |"),
            "{rendered}"
        );
        assert!(
            rendered
                .contains("| `--max-body-bytes` | `KAIROS_MAX_BODY_BYTES` | `1048576` | largest request body accepted, in bytes (larger ones get `413`) |\n")
        );
        assert!(
            rendered.contains(
                "| `--attribute KEY=VALUE` |  | none | an attribute for constraints (repeatable) |\n"
            )
        );
        assert!(!rendered.contains("| old |") && rendered.ends_with("<!-- end settings: agent -->\nafter\n"));
        assert_eq!(render_readme(&rendered), rendered, "rendering is stable");
    }

    #[test]
    fn notification_settings_are_checked_and_their_secrets_never_shown() {
        let load = |adjust: fn(&mut ServerArgs)| {
            let mut args = ServerArgs {
                listen: Some("127.0.0.1:0".to_owned()),
                hostname: Some("sched.example".to_owned()),
                ..ServerArgs::default()
            };
            adjust(&mut args);
            ServerConfig::load(&args)
        };
        let off = load(|_| {}).unwrap();
        assert!(
            off.notify.mail.is_none() && off.notify.webhook.is_none(),
            "off by default"
        );
        assert_eq!(off.notify.first_retry, Duration::from_secs(5));
        let on = load(|a| {
            a.mail_server = Some("smtp.example:587".to_owned());
            a.mail_user = Some("kairos".to_owned());
            a.mail_password = Some("mail-pa55".to_owned());
            a.webhook_secret = Some("hook-s3cret".to_owned());
            a.notify_webhook = Some("https://hooks.example/k".to_owned());
            a.public_url = Some("https://kairos.example/".to_owned());
        })
        .unwrap();
        let mail = on.notify.mail.as_ref().unwrap();
        assert_eq!(
            (mail.host.as_str(), mail.port, mail.from.as_str()),
            ("smtp.example", 587, "kairos@sched.example")
        );
        assert_eq!(on.public_url.as_deref(), Some("https://kairos.example"));
        let shown = format!("{on:?}");
        assert!(
            !shown.contains("mail-pa55") && !shown.contains("hook-s3cret"),
            "{shown}"
        );
        let refused = [
            (
                load(|a| a.mail_server = Some("smtp.example:smtp".to_owned())),
                "--mail-server",
            ),
            (
                load(|a| a.notify_webhook = Some("ftp://h/x".to_owned())),
                "--notify-webhook",
            ),
            (load(|a| a.public_url = Some("kairos".to_owned())), "--public-url"),
            (load(|a| a.notify_retry_delay = Some(0.0)), "--notify-retry-delay"),
            (
                load(|a| {
                    a.mail_server = Some("smtp.example".to_owned());
                    a.mail_password = Some("mail-pa55".to_owned());
                }),
                "--mail-password",
            ),
        ];
        for (result, setting) in refused {
            let error = result.unwrap_err().to_string();
            assert!(error.starts_with(setting), "{error}");
            assert!(!error.contains("mail-pa55"), "{error}");
        }
    }
}
