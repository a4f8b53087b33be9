//! The client subcommands of `kairos` (`jobs`, `tasks`, `workers`, `pause`, `resume`,
//! `upcoming`, `export`, `import`, `completions`): a client of the public HTTP API only, like curl or chronos-python. It never
//! reaches the engine or the store, so it can do nothing the API would refuse.
//!
//! Every client flag is declared once, here ([`Connection`], [`Command`] and the subcommand
//! enums); `main` only flattens [`Command`] into the top-level command and dispatches.

mod client;
mod control;
mod jobs;
mod migrate;
mod render;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

pub use client::Client;

/// How a client reaches and authenticates to the server; global, so it may come before or after
/// the subcommand (`kairos jobs --json list` and `kairos jobs list --json`).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// the server's base URL
    #[arg(
        long,
        global = true,
        env = "KAIROS_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// an API token, sent as `Authorization: Bearer`
    #[arg(long, global = true, env = "KAIROS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// the user for HTTP Basic (used only together with a password)
    #[arg(long, global = true, env = "KAIROS_USER")]
    pub user: Option<String>,
    /// the password for HTTP Basic
    #[arg(long, global = true, env = "KAIROS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// print the server's JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show, add, edit, run, kill, enable, disable and delete jobs.
    Jobs {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// A job's tasks and a task's output.
    Tasks {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// The workers: resources, state, heartbeat and tasks.
    Workers {
        #[command(flatten)]
        connection: Connection,
    },
    /// Pause the scheduler: nothing new starts until `kairos resume`; running tasks go on.
    /// With `--status`, only show whether it is paused.
    Pause {
        #[command(flatten)]
        connection: Connection,
        /// show whether the scheduler is paused, change nothing
        #[arg(long)]
        status: bool,
    },
    /// Resume a paused scheduler.
    Resume {
        #[command(flatten)]
        connection: Connection,
    },
    /// The next runs across every job, in time order ("what runs tonight?").
    Upcoming {
        #[command(flatten)]
        connection: Connection,
        /// list no run after this ISO 8601 date-time (with its offset, e.g. 2026-12-02T06:00:00Z)
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// at most this many runs (1 to 10000)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Every job as a JSON array, parents before children (`kairos export > jobs.json`).
    Export {
        #[command(flatten)]
        connection: Connection,
    },
    /// Create jobs from an exported file, or from a running Chronos (or kairos) with
    /// `--from-chronos`. Identical jobs are skipped; differing ones are reported and left alone
    /// unless `--overwrite`.
    Import {
        #[command(flatten)]
        connection: Connection,
        /// a JSON file of jobs (one job or an array), `-` for standard input
        #[arg(required_unless_present = "from_chronos", conflicts_with = "from_chronos")]
        file: Option<PathBuf>,
        /// the base URL of a running Chronos or kairos to read every job from
        #[arg(long, value_name = "URL")]
        from_chronos: Option<String>,
        /// say what would be done, change nothing
        #[arg(long)]
        dry_run: bool,
        /// put this before every job name and parent name
        #[arg(long, default_value = "", value_name = "P")]
        prefix: String,
        /// replace jobs that exist here with a different definition
        #[arg(long)]
        overwrite: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs with their state and last outcome.
    List {
        /// only jobs whose name or command contains this (case-insensitive)
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// only jobs in this state
        #[arg(long, value_enum)]
        state: Option<JobState>,
        /// only jobs whose last finished run failed
        #[arg(long)]
        failing: bool,
    },
    /// One job's definition and counters.
    Show { name: String },
    /// Create or update jobs from a JSON file (`-` for standard input): one job, or an array in
    /// dependency order.
    Add { file: PathBuf },
    /// Edit a job in $EDITOR; a refused definition is shown and the editor reopens.
    Edit { name: String },
    /// Run a job now, with extra arguments after `--`.
    Run {
        name: String,
        #[arg(last = true)]
        arguments: Vec<String>,
    },
    /// Kill a job's running tasks and drop its queued ones.
    Kill { name: String },
    /// Let a job's schedule and parents trigger it again.
    Enable { name: String },
    /// Stop a job's schedule and parents from triggering it (manual runs still run).
    Disable { name: String },
    /// Delete a job.
    Delete { name: String },
    /// A scheduled job's next runs.
    Next {
        name: String,
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// The dependency graph.
    Graph {
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// A job's recent tasks, newest first.
    List {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A task's stdout (to stdout) and stderr (to stderr).
    Logs {
        task_id: String,
        /// follow the output live until the task ends
        #[arg(long)]
        follow: bool,
    },
}

/// A job's state as `/jobs/summary` reports it (`N running` counts as running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobState {
    Idle,
    Queued,
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Csv,
    Svg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What went wrong, each kind with its documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or input on this side: an unreadable file, invalid JSON, a failed editor.
    #[error("{0}")]
    Usage(String),
    /// The server answered with a refusal; its message is shown as it is.
    #[error("the server refused ({status}): {message}")]
    Refused {
        status: u16,
        message: String,
        field: Option<String>,
    },
    /// The server answered something this client cannot read.
    #[error("unexpected answer from the server: {0}")]
    Answer(String),
    /// Nothing answered.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// Some of the jobs of an import were refused; the report names them and why.
    #[error("{0}")]
    Incomplete(String),
    /// Writing the output failed (a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// A refusal with what was being done put before the server's message; other errors as
    /// they are.
    fn during(self, what: impl std::fmt::Display) -> Error {
        match self {
            Error::Refused {
                status,
                message,
                field,
            } => Error::Refused {
                status,
                message: format!("{what}: {message}"),
                field,
            },
            other => other,
        }
    }

    /// 0 ok, 1 the server said no, 2 usage, 3 cannot connect.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Refused { .. } | Error::Incomplete(_) | Error::Answer(_) | Error::Output(_) => 1,
            Error::Usage(_) => 2,
            Error::Connect { .. } => 3,
        }
    }
}

/// Runs one client command. `app` gives the whole `kairos` command, for completions.
pub async fn run(command: Command, app: impl FnOnce() -> clap::Command) -> Result<(), Error> {
    match command {
        Command::Jobs { connection, command } => jobs::jobs(&Client::new(&connection)?, command).await,
        Command::Tasks { connection, command } => jobs::tasks(&Client::new(&connection)?, command).await,
        Command::Workers { connection } => jobs::workers(&Client::new(&connection)?).await,
        Command::Pause { connection, status } => {
            control::pause(&Client::new(&connection)?, (!status).then_some(true)).await
        }
        Command::Resume { connection } => control::pause(&Client::new(&connection)?, Some(false)).await,
        Command::Upcoming {
            connection,
            until,
            limit,
        } => control::upcoming(&Client::new(&connection)?, until.as_deref(), limit).await,
        Command::Export { connection } => migrate::export(&Client::new(&connection)?).await,
        Command::Import {
            connection,
            file,
            from_chronos,
            dry_run,
            prefix,
            overwrite,
        } => {
            let target = Client::new(&connection)?;
            let source = match (file, from_chronos) {
                (_, Some(url)) => migrate::Source::Server(Client::anonymous(&url)?),
                (Some(file), None) => migrate::Source::File(file),
                (None, None) => return Err(Error::Usage("name a file or --from-chronos URL".to_owned())),
            };
            let options = migrate::Options {
                dry_run,
                prefix,
                overwrite,
            };
            migrate::import(&target, source, &options).await
        }
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut app(), "kairos", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The jobs in a file (or standard input for `-`): one job, or an array of them.
fn read_jobs(path: &std::path::Path) -> Result<Vec<serde_json::Value>, Error> {
    use serde_json::Value;
    let text = read_input(path)?;
    match serde_json::from_str::<Value>(&text)
        .map_err(|e| Error::Usage(format!("{}: not valid JSON: {e}", path.display())))?
    {
        Value::Array(jobs) => Ok(jobs),
        job @ Value::Object(_) => Ok(vec![job]),
        _ => Err(Error::Usage(format!(
            "{}: must be a job or an array of jobs",
            path.display()
        ))),
    }
}

/// Reads a file, or standard input for `-`.
fn read_input(path: &std::path::Path) -> Result<String, Error> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::Usage(format!("reading standard input: {e}")))
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::Usage(format!("reading {}: {e}", path.display())))
    }
}
