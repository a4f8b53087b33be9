//! The single owner of scheduling state: jobs, their schedules, the dependency graph, queued and
//! running tasks. It is driven by a closed enum of [`Event`]s over a channel, so no lock guards
//! scheduling state and every change is ordered.
//!
//! The engine never waits for the store. Each turn of its loop changes the in-memory state and
//! collects the writes that record the change; a separate writer task commits them as one group
//! while the engine goes on. What must not happen before the change is durable waits for the
//! group's commit: the reply to the request that caused it, and the launch of a task. So an
//! acknowledged change survives a crash, a task never runs unrecorded, and a thousand task ends
//! cost one transaction rather than a thousand.

mod state;
mod stats;
mod workers;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

pub use state::{JobEntry, OpenTask, State, Worker, WorkerState};
pub use stats::Histogram;
pub use workers::{WorkerCommand, WorkerInfo};

use crate::clock;
use crate::executor::runner::{ContainerLaunch, Runner, TaskEnd, TaskLaunch};
use crate::executor::{LaunchSpec, docker::VolumeSpec, fetch::FetchSpec};
use crate::graph;
use crate::job::{Job, TaskId};
use crate::placement::{self, Resources};
use crate::schedule::{self, Schedule};
use crate::store::{self, Store, StoredJob, TaskRecord, TaskState, Write};

/// Domain failures of engine requests; `api` maps each to an HTTP status exactly once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Job '{name}' not found")]
    JobNotFound { name: String },
    #[error("Task id {id} not found")]
    TaskNotFound { id: String },
    #[error("'{id}' is not a valid task id (expected ct:<dueMillis>:<attempt>:<jobName>:<arguments>)")]
    InvalidTaskId { id: String },
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

/// Everything that can happen to the engine.
pub enum Event {
    Upsert {
        job: Box<Job>,
        provided: Provided,
        reply: Reply<()>,
    },
    Delete {
        name: String,
        reply: Reply<()>,
    },
    RunNow {
        name: String,
        arguments: Option<String>,
        reply: Reply<()>,
    },
    MarkSuccess {
        name: String,
        reply: Reply<bool>,
    },
    Kill {
        name: String,
        reply: Reply<()>,
    },
    /// Drops every job's queued tasks and pending retries; running tasks go on (2.x's purge).
    Purge {
        reply: Reply<()>,
    },
    Complete {
        task_id: String,
        status_code: i64,
        reply: Reply<()>,
    },
    Progress {
        job: String,
        task_id: String,
        elements: Option<i64>,
        reply: Reply<()>,
    },
    History {
        job: String,
        limit: u32,
        reply: Reply<Vec<TaskRecord>>,
    },
    Task {
        task_id: String,
        reply: Reply<TaskRecord>,
    },
    Stat {
        job: String,
        reply: Reply<(Histogram, Vec<TaskRecord>)>,
    },
    /// An agent opened its stream and registered.
    /// Answered with the connection's number, or why the registration is refused.
    WorkerConnected {
        info: WorkerInfo,
        link: mpsc::UnboundedSender<WorkerCommand>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    WorkerHeartbeat {
        name: String,
        connection: u64,
    },
    WorkerDisconnected {
        name: String,
        connection: u64,
    },
    /// A task ended on a remote worker.
    TaskEnded {
        worker: String,
        end: TaskEnd,
    },
    /// Read-only access for queries; the closure must be quick.
    Read(Box<dyn FnOnce(&State) + Send>),
    /// The server is stopping: from now on nothing is launched and no occurrence is recorded,
    /// while requests still in flight are answered.
    Quiesce {
        reply: oneshot::Sender<()>,
    },
    /// Stops the engine. With `flush`, what is pending is committed first (a clean stop); without,
    /// it is dropped, because another scheduler may lead by now.
    Shutdown {
        reply: oneshot::Sender<()>,
        flush: bool,
    },
}

/// The cloneable front door to the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Event>,
}

impl Handle {
    /// Sends an event built around a reply channel and waits for the answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Event) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Sends an event whose reply, if any, the caller handles itself.
    pub async fn send(&self, event: Event) -> Result<(), Error> {
        self.tx.send(event).await.map_err(|_| Error::Stopped)
    }

    /// Runs `f` on the engine's state and returns its result.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let event = Event::Read(Box::new(move |state: &State| {
            let _ = reply.send(f(state));
        }));
        self.tx.send(event).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Stops launching tasks and recording occurrences, before the server stops taking requests:
    /// an occurrence due during the stop is run by the next start instead of being cut short.
    pub async fn quiesce(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Event::Quiesce { reply }).await.is_ok() {
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
        if self.tx.send(Event::Shutdown { reply, flush }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Why a task is queued, which decides whether it merges with one already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A scheduled occurrence: at most one waits per job, and it never starts later than the
    /// job's `epsilon`; one that would is skipped.
    Schedule,
    /// A manual run or a dependency fan-out: merged with a request already waiting with the same
    /// arguments, as in Chronos; a different one waits beside it.
    Request,
    /// A retry of a failed attempt.
    Retry,
}

/// What a timer entry wakes up for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Schedule(String),
    Retry(String),
    /// A task recorded ahead of its instant launches at it.
    Launch(String),
    /// A scheduled occurrence still waiting at this instant is past its epsilon: it is skipped.
    Expire(String),
}

/// Scheduled runs are recorded this long before their instant, so that the group commit is done
/// by then and the task launches on time rather than a commit later.
const SCHEDULE_LEAD_MS: i64 = 100;

struct Engine<S> {
    config: Config,
    store: Arc<S>,
    state: State,
    /// Next wake-ups, ordered by instant (epoch ms); ties are broken by the timer itself.
    timers: BTreeSet<(i64, Timer)>,
    /// The timer entry of each scheduled job, so a changed schedule can remove its old one.
    schedule_timer: HashMap<String, i64>,
    /// Task ends from the built-in worker.
    exits: mpsc::UnboundedSender<(String, TaskEnd)>,
    /// Runs the built-in worker's tasks.
    runner: Runner,
    /// Numbers agent connections, so a stale stream's events are ignored.
    next_connection: u64,
    /// Writes made since the last group went to the writer.
    pending: Vec<Write>,
    /// What waits for `pending` to commit.
    after: Vec<After>,
    /// What waits for the group the writer is committing now; `None` while it is idle.
    in_flight: Option<Vec<After>>,
    /// Hands groups of writes to the writer task.
    writer: mpsc::UnboundedSender<Vec<Write>>,
    writer_task: tokio::task::JoinHandle<()>,
    /// Resources may have been freed: every waiting job is tried once at the end of the turn.
    start_all: bool,
    /// Launches recorded ahead of their instant, by task id, until their `Timer::Launch`.
    early: HashMap<String, (String, TaskLaunch)>,
    /// The latest `started_ms` of a task handed to its worker, and the last value recorded as
    /// [`Write::LaunchedThrough`]: a task recorded as running with a later start never launched.
    launched_through: i64,
    marked_through: i64,
    /// Set when the server begins to stop: nothing launches or is recorded to run any more.
    quiesced: bool,
}

/// Something that may happen only once the writes made before it are committed.
enum After {
    /// Answers a request, or starts the store read that answers it.
    Reply(Box<dyn FnOnce() + Send>),
    /// Starts a task whose start is recorded.
    Launch {
        task_id: String,
        worker: String,
        launch: Box<TaskLaunch>,
    },
}

/// How a commit went, from the writer back to the engine.
struct Committed {
    lost_claims: store::LostClaims,
    writes: usize,
    failures: u64,
}

/// How the engine was asked to stop.
struct Stop {
    reply: Option<oneshot::Sender<()>>,
    flush: bool,
}

/// Run claims are kept at least this long past the widest epsilon, for a deposed leader that
/// has not noticed yet.
const MIN_CLAIM_RETENTION: chrono::Duration = chrono::Duration::hours(1);

/// How long a clean stop waits for the store to take what is pending.
const STOP_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// How often a scheduled run waiting for a failing store looks again.
const STORE_FAILING_RECHECK_MS: i64 = 1000;

/// Events taken in one turn before the turn's writes go to the writer.
const MAX_EVENTS_PER_TURN: usize = 512;

