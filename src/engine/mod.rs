//! The single owner of scheduling state: jobs, their schedules, the dependency graph, queued and
//! running tasks, and the workers that run them.
//!
//! It is a pure core inside a thin shell. The core (`core.rs` and the files beside it: `tasks`,
//! `ends`, `schedules`, `commands`, `workers`, `load`) takes one input at a time with the instant
//! it happens at, changes the state, and returns effects: writes, what waits for their commit,
//! and commands for workers. The shell (`shell.rs`) owns the channel, the timers' sleep, the
//! group commit through a writer task, and the links to workers. So no lock guards scheduling
//! state, every change is ordered, and the core's rules are tested with explicit instants.
//!
//! The engine never waits for the store. What must not happen before a change is durable waits
//! for its group's commit: the reply to the request that caused it, and the launch of a task. So
//! an acknowledged change survives a crash, a task never runs unrecorded, and a thousand task
//! ends cost one transaction rather than a thousand.

mod commands;
mod core;
mod ends;
mod launch;
mod load;
mod notices;
mod policies;
mod schedules;
mod shell;
mod state;
mod stats;
mod tasks;
mod workers;

use crate::executor::live::Live;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use ends::{End, Outcome};
pub use state::{JobEntry, OpenTask, State, Worker, WorkerState};
pub use stats::{Buckets, Histogram};
pub use workers::{WorkerInfo, WorkerLink, WorkerUpdate};

use crate::executor::runner::TaskEnd;
use crate::graph;
use crate::job::{Job, TaskId};
use crate::placement::Resources;
use crate::schedule;
use crate::store::{self, Store, TaskRecord};

/// Domain failures of engine requests; `api` maps each to an HTTP status exactly once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Job '{name}' not found")]
    JobNotFound { name: String },
    #[error("Task id {id} not found")]
    TaskNotFound { id: String },
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error("{}", join_graph_errors(.errors))]
    Graph { errors: Vec<graph::Error> },
    #[error(transparent)]
    Schedule(#[from] schedule::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("the scheduler is shutting down")]
    Stopped,
    /// A request that the scheduler's or the job's state refuses now (a run while paused, or
    /// while the job runs under `concurrencyPolicy: forbid`); it may succeed later.
    #[error("{message}")]
    Conflict { message: String },
    /// The scheduler cannot answer in time: its store fails or is slow, or it is overloaded. A
    /// change refused up front was not applied; one that timed out may still be.
    #[error("{message}")]
    Unavailable { message: String },
}

