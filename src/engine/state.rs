//! The engine's in-memory state, readable by queries through `Handle::read`.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use std::sync::Arc;

use indexmap::IndexMap;

use super::stats;
use super::workers::WorkerLink;
use crate::graph::JobGraph;
use crate::job::{Job, TaskId};
use crate::placement::{self, Constraint, Offer, Resources};
use crate::schedule::Schedule;
use crate::store::TaskRecord;

/// One job and what the engine tracks about it.
#[derive(Debug)]
pub struct JobEntry {
    pub job: Job,
    /// The parsed schedule of a scheduled job; `job.schedule` is its rendered form.
    pub schedule: Option<Schedule>,
    pub epsilon: chrono::Duration,
    /// Tasks whose process runs, or async tasks waiting for their completion call.
    pub running: Vec<TaskId>,
    /// Tasks accepted and ready to start, oldest first.
    pub queue: VecDeque<TaskId>,
    /// Durations (ms) of the most recent successful tasks, oldest first.
    pub durations: VecDeque<f64>,
    /// The job's constraints, compiled.
    pub constraints: Vec<Constraint>,
    /// Lowercased name, command and owner, for case-insensitive search without allocating per
    /// query; see [`Searchable`].
    pub search: Searchable,
    /// Why the first queued task can't start yet, for the API. Kept unformatted: it is set on
    /// every failed placement, which is a hot path when many tasks wait.
    pub waiting: Option<Waiting>,
    /// Creation order, for the order in which waiting jobs are tried.
    pub(super) seq: u64,
}

/// A job's name, command and owner, lowercased, in one string separated by NUL (the field ends
/// are kept, so a NUL inside a command does not confuse them): a search over every job reads one string per job, which matters at 100,000 jobs,
/// where the scan is bound by memory rather than by comparing bytes.
#[derive(Debug, Clone, Default)]
pub struct Searchable {
    text: String,
    name_end: usize,
    command_end: usize,
}

impl Searchable {
    fn of(job: &Job) -> Searchable {
        Searchable::from_parts(&job.name, &job.command, &job.owner)
    }

    fn from_parts(name: &str, command: &str, owner: &str) -> Searchable {
        let mut text = name.to_lowercase();
        let name_end = text.len();
        text.push('\0');
        text.push_str(&command.to_lowercase());
        let command_end = text.len();
        text.push('\0');
        text.push_str(&owner.to_lowercase());
        Searchable {
            text,
            name_end,
            command_end,
        }
    }

    /// Name, command and owner together, for a search in any of them.
    pub fn all(&self) -> &str {
        &self.text
    }

    pub fn name(&self) -> &str {
        &self.text[..self.name_end]
    }

    pub fn command(&self) -> &str {
        &self.text[self.name_end + 1..self.command_end]
    }
}

impl JobEntry {
    pub(super) fn new(job: Job, schedule: Option<Schedule>, epsilon: chrono::Duration) -> JobEntry {
        let constraints = compile_constraints(&job);
        JobEntry {
            search: Searchable::of(&job),
            constraints,
            waiting: None,
            seq: 0,
            job,
            schedule,
            epsilon,
            running: Vec::new(),
            queue: VecDeque::new(),
            durations: VecDeque::new(),
        }
    }

    /// Replaces the definition, keeping runtime state.
    pub(super) fn replace(&mut self, job: Job, schedule: Option<Schedule>, epsilon: chrono::Duration) {
        self.constraints = compile_constraints(&job);
        self.search = Searchable::of(&job);
        self.job = job;
        self.schedule = schedule;
        self.epsilon = epsilon;
    }

    pub(super) fn record_duration(&mut self, ms: f64) {
        if self.durations.len() == stats::KEPT as usize {
            self.durations.pop_front();
        }
        self.durations.push_back(ms);
    }
}

/// Constraints are checked when a job is posted; a stored job whose constraint no longer compiles
/// (a hand-edited store) runs nowhere rather than anywhere.
fn compile_constraints(job: &Job) -> Vec<Constraint> {
    job.constraints
        .iter()
        .map(|c| {
            Constraint::compile(&c.0, &c.1, &c.2).unwrap_or_else(|error| {
                tracing::error!(job = %job.name, %error, "Stored constraint is invalid.");
                Constraint::compile("kairos.invalid-constraint", "EQUALS", "never")
                    .unwrap_or_else(|_| unreachable!())
            })
        })
        .collect()
}

/// Why a queued task can't start.
#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    Unplaceable(placement::Unplaceable),
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::Unplaceable(reason) => reason.fmt(f),
        }
    }
}

