//! Durable state behind one trait: job definitions with their dependency progress, and task records.
//!
//! The engine is the only writer. Every write goes through [`Store::commit`], which applies a batch
//! atomically; the engine acknowledges a request only after the batch holding its changes has
//! committed, and a failed commit leaves nothing half-done.

mod memory;
mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use std::future::Future;

pub use memory::MemoryStore;
pub use postgres::{LeaderGuard, PostgresStore};
pub use sqlite::SqliteStore;

use crate::job::{Job, TaskId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store at {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the store failed during {operation}: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored row for {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    /// The commit of a leader whose term ended: another server leads now.
    #[error("this server's leadership (term {epoch}) has ended; another server leads now")]
    Fenced { epoch: i64 },
}

/// A job as stored: its definition plus the parents that have succeeded since its last run.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    pub job: Job,
    pub satisfied: Vec<String>,
}

/// Where a task is in its life. `Queued`, `Running` and `Waiting` are open; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Accepted and waiting to start (a retry waits for its due time).
    Queued,
    /// The process runs.
    Running,
    /// An async task whose process ended; it waits for `PUT /task/<id>`.
    Waiting,
    Finished,
    Failed,
    Killed,
    /// The worker went away while the task ran (for example the server restarted).
    Lost,
    /// A scheduled occurrence that could not start within its job's `epsilon`: it never ran.
    Skipped,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Waiting => "waiting",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
            TaskState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        Some(match text {
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "waiting" => TaskState::Waiting,
            "finished" => TaskState::Finished,
            "failed" => TaskState::Failed,
            "killed" => TaskState::Killed,
            "lost" => TaskState::Lost,
            "skipped" => TaskState::Skipped,
            _ => return None,
        })
    }

    pub fn is_open(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running | TaskState::Waiting)
    }
}

/// One task: one attempt to run a job.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The Chronos task id.
    pub id: TaskId,
    pub job: String,
    pub attempt: u32,
    /// The instant the task was due (epoch ms).
    pub due_ms: i64,
    /// Arguments appended to the command for this task (manual `?arguments=` or the job's own).
    pub arguments: String,
    pub state: TaskState,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub exit_code: Option<i32>,
    /// Why the task ended the way it did, for people.
    pub message: String,
    pub stdout: String,
    pub stderr: String,
    pub elements_processed: i64,
    pub worker: String,
    /// A scheduled occurrence (claimed, bound by `epsilon`), rather than a manual run, a
    /// dependency fan-out or a retry.
    pub scheduled: bool,
}

/// One change in a [`Store::commit`] batch.
// Batches are short-lived and small; boxing every task record would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a job; a new job goes after every existing one in load order.
    PutJob(Box<StoredJob>),
    /// Delete a job and its task history.
    DeleteJob(String),
    /// Insert or replace a task record. Replacing keeps the stored `elements_processed`: only
    /// [`Write::AddProgress`] changes it once the task exists.
    PutTask(TaskRecord),
    /// Claims the scheduled run of a job at an instant for the task `task_id`. If the run was
    /// claimed before, the claim is lost: every later `PutTask` of that task in the batch is
    /// skipped and the commit reports the task, so a run is recorded by one scheduler only.
    ClaimRun {
        job: String,
        due_ms: i64,
        task_id: TaskId,
    },
    /// Every task whose `started_ms` is at most this (epoch ms) has been handed to its worker.
    /// Only ever raised. A task recorded as running with a later start was recorded ahead of
    /// its instant and never launched, so a scheduler that starts afterwards runs it rather than
    /// counting it lost.
    LaunchedThrough(i64),
    /// Adds `elements` to the task's processed-elements count, saturating at `i64::MAX`; a
    /// negative `elements` adds nothing (the engine refuses those). A task that does not exist
    /// at this point of the batch is left alone and reported in
    /// [`CommitReport::unknown_progress`]; the rest of the batch is applied.
    ///
    /// The one write that is not idempotent: a batch committed again after a commit whose outcome
    /// was unknown (a connection lost during `COMMIT`) counts its progress twice.
    AddProgress { task_id: TaskId, elements: i64 },
    /// Deletes those of these tasks that are final; open ones stay. Pruning writes at most
    /// [`PRUNE_CHUNK`] ids per commit, so each transaction is short.
    PruneTasks(Vec<TaskId>),
    /// Deletes at most `limit` claims of runs due before `before_ms`. The limit keeps the
    /// transaction short, so group commits never wait long behind pruning.
    PruneClaims { before_ms: i64, limit: u32 },
    /// Inserts or replaces an API token (by name); only its hash is stored.
    PutToken(StoredToken),
    /// Deletes an API token by name.
    DeleteToken(String),
    /// Appends an entry to the audit log: it commits with the change it records.
    Audit(Box<AuditEntry>),
    /// Deletes at most `limit` audit entries older than `before_ms`.
    PruneAudit { before_ms: i64, limit: u32 },
    /// Pauses the scheduler as of this instant (epoch ms), or resumes it (`None`).
    SetPause(Option<i64>),
    /// Adds a notice to the notification outbox, pending, unless one with its id is there
    /// already (made by another leader, or delivered): then it is left alone and reported in
    /// [`CommitReport::known_notices`], so the same event is never sent twice.
    PutNotice(Box<StoredNotice>),
    /// Marks a notice done: delivered, or given up. A notice pruned meanwhile is left alone.
    NoticeDone { id: String, delivered: bool, at_ms: i64 },
    /// Deletes at most `limit` notices made before `before_ms`, done or not.
    PruneNotices { before_ms: i64, limit: u32 },
}