/// Commits groups of writes in order, retrying a failed commit until it succeeds: what waits for
/// a group (replies, launches) must not go ahead without it, and the writes are idempotent.
async fn write_groups<S: Store>(
    store: Arc<S>,
    mut groups: mpsc::UnboundedReceiver<Vec<Write>>,
    done: mpsc::UnboundedSender<Committed>,
    failing: Arc<AtomicBool>,
) {
    while let Some(group) = groups.recv().await {
        let mut failures = 0;
        let mut delay = Duration::from_millis(50);
        let lost_claims = loop {
            match store.commit(&group).await {
                Ok(lost) => {
                    failing.store(false, Ordering::Relaxed);
                    break lost;
                }
                Err(error) => {
                    failing.store(true, Ordering::Relaxed);
                    failures += 1;
                    tracing::error!(%error, writes = group.len(), attempt = failures,
                        "Could not record the scheduler's changes; replies and launches wait. Retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let committed = Committed {
            lost_claims,
            writes: group.len(),
            failures,
        };
        if done.send(committed).is_err() {
            return;
        }
    }
}

/// Loads state from the store and starts the engine task.
///
/// # Errors
/// Fails when the store cannot be read.
pub async fn start<S: Store>(config: Config, store: Arc<S>) -> Result<Handle, Error> {
    let (tx, rx) = mpsc::channel(1024);
    let (exits, exit_rx) = mpsc::unbounded_channel();
    let (writer, groups) = mpsc::unbounded_channel();
    let (done, committed) = mpsc::unbounded_channel();
    let store_failing = Arc::new(AtomicBool::new(false));
    let writer_task = tokio::spawn(write_groups(store.clone(), groups, done, store_failing.clone()));
    let mut engine = Engine {
        store,
        pending: Vec::new(),
        after: Vec::new(),
        in_flight: None,
        writer,
        writer_task,
        start_all: false,
        early: HashMap::new(),
        launched_through: 0,
        marked_through: 0,
        quiesced: false,
        state: State::default(),
        timers: BTreeSet::new(),
        schedule_timer: HashMap::new(),
        runner: Runner::new(
            config.fetch_cache_dir.clone(),
            config.fetch_timeout,
            config.worker_id.clone(),
        ),
        exits,
        next_connection: 0,
        config,
    };
    // Scheduled runs wait while it is set; `/metrics` shows it.
    engine.state.store_failing = store_failing;
    engine.add_local_worker();
    if engine.config.local_worker.is_some() {
        // The built-in worker's tasks from before are recorded as lost below: none of its
        // containers may run on (or be left behind).
        engine.runner.reaping();
    }
    if let Err(error) = engine.load().await {
        engine.writer_task.abort();
        return Err(error);
    }
    tokio::spawn(engine.run(rx, exit_rx, committed));
    Ok(Handle { tx })
}

fn now_ms() -> i64 {
    clock::now().timestamp_millis()
}

/// Chronos formats resources with Java's `Double.toString` (`128.0`, `0.1`).
fn java_double(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e7 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

impl<S: Store> Engine<S> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut exits: mpsc::UnboundedReceiver<(String, TaskEnd)>,
        mut committed: mpsc::UnboundedReceiver<Committed>,
    ) {
        // The first pruning waits a minute, so a restart serves before it scans a large history.
        let mut prune = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        let mut check_workers = tokio::time::interval(Duration::from_millis(250));
        // Loading may have started tasks.
        self.end_turn();
        loop {
            let next = self.timers.first().map(|(at, _)| *at);
            let sleep = async {
                match next {
                    Some(at) => {
                        let wait = (at * 1000 - clock::now().timestamp_micros()).max(0) as u64;
                        tokio::time::sleep(Duration::from_micros(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let stop = tokio::select! {
                event = rx.recv() => self.take(event),
                Some((worker, end)) = exits.recv() => {
                    self.on_task_end(&worker, end);
                    None
                }
                Some(done) = committed.recv() => {
                    self.on_committed(done);
                    None
                }
                () = sleep => {
                    self.fire_timers();
                    None
                }
                _ = prune.tick() => {
                    self.prune();
                    None
                }
                _ = check_workers.tick() => {
                    self.check_workers();
                    None
                }
            };
            // Whatever else is already waiting joins this turn, and so its group commit.
            let mut stop = stop;
            for _ in 0..MAX_EVENTS_PER_TURN {
                if stop.is_some() {
                    break;
                }
                if let Ok((worker, end)) = exits.try_recv() {
                    self.on_task_end(&worker, end);
                } else if let Ok(event) = rx.try_recv() {
                    stop = self.take(Some(event));
                } else {
                    break;
                }
            }
            if let Some(stop) = stop {
                self.stop(stop, &mut committed).await;
                return;
            }
            self.end_turn();
        }
    }

    /// Handles an event from the front door; returns how to stop when it asks the engine to.
    fn take(&mut self, event: Option<Event>) -> Option<Stop> {
        match event {
            Some(Event::Shutdown { reply, flush }) => Some(Stop {
                reply: Some(reply),
                flush,
            }),
            Some(event) => {
                self.handle(event);
                None
            }
            // Every handle is gone: stop cleanly.
            None => Some(Stop {
                reply: None,
                flush: true,
            }),
        }
    }

    /// Ends a turn: tries waiting jobs if resources may have been freed, then hands the turn's
    /// writes to the writer, or, with nothing to write, releases what waits at once.
    fn end_turn(&mut self) {
        if std::mem::take(&mut self.start_all) {
            self.try_start_all();
        }
        if self.launched_through > self.marked_through {
            self.marked_through = self.launched_through;
            self.pending.push(Write::LaunchedThrough(self.marked_through));
        }
        if self.in_flight.is_some() {
            // The next group goes when the writer is done with this one.
            return;
        }
        if self.pending.is_empty() {
            for after in std::mem::take(&mut self.after) {
                self.release_after(after);
            }
            return;
        }
        let group = std::mem::take(&mut self.pending);
        self.in_flight = Some(std::mem::take(&mut self.after));
        if self.writer.send(group).is_err() {
            // Only after a stop; nothing that waits can go ahead.
            tracing::error!("The store writer is gone; dropping a group of writes.");
        }
    }

    /// A group is committed: forget runs another scheduler claimed first, then release what waited.
    fn on_committed(&mut self, done: Committed) {
        self.state.metrics.store_commits += 1;
        self.state.metrics.store_writes += done.writes as u64;
        self.state.metrics.store_failures += done.failures;
        for task_id in &done.lost_claims {
            self.forget_lost_claim(task_id);
        }
        for after in self.in_flight.take().unwrap_or_default() {
            self.release_after(after);
        }
    }

    fn release_after(&mut self, after: After) {
        match after {
            After::Reply(send) => send(),
            After::Launch {
                task_id,
                worker,
                launch,
            } => self.launch_when_due(task_id, worker, *launch),
        }
    }

    /// A clean stop records what is pending (bounded, in case the store is down); an abandoning
    /// one drops it, and the writer with it.
    async fn stop(&mut self, stop: Stop, committed: &mut mpsc::UnboundedReceiver<Committed>) {
        self.kill_all_running();
        // Nothing more launches: the built-in worker's tasks are stopping. A task recorded as
        // started that never launched is recorded as queued again, so the next start runs it
        // (and would anyway: its start is later than the launch mark).
        self.start_all = false;
        self.quiesced = true;
        let mut unlaunched: Vec<String> = self.early.drain().map(|(id, _)| id).collect();
        let mut keep_replies = |afters: &mut Vec<After>| {
            afters.retain(|after| match after {
                After::Reply(_) => true,
                After::Launch { task_id, .. } => {
                    unlaunched.push(task_id.clone());
                    false
                }
            });
        };
        keep_replies(&mut self.after);
        if let Some(in_flight) = &mut self.in_flight {
            keep_replies(in_flight);
        }
        for task_id in unlaunched {
            if let Some(open) = self.state.tasks.get_mut(&task_id)
                && open.record.state == TaskState::Running
            {
                unstart(&mut open.record);
                self.pending.push(Write::PutTask(open.record.clone()));
            }
        }
        if stop.flush {
            let flushed = tokio::time::timeout(STOP_FLUSH_LIMIT, async {
                loop {
                    if self.in_flight.is_none() {
                        if self.pending.is_empty() {
                            for after in std::mem::take(&mut self.after) {
                                self.release_after(after);
                            }
                            return;
                        }
                        self.end_turn();
                    }
                    if committed.recv().await.is_none() {
                        return;
                    }
                    for after in self.in_flight.take().unwrap_or_default() {
                        self.release_after(after);
                    }
                }
            })
            .await;
            if flushed.is_err() {
                tracing::error!("Stopping with changes the store did not take in time.");
            }
        }
        self.writer_task.abort();
        // Dropping the links ends every agent stream.
        self.state.workers.clear();
        if let Some(reply) = stop.reply {
            let _ = reply.send(());
        }
    }

    /// Prunes task history beyond the retention, and the claims of runs no scheduler can still
    /// start: none runs an occurrence later than its job's epsilon.
    fn prune(&self) {
        let store = self.store.clone();
        let keep = self.config.task_history_per_job;
        let widest_epsilon = self
            .state
            .jobs
            .values()
            .map(|e| e.epsilon)
            .max()
            .unwrap_or_default()
            .max(MIN_CLAIM_RETENTION);
        let claims_before = (clock::now() - widest_epsilon - MIN_CLAIM_RETENTION).timestamp_millis();
        tokio::spawn(async move {
            match store.prune_history(keep).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "Pruned old task history."),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "Pruning task history failed."),
            }
            match store.prune_claims(claims_before).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "Pruned old run claims."),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "Pruning run claims failed."),
            }
        });
    }

    /// Answers a request once the writes made so far are committed.
    fn respond<T: Send + 'static>(&mut self, reply: Reply<T>, result: Result<T, Error>) {
        self.after.push(After::Reply(Box::new(move || {
            let _ = reply.send(result);
        })));
    }

    /// Runs a read of the store once the writes made so far are committed, so that it sees
    /// what memory already shows (a task that ended has its output in its record).
    fn read_store(&mut self, read: impl Future<Output = ()> + Send + 'static) {
        self.after.push(After::Reply(Box::new(move || {
            tokio::spawn(read);
        })));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Upsert { job, provided, reply } => {
                let result = self.upsert(*job, provided);
                self.respond(reply, result);
            }
            Event::Delete { name, reply } => {
                let result = self.delete(&name);
                self.respond(reply, result);
            }
            Event::RunNow {
                name,
                arguments,
                reply,
            } => {
                let result = self.run_now(&name, arguments);
                self.respond(reply, result);
            }
            Event::MarkSuccess { name, reply } => {
                let result = self.mark_success(&name);
                self.respond(reply, result);
            }
            Event::Kill { name, reply } => {
                let result = self.kill(&name);
                self.respond(reply, result);
            }
            Event::Purge { reply } => {
                self.purge();
                self.respond(reply, Ok(()));
            }
            Event::Complete {
                task_id,
                status_code,
                reply,
            } => {
                let result = self.complete(&task_id, status_code);
                self.respond(reply, result);
            }
            Event::Progress {
                job,
                task_id,
                elements,
                reply,
            } => {
                self.progress(job, task_id, elements, reply);
            }
            Event::History { job, limit, reply } => {
                if !self.state.jobs.contains_key(&job) {
                    let _ = reply.send(Err(Error::JobNotFound { name: job }));
                    return;
                }
                let store = self.store.clone();
                self.read_store(async move {
                    let _ = reply.send(store.job_tasks(&job, limit).await.map_err(Error::from));
                });
            }
            Event::Task { task_id, reply } => {
                if let Some(open) = self.state.tasks.get(&task_id) {
                    let _ = reply.send(Ok(open.record.clone()));
                    return;
                }
                let store = self.store.clone();
                self.read_store(async move {
                    let result = match store.task(&task_id).await {
                        Ok(Some(task)) => Ok(task),
                        Ok(None) => Err(Error::TaskNotFound { id: task_id }),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(result);
                });
            }
            Event::Stat { job, reply } => {
                let Some(entry) = self.state.jobs.get(&job) else {
                    let _ = reply.send(Err(Error::JobNotFound { name: job }));
                    return;
                };
                let histogram = Histogram::of(entry.durations.iter().copied());
                let store = self.store.clone();
                let limit = self.config.job_history_limit;
                self.read_store(async move {
                    let result = store.job_tasks(&job, limit).await.map_err(Error::from);
                    let _ = reply.send(result.map(|tasks| (histogram, tasks)));
                });
            }
            Event::WorkerConnected { info, link, reply } => {
                let connection = self.worker_connected(info, link);
                let _ = reply.send(connection);
            }
            Event::WorkerHeartbeat { name, connection } => self.worker_heartbeat(&name, connection),
            Event::WorkerDisconnected { name, connection } => self.worker_disconnected(&name, connection),
            Event::TaskEnded { worker, end } => self.on_task_end(&worker, end),
            Event::Read(f) => f(&self.state),
            Event::Quiesce { reply } => {
                self.quiesced = true;
                tracing::info!("Stopping: no more launches or scheduled runs.");
                let _ = reply.send(());
            }
            // Taken by the loop before it gets here.
            Event::Shutdown { reply, .. } => {
                let _ = reply.send(());
            }
        }
    }

    // ----- loading -----

    async fn load(&mut self) -> Result<(), Error> {
        let now = clock::now();
        let stored = self.store.load_jobs().await?;
        for s in &stored {
            self.state.graph.add_job(&s.job.name);
        }
        for s in stored {
            let StoredJob { job, satisfied } = s;
            if let Some(parents) = &job.parents {
                if let Err(errors) = self.state.graph.set_parents(&job.name, parents) {
                    // Only a hand-edited store can get here: the API never stores such a job.
                    tracing::error!(job = %job.name, error = %join_graph_errors(&errors), "Stored job has invalid parents.");
                }
                self.state.graph.restore_satisfied(&job.name, &satisfied);
            }
            let (schedule, epsilon) = match self.runtime_schedule(&job, now) {
                Ok(parts) => parts,
                Err(error) => {
                    tracing::error!(job = %job.name, %error, "Stored job has an invalid schedule; it will not run on schedule.");
                    (None, self.config.default_epsilon)
                }
            };
            let name = job.name.clone();
            self.state.add_job(JobEntry::new(job, schedule, epsilon));
            self.arm_schedule(&name);
        }
        for (job, durations) in self.store.recent_durations(stats::KEPT).await? {
            if let Some(entry) = self.state.jobs.get_mut(&job) {
                entry.durations.push_back(durations);
            }
        }
        // Tasks that were open when the last process ended.
        let launched_through = self.store.launched_through().await?;
        self.launched_through = launched_through;
        self.marked_through = launched_through;
        let mut batch = Vec::new();
        let mut lost = Vec::new();
        let mut expiring = Vec::new();
        for mut task in self.store.load_open_tasks().await? {
            let local = self.is_local(&task.worker);
            let Some(entry) = self.state.jobs.get_mut(&task.job) else {
                continue;
            };
            if task.state == TaskState::Running && task.started_ms.is_none_or(|s| s > launched_through) {
                // Recorded as started (a scheduled run is recorded ahead of its instant) but
                // never handed to a worker before the last scheduler stopped: it runs now.
                unstart(&mut task);
                batch.push(Write::PutTask(task.clone()));
            }
            if task.state == TaskState::Queued && task.scheduled && task.attempt == 0 {
                let deadline = task.due_ms.saturating_add(entry.epsilon.num_milliseconds());
                if now.timestamp_millis() > deadline {
                    task.state = TaskState::Skipped;
                    task.finished_ms = Some(now.timestamp_millis());
                    task.message = skipped_message(entry.epsilon);
                    batch.push(Write::PutTask(task));
                    continue;
                }
                expiring.push((deadline, task.id.clone()));
            }
            match task.state {
                TaskState::Queued => {
                    if task.due_ms > now.timestamp_millis() && task.attempt > 0 {
                        self.timers.insert((task.due_ms, Timer::Retry(task.id.clone())));
                        self.state.retrying.insert(task.id.clone(), task.job.clone());
                    } else {
                        entry.queue.push_back(task.id.clone());
                        self.state.mark_queued(&task.job);
                    }
                    self.state.tasks.insert(task.id.clone(), OpenTask::new(task));
                }
                TaskState::Waiting => {
                    entry.running.push(task.id.clone());
                    self.state.tasks.insert(task.id.clone(), OpenTask::new(task));
                }
                TaskState::Running if !local => {
                    // An agent may still run it: keep it until the agent reconnects or times out.
                    entry.running.push(task.id.clone());
                    let resources = job_resources(&entry.job);
                    let (worker, id) = (task.worker.clone(), task.id.clone());
                    self.state.tasks.insert(task.id.clone(), OpenTask::new(task));
                    self.expect_worker(&worker, &id, resources, now);
                }
                _ => {
                    // Its process died with the previous server: Mesos calls this TASK_LOST.
                    task.state = TaskState::Lost;
                    task.finished_ms = Some(now.timestamp_millis());
                    task.message = "lost: the server stopped while the task ran".to_owned();
                    batch.push(Write::PutTask(task.clone()));
                    lost.push(task);
                }
            }
        }
        self.store.commit(&batch).await?;
        for (deadline, task_id) in expiring {
            self.timers
                .insert((deadline.saturating_add(1), Timer::Expire(task_id)));
        }
        for task in lost {
            let mut batch = Vec::new();
            self.after_failure(&task, &mut batch, now);
            self.store.commit(&batch).await?;
        }
        // Starts are recorded by the first turn of the loop, before they launch.
        self.try_start_all();
        Ok(())
    }

    /// Parses a scheduled job's schedule and the job's epsilon.
    fn runtime_schedule(
        &self,
        job: &Job,
        now: DateTime<Utc>,
    ) -> Result<(Option<Schedule>, chrono::Duration), schedule::Error> {
        let epsilon = if job.epsilon.is_empty() {
            self.config.default_epsilon
        } else {
            schedule::parse_duration(&job.epsilon)?
        };
        let schedule = match (&job.parents, &job.schedule) {
            (None, Some(text)) => Some(schedule::parse(
                text,
                job.schedule_time_zone.as_deref().unwrap_or(""),
                now,
            )?),
            _ => None,
        };
        Ok((schedule, epsilon))
    }

    // ----- timers -----

    /// Sets (or clears) the schedule timer of a job from its runtime schedule.
    fn arm_schedule(&mut self, name: &str) {
        if let Some(at) = self.schedule_timer.remove(name) {
            self.timers.remove(&(at, Timer::Schedule(name.to_owned())));
        }
        let Some(entry) = self.state.jobs.get(name) else {
            return;
        };
        if entry.job.disabled {
            return;
        }
        if let Some(at) = entry.schedule.as_ref().and_then(Schedule::next_run) {
            let at = at.timestamp_millis() - SCHEDULE_LEAD_MS;
            self.timers.insert((at, Timer::Schedule(name.to_owned())));
            self.schedule_timer.insert(name.to_owned(), at);
        }
    }

    fn fire_timers(&mut self) {
        let now = clock::now();
        let now_ms = now.timestamp_millis();
        while let Some((at, timer)) = self.timers.first().cloned() {
            if at > now_ms {
                break;
            }
            self.timers.remove(&(at, timer.clone()));
            match timer {
                // Stopping: what is due now is run by the next start, within its epsilon.
                Timer::Schedule(_) | Timer::Retry(_) | Timer::Launch(_) if self.quiesced => {}
                Timer::Schedule(name) if self.state.store_failing() => {
                    // While the store refuses writes, new runs would only pile up in memory
                    // behind the group being retried; look again in a second, when a run that
                    // is later than its epsilon by then is skipped as usual.
                    let retry_at = now_ms + STORE_FAILING_RECHECK_MS;
                    self.timers.insert((retry_at, Timer::Schedule(name.clone())));
                    self.schedule_timer.insert(name, retry_at);
                }
                Timer::Schedule(name) => {
                    self.schedule_timer.remove(&name);
                    self.fire_schedule(&name, now);
                }
                Timer::Retry(task_id) => {
                    if let Some(job) = self.state.retrying.remove(&task_id)
                        && let Some(entry) = self.state.jobs.get_mut(&job)
                    {
                        entry.queue.push_back(task_id);
                        self.state.mark_queued(&job);
                        self.try_start(&job);
                    }
                }
                Timer::Launch(task_id) => {
                    if let Some((worker, launch)) = self.early.remove(&task_id) {
                        self.launch(&task_id, &worker, launch);
                    }
                }
                Timer::Expire(task_id) => self.expire(&task_id, now),
            }
        }
    }

    /// A scheduled occurrence that has not started by its deadline is skipped: it is recorded
    /// as such and never runs. Its repeat is given back, since `Rn` counts runs that happen.
    fn expire(&mut self, task_id: &str, now: DateTime<Utc>) {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return;
        };
        if open.record.state != TaskState::Queued || !open.record.scheduled {
            return;
        }
        let name = open.record.job.clone();
        let Some(entry) = self.state.jobs.get_mut(&name) else {
            return;
        };
        open.record.state = TaskState::Skipped;
        open.record.message = skipped_message(entry.epsilon);
        let mut batch = Vec::new();
        if let Some(schedule) = entry.schedule.as_mut()
            && let Some(n) = schedule.repeat.as_mut()
        {
            *n += 1;
            entry.job.schedule = Some(schedule.render());
            batch.push(self.put_job(&name));
            self.arm_schedule(&name);
        }
        tracing::warn!(job = %name, task = task_id, "Skipped a scheduled run that could not start within its epsilon.");
        self.state.metrics.skipped_runs += 1;
        self.close_task(task_id, now, &mut batch);
        self.record(batch);
    }

    /// A scheduled job's next occurrence is due: run it unless it is later than epsilon allows.
    fn fire_schedule(&mut self, name: &str, now: DateTime<Utc>) {
        let Some(entry) = self.state.jobs.get(name) else {
            return;
        };
        let Some(before) = entry.schedule.clone() else {
            return;
        };
        if entry.job.disabled {
            return;
        }
        let arguments = entry.job.arguments.join(" ");
        let epsilon = entry.epsilon;
        let (schedule, skipped) = before.skip_missed(now, entry.epsilon);
        let mut batch = Vec::new();
        let mut updated = schedule.clone();
        let horizon = now + chrono::Duration::milliseconds(SCHEDULE_LEAD_MS);
        let mut expiring = None;
        if let Some(due) = schedule.next_run().filter(|due| *due <= horizon) {
            let due_ms = due.timestamp_millis();
            let task_id = match self.waiting_occurrence(name) {
                Some(earlier) => {
                    // One occurrence waits per job: this one is passed over, and says why.
                    updated = schedule.pass();
                    let why = format!(
                        "skipped: the run due at {} had not started yet",
                        clock::iso(clock::from_millis(earlier))
                    );
                    self.state.metrics.skipped_runs += 1;
                    Some(self.record_skipped(name, due_ms, &arguments, why, now, &mut batch))
                }
                None => {
                    updated = schedule.advance();
                    let id = self.enqueue(name, due_ms, 0, &arguments, Trigger::Schedule, &mut batch);
                    expiring = id
                        .clone()
                        .map(|id| (due_ms.saturating_add(epsilon.num_milliseconds()), id));
                    id
                }
            };
            if let Some(task_id) = task_id {
                // Claimed before the task is written, in the same transaction, so only one
                // scheduler ever records this occurrence; a lost claim skips the task's writes.
                batch.insert(
                    0,
                    Write::ClaimRun {
                        job: name.to_owned(),
                        due_ms,
                        task_id,
                    },
                );
            }
        }
        if updated != before {
            let Some(entry) = self.state.jobs.get_mut(name) else {
                return;
            };
            entry.schedule = Some(updated.clone());
            entry.job.schedule = Some(updated.render());
            batch.push(self.put_job(name));
        }
        self.record(batch);
        if skipped > 0 {
            tracing::warn!(job = name, skipped, "Skipped occurrences later than epsilon.");
            self.state.metrics.skipped_runs += skipped;
        }
        self.arm_schedule(name);
        self.try_start(name);
        if let Some((deadline, task_id)) = expiring
            && self
                .state
                .tasks
                .get(&task_id)
                .is_some_and(|t| t.record.state == TaskState::Queued)
        {
            // It waits (for the job's running task, or for room): it must start by its deadline.
            self.timers
                .insert((deadline.saturating_add(1), Timer::Expire(task_id)));
        }
    }

    /// The due instant of the scheduled occurrence of this job that waits to start, if one does.
    fn waiting_occurrence(&self, name: &str) -> Option<i64> {
        let entry = self.state.jobs.get(name)?;
        entry
            .queue
            .iter()
            .filter_map(|id| self.state.tasks.get(id))
            .find(|t| t.record.scheduled && t.record.attempt == 0)
            .map(|t| t.record.due_ms)
    }

    /// Records an occurrence that is passed over as a skipped task, for the job's history.
    fn record_skipped(
        &mut self,
        name: &str,
        due_ms: i64,
        arguments: &str,
        why: String,
        now: DateTime<Utc>,
        batch: &mut Vec<Write>,
    ) -> String {
        let mut id = TaskId::new(due_ms, 0, name, arguments);
        while self.state.tasks.contains_key(&id.to_string()) {
            id.due_millis += 1;
        }
        let record = TaskRecord {
            id: id.to_string(),
            job: name.to_owned(),
            attempt: 0,
            due_ms: id.due_millis,
            arguments: id.arguments.clone(),
            state: TaskState::Skipped,
            created_ms: now.timestamp_millis(),
            started_ms: None,
            finished_ms: Some(now.timestamp_millis()),
            exit_code: None,
            message: why,
            stdout: String::new(),
            stderr: String::new(),
            elements_processed: 0,
            worker: String::new(),
            scheduled: true,
        };
        let id = record.id.clone();
        batch.push(Write::PutTask(record));
        id
    }

    /// Another scheduler recorded this scheduled run first (a leader that was not yet deposed):
    /// the task never existed here, and its launch, if it was placed, is dropped.
    fn forget_lost_claim(&mut self, task_id: &str) {
        tracing::warn!(
            task = task_id,
            "Another scheduler claimed this run first; not running it here."
        );
        if self
            .state
            .tasks
            .get(task_id)
            .is_some_and(|t| t.record.state == TaskState::Running)
        {
            self.release(task_id);
            self.state.metrics.tasks_started = self.state.metrics.tasks_started.saturating_sub(1);
        }
        let Some(open) = self.state.tasks.remove(task_id) else {
            return;
        };
        if let Some(entry) = self.state.jobs.get_mut(&open.record.job) {
            entry.queue.retain(|id| id != task_id);
            entry.running.retain(|id| id != task_id);
        }
        self.start_all = true;
    }

    /// Adds writes to the turn's group.
    fn record(&mut self, batch: Vec<Write>) {
        self.pending.extend(batch);
    }

    // ----- task lifecycle -----

    fn put_job(&self, name: &str) -> Write {
        let entry = &self.state.jobs[name];
        Write::PutJob(Box::new(StoredJob {
            job: entry.job.clone(),
            satisfied: self.state.graph.satisfied_parents(name),
        }))
    }

    /// Creates a queued task for a job and returns its id; `None` when a request merges with
    /// one already waiting with the same arguments (Chronos keeps one queued task per job). A
    /// scheduled occurrence is never merged: the caller passes over one that comes due while
    /// another waits.
    fn enqueue(
        &mut self,
        name: &str,
        due_ms: i64,
        attempt: u32,
        arguments: &str,
        trigger: Trigger,
        batch: &mut Vec<Write>,
    ) -> Option<String> {
        let entry = self.state.jobs.get_mut(name)?;
        if trigger == Trigger::Request
            && entry.queue.iter().any(|id| {
                self.state.tasks.get(id).is_some_and(|t| {
                    t.record.attempt == 0 && !t.record.scheduled && t.record.arguments == arguments
                })
            })
        {
            tracing::info!(
                job = name,
                "The same run is already queued; not queueing another."
            );
            return None;
        }
        let mut id = TaskId::new(due_ms, attempt, name, arguments);
        while self.state.tasks.contains_key(&id.to_string()) {
            id.due_millis += 1;
        }
        let record = TaskRecord {
            id: id.to_string(),
            job: name.to_owned(),
            attempt,
            due_ms: id.due_millis,
            arguments: id.arguments.clone(),
            state: TaskState::Queued,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            message: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            elements_processed: 0,
            worker: String::new(),
            scheduled: trigger == Trigger::Schedule,
        };
        batch.push(Write::PutTask(record.clone()));
        let id = record.id.clone();
        entry.queue.push_back(id.clone());
        self.state.tasks.insert(id.clone(), OpenTask::new(record));
        self.state.mark_queued(name);
        Some(id)
    }

    /// Starts queued tasks of a job while its concurrency and the workers allow.
    fn try_start(&mut self, name: &str) {
        let mut offers = self.state.offers();
        self.try_start_with(name, &mut offers);
    }

    /// Like `try_start`, with the workers' offers built once by the caller and kept up to date
    /// here, so a pass over many waiting jobs doesn't rebuild them for each. Returns why the job's
    /// next task found no place, if that is what stopped it.
    fn try_start_with(
        &mut self,
        name: &str,
        offers: &mut [placement::Offer],
    ) -> Option<placement::Unplaceable> {
        if self.quiesced {
            return None;
        }
        loop {
            let entry = self.state.jobs.get_mut(name)?;
            if !entry.job.concurrent && !entry.running.is_empty() {
                entry.waiting = None;
                return None;
            }
            let Some(task_id) = entry.queue.front().cloned() else {
                entry.waiting = None;
                return None;
            };
            let deadline = entry.epsilon.num_milliseconds();
            if let Some(open) = self.state.tasks.get(&task_id)
                && open.record.scheduled
                && open.record.attempt == 0
                && now_ms() > open.record.due_ms.saturating_add(deadline)
            {
                self.expire(&task_id, clock::now());
                continue;
            }
            let entry = self.state.jobs.get_mut(name)?;
            let need = job_resources(&entry.job);
            match placement::place(&need, &entry.constraints, offers) {
                Ok(index) => {
                    entry.queue.pop_front();
                    entry.waiting = None;
                    let worker = offers[index].worker.clone();
                    offers[index].used = offers[index].used.plus(&need);
                    self.start_task(name, task_id, &worker);
                }
                Err(reason) => {
                    // The task waits in the queue; it is tried again whenever workers or resources change.
                    entry.waiting = Some(state::Waiting::Unplaceable(reason.clone()));
                    return Some(reason);
                }
            }
        }
    }

    /// Tries every job that has queued tasks, high priority first, in creation order, until the
    /// workers are full.
    ///
    /// When many tasks wait for room, most of a pass would be jobs that cannot fit: once a job
    /// without constraints found no room, a later one without constraints that needs at least as
    /// much of everything cannot either, so it is not placed again; and once no worker has room
    /// for the smallest job there is, the pass ends.
    fn try_start_all(&mut self) {
        let mut offers = self.state.offers();
        let mut no_room: Option<(Resources, placement::Unplaceable)> = None;
        let mut cursor: Option<state::QueuedJob> = None;
        loop {
            if let Some(min) = self.state.min_need
                && !offers.iter().any(|offer| min.fits_in(&offer.free()))
            {
                return;
            }
            let next = match &cursor {
                None => self.state.queued_jobs.first(),
                Some(key) => self
                    .state
                    .queued_jobs
                    .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                    .next(),
            };
            let Some(key) = next.cloned() else {
                return;
            };
            let name = key.2.clone();
            cursor = Some(key);
            let Some(entry) = self.state.jobs.get_mut(&name) else {
                self.forget_queued(cursor.as_ref());
                continue;
            };
            if entry.queue.is_empty() {
                self.forget_queued(cursor.as_ref());
                continue;
            }
            let need = job_resources(&entry.job);
            let unconstrained = entry.constraints.is_empty();
            if unconstrained
                && let Some((smallest, reason)) = &no_room
                && smallest.fits_in(&need)
            {
                entry.waiting = Some(state::Waiting::Unplaceable(reason.clone()));
                continue;
            }
            let stopped = self.try_start_with(&name, &mut offers);
            if self.state.jobs.get(&name).is_none_or(|e| e.queue.is_empty()) {
                self.forget_queued(cursor.as_ref());
            }
            if let Some(reason) = stopped
                && unconstrained
                && no_room
                    .as_ref()
                    .is_none_or(|(smallest, _)| need.fits_in(smallest))
            {
                no_room = Some((need, reason));
            }
        }
    }

    fn forget_queued(&mut self, key: Option<&state::QueuedJob>) {
        if let Some(key) = key {
            self.state.queued_jobs.remove(key);
        }
    }

    /// Starts a task on a worker: records the start now and launches once it is committed.
    fn start_task(&mut self, name: &str, task_id: String, worker_name: &str) {
        let now = now_ms();
        let Some(entry) = self.state.jobs.get_mut(name) else {
            return;
        };
        let Some(open) = self.state.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(worker) = self.state.workers.get_mut(worker_name) else {
            return;
        };
        let resources = job_resources(&entry.job);
        let launch = task_launch(&entry.job, &open.record, &self.config, &worker.hostname);
        open.record.state = TaskState::Running;
        // A scheduled run recorded ahead of its instant starts at it.
        open.record.started_ms = Some(now.max(open.record.due_ms));
        open.record.worker = worker_name.to_owned();
        open.record.message = String::new();
        open.resources = resources;
        worker.used = worker.used.plus(&resources);
        worker.tasks.insert(task_id.clone());
        entry.running.push(task_id.clone());
        let dependent = entry.job.parents.is_some();
        self.state.metrics.tasks_started += 1;
        // Never run what the store doesn't know about: another leader might run it too, and a
        // restart would not know to look for it.
        let mut batch = vec![Write::PutTask(open.record.clone())];
        if dependent {
            // Its parents must all succeed again before its next run.
            self.state.graph.reset(name);
            batch.push(self.put_job(name));
        }
        self.record(batch);
        self.after.push(After::Launch {
            task_id,
            worker: worker_name.to_owned(),
            launch: Box::new(launch),
        });
    }

    /// Launches a task whose start is committed, at its instant if that is still ahead.
    fn launch_when_due(&mut self, task_id: String, worker: String, launch: TaskLaunch) {
        let due = self.state.tasks.get(&task_id).map_or(0, |t| t.record.due_ms);
        if due > now_ms() {
            if self.is_local(&worker) {
                // Make the sandbox now, off the engine, so the launch at the instant is only a
                // spawn: a directory operation can wait tens of milliseconds on the file
                // system's journal while something else syncs.
                let sandbox = launch.process.sandbox.clone();
                tokio::task::spawn_blocking(move || std::fs::create_dir_all(sandbox));
            }
            self.timers.insert((due, Timer::Launch(task_id.clone())));
            self.early.insert(task_id, (worker, launch));
        } else {
            self.launch(&task_id, &worker, launch);
        }
    }

    /// Sends a task whose start is committed to its worker, unless it was ended or killed meanwhile.
    fn launch(&mut self, task_id: &str, worker_name: &str, launch: TaskLaunch) {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return; // Completed through the API, or its job was deleted.
        };
        if open.record.state != TaskState::Running || open.record.worker != worker_name {
            return; // Declared lost (its worker went away) and queued again.
        }
        if self.quiesced {
            // The server is stopping: the next start runs it.
            unstart(&mut open.record);
            let record = open.record.clone();
            self.record(vec![Write::PutTask(record)]);
            return;
        }
        let started = open.record.started_ms.unwrap_or_default();
        let open = &*open;
        if open.kill_requested {
            let end = TaskEnd {
                killed: true,
                error: Some("killed on request before it started".to_owned()),
                ..lost_end(task_id, "")
            };
            let _ = self.exits.send((worker_name.to_owned(), end));
            return;
        }
        let sent = match self.state.workers.get(worker_name).map(|w| &w.link) {
            Some(state::Link::Local) => {
                let exits = self.exits.clone();
                let worker = worker_name.to_owned();
                self.runner.start(launch, move |end| {
                    let _ = exits.send((worker, end));
                });
                true
            }
            Some(state::Link::Remote { tx, .. }) => tx.send(WorkerCommand::Launch(Box::new(launch))).is_ok(),
            _ => false,
        };
        if sent {
            self.launched_through = self.launched_through.max(started);
        } else {
            // The agent went away between placement and launch: the task is lost.
            let end = lost_end(
                task_id,
                "the worker disconnected before the task could be sent to it",
            );
            let _ = self.exits.send((worker_name.to_owned(), end));
        }
    }

    /// Records the end of a task and everything that follows from it.
    fn on_task_end(&mut self, worker: &str, end: TaskEnd) {
        let now = clock::now();
        let Some(open) = self.state.tasks.get_mut(&end.task_id) else {
            return; // Already completed through the API, or its job was deleted.
        };
        if open.record.state != TaskState::Running || open.record.worker != worker {
            return; // A stale report: the task was declared lost and runs elsewhere now.
        }
        let name = open.record.job.clone();
        let Some(entry) = self.state.jobs.get(&name) else {
            return;
        };
        let is_async = entry.job.is_async;
        open.record.stdout = end.outcome.stdout.clone();
        open.record.stderr = end.outcome.stderr.clone();
        open.record.exit_code = end.outcome.exit_code;
        open.record.message = end.describe();
        let killed = end.killed || open.kill_requested;
        let completed = open.completed;
        let record = open.record.clone();
        self.release(&record.id);
        let mut batch = Vec::new();
        if let Some(status) = completed.filter(|_| !killed) {
            // Completed through the API while its process ran; now that the process is done
            // too, the task ends the way the client said.
            self.finish_async(&end.task_id, status, now, &mut batch);
        } else if killed {
            self.set_state(&end.task_id, TaskState::Killed);
            self.close_task(&end.task_id, now, &mut batch);
        } else if end.success() && is_async {
            // The process is done, but the task is not until `PUT /task/<id>` says how it went.
            self.set_state(&end.task_id, TaskState::Waiting);
            if let Some(open) = self.state.tasks.get_mut(&end.task_id) {
                open.record.message = "waiting for asynchronous completion".to_owned();
                batch.push(Write::PutTask(open.record.clone()));
            }
        } else if end.success() {
            self.set_state(&end.task_id, TaskState::Finished);
            self.close_task(&end.task_id, now, &mut batch);
            self.after_success(&name, &mut batch, now);
        } else {
            let lost = end.error.as_deref().is_some_and(|e| e.starts_with("lost:"));
            let state = if lost { TaskState::Lost } else { TaskState::Failed };
            self.set_state(&end.task_id, state);
            self.close_task(&end.task_id, now, &mut batch);
            self.after_failure(&record, &mut batch, now);
        }
        self.record(batch);
        self.start_ready(&name);
    }

    fn set_state(&mut self, task_id: &str, state: TaskState) {
        if let Some(open) = self.state.tasks.get_mut(task_id) {
            open.record.state = state;
        }
    }

    /// Gives a task's resources back to its worker.
    fn release(&mut self, task_id: &str) {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return;
        };
        let resources = std::mem::take(&mut open.resources);
        if let Some(worker) = self.state.workers.get_mut(&open.record.worker) {
            worker.used = worker.used.minus(&resources);
            worker.tasks.remove(task_id);
        }
    }

    /// Takes a task out of the open set, writing its final record.
    fn close_task(&mut self, task_id: &str, now: DateTime<Utc>, batch: &mut Vec<Write>) {
        let Some(mut open) = self.state.tasks.remove(task_id) else {
            return;
        };
        open.record.finished_ms = Some(now.timestamp_millis());
        self.state.metrics.tasks_ended += 1;
        if let Some(entry) = self.state.jobs.get_mut(&open.record.job) {
            entry.running.retain(|id| id != task_id);
            entry.queue.retain(|id| id != task_id);
            if open.record.state == TaskState::Finished
                && let Some(started) = open.record.started_ms
            {
                entry.record_duration((now.timestamp_millis() - started) as f64);
            }
        }
        self.state.retrying.remove(task_id);
        batch.push(Write::PutTask(open.record));
    }

    /// Success accounting and the dependency fan-out.
    fn after_success(&mut self, name: &str, batch: &mut Vec<Write>, now: DateTime<Utc>) {
        let Some(entry) = self.state.jobs.get_mut(name) else {
            return;
        };
        entry.job.success_count += 1;
        entry.job.errors_since_last_success = 0;
        entry.job.last_success = clock::iso(now);
        self.state.metrics.record_success(name);
        batch.push(self.put_job(name));
        self.fan_out(name, batch, now);
    }

    /// Children whose parents have now all succeeded get a task each.
    fn fan_out(&mut self, parent: &str, batch: &mut Vec<Write>, now: DateTime<Utc>) {
        let children = self.state.graph.children(parent);
        let ready = self.state.graph.record_success(parent);
        for child in &children {
            if self.state.jobs.contains_key(child) {
                batch.push(self.put_job(child));
            }
        }
        for child in ready {
            let Some(entry) = self.state.jobs.get(&child) else {
                continue;
            };
            if entry.job.disabled {
                continue;
            }
            let arguments = entry.job.arguments.join(" ");
            self.enqueue(
                &child,
                now.timestamp_millis(),
                0,
                &arguments,
                Trigger::Request,
                batch,
            );
            self.state.pending_starts.push(child);
        }
    }

    /// A failed attempt: retry while attempts remain, else count the error.
    fn after_failure(&mut self, task: &TaskRecord, batch: &mut Vec<Write>, now: DateTime<Utc>) {
        let Some(entry) = self.state.jobs.get_mut(&task.job) else {
            return;
        };
        // Unlike Chronos, a retry does not depend on how the previous run ended.
        if task.attempt < entry.job.retries {
            let due = now.timestamp_millis() + self.config.failure_retry.as_millis() as i64;
            let name = task.job.clone();
            if self
                .enqueue(
                    &name,
                    due,
                    task.attempt + 1,
                    &task.arguments,
                    Trigger::Retry,
                    batch,
                )
                .is_some()
            {
                // `enqueue` put it in the queue; a retry waits for its due time instead.
                if let Some(entry) = self.state.jobs.get_mut(&name)
                    && let Some(id) = entry.queue.pop_back()
                {
                    self.timers.insert((due, Timer::Retry(id.clone())));
                    self.state.retrying.insert(id, name);
                }
            }
            return;
        }
        entry.job.error_count += 1;
        entry.job.errors_since_last_success += 1;
        entry.job.last_error = clock::iso(now);
        let limit = self.config.disable_after_failures;
        if limit > 0 && entry.job.errors_since_last_success >= limit {
            tracing::warn!(job = %task.job, failures = limit, "Disabling job after repeated failures.");
            entry.job.disabled = true;
        }
        let soft = entry.job.soft_error;
        self.state.metrics.record_failure(&task.job);
        batch.push(self.put_job(&task.job));
        if soft {
            self.fan_out(&task.job, batch, now);
        }
        self.arm_schedule(&task.job.clone());
    }

    /// Starts whatever became startable: this job's queue, children just enqueued, and, since
    /// resources may have been freed, every other job that waits (once, at the end of the turn).
    fn start_ready(&mut self, name: &str) {
        self.try_start(name);
        let pending = std::mem::take(&mut self.state.pending_starts);
        for child in pending {
            self.try_start(&child);
        }
        self.start_all = true;
    }

    /// On shutdown the built-in worker's tasks, containers too, end with the server; agents keep
    /// theirs.
    fn kill_all_running(&mut self) {
        self.runner.kill_all(Duration::from_millis(200));
    }

    /// Asks a task's worker to kill it.
    fn send_kill(&self, task_id: &str, worker: &str) {
        let grace = self.config.kill_grace;
        match self.state.workers.get(worker).map(|w| &w.link) {
            Some(state::Link::Local) => self.runner.kill(task_id, grace),
            Some(state::Link::Remote { tx, .. }) => {
                let _ = tx.send(WorkerCommand::Kill {
                    task_id: task_id.to_owned(),
                    grace,
                });
            }
            _ => {}
        }
    }

    // ----- API commands -----

    fn upsert(&mut self, mut job: Job, provided: Provided) -> Result<(), Error> {
        let now = clock::now();
        let name = job.name.clone();
        if let Some(parents) = &job.parents {
            self.state
                .graph
                .check_parents(&name, parents)
                .map_err(|errors| Error::Graph { errors })?;
        }
        // An empty start means "now"; store the instant so a restart doesn't move it.
        if let Some(text) = &job.schedule {
            let parts: Vec<&str> = text.splitn(3, '/').collect();
            if parts.len() == 3 && parts[1].is_empty() {
                job.schedule = Some(format!("{}/{}/{}", parts[0], clock::iso(now), parts[2]));
            }
        }
        let (mut schedule, epsilon) = self.runtime_schedule(&job, now)?;
        let existing = self.state.jobs.get(&name);
        if let Some(old) = existing {
            // Counters the client did not send keep their values.
            if !provided.success_count {
                job.success_count = old.job.success_count;
            }
            if !provided.error_count {
                job.error_count = old.job.error_count;
            }
            if !provided.last_success {
                job.last_success = old.job.last_success.clone();
            }
            if !provided.last_error {
                job.last_error = old.job.last_error.clone();
            }
            if !provided.errors_since_last_success {
                job.errors_since_last_success = old.job.errors_since_last_success;
            }
            // Occurrences that fell due while the job was disabled are passed over, without
            // using repeats: enabling it again does not replay them.
            if old.job.disabled
                && !job.disabled
                && let Some(parsed) = schedule.as_mut()
            {
                let (moved, passed) = parsed.skip_missed(now, chrono::Duration::zero());
                if passed > 0 {
                    *parsed = moved;
                    job.schedule = Some(parsed.render());
                }
            }
        }
        // The parents were checked above, so changing the graph after the commit cannot fail;
        // the edges that stay keep their flags, which is what gets stored.
        let satisfied: Vec<String> = self
            .state
            .graph
            .satisfied_parents(&name)
            .into_iter()
            .filter(|p| job.parents().contains(p))
            .collect();
        let stored = StoredJob {
            job: job.clone(),
            satisfied,
        };
        self.record(vec![Write::PutJob(Box::new(stored))]);
        self.state.graph.add_job(&name);
        self.state
            .graph
            .set_parents(&name, job.parents())
            .map_err(|errors| Error::Graph { errors })?;
        match self.state.jobs.get_mut(&name) {
            Some(entry) => {
                let queued = !entry.queue.is_empty();
                self.state.note_need(&job);
                if let Some(entry) = self.state.jobs.get_mut(&name) {
                    entry.replace(job, schedule, epsilon);
                }
                if queued {
                    // Its priority may have changed.
                    self.state.mark_queued(&name);
                }
            }
            None => self.state.add_job(JobEntry::new(job, schedule, epsilon)),
        }
        self.arm_schedule(&name);
        // New constraints or resources may let a waiting task start.
        self.try_start(&name);
        Ok(())
    }

    fn delete(&mut self, name: &str) -> Result<(), Error> {
        let Some(entry) = self.state.jobs.get(name) else {
            return Err(Error::JobNotFound {
                name: name.to_owned(),
            });
        };
        let deleted = entry.job.clone();
        // Only a job with children needs a trial copy of the graph (to rewrite their parents).
        let has_children = !self.state.graph.children(name).is_empty();
        let mut graph = if has_children {
            self.state.graph.clone()
        } else {
            graph::JobGraph::new()
        };
        let children = if has_children {
            graph.remove_job(name)
        } else {
            Vec::new()
        };
        let mut changed = Vec::new();
        for child in children {
            let Some(child_entry) = self.state.jobs.get(&child) else {
                continue;
            };
            let mut job = child_entry.job.clone();
            let mut parents: Vec<String> = job.parents().iter().filter(|p| *p != name).cloned().collect();
            if deleted.is_dependent() {
                // The child keeps its place in the chain: it inherits the deleted job's parents.
                for p in deleted.parents() {
                    if !parents.contains(p) {
                        parents.push(p.clone());
                    }
                }
            }
            if parents.is_empty() {
                // Its only parent was a scheduled job: it takes over that schedule, keeping all its own fields.
                job.parents = None;
                job.schedule = deleted.schedule.clone();
                job.schedule_time_zone = deleted.schedule_time_zone.clone();
            } else {
                job.parents = Some(parents);
            }
            graph
                .set_parents(&child, job.parents())
                .map_err(|errors| Error::Graph { errors })?;
            changed.push(job);
        }
        let mut batch = vec![Write::DeleteJob(name.to_owned())];
        for job in &changed {
            batch.push(Write::PutJob(Box::new(StoredJob {
                job: job.clone(),
                satisfied: graph.satisfied_parents(&job.name),
            })));
        }
        self.record(batch);
        if has_children {
            self.state.graph = graph;
        } else {
            self.state.graph.remove_job(name);
        }
        let now = clock::now();
        if let Some(entry) = self.state.jobs.shift_remove(name) {
            for id in entry.running.iter().chain(entry.queue.iter()) {
                if self
                    .state
                    .tasks
                    .get(id)
                    .is_some_and(|t| t.record.state == TaskState::Running)
                {
                    let worker = self.state.tasks[id].record.worker.clone();
                    self.send_kill(id, &worker);
                    self.release(id);
                }
                self.state.tasks.remove(id);
            }
        }
        self.state.tasks.retain(|_, t| t.record.job != name);
        self.state.retrying.retain(|_, job| job != name);
        self.arm_schedule(name);
        for job in changed {
            let child = job.name.clone();
            let (schedule, epsilon) = self
                .runtime_schedule(&job, now)
                .unwrap_or((None, self.config.default_epsilon));
            if let Some(entry) = self.state.jobs.get_mut(&child) {
                entry.replace(job, schedule, epsilon);
            }
            self.arm_schedule(&child);
        }
        Ok(())
    }

    fn run_now(&mut self, name: &str, arguments: Option<String>) -> Result<(), Error> {
        let Some(entry) = self.state.jobs.get(name) else {
            return Err(Error::JobNotFound {
                name: name.to_owned(),
            });
        };
        let arguments = arguments
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| entry.job.arguments.join(" "));
        let mut batch = Vec::new();
        if self
            .enqueue(name, now_ms(), 0, &arguments, Trigger::Request, &mut batch)
            .is_some()
        {
            self.record(batch);
            self.try_start(name);
        }
        Ok(())
    }

    fn mark_success(&mut self, name: &str) -> Result<bool, Error> {
        if !self.state.jobs.contains_key(name) {
            return Ok(false);
        }
        let now = clock::now();
        self.state.graph.reset(name);
        let mut batch = Vec::new();
        self.after_success(name, &mut batch, now);
        self.record(batch);
        self.start_ready(name);
        Ok(true)
    }

    fn kill(&mut self, name: &str) -> Result<(), Error> {
        let Some(entry) = self.state.jobs.get_mut(name) else {
            return Err(Error::JobNotFound {
                name: name.to_owned(),
            });
        };
        let now = clock::now();
        let mut batch = Vec::new();
        let running = entry.running.clone();
        // Queued tasks and pending retries go too, as Chronos 2.x did.
        let mut to_close = self.waiting_tasks(name);
        for id in running {
            let Some(open) = self.state.tasks.get_mut(&id) else {
                continue;
            };
            if open.record.state == TaskState::Running {
                open.kill_requested = true;
                let worker = open.record.worker.clone();
                self.send_kill(&id, &worker);
            } else {
                to_close.push(id);
            }
        }
        self.close_killed(to_close, "killed on request", now, &mut batch);
        self.record(batch);
        self.try_start(name);
        Ok(())
    }

    /// `DELETE /scheduler/task/all`: every queued task and pending retry is dropped (recorded as
    /// killed); running tasks go on.
    fn purge(&mut self) {
        let now = clock::now();
        let names: Vec<String> = self.state.jobs.keys().cloned().collect();
        let mut to_close = Vec::new();
        for name in &names {
            to_close.extend(self.waiting_tasks(name));
        }
        let mut batch = Vec::new();
        self.close_killed(
            to_close,
            "purged on request: it was waiting to start",
            now,
            &mut batch,
        );
        self.record(batch);
    }

    /// A job's queued tasks and pending retries, taken out of its queue.
    fn waiting_tasks(&mut self, name: &str) -> Vec<String> {
        let mut waiting: Vec<String> = self
            .state
            .jobs
            .get_mut(name)
            .map(|entry| entry.queue.drain(..).collect())
            .unwrap_or_default();
        waiting.extend(
            self.state
                .retrying
                .iter()
                .filter(|(_, job)| *job == name)
                .map(|(id, _)| id.clone()),
        );
        waiting
    }

    /// Closes tasks that never ran (or whose async completion never came) as killed.
    fn close_killed(&mut self, ids: Vec<String>, why: &str, now: DateTime<Utc>, batch: &mut Vec<Write>) {
        for id in ids {
            if let Some(open) = self.state.tasks.get_mut(&id) {
                open.record.state = TaskState::Killed;
                open.record.message = why.to_owned();
            }
            self.close_task(&id, now, batch);
        }
        self.timers
            .retain(|(_, t)| !matches!(t, Timer::Retry(id) if !self.state.tasks.contains_key(id)));
    }

    /// `PUT /task/<id>`: an async task says how it went. Only async jobs take it; their tasks
    /// otherwise end with their process, and a completion must not let the next run (or a
    /// child) start while the process still runs.
    fn complete(&mut self, task_id: &str, status_code: i64) -> Result<(), Error> {
        let parsed = TaskId::parse(task_id).ok_or_else(|| Error::InvalidTaskId {
            id: task_id.to_owned(),
        })?;
        let Some(entry) = self.state.jobs.get(&parsed.job) else {
            return Err(Error::JobNotFound { name: parsed.job });
        };
        let is_async = entry.job.is_async;
        let Some(open) = self
            .state
            .tasks
            .get_mut(task_id)
            .filter(|t| matches!(t.record.state, TaskState::Running | TaskState::Waiting))
        else {
            return Err(Error::TaskNotFound {
                id: task_id.to_owned(),
            });
        };
        if !is_async {
            return Err(Error::Invalid {
                field: "taskId",
                message: format!(
                    "job '{}' is not async: its tasks end when their process ends, not by a completion call",
                    parsed.job
                ),
            });
        }
        if open.completed.is_some() {
            return Err(Error::Invalid {
                field: "taskId",
                message: format!("task {task_id} was already completed; it ends when its process ends"),
            });
        }
        let now = clock::now();
        let mut batch = Vec::new();
        if open.record.state == TaskState::Running {
            // The process still runs: the task keeps its slot (and its job's concurrency) until
            // the process ends, and then ends with this status.
            open.completed = Some(status_code);
            open.record.message =
                format!("completed asynchronously with status {status_code}; waiting for its process to end");
            batch.push(Write::PutTask(open.record.clone()));
            self.record(batch);
            return Ok(());
        }
        let name = open.record.job.clone();
        self.finish_async(task_id, status_code, now, &mut batch);
        self.record(batch);
        self.start_ready(&name);
        Ok(())
    }

    /// Ends an async task whose process has ended with the status its completion call gave.
    fn finish_async(&mut self, task_id: &str, status_code: i64, now: DateTime<Utc>, batch: &mut Vec<Write>) {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return;
        };
        let name = open.record.job.clone();
        // The status the client gave is the task's outcome, so it is what `exitCode` shows.
        open.record.exit_code =
            Some(i32::try_from(status_code).unwrap_or(if status_code < 0 { i32::MIN } else { i32::MAX }));
        if status_code == 0 {
            open.record.state = TaskState::Finished;
            open.record.message = "completed asynchronously".to_owned();
            self.close_task(task_id, now, batch);
            self.after_success(&name, batch, now);
        } else {
            open.record.state = TaskState::Failed;
            open.record.message = format!("completed asynchronously with status {status_code}");
            let record = open.record.clone();
            self.close_task(task_id, now, batch);
            self.after_failure(&record, batch, now);
        }
    }

    fn progress(&self, job: String, task_id: String, elements: Option<i64>, reply: Reply<()>) {
        let check = || -> Result<Option<i64>, Error> {
            let entry = self
                .state
                .jobs
                .get(&job)
                .ok_or_else(|| Error::JobNotFound { name: job.clone() })?;
            let parsed =
                TaskId::parse(&task_id).ok_or_else(|| Error::InvalidTaskId { id: task_id.clone() })?;
            if parsed.job != job {
                return Err(Error::Invalid {
                    field: "taskId",
                    message: format!("task {task_id} does not belong to job '{job}'"),
                });
            }
            if !entry.job.data_processing_job_type {
                return Err(Error::Invalid {
                    field: "dataProcessingJobType",
                    message: format!("JobSchedule '{job}' is not enabled to track data"),
                });
            }
            match elements {
                Some(n) if n < 0 => Err(Error::Invalid {
                    field: "numAdditionalElementsProcessed",
                    message: "numAdditionalElementsProcessed must not be negative".to_owned(),
                }),
                other => Ok(other),
            }
        };
        let elements = match check() {
            Ok(Some(n)) => n,
            Ok(None) => {
                let _ = reply.send(Ok(()));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // The count lives only in the store, so this does not need the engine's ordering.
        let store = self.store.clone();
        tokio::spawn(async move {
            let result = match store.add_progress(&task_id, elements).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::TaskNotFound { id: task_id }),
                Err(e) => Err(e.into()),
            };
            let _ = reply.send(result);
        });
    }
}