/// A task that is not final yet.
#[derive(Debug)]
pub struct OpenTask {
    pub record: TaskRecord,
    /// What the task holds on its worker while it runs.
    pub resources: Resources,
    /// Set by kill, so the task's end counts as killed rather than failed.
    pub kill_requested: bool,
    /// Why it was killed, when not on request (a `replace` policy), for its record.
    pub kill_reason: Option<String>,
    /// The status an async task was completed with (`PUT /task/<id>`) while its process still
    /// ran: the task keeps its slot until the process ends, then ends with this status.
    pub completed: Option<i64>,
}

impl OpenTask {
    pub(super) fn new(record: TaskRecord) -> OpenTask {
        // A running task with a status was completed through the API (see `Core::complete`).
        let completed = (record.state == crate::store::TaskState::Running)
            .then_some(record.exit_code)
            .flatten()
            .map(i64::from);
        OpenTask {
            record,
            resources: Resources::default(),
            kill_requested: false,
            kill_reason: None,
            completed,
        }
    }
}

/// Whether a worker can take tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Active,
    /// Its stream ended; it has until the worker timeout to come back.
    Disconnected,
    /// It did not come back in time; its tasks were retried elsewhere.
    Lost,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Disconnected => "disconnected",
            WorkerState::Lost => "lost",
        }
    }
}

/// A worker: resources it offers, what is promised to tasks, and its liveness.
pub struct Worker {
    pub name: String,
    /// Its identity ([`crate::config::worker_identity`]); empty until a worker expected after a
    /// restart has registered again.
    pub id: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    pub total: Resources,
    pub used: Resources,
    pub state: WorkerState,
    pub last_heartbeat: DateTime<Utc>,
    /// Tasks running on it.
    pub tasks: BTreeSet<TaskId>,
    /// The scheduler's own worker (see [`super::WorkerInfo::local`]).
    pub local: bool,
    /// How to reach it, while it is connected.
    pub(super) link: Option<Arc<dyn WorkerLink>>,
    /// Its current connection, so a stale stream's events are ignored.
    pub(super) connection: u64,
    /// Live output chunks it dropped since it started, as its last heartbeat said.
    pub output_dropped: u64,
    /// The kinds of work it does.
    pub runs: placement::Runs,
    /// Whether it takes new tasks (a paused cluster node keeps its tasks but takes none).
    pub accepting: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("connected", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Whether `connection` is the worker's live one: a backend that registers workers itself
    /// asks this to learn that the engine has given one of its workers up for lost.
    pub fn is_connected_as(&self, connection: u64) -> bool {
        self.link.is_some() && self.connection == connection
    }

    /// A worker known only from its tasks in the store, until it registers.
    pub(super) fn expected(name: &str, now: DateTime<Utc>) -> Worker {
        Worker {
            name: name.to_owned(),
            id: String::new(),
            hostname: name.to_owned(),
            attributes: Vec::new(),
            total: Resources::default(),
            used: Resources::default(),
            state: WorkerState::Disconnected,
            last_heartbeat: now,
            tasks: BTreeSet::new(),
            local: false,
            link: None,
            connection: 0,
            output_dropped: 0,
            runs: placement::Runs::EVERYTHING,
            accepting: true,
        }
    }

    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Whether tasks can be sent to it now.
    pub(super) fn is_connected(&self) -> bool {
        self.link.is_some() && self.state == WorkerState::Active
    }
}

/// Counters for `/metrics`, kept where the events already pass, so each costs a map update.
#[derive(Debug)]
pub struct Metrics {
    pub tasks_started: u64,
    /// Tasks that reached a final state (finished, failed, killed, lost).
    pub tasks_ended: u64,
    pub skipped_runs: u64,
    /// Group commits of the engine's writes, the writes in them, and failed
    /// attempts (each retried).
    pub store_commits: u64,
    pub store_writes: u64,
    pub store_failures: u64,
    /// Requests that would change something, refused (`503`) while the store did not take
    /// writes in time or too many waited for it.
    pub refused_writes: u64,
    pub successes: HashMap<String, u64>,
    pub failures: HashMap<String, u64>,
    /// Tasks handed to each worker (counted at the launch, not at the recorded start).
    pub launched: HashMap<String, u64>,
    /// Tasks ended, by worker (empty for a task that never reached one), then by outcome in
    /// `Outcome::ALL`'s order: counting an end allocates nothing once its worker is known.
    pub ended: HashMap<String, [u64; super::Outcome::ALL.len()]>,
    /// Seconds from each launched task's instant (due time) to its launch.
    pub lag: super::Buckets,
    /// Seconds each successful store commit took.
    pub commit_seconds: super::Buckets,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            tasks_started: 0,
            tasks_ended: 0,
            skipped_runs: 0,
            store_commits: 0,
            store_writes: 0,
            store_failures: 0,
            refused_writes: 0,
            successes: HashMap::new(),
            failures: HashMap::new(),
            launched: HashMap::new(),
            ended: HashMap::new(),
            lag: super::Buckets::new(super::stats::LAG_BOUNDS),
            commit_seconds: super::Buckets::new(super::stats::COMMIT_BOUNDS),
        }
    }
}