/// A row of the notification outbox: one event for one sink. The store keeps the body as the
/// `notify` module wrote it and knows only its id, its age and whether it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotice {
    pub id: String,
    pub created_ms: i64,
    pub body: String,
}

/// An API token as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub name: String,
    /// `read`, `operate` or `admin`.
    pub role: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// One change, who made it, from where, and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub principal: String,
    pub role: String,
    /// The client's address.
    pub source: String,
    pub method: String,
    pub route: String,
    pub job: Option<String>,
    /// `ok`, or the refusal's message.
    pub outcome: String,
}

/// Which audit entries to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub job: Option<String>,
    pub principal: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: u32,
}

impl Write {
    /// The job this write belongs to, if it names one.
    fn job(&self) -> Option<&str> {
        match self {
            Write::PutJob(stored) => Some(&stored.job.name),
            Write::DeleteJob(name) => Some(name),
            Write::PutTask(task) => Some(&task.job),
            Write::ClaimRun { job, .. } => Some(job),
            Write::LaunchedThrough(_)
            | Write::AddProgress { .. }
            | Write::PruneTasks(_)
            | Write::PruneClaims { .. }
            | Write::PutToken(_)
            | Write::DeleteToken(_)
            | Write::Audit(_)
            | Write::PruneAudit { .. }
            | Write::SetPause(_) => None,
            Write::PutNotice(_) | Write::NoticeDone { .. } | Write::PruneNotices { .. } => None,
        }
    }

    /// Where the write goes in a coalesced run: deletes, claims, jobs, tasks, progress, mark.
    fn rank(&self) -> u8 {
        match self {
            Write::DeleteJob(_)
            | Write::PruneTasks(_)
            | Write::PruneClaims { .. }
            | Write::PruneAudit { .. }
            | Write::PruneNotices { .. } => 0,
            Write::ClaimRun { .. } => 1,
            Write::PutJob(_) => 2,
            Write::PutTask(_) => 3,
            Write::AddProgress { .. } => 4,
            Write::LaunchedThrough(_) => 5,
            // Token changes keep their order among themselves (the sort is stable).
            Write::PutToken(_) | Write::DeleteToken(_) | Write::SetPause(_) => 6,
            Write::Audit(_) => 7,
            // A notice's put and its done keep their order (the sort is stable).
            Write::PutNotice(_) | Write::NoticeDone { .. } => 8,
        }
    }
}

/// Drops the writes of a batch that later writes make pointless and orders the rest by kind, so
/// the SQL stores can write each kind with a few multi-row statements. It is [`coalesce_runs`]
/// flattened; committing the result has the same effect as committing the batch in order.
pub fn coalesce(batch: &[Write]) -> Vec<&Write> {
    coalesce_runs(batch).into_iter().flatten().collect()
}

