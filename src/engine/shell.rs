//! The engine's shell around the pure core: the event loop, the group commit through a writer
//! task, the built-in worker's link, and carrying out the core's effects. What it does is
//! transport; every rule is in the core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::core::{After, Command, Core};
use super::load::Stored;
use super::workers::{WorkerInfo, WorkerLink};
use super::{Config, Error, Event, Handle, stats};
use crate::clock;
use crate::executor::live::Live;
use crate::executor::runner::{Runner, TaskEnd, TaskLaunch};
use crate::job::TaskId;
use crate::notify::outbox::{self, Outbox};
use crate::store::{self, Store, Write};

/// How a commit went, from the writer back to the engine.
struct Committed {
    report: store::CommitReport,
    writes: usize,
    failures: u64,
    /// How long the commit that succeeded took (not the failed attempts or the waits between).
    seconds: f64,
    /// The commit was refused because another server leads now: nothing was written, and this
    /// engine must stop.
    fenced: bool,
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

/// Notices are kept in the outbox this long after their event, done or not: delivery gives up
/// after `notify::RETRY_WINDOW`, and a day covers a long outage between leaders.
const NOTICE_RETENTION: chrono::Duration = chrono::Duration::days(1);

/// Events taken in one turn before the turn's writes go to the writer.
const MAX_EVENTS_PER_TURN: usize = 512;

/// Writes waiting behind a group that the store has not taken yet, beyond which requests that
/// change something are refused (`503`): a store that is down must not make memory grow without
/// bound. Task ends and schedule records still join, since they are bounded by the tasks.
const MAX_PENDING_WRITES: usize = 100_000;

/// The built-in worker, reached in-process through a [`Runner`].
struct LocalLink {
    runner: Runner,
    name: String,
    ends: mpsc::UnboundedSender<(String, TaskEnd)>,
}

impl WorkerLink for LocalLink {
    fn launch(&self, launch: TaskLaunch) -> bool {
        let (ends, name) = (self.ends.clone(), self.name.clone());
        self.runner.start(launch, move |end| {
            let _ = ends.send((name, end));
        });
        true
    }

    fn kill(&self, task_id: &TaskId, grace: Duration) {
        self.runner.kill(task_id, grace);
    }