impl Metrics {
    pub(super) fn record_success(&mut self, job: &str) {
        *self.successes.entry(job.to_owned()).or_default() += 1;
    }

    pub(super) fn record_failure(&mut self, job: &str) {
        *self.failures.entry(job.to_owned()).or_default() += 1;
    }

    pub(super) fn record_launch(&mut self, worker: &str, lag_ms: i64) {
        match self.launched.get_mut(worker) {
            Some(n) => *n += 1,
            None => {
                self.launched.insert(worker.to_owned(), 1);
            }
        }
        self.lag.observe(lag_ms.max(0) as f64 / 1000.0);
    }

    pub(super) fn record_end(&mut self, worker: &str, outcome: super::Outcome) {
        let slot = super::Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        match self.ended.get_mut(worker) {
            Some(counts) => counts[slot] += 1,
            None => {
                let mut counts = [0; super::Outcome::ALL.len()];
                counts[slot] = 1;
                self.ended.insert(worker.to_owned(), counts);
            }
        }
    }
}

/// Everything the engine owns in memory.
#[derive(Debug, Default)]
pub struct State {
    /// Jobs in creation order.
    pub jobs: IndexMap<String, JobEntry>,
    pub graph: JobGraph,
    /// Open tasks by task id.
    pub tasks: HashMap<TaskId, OpenTask>,
    /// Retries waiting for their due time: task id to job name.
    pub retrying: HashMap<TaskId, String>,
    pub metrics: Metrics,
    /// Workers by name, in the order they first joined.
    pub workers: IndexMap<String, Worker>,
    /// Children enqueued by a fan-out, to be started once the batch is committed.
    pub(super) pending_starts: Vec<String>,
    /// Jobs that may have queued tasks, high priority first, then in creation order. A job is
    /// added whenever a task joins its queue and dropped once a pass finds its queue empty.
    pub(super) queued_jobs: BTreeSet<QueuedJob>,
    /// No job needs less than this of every resource (a lower bound, never raised): once no
    /// worker has this much free, nothing more can start.
    pub(super) min_need: Option<Resources>,
    next_seq: u64,
    /// Since when the scheduler is paused (epoch ms): nothing new starts until it resumes.
    pub paused_since: Option<i64>,
    /// Each enabled scheduled job's next occurrence (epoch ms, name), in time order: what
    /// `/upcoming` merges from without looking at every job.
    pub(super) next_runs: BTreeSet<(i64, String)>,
    /// Set by the store writer while a commit keeps failing.
    pub(super) store_failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests that got no answer within the store timeout, counted by the [`super::Handle`].
    pub(super) request_timeouts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Events that waited for room in the engine's queue, counted by the [`super::Handle`].
    pub(super) queue_full: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Notification deliveries, counted by the delivery task.
    pub notifications: std::sync::Arc<crate::notify::Counters>,
}

/// A job in [`State::queued_jobs`]: (low priority, creation order, name).
pub(super) type QueuedJob = (bool, u64, String);

impl State {
    /// Adds a new job, after every existing one in creation order.
    pub(super) fn add_job(&mut self, mut entry: JobEntry) {
        self.next_seq += 1;
        entry.seq = self.next_seq;
        self.note_need(&entry.job);
        self.jobs.insert(entry.job.name.clone(), entry);
    }

    /// Lowers `min_need` to a job's resources where they are smaller.
    pub(super) fn note_need(&mut self, job: &Job) {
        let need = super::core::job_resources(job);
        self.min_need = Some(match self.min_need {
            Some(min) => Resources {
                cpus: min.cpus.min(need.cpus),
                mem: min.mem.min(need.mem),
                disk: min.disk.min(need.disk),
            },
            None => need,
        });
    }