/// Coalesces a batch as consecutive runs, each reordered on its own. A new run starts at a write
/// whose effect depends on its order against an [`Write::AddProgress`] before it (a `PutTask` of
/// the same task, which may create it; any `DeleteJob`, whose tasks the progress may name), and
/// each prune write is a run of its own. Batches without progress or pruning, all of the engine's
/// group commits until now, are one run.
///
/// Within a run it drops a job or task put again later, anything of a job deleted later, and
/// every launch mark but the highest (across runs), then orders the rest deletes, claims, jobs,
/// tasks, progress, mark, keeping the order within each kind:
/// - every write of a job that survives a delete of it came after the delete anyway;
/// - a claim still comes before the task it guards;
/// - jobs and tasks are independent rows, and a task's progress comes after every put of it;
/// - progress writes are all kept (the SQL commit sums those of one task).
///
/// The engine records a task several times on its way (queued, running, ended) and a job after
/// each run; when those land in one group commit, only the last of each needs writing.
pub fn coalesce_runs(batch: &[Write]) -> Vec<Vec<&Write>> {
    // The last of the highest marks is the one kept.
    let kept_mark = batch
        .iter()
        .enumerate()
        .filter_map(|(index, w)| match w {
            Write::LaunchedThrough(ms) => Some((*ms, index)),
            _ => None,
        })
        .max()
        .map(|(_, index)| index);
    let mut runs = Vec::new();
    let mut start = 0;
    let mut progressed = std::collections::HashSet::new();
    for (index, write) in batch.iter().enumerate() {
        let alone = matches!(
            write,
            Write::PruneTasks(_)
                | Write::PruneClaims { .. }
                | Write::PruneAudit { .. }
                | Write::PruneNotices { .. }
        );
        let ordered = match write {
            Write::PutTask(task) => progressed.contains(task.id.as_str()),
            Write::DeleteJob(_) => !progressed.is_empty(),
            _ => false,
        };
        if (alone || ordered) && start < index {
            runs.push(coalesce_run(batch, start..index, kept_mark));
            start = index;
            progressed.clear();
        }
        if let Write::AddProgress { task_id, .. } = write {
            progressed.insert(task_id.as_str());
        }
        if alone {
            runs.push(vec![write]);
            start = index + 1;
        }
    }
    if start < batch.len() {
        runs.push(coalesce_run(batch, start..batch.len(), kept_mark));
    }
    runs
}

/// Coalesces one run of [`coalesce_runs`]; `kept_mark` is the index of the one mark to keep.
fn coalesce_run(batch: &[Write], run: std::ops::Range<usize>, kept_mark: Option<usize>) -> Vec<&Write> {
    let mut deleted = std::collections::HashSet::new();
    let mut jobs = std::collections::HashSet::new();
    let mut tasks = std::collections::HashSet::new();
    let mut kept: Vec<&Write> = Vec::with_capacity(run.len());
    // Walking backwards, everything already seen happens later than the write at hand.
    for index in run.rev() {
        let write = &batch[index];
        if write.job().is_some_and(|job| deleted.contains(job)) {
            continue;
        }
        let keep = match write {
            Write::DeleteJob(name) => deleted.insert(name.as_str()),
            Write::PutJob(stored) => jobs.insert(stored.job.name.as_str()),
            Write::PutTask(task) => tasks.insert(task.id.as_str()),
            Write::LaunchedThrough(_) => kept_mark == Some(index),
            Write::ClaimRun { .. }
            | Write::AddProgress { .. }
            | Write::PruneTasks(_)
            | Write::PruneClaims { .. }
            | Write::PutToken(_)
            | Write::DeleteToken(_)
            | Write::Audit(_)
            | Write::PruneAudit { .. }
            | Write::SetPause(_) => true,
            Write::PutNotice(_) | Write::NoticeDone { .. } | Write::PruneNotices { .. } => true,
        };
        if keep {
            kept.push(write);
        }
    }
    kept.reverse();
    kept.sort_by_key(|write| write.rank());
    kept
}

/// What a commit reports besides success: the writes of the batch that found what they needed
/// missing and were skipped (the rest of the batch was applied), and what pruning removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// The tasks whose [`Write::ClaimRun`] was lost to another scheduler, in batch order.
    pub lost_claims: Vec<TaskId>,
    /// The tasks named by a [`Write::AddProgress`] that did not exist when it applied, each once,
    /// in batch order.
    pub unknown_progress: Vec<TaskId>,
    /// Rows deleted by [`Write::PruneTasks`] and [`Write::PruneClaims`].
    pub pruned: u64,
    /// The notices of [`Write::PutNotice`] that were in the outbox already, in batch order.
    pub known_notices: Vec<String>,
}

/// Ids per [`Write::PruneTasks`] and claims per [`Write::PruneClaims`]: each prune transaction
/// is short, so it never holds the one writer long (see docs/performance.md).
pub const PRUNE_CHUNK: u32 = 500;

/// Deletes those of `ids` that are final, [`PRUNE_CHUNK`] per commit; returns how many went.
async fn prune_tasks(store: &(impl Store + ?Sized), ids: Vec<TaskId>) -> Result<u64, Error> {
    let mut pruned = 0;
    for chunk in ids.chunks(PRUNE_CHUNK as usize) {
        pruned += store.commit(&[Write::PruneTasks(chunk.to_vec())]).await?.pruned;
    }
    Ok(pruned)
}