    fn prepare(&self, sandbox: &std::path::Path) {
        // Made now, off the engine, so the launch at the instant is only a spawn: a directory
        // operation can wait tens of milliseconds on the file system's journal.
        let sandbox = sandbox.to_owned();
        tokio::task::spawn_blocking(move || std::fs::create_dir_all(sandbox));
    }
}

pub(super) struct Shell<S> {
    core: Core,
    store: Arc<S>,
    /// Writes made since the last group went to the writer, and what waits for them.
    pending: Vec<Write>,
    after: Vec<After>,
    /// What waits for the group the writer is committing now; `None` while it is idle.
    in_flight: Option<Vec<After>>,
    /// When that group went to the writer: once it is older than the store timeout, requests
    /// that change something are refused and store reads no longer wait for it.
    in_flight_since: Option<std::time::Instant>,
    /// The store refused a commit because another server leads now: the engine stops.
    fenced: bool,
    writer: mpsc::UnboundedSender<Vec<Write>>,
    writer_task: tokio::task::JoinHandle<()>,
    /// Runs the built-in worker's tasks, and its connection (heartbeaten by the shell).
    runner: Runner,
    local: Option<(String, u64)>,
    /// Tails of the running tasks' output: opened at their launch, closed at their end.
    live: Live,
    /// Delivers notices once committed; it lives and dies with the engine, so only a leader sends.
    outbox: Outbox,
}

/// Commits groups of writes in order, retrying a failed commit until it succeeds: what waits for
/// a group (launches, and replies until their callers give up) must not go ahead without it, and
/// the writes are idempotent. Each group is committed under its own number, so a retry after a
/// commit whose outcome was unknown finds the run claims it made (see [`Store::commit_group`]).
/// A commit fenced by a successor's takeover is not retried: the writer stops.
async fn write_groups<S: Store>(
    store: Arc<S>,
    mut groups: mpsc::UnboundedReceiver<Vec<Write>>,
    done: mpsc::UnboundedSender<Committed>,
    failing: Arc<AtomicBool>,
) {
    let mut number = 0u64;
    while let Some(group) = groups.recv().await {
        number += 1;
        let mut failures = 0;
        let mut delay = Duration::from_millis(50);
        let mut fenced = false;
        let (report, seconds) = loop {
            // A monotonic interval, not the wall clock: only its length matters.
            let began = std::time::Instant::now();
            match store.commit_group(&group, number).await {
                Ok(report) => {
                    failing.store(false, Ordering::Relaxed);
                    break (report, began.elapsed().as_secs_f64());
                }
                Err(error @ store::Error::Fenced { .. }) => {
                    tracing::error!(%error, "A commit was refused: this server no longer leads.");
                    fenced = true;
                    break (store::CommitReport::default(), 0.0);
                }
                Err(error) => {
                    failing.store(true, Ordering::Relaxed);
                    failures += 1;
                    tracing::error!(%error, writes = group.len(), attempt = failures,
                        "Could not record the scheduler's changes; launches wait. Retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let committed = Committed {
            report,
            writes: group.len(),
            failures,
            seconds,
            fenced,
        };
        if done.send(committed).is_err() || fenced {
            return;
        }
    }
}

/// Reads the store, builds the core from it, and starts the engine task.
pub(super) async fn start<S: Store>(config: Config, store: Arc<S>) -> Result<Handle, Error> {
    let (tx, rx) = mpsc::channel(1024);
    let (ends, ends_rx) = mpsc::unbounded_channel();
    let (writer, groups) = mpsc::unbounded_channel();
    let (done, committed) = mpsc::unbounded_channel();
    let store_failing = Arc::new(AtomicBool::new(false));
    let stored = Stored {
        jobs: store.load_jobs().await?,
        durations: store.recent_durations(stats::KEPT).await?,
        open_tasks: store.load_open_tasks().await?,
        launched_through: store.launched_through().await?,
        paused_since: store.paused_since().await?,
    };
    let runner = Runner::new(
        config.fetch_cache_dir.clone(),
        config.fetch_timeout,
        config.worker_id.clone(),
    );
    for token in store.load_tokens().await? {
        if let Ok(role) = crate::auth::Role::parse(&token.role) {
            config.tokens.put(crate::auth::Token {
                name: token.name,
                role,
                hash: token.hash,
                created_ms: token.created_ms,
                last_used_ms: token.last_used_ms,
            });
        }
    }
    let live = Live::default();
    runner.feed_output_to(live.feed());
    let mut core = Core::new(config, clock::now());
    // Scheduled runs wait while it is set; `/metrics` shows it.
    core.state.store_failing = store_failing.clone();
    let local = join_local_worker(&mut core, &runner, &ends);
    core.at(clock::now()).restore(stored);
    let writer_task = tokio::spawn(write_groups(store.clone(), groups, done, store_failing));
    let (notices_done, notices_done_rx) = mpsc::unbounded_channel();
    let outbox = Outbox::start(
        store.clone(),
        core.config.notify.clone(),
        core.state.notifications.clone(),
        notices_done,
    );
    let timeout = core.config.store_timeout;
    let timeouts = core.state.request_timeouts.clone();
    let queue_full = core.state.queue_full.clone();
    let shell = Shell {
        core,
        store,
        pending: Vec::new(),
        after: Vec::new(),
        in_flight: None,
        in_flight_since: None,
        fenced: false,
        writer,
        writer_task,
        runner,
        local,
        live: live.clone(),
        outbox,
    };
    tokio::spawn(shell.run(rx, ends_rx, committed, notices_done_rx));
    Ok(Handle {
        tx,
        live,
        timeout,
        timeouts,
        queue_full,
    })
}

/// The built-in worker joins like any other, before the stored tasks are restored.
fn join_local_worker(
    core: &mut Core,
    runner: &Runner,
    ends: &mpsc::UnboundedSender<(String, TaskEnd)>,
) -> Option<(String, u64)> {
    let local = core.config.local_worker.clone()?;
    // Its tasks from before are recorded as lost: none of its containers may run on (or be
    // left behind).
    runner.reaping();
    let name = core.config.worker_name.clone();
    let info = WorkerInfo {
        name: name.clone(),
        id: core.config.worker_id.clone(),
        hostname: name.clone(),
        attributes: local.attributes,
        total: local.resources,
        running: Vec::new(),
        finished: Vec::new(),
        local: true,
        runs: crate::placement::Runs::EVERYTHING,
    };
    let link = Arc::new(LocalLink {
        runner: runner.clone(),
        name: name.clone(),
        ends: ends.clone(),
    });
    let connection = core.at(clock::now()).worker_connected(info, link).ok()?;
    Some((name, connection))
}

impl<S: Store> Shell<S> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut ends: mpsc::UnboundedReceiver<(String, TaskEnd)>,
        mut committed: mpsc::UnboundedReceiver<Committed>,
        mut notices_done: mpsc::UnboundedReceiver<outbox::Done>,
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
            let next = self.core.next_timer();
            let sleep = async {
                match next {
                    Some(at) => {
                        let wait = (at * 1000 - clock::now().timestamp_micros()).max(0) as u64;
                        tokio::time::sleep(Duration::from_micros(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let mut stop = tokio::select! {
                event = rx.recv() => self.take(event),
                Some((worker, end)) = ends.recv() => {
                    self.core.at(clock::now()).on_task_end(&worker, end);
                    None
                }
                Some(done) = committed.recv() => {
                    self.on_committed(done);
                    None
                }
                Some(done) = notices_done.recv() => {
                    self.core.at(clock::now()).notice_done(done);
                    None
                }
                () = sleep => {
                    self.core.at(clock::now()).fire_timers();
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
            for _ in 0..MAX_EVENTS_PER_TURN {
                if stop.is_some() {
                    break;
                }
                if let Ok((worker, end)) = ends.try_recv() {
                    self.core.at(clock::now()).on_task_end(&worker, end);
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
            if self.fenced {
                // Another server leads: drop everything, as a deposed leader must not write.
                let stop = Stop {
                    reply: None,
                    flush: false,
                };
                self.stop(stop, &mut committed).await;
                return;
            }
        }
    }

    /// Why requests that change something are refused now, if they are: the store has not
    /// taken the group in flight within the store timeout, or too much waits behind it.
    fn refusal(&self) -> Option<Error> {
        let timeout = self.core.config.store_timeout;
        let stalled = self
            .in_flight_since
            .is_some_and(|since| since.elapsed() >= timeout);
        if stalled {
            return Some(Error::Unavailable {
                message: format!(
                    "the store has not taken the scheduler's changes for {} s or more \
                     (kairos_store_failing); this change was not applied, retry later",
                    timeout.as_secs_f64()
                ),
            });
        }
        (self.pending.len() >= MAX_PENDING_WRITES).then(|| Error::Unavailable {
            message: format!(
                "{MAX_PENDING_WRITES} changes wait for the store already; this change was not \
                 applied, retry later"
            ),
        })
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

    fn handle(&mut self, event: Event) {
        let event = match self.refusal() {
            Some(error) => match event.refuse(error) {
                Some(event) => event,
                None => {
                    self.core.state.metrics.refused_writes += 1;
                    return;
                }
            },
            None => event,
        };
        let core = self.core.at(clock::now());
        match event {
            Event::Upsert {
                job,
                provided,
                who,
                reply,
            } => {
                let name = job.name.clone();
                let result = core.upsert(*job, provided);
                core.audit(who, Some(&name), &result);
                core.respond(reply, result);
            }
            Event::Delete { name, who, reply } => {
                let result = core.delete(&name);
                core.audit(who, Some(&name), &result);
                core.respond(reply, result);
            }
            Event::RunNow {
                name,
                arguments,
                who,
                reply,
            } => {
                let result = core.run_now(&name, arguments);
                core.audit(who, Some(&name), &result);
                core.respond(reply, result);
            }
            Event::MarkSuccess { name, who, reply } => {
                let result = core.mark_success(&name);
                core.audit(who, Some(&name), &result);
                core.respond(reply, result);
            }
            Event::Kill { name, who, reply } => {
                let result = core.kill(&name);
                core.audit(who, Some(&name), &result);
                core.respond(reply, result);
            }
            Event::Pause { paused, who, reply } => {
                if paused {
                    core.pause();
                } else {
                    core.resume();
                }
                let since = core.state.paused_since;
                core.audit(who, None, &Ok(()));
                core.respond(reply, Ok(since));
            }
            Event::Purge { who, reply } => {
                core.purge();
                core.audit(who, None, &Ok(()));
                core.respond(reply, Ok(()));
            }
            Event::Complete {
                task_id,
                status_code,
                who,
                reply,
            } => {
                let result = core.complete(&task_id, status_code);
                core.audit(who, Some(task_id.job()), &result);
                core.respond(reply, result);
            }
            Event::PutToken { token, who, reply } => {
                core.put_token(token);
                core.audit(who, None, &Ok(()));
                core.respond(reply, Ok(()));
            }
            Event::DeleteToken { name, who, reply } => {
                let found = core.delete_token(&name);
                core.audit(who, None, &Ok(()));
                core.respond(reply, Ok(found));
            }
            Event::TokenUsed { name, at_ms } => core.token_used(&name, at_ms),
            Event::WorkerConnected { info, link, reply } => {
                let _ = reply.send(core.worker_connected(*info, link));
            }
            Event::WorkerHeartbeat {
                name,
                connection,
                output_dropped,
            } => core.worker_heartbeat(&name, connection, output_dropped),
            Event::TaskEnded { worker, end } => core.on_task_end(&worker, *end),
            Event::WorkerUpdate {
                name,
                connection,
                update,
            } => core.worker_update(&name, connection, *update),
            Event::WorkerLost {
                name,
                connection,
                why,
            } => core.worker_lost(&name, connection, &why),
            Event::WorkerDisconnected { name, connection } => core.worker_disconnected(&name, connection),
            Event::Read(f) => f(&core.state),
            Event::Quiesce { reply } => {
                core.quiesce();
                let _ = reply.send(());
            }
            Event::Progress { .. }
            | Event::History { .. }
            | Event::Task { .. }
            | Event::Stat { .. }
            | Event::Audit { .. } => {
                self.read_store(event);
            }
            // Taken by the loop before it gets here.
            Event::Shutdown { reply, .. } => {
                let _ = reply.send(());
            }
        }
    }

    /// The requests answered from the store, once the writes made before them are committed, so
    /// that they see what memory already shows (a task that ended has its output in its record).
    fn read_store(&mut self, event: Event) {
        let store = self.store.clone();
        let core = &mut self.core;
        let read: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match event {
            Event::History { job, limit, reply } => {
                if !core.state.jobs.contains_key(&job) {
                    let _ = reply.send(Err(Error::JobNotFound { name: job }));
                    return;
                }
                Box::pin(async move {
                    let _ = reply.send(store.job_tasks(&job, limit).await.map_err(Error::from));
                })
            }
            Event::Task { task_id, reply } => {
                if let Some(open) = core.state.tasks.get(&task_id) {
                    let _ = reply.send(Ok(open.record.clone()));
                    return;
                }
                Box::pin(async move {
                    let result = match store.task(&task_id).await {
                        Ok(Some(task)) => Ok(task),
                        Ok(None) => Err(Error::TaskNotFound {
                            id: task_id.to_string(),
                        }),
                        Err(e) => Err(e.into()),
                    };
                    let _ = reply.send(result);
                })
            }
            Event::Audit { query, reply } => Box::pin(async move {
                let _ = reply.send(store.audit(&query).await.map_err(Error::from));
            }),
            Event::Stat { job, reply } => {
                let Some(entry) = core.state.jobs.get(&job) else {
                    let _ = reply.send(Err(Error::JobNotFound { name: job }));
                    return;
                };
                let histogram = super::Histogram::of(entry.durations.iter().copied());
                let limit = core.config.job_history_limit;
                Box::pin(async move {
                    let result = store.job_tasks(&job, limit).await.map_err(Error::from);
                    let _ = reply.send(result.map(|tasks| (histogram, tasks)));
                })
            }
            Event::Progress {
                job,
                task_id,
                elements,
                reply,
            } => {
                let elements = match core.check_progress(&job, &task_id, elements) {
                    Ok(Some(n)) => n,
                    other => {
                        let _ = reply.send(other.map(|_| ()));
                        return;
                    }
                };
                // Added in the group commit, after the writes before it; the commit says whether
                // the task exists.
                core.out.writes.push(Write::AddProgress {
                    task_id: task_id.clone(),
                    elements,
                });
                core.out.after.push(After::Progress { task_id, reply });
                return;
            }
            _ => return,
        };
        if self.refusal().is_some() {
            // The store takes no writes but may still answer reads: don't wait for the group.
            tokio::spawn(read);
            return;
        }
        self.core.out.after.push(After::Reply(Box::new(move || {
            tokio::spawn(read);
        })));
    }

    /// The built-in worker is alive as long as the shell runs; agents must heartbeat.
    fn check_workers(&mut self) {
        let core = self.core.at(clock::now());
        if let Some((name, connection)) = &self.local {
            core.worker_heartbeat(name, *connection, 0);
        }
        core.check_workers();
        // Every end closes its tail; this catches a task that left some other way.
        let tasks = &self.core.state.tasks;
        self.live.retain(|task_id| tasks.contains_key(task_id));
    }

    /// Ends a turn: takes the core's effects, carries out its commands (which may give more
    /// effects), then hands the turn's writes to the writer, or, with nothing to write,
    /// releases what waits at once.
    fn end_turn(&mut self) {
        loop {
            let effects = self.core.at(clock::now()).take_effects();
            self.pending.extend(effects.writes);
            self.after.extend(effects.after);
            for (task_id, end) in &effects.ended {
                tracing::debug!(task = %task_id, end = end.message(), "Task ended.");
                self.live.close(task_id);
            }
            if effects.commands.is_empty() {
                break;
            }
            self.carry_out(effects.commands);
        }
        if self.in_flight.is_some() {
            // The next group goes when the writer is done with this one.
            return;
        }
        if self.pending.is_empty() {
            for after in std::mem::take(&mut self.after) {
                self.release_after(after, &store::CommitReport::default());
            }
            if !self.core.out.commands.is_empty() || !self.core.out.writes.is_empty() {
                self.end_turn();
            }
            return;
        }
        let group = std::mem::take(&mut self.pending);
        self.in_flight = Some(std::mem::take(&mut self.after));
        self.in_flight_since = Some(std::time::Instant::now());
        if self.writer.send(group).is_err() {
            // Only after a stop; nothing that waits can go ahead.
            tracing::error!("The store writer is gone; dropping a group of writes.");
        }
    }

    /// Sends the core's commands down the workers' links.
    fn carry_out(&mut self, commands: Vec<Command>) {
        let grace = self.core.config.kill_grace;
        for command in commands {
            let link = |worker: &str| self.core.state.workers.get(worker).and_then(|w| w.link.clone());
            match command {
                Command::Launch { worker, launch } => {
                    let task_id = launch.process.task_id.clone();
                    if self
                        .core
                        .config
                        .lease
                        .as_ref()
                        .is_some_and(|lease| !lease.is_valid())
                    {
                        // Our lease ran out (this process was frozen, or could not renew): a
                        // successor may run this task already. Launch nothing; stop.
                        tracing::error!(task = %task_id, "The leader lease ran out; not launching, stepping down.");
                        self.fenced = true;
                        continue;
                    }
                    self.live.open(&task_id, launch.process.output_limit);
                    if !link(&worker).is_some_and(|l| l.launch(*launch)) {
                        self.core.at(clock::now()).lose(
                            &worker,
                            &task_id,
                            "the worker disconnected before the task could be sent to it",
                        );
                    }
                }
                Command::Kill { worker, task_id } => {
                    if let Some(link) = link(&worker) {
                        link.kill(&task_id, grace);
                    }
                }
                Command::Prepare { worker, sandbox } => {
                    if let Some(link) = link(&worker) {
                        link.prepare(&sandbox);
                    }
                }
            }
        }
    }

    /// A group is committed: forget runs another scheduler claimed first, then release what waited.
    fn on_committed(&mut self, done: Committed) {
        self.in_flight_since = None;
        if done.fenced {
            self.fenced = true;
            return;
        }
        let core = self.core.at(clock::now());
        core.state.metrics.store_commits += 1;
        core.state.metrics.store_writes += done.writes as u64;
        core.state.metrics.store_failures += done.failures;
        core.state.metrics.commit_seconds.observe(done.seconds);
        for task_id in &done.report.lost_claims {
            core.forget_lost_claim(task_id);
        }
        for after in self.in_flight.take().unwrap_or_default() {
            self.release_after(after, &done.report);
        }
    }

    /// Releases what waited for a commit, by what the commit reported: the tasks its progress
    /// writes did not find, the notices that were in the outbox already.
    fn release_after(&mut self, after: After, report: &store::CommitReport) {
        match after {
            After::Reply(send) => send(),
            // Already there: another leader made it, and sends it (or did).
            After::Notice(notice) if report.known_notices.contains(&notice.id) => {}
            After::Notice(notice) => self.outbox.offer(*notice),
            After::Progress { task_id, reply } => {
                let found = !report.unknown_progress.contains(&task_id);
                let _ = reply.send(if found {
                    Ok(())
                } else {
                    Err(Error::TaskNotFound {
                        id: task_id.to_string(),
                    })
                });
            }
            After::Launch {
                task_id,
                worker,
                launch,
            } => self
                .core
                .at(clock::now())
                .launch_when_due(task_id, worker, *launch),
            After::Dispatch {
                task_id,
                worker,
                launch,
            } => self.core.at(clock::now()).dispatch(task_id, worker, *launch),
        }
    }

    /// A clean stop records what is pending (bounded, in case the store is down); an abandoning
    /// one drops it, and the writer with it.
    async fn stop(&mut self, stop: Stop, committed: &mut mpsc::UnboundedReceiver<Committed>) {
        // The built-in worker's tasks, containers too, end with the server; agents keep theirs.
        self.runner.kill_all(Duration::from_millis(200));
        // Nothing more launches. A task recorded as started that never launched is recorded as
        // queued again, so the next start runs it.
        let mut unlaunched = Vec::new();
        let mut keep_replies = |afters: &mut Vec<After>| {
            afters.retain(|after| match after {
                After::Reply(_) | After::Progress { .. } => true,
                // Its row is in the outbox (or will be, with the flush): the next leader sends it.
                After::Notice(_) => false,
                After::Launch { task_id, .. } | After::Dispatch { task_id, .. } => {
                    unlaunched.push(task_id.clone());
                    false
                }
            });
        };
        keep_replies(&mut self.after);
        if let Some(in_flight) = &mut self.in_flight {
            keep_replies(in_flight);
        }
        self.core.at(clock::now()).unlaunched_back_to_queue(unlaunched);
        if stop.flush {
            self.flush(committed).await;
        }
        self.writer_task.abort();
        // Dropping the links ends every agent stream.
        self.core.state.workers.clear();
        if let Some(reply) = stop.reply {
            let _ = reply.send(());
        }
    }

    /// Commits what is pending, for at most [`STOP_FLUSH_LIMIT`].
    async fn flush(&mut self, committed: &mut mpsc::UnboundedReceiver<Committed>) {
        let flushed = tokio::time::timeout(STOP_FLUSH_LIMIT, async {
            loop {
                if self.in_flight.is_none() {
                    self.end_turn();
                    if self.in_flight.is_none() {
                        return;
                    }
                }
                let Some(done) = committed.recv().await else {
                    return;
                };
                self.on_committed(done);
            }
        })
        .await;
        if flushed.is_err() {
            tracing::error!("Stopping with changes the store did not take in time.");
        }
    }

    /// Prunes task history beyond the retention, and the claims of runs no scheduler can still
    /// start: none runs an occurrence later than its job's epsilon.
    fn prune(&self) {
        let store = self.store.clone();
        let keep = self.core.config.task_history_per_job;
        let widest_epsilon = self
            .core
            .state
            .jobs
            .values()
            .map(|e| e.epsilon)
            .max()
            .unwrap_or_default()
            .max(MIN_CLAIM_RETENTION);
        let claims_before = (clock::now() - widest_epsilon - MIN_CLAIM_RETENTION).timestamp_millis();
        let audit_before = (clock::now() - self.core.config.audit_retention).timestamp_millis();
        let notices_before = (clock::now() - NOTICE_RETENTION).timestamp_millis();
        tokio::spawn(async move {
            match store.prune_history(keep).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "Pruned old task history."),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "Pruning task history failed."),
            }
            loop {
                let prune = Write::PruneAudit {
                    before_ms: audit_before,
                    limit: store::PRUNE_CHUNK,
                };
                match store.commit(&[prune]).await {
                    Ok(report) if report.pruned == u64::from(store::PRUNE_CHUNK) => {}
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "Pruning the audit log failed.");
                        break;
                    }
                }
            }
            loop {
                let prune = Write::PruneNotices {
                    before_ms: notices_before,
                    limit: store::PRUNE_CHUNK,
                };
                match store.commit(&[prune]).await {
                    Ok(report) if report.pruned == u64::from(store::PRUNE_CHUNK) => {}
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "Pruning the notification outbox failed.");
                        break;
                    }
                }
            }
            match store.prune_claims(claims_before).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "Pruned old run claims."),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "Pruning run claims failed."),
            }
        });
    }
}