/// Builds the process launch for a task: command, arguments and Chronos' environment.
/// Builds a task's launch: command, arguments, Chronos' environment, container and fetch entries.
fn task_launch(job: &Job, task: &TaskRecord, config: &Config, hostname: &str) -> TaskLaunch {
    let extra = task.arguments.trim();
    let (command, arguments) = if job.shell {
        // Chronos appends the task's arguments to the shell command.
        let command = if extra.is_empty() {
            job.command.clone()
        } else {
            format!("{} {}", job.command, extra)
        };
        (command, Vec::new())
    } else {
        // Without a shell the arguments stay separate words; nothing is interpreted.
        let mut arguments = job.arguments.clone();
        if extra != job.arguments.join(" ") {
            arguments.extend(extra.split_whitespace().map(str::to_owned));
        }
        (job.command.clone(), arguments)
    };
    let mut env: Vec<(String, String)> = vec![
        ("mesos_task_id".into(), task.id.clone()),
        ("MESOS_TASK_ID".into(), task.id.clone()),
        ("CHRONOS_JOB_OWNER".into(), job.owner.clone()),
        ("CHRONOS_JOB_NAME".into(), job.name.clone()),
        ("HOST".into(), hostname.to_owned()),
        ("CHRONOS_RESOURCE_MEM".into(), java_double(job.mem)),
        ("CHRONOS_RESOURCE_CPU".into(), java_double(job.cpus)),
        ("CHRONOS_RESOURCE_DISK".into(), java_double(job.disk)),
        ("CHRONOS_JOB_RUN_TIME".into(), task.due_ms.to_string()),
        ("CHRONOS_JOB_RUN_ATTEMPT".into(), task.attempt.to_string()),
    ];
    let reserved: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    for var in &job.environment_variables {
        // Chronos' own variables cannot be overridden by the job.
        if !reserved.contains(&var.name) {
            env.push((var.name.clone(), var.value.clone()));
        }
    }
    let sandbox = config.sandbox_dir.join(crate::executor::sandbox_name(&task.id));
    env.push(("MESOS_SANDBOX".into(), sandbox.display().to_string()));
    let process = LaunchSpec {
        task_id: task.id.clone(),
        command,
        shell: job.shell,
        arguments,
        env,
        sandbox,
        time_limit: (job.max_completion_time > 0).then(|| Duration::from_secs(job.max_completion_time)),
        output_limit: config.output_limit,
    };
    let container = job.container.as_ref().map(|c| ContainerLaunch {
        image: c.image.clone(),
        network: c.network.clone(),
        volumes: c
            .volumes
            .iter()
            .map(|v| VolumeSpec {
                host_path: v.host_path.clone(),
                container_path: v.container_path.clone(),
                read_only: v.mode.as_deref() == Some("RO"),
            })
            .collect(),
        force_pull: c.force_pull_image,
        parameters: c
            .parameters
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        cpus: job.cpus,
        mem_mb: job.mem,
        disk_mb: job.disk,
    });
    // The deprecated `uris` become fetch entries with Chronos' defaults.
    let fetch = job
        .fetch
        .iter()
        .cloned()
        .chain(job.uris.iter().map(|uri| crate::job::Fetch::from_uri(uri)))
        .map(|f| FetchSpec {
            uri: f.uri,
            executable: f.executable,
            cache: f.cache,
            extract: f.extract,
            output_file: f.output_file,
        })
        .collect();
    TaskLaunch {
        process,
        container,
        fetch,
    }
}

/// What a task of this job needs from a worker.
fn job_resources(job: &Job) -> Resources {
    Resources {
        cpus: job.cpus,
        mem: job.mem,
        disk: job.disk,
    }
}

/// Turns a task recorded as started but never launched back into a queued one.
fn unstart(record: &mut TaskRecord) {
    record.state = TaskState::Queued;
    record.started_ms = None;
    record.worker = String::new();
    record.message = String::new();
}

/// Why a scheduled occurrence was skipped.
fn skipped_message(epsilon: chrono::Duration) -> String {
    format!(
        "skipped: it could not start within its epsilon ({})",
        schedule::format_duration(epsilon)
    )
}

/// The end reported for a task whose worker went away.
fn lost_end(task_id: &str, why: &str) -> TaskEnd {
    TaskEnd {
        task_id: task_id.to_owned(),
        outcome: crate::executor::Outcome {
            task_id: task_id.to_owned(),
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
        },
        killed: false,
        error: Some(format!("lost: {why}")),
    }
}

#[cfg(test)]
mod tests;