/// The durable store. Implementations must make [`Store::commit`] atomic and durable before it
/// returns. It is the only way anything is written: the other write methods are conveniences
/// that commit writes.
pub trait Store: Send + Sync + 'static {
    /// Applies every write of the batch, or none of them, with the effect of applying them in
    /// order, and reports the writes that were skipped (see [`CommitReport`]). A batch can be
    /// committed again after a failure: every write but [`Write::AddProgress`] is idempotent.
    fn commit(&self, batch: &[Write]) -> impl Future<Output = Result<CommitReport, Error>> + Send;
    /// [`Store::commit`] of one group of writes that may be committed more than once: every
    /// attempt with the same `group` is the same claimant of its [`Write::ClaimRun`]s. When a
    /// commit's outcome is unknown (the connection dropped during `COMMIT`), committing the batch
    /// again finds its own claims, where another group's or server's claim is still lost; so
    /// the retry reconciles the outcome instead of forgetting runs it recorded. A plain commit
    /// is a group of its own. Group numbers are per store value (per leadership term).
    fn commit_group(
        &self,
        batch: &[Write],
        group: u64,
    ) -> impl Future<Output = Result<CommitReport, Error>> + Send {
        let _ = group;
        self.commit(batch)
    }
    /// Every job, in the order they were first created.
    fn load_jobs(&self) -> impl Future<Output = Result<Vec<StoredJob>, Error>> + Send;
    /// Every task that is not final (queued, running or waiting).
    fn load_open_tasks(&self) -> impl Future<Output = Result<Vec<TaskRecord>, Error>> + Send;
    /// Every API token, by name.
    fn load_tokens(&self) -> impl Future<Output = Result<Vec<StoredToken>, Error>> + Send;
    /// Audit entries matching the query, newest first.
    fn audit(&self, query: &AuditQuery) -> impl Future<Output = Result<Vec<AuditEntry>, Error>> + Send;
    /// The highest [`Write::LaunchedThrough`] committed so far (0 when none was).
    fn launched_through(&self) -> impl Future<Output = Result<i64, Error>> + Send;
    /// Since when the scheduler is paused (epoch ms), or `None` while it runs.
    fn paused_since(&self) -> impl Future<Output = Result<Option<i64>, Error>> + Send;
    fn task(&self, id: &TaskId) -> impl Future<Output = Result<Option<TaskRecord>, Error>> + Send;
    /// The newest tasks of a job, newest first.
    fn job_tasks(&self, job: &str, limit: u32)
    -> impl Future<Output = Result<Vec<TaskRecord>, Error>> + Send;
    /// Notices not yet done, oldest first, at most `limit`.
    fn pending_notices(&self, limit: u32) -> impl Future<Output = Result<Vec<StoredNotice>, Error>> + Send;
    /// Durations (ms) of each job's most recent successful tasks, at most `per_job` per job.
    fn recent_durations(
        &self,
        per_job: u32,
    ) -> impl Future<Output = Result<Vec<(String, f64)>, Error>> + Send;
    /// Commits one [`Write::AddProgress`] on its own; false when the task is unknown. (The engine
    /// puts the write in its group commits instead, ordered after the writes before it.)
    fn add_progress(
        &self,
        task_id: &TaskId,
        elements: i64,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        async move {
            let progress = Write::AddProgress {
                task_id: task_id.clone(),
                elements,
            };
            Ok(self.commit(&[progress]).await?.unknown_progress.is_empty())
        }
    }
    /// Deletes final tasks beyond the newest `keep_per_job` of each job; returns how many went.
    /// Finding them is a read; the deletes are [`Write::PruneTasks`] commits of [`PRUNE_CHUNK`].
    fn prune_history(&self, keep_per_job: u32) -> impl Future<Output = Result<u64, Error>> + Send;
    /// Deletes the claims of runs due before `before_ms` as [`Write::PruneClaims`] commits of
    /// [`PRUNE_CHUNK`]; returns how many went. One claim is written per scheduled run, so
    /// without this they would grow forever.
    fn prune_claims(&self, before_ms: i64) -> impl Future<Output = Result<u64, Error>> + Send {
        async move {
            let mut pruned = 0;
            loop {
                let prune = Write::PruneClaims {
                    before_ms,
                    limit: PRUNE_CHUNK,
                };
                let went = self.commit(&[prune]).await?.pruned;
                pruned += went;
                if went < u64::from(PRUNE_CHUNK) {
                    return Ok(pruned);
                }
            }
        }
    }
}