fn join_graph_errors(errors: &[graph::Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Settings the engine needs, passed in explicitly.
#[derive(Debug, Clone)]
pub struct Config {
    /// Delay before a failed task is retried (Chronos' `--failure_retry`).
    pub failure_retry: Duration,
    /// `epsilon` for jobs that don't set one.
    pub default_epsilon: chrono::Duration,
    /// Disable a job after this many final failures in a row (0 = never).
    pub disable_after_failures: u64,
    /// Between SIGTERM and SIGKILL when a task is killed.
    pub kill_grace: Duration,
    /// Bytes of stdout and of stderr kept per task.
    pub output_limit: usize,
    /// Where task sandboxes are made.
    pub sandbox_dir: PathBuf,
    /// The name of the built-in worker, also the `HOST` of its tasks.
    pub worker_name: String,
    /// The built-in worker's identity, on its containers.
    pub worker_id: String,
    /// Entries of `taskStatHistory` in `/job/stat` (Chronos' `--job_history_limit`).
    pub job_history_limit: u32,
    /// Finished tasks kept per job; older ones are pruned.
    pub task_history_per_job: u32,
    /// The built-in worker's resources and attributes; `None` runs no built-in worker.
    pub local_worker: Option<LocalWorker>,
    /// A remote worker silent for this long is lost, and its tasks with it.
    pub worker_timeout: Duration,
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// Where fetched files with `cache: true` are kept.
    pub fetch_cache_dir: PathBuf,
    /// Limit for all fetches of one task.
    pub fetch_timeout: Duration,
    /// The API tokens, shared with the API's guard; the engine changes and stores them.
    pub tokens: crate::auth::Tokens,
    /// Signs each task's `KAIROS_TASK_TOKEN` when authentication is on.
    pub task_tokens: Option<crate::auth::TaskTokens>,
    /// Audit entries older than this are pruned.
    pub audit_retention: chrono::Duration,
    /// Where notifications go and how they are delivered.
    pub notify: crate::notify::Settings,
    /// How long a request waits for the engine and its store before it is answered `503`.
    pub store_timeout: Duration,
    /// The leader's lease, under PostgreSQL: nothing launches once it has run out.
    pub lease: Option<Lease>,
}

/// Until when this server may act as leader (a monotonic instant), extended by the election
/// loop at each renewal. A frozen leader wakes up past it and launches nothing, even before its
/// election loop has noticed that a successor took over.
#[derive(Debug, Clone)]
pub struct Lease(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl Lease {
    pub fn new(until: tokio::time::Instant) -> Lease {
        Lease(Arc::new(std::sync::Mutex::new(until)))
    }

    /// Moves the end of the lease (it only ever moves on while leadership lasts).
    pub fn extend(&self, until: tokio::time::Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    pub fn is_valid(&self) -> bool {
        tokio::time::Instant::now() < *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Who asked for a change, for its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub principal: String,
    pub role: String,
    /// The client's address.
    pub source: String,
    pub method: String,
    pub route: String,
}

/// The scheduler's own worker.
#[derive(Debug, Clone)]
pub struct LocalWorker {
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
}

/// Who runs a command: the engine or, for reads, a closure over its state.
pub type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Which counters a client sent with a job; each one omitted keeps its stored value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Provided {
    pub success_count: bool,
    pub error_count: bool,
    pub last_success: bool,
    pub last_error: bool,
    pub errors_since_last_success: bool,
}

/// Who asked, when the change is audited.
type Who = Option<Box<Actor>>;

/// Everything that can happen to the engine; built only by [`Handle`]'s methods.
enum Event {
    Upsert {
        job: Box<Job>,
        provided: Provided,
        who: Who,
        reply: Reply<()>,
    },
    Delete {
        name: String,
        who: Who,
        reply: Reply<()>,
    },
    RunNow {
        name: String,
        arguments: Option<String>,
        who: Who,
        reply: Reply<()>,
    },
    MarkSuccess {
        name: String,
        who: Who,
        reply: Reply<bool>,
    },
    Kill {
        name: String,
        who: Who,
        reply: Reply<()>,
    },
    Purge {
        who: Who,
        reply: Reply<()>,
    },
    /// Pauses (`true`) or resumes the scheduler; answers since when it is paused, if it is.
    Pause {
        paused: bool,
        who: Who,
        reply: Reply<Option<i64>>,
    },
    Complete {
        task_id: TaskId,
        status_code: i64,
        who: Who,
        reply: Reply<()>,
    },
    Progress {
        job: String,
        task_id: TaskId,
        elements: Option<i64>,
        reply: Reply<()>,
    },
    History {
        job: String,
        limit: u32,
        reply: Reply<Vec<TaskRecord>>,
    },
    Task {
        task_id: TaskId,
        reply: Reply<TaskRecord>,
    },
    Stat {
        job: String,
        reply: Reply<(Histogram, Vec<TaskRecord>)>,
    },
    PutToken {
        token: crate::store::StoredToken,
        who: Who,
        reply: Reply<()>,
    },
    DeleteToken {
        name: String,
        who: Who,
        reply: Reply<bool>,
    },
    TokenUsed {
        name: String,
        at_ms: i64,
    },
    Audit {
        query: crate::store::AuditQuery,
        reply: Reply<Vec<crate::store::AuditEntry>>,
    },
    WorkerConnected {
        info: Box<WorkerInfo>,
        link: Arc<dyn WorkerLink>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    WorkerHeartbeat {
        name: String,
        connection: u64,
        /// Live output chunks the worker dropped since it started.
        output_dropped: u64,
    },
    WorkerUpdate {
        name: String,
        connection: u64,
        update: Box<WorkerUpdate>,
    },
    WorkerLost {
        name: String,
        connection: u64,
        why: String,
    },
    /// An agent reports how a task ended (the built-in worker has its own channel).
    TaskEnded {
        worker: String,
        end: Box<TaskEnd>,
    },
    WorkerDisconnected {
        name: String,
        connection: u64,
    },
    Read(Box<dyn FnOnce(&State) + Send>),
    Quiesce {
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
        flush: bool,
    },
}

impl Event {
    /// Answers a request that would change something with `error`; gives any other event back.
    fn refuse(self, error: Error) -> Option<Event> {
        match self {
            Event::Upsert { reply, .. }
            | Event::Delete { reply, .. }
            | Event::RunNow { reply, .. }
            | Event::Kill { reply, .. }
            | Event::Purge { reply, .. }
            | Event::Complete { reply, .. }
            | Event::Progress { reply, .. }
            | Event::PutToken { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Event::MarkSuccess { reply, .. } | Event::DeleteToken { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Event::Pause { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            other => return Some(other),
        }
        None
    }
}

/// The cloneable front door to the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Event>,
    live: Live,
    /// How long a request waits for its answer (`Config::store_timeout`).
    timeout: Duration,
    /// Requests that got no answer in time, for `/metrics`.
    timeouts: Arc<std::sync::atomic::AtomicU64>,
    /// Events that found the engine's queue full and waited for room, for `/metrics`.
    queue_full: Arc<std::sync::atomic::AtomicU64>,
}

impl Handle {
    /// The output of the tasks that run now, as their workers feed it.
    pub fn live(&self) -> &Live {
        &self.live
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Event) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.bounded(async {
            self.send(make(reply)).await?;
            rx.await.map_err(|_| Error::Stopped)?
        })
        .await
    }

    /// Whether the engine has stopped (it was fenced, or shut down).
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits for a request's answer at most `timeout`, so that a failing or slow store, or a
    /// full event queue, gives the caller a `503` rather than a hang.
    async fn bounded<T>(&self, answer: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(result) => result,
            Err(_) => {
                self.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(Error::Unavailable {
                    message: format!(
                        "the scheduler did not answer within {} s: its store is failing or slow, \
                         or it is overloaded; a change sent may still be applied, so check before \
                         sending it again",
                        self.timeout.as_secs_f64()
                    ),
                })
            }
        }
    }

    /// Queues an event; with the queue full it waits for room, and is counted. Agents' streams
    /// are read no faster than this, so an agent that floods the engine is held back by its own
    /// stream's flow control instead of growing the scheduler's memory.
    async fn send(&self, event: Event) -> Result<(), Error> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Stopped),
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.queue_full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.tx.send(event).await.map_err(|_| Error::Stopped)
            }
        }
    }

    /// Creates or replaces a job.
    pub async fn upsert(&self, job: Job, provided: Provided, who: Option<Actor>) -> Result<(), Error> {
        let (job, who) = (Box::new(job), who.map(Box::new));
        self.call(|reply| Event::Upsert {
            job,
            provided,
            who,
            reply,
        })
        .await
    }

    pub async fn delete(&self, name: String, who: Option<Actor>) -> Result<(), Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::Delete { name, who, reply }).await
    }

    /// Runs a job now, with these arguments instead of its own when given.
    pub async fn run_now(
        &self,
        name: String,
        arguments: Option<String>,
        who: Option<Actor>,
    ) -> Result<(), Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::RunNow {
            name,
            arguments,
            who,
            reply,
        })
        .await
    }

    /// Counts a success without running anything; false when the job is unknown.
    pub async fn mark_success(&self, name: String, who: Option<Actor>) -> Result<bool, Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::MarkSuccess { name, who, reply }).await
    }

    /// Kills a job's running tasks and drops its queued ones.
    pub async fn kill(&self, name: String, who: Option<Actor>) -> Result<(), Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::Kill { name, who, reply }).await
    }

    /// Drops every job's queued tasks and pending retries; running tasks go on (2.x's purge).
    pub async fn purge(&self, who: Option<Actor>) -> Result<(), Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::Purge { who, reply }).await
    }

    /// Pauses the scheduler (nothing new starts) or resumes it; answers since when (epoch ms)
    /// it is paused, `None` once resumed. Doing what is already so changes nothing.
    pub async fn set_paused(&self, paused: bool, who: Option<Actor>) -> Result<Option<i64>, Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::Pause { paused, who, reply }).await
    }

    /// An async task says how it went.
    pub async fn complete(&self, task_id: TaskId, status_code: i64, who: Option<Actor>) -> Result<(), Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::Complete {
            task_id,
            status_code,
            who,
            reply,
        })
        .await
    }

    /// Creates or replaces an API token (only its hash is kept).
    pub async fn put_token(&self, token: crate::store::StoredToken, who: Option<Actor>) -> Result<(), Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::PutToken { token, who, reply }).await
    }

    /// Deletes an API token; false when there is none by that name.
    pub async fn delete_token(&self, name: String, who: Option<Actor>) -> Result<bool, Error> {
        let who = who.map(Box::new);
        self.call(|reply| Event::DeleteToken { name, who, reply }).await
    }

    /// Audit entries, newest first, once the writes before are committed.
    pub async fn audit(
        &self,
        query: crate::store::AuditQuery,
    ) -> Result<Vec<crate::store::AuditEntry>, Error> {
        self.call(|reply| Event::Audit { query, reply }).await
    }

    /// Records when a token was last used (the guard calls it at most once a minute per token).
    pub async fn token_used(&self, name: String, at_ms: i64) -> Result<(), Error> {
        self.send(Event::TokenUsed { name, at_ms }).await
    }

    /// Adds to a data job's task's processed-elements count.
    pub async fn progress(&self, job: String, task_id: TaskId, elements: Option<i64>) -> Result<(), Error> {
        self.call(|reply| Event::Progress {
            job,
            task_id,
            elements,
            reply,
        })
        .await
    }

    /// A job's newest tasks, newest first, output included.
    pub async fn history(&self, job: String, limit: u32) -> Result<Vec<TaskRecord>, Error> {
        self.call(|reply| Event::History { job, limit, reply }).await
    }

    /// One task, open or finished.
    pub async fn task(&self, task_id: TaskId) -> Result<TaskRecord, Error> {
        self.call(|reply| Event::Task { task_id, reply }).await
    }

    /// A job's duration histogram and its newest tasks.
    pub async fn stat(&self, job: String) -> Result<(Histogram, Vec<TaskRecord>), Error> {
        self.call(|reply| Event::Stat { job, reply }).await
    }

    /// A worker registers with its link; answered with its connection number, or why its
    /// registration is refused.
    pub async fn worker_connected(
        &self,
        info: WorkerInfo,
        link: Arc<dyn WorkerLink>,
    ) -> Result<Result<u64, String>, Error> {
        let (reply, rx) = oneshot::channel();
        let info = Box::new(info);
        self.send(Event::WorkerConnected { info, link, reply }).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    pub async fn worker_heartbeat(
        &self,
        name: String,
        connection: u64,
        output_dropped: u64,
    ) -> Result<(), Error> {
        self.send(Event::WorkerHeartbeat {
            name,
            connection,
            output_dropped,
        })
        .await
    }

    pub async fn worker_disconnected(&self, name: String, connection: u64) -> Result<(), Error> {
        self.send(Event::WorkerDisconnected { name, connection }).await
    }

    /// A connected worker's offer changed; see [`WorkerUpdate`].
    pub async fn worker_update(
        &self,
        name: String,
        connection: u64,
        update: WorkerUpdate,
    ) -> Result<(), Error> {
        let update = Box::new(update);
        self.send(Event::WorkerUpdate {
            name,
            connection,
            update,
        })
        .await
    }

    /// A backend knows a worker is gone: it is lost now, and its tasks with it, for `why`.
    pub async fn worker_lost(&self, name: String, connection: u64, why: String) -> Result<(), Error> {
        self.send(Event::WorkerLost {
            name,
            connection,
            why,
        })
        .await
    }

    /// An agent reports how a task ended; waits while the engine's queue is full.
    pub async fn task_ended(&self, worker: String, end: TaskEnd) -> Result<(), Error> {
        let end = Box::new(end);
        self.send(Event::TaskEnded { worker, end }).await
    }

    /// Runs `f` on the engine's state and returns its result; `f` must be quick.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let event = Event::Read(Box::new(move |state: &State| {
            let _ = reply.send(f(state));
        }));
        self.bounded(async {
            self.send(event).await?;
            rx.await.map_err(|_| Error::Stopped)
        })
        .await
    }

    /// Stops launching tasks and recording occurrences, before the server stops taking requests:
    /// an occurrence due during the stop is run by the next start instead of being cut short.
    pub async fn quiesce(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Event::Quiesce { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the engine after recording what is pending, killing the tasks of the built-in worker.
    pub async fn shutdown(&self) {
        self.stop(true).await;
    }

    /// Stops the engine at once, without writing anything more: for a leader that lost its lock.
    pub async fn abandon(&self) {
        self.stop(false).await;
    }

    async fn stop(&self, flush: bool) {
        let (reply, rx) = oneshot::channel();
        if self.send(Event::Shutdown { reply, flush }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Loads state from the store and starts the engine task.
///
/// # Errors
/// Fails when the store cannot be read.
pub async fn start<S: Store>(config: Config, store: Arc<S>) -> Result<Handle, Error> {
    shell::start(config, store).await
}

#[cfg(test)]
mod tests;