    /// Records that a job has queued tasks (again, or under a changed priority).
    pub(super) fn mark_queued(&mut self, name: &str) {
        let Some(entry) = self.jobs.get(name) else {
            return;
        };
        let (seq, low) = (entry.seq, !entry.job.high_priority);
        self.queued_jobs.remove(&(!low, seq, name.to_owned()));
        self.queued_jobs.insert((low, seq, name.to_owned()));
    }

    /// Requests answered `503` because no answer came within the store timeout.
    pub fn request_timeouts(&self) -> u64 {
        self.request_timeouts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events that found the engine's queue full and waited for room.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the store is refusing the engine's writes right now (they are being retried).
    pub fn store_failing(&self) -> bool {
        self.store_failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chronos' live state of a job: `N running`, `queued` or `idle`.
    pub fn job_state(&self, name: &str) -> String {
        let Some(entry) = self.jobs.get(name) else {
            return "idle".to_owned();
        };
        if !entry.running.is_empty() {
            format!("{} running", entry.running.len())
        } else if !entry.queue.is_empty() || self.retrying.values().any(|job| job == name) {
            "queued".to_owned()
        } else {
            "idle".to_owned()
        }
    }

    /// Tasks that are open, queued or waiting for a retry.
    pub fn queued_count(&self) -> usize {
        self.jobs.values().map(|e| e.queue.len()).sum::<usize>() + self.retrying.len()
    }

    /// The workers that can take tasks now, as placement sees them.
    pub(super) fn offers(&self) -> Vec<Offer> {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Active && w.accepting)
            .map(|w| Offer {
                worker: w.name.clone(),
                hostname: w.hostname.clone(),
                attributes: placement::attributes_with_hostname(&w.hostname, &w.attributes),
                total: w.total,
                used: w.used,
                runs: w.runs,
            })
            .collect()
    }

    /// The next scheduled runs across every enabled job, in time order (ties by job name): at
    /// most `limit`, none later than `until`. It merges each job's next run, kept in time order
    /// in `next_runs`, with the runs after those it has listed, so it costs about `limit`
    /// schedule steps however many jobs there are.
    pub fn upcoming(&self, until: Option<DateTime<Utc>>, limit: usize) -> Vec<(DateTime<Utc>, &str)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let until_ms = until.map_or(i64::MAX, |t| t.timestamp_millis());
        let end_of_time = DateTime::<Utc>::MAX_UTC.timestamp_millis();
        let mut runs = Vec::with_capacity(limit.min(1024));
        let mut listed = self.next_runs.iter().peekable();
        // Runs after a listed one: (instant, name) in a min-heap, and each job's schedule as
        // far as it has been stepped, by name.
        let mut later: BinaryHeap<Reverse<(i64, &str)>> = BinaryHeap::new();
        let mut stepped: HashMap<&str, Schedule> = HashMap::new();
        while runs.len() < limit {
            let next_listed = listed.peek().map(|(at, name)| (*at, name.as_str()));
            let next_later = later.peek().map(|Reverse(run)| *run);
            let (at, name, from_list) = match (next_listed, next_later) {
                (Some(a), Some(b)) if b < a => (b.0, b.1, false),
                (Some(a), _) => (a.0, a.1, true),
                (None, Some(b)) => (b.0, b.1, false),
                (None, None) => break,
            };
            if at > until_ms || at >= end_of_time {
                break;
            }
            if from_list {
                listed.next();
            } else {
                later.pop();
            }
            let Some(when) = DateTime::from_timestamp_millis(at) else {
                break;
            };
            runs.push((when, name));
            let schedule = match stepped.remove(name) {
                Some(schedule) => schedule,
                None => match self.jobs.get(name).and_then(|e| e.schedule.as_ref()) {
                    Some(schedule) => schedule.clone(),
                    None => continue,
                },
            };
            let schedule = schedule.advance();
            if let Some(next) = schedule.next_run() {
                later.push(Reverse((next.timestamp_millis(), name)));
                stepped.insert(name, schedule);
            }
        }
        runs
    }

    pub fn running_count(&self) -> usize {
        self.jobs.values().map(|e| e.running.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searchable_text_keeps_each_field_apart() {
        let s = Searchable::from_parts("Nightly-ETL", "Run \0 ÉTAPE", "Ops@Example.com");
        assert_eq!(s.name(), "nightly-etl");
        assert_eq!(s.command(), "run \0 étape");
        assert_eq!(s.all(), "nightly-etl\0run \0 étape\0ops@example.com");
    }
}
