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

use crate::job::Job;

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
    pub id: String,
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
    /// Insert or replace a task record.
    PutTask(TaskRecord),
    /// Claims the scheduled run of a job at an instant for the task `task_id`. If the run was
    /// claimed before, the claim is lost: every later `PutTask` of that task in the batch is
    /// skipped and the commit reports the task, so a run is recorded by one scheduler only.
    ClaimRun {
        job: String,
        due_ms: i64,
        task_id: String,
    },
    /// Every task whose `started_ms` is at most this (epoch ms) has been handed to its worker.
    /// Only ever raised. A task recorded as running with a later start was recorded ahead of
    /// its instant and never launched, so a scheduler that starts afterwards runs it rather than
    /// counting it lost.
    LaunchedThrough(i64),
}

impl Write {
    /// The job this write belongs to, if any.
    fn job(&self) -> Option<&str> {
        match self {
            Write::PutJob(stored) => Some(&stored.job.name),
            Write::DeleteJob(name) => Some(name),
            Write::PutTask(task) => Some(&task.job),
            Write::ClaimRun { job, .. } => Some(job),
            Write::LaunchedThrough(_) => None,
        }
    }
}

/// Drops the writes of a batch that later writes in it make pointless: a job or task put again
/// later, anything of a job that is deleted later, and every launch mark but the highest. Then
/// orders the rest deletes, claims, jobs, tasks, mark (keeping the order within each kind), so the
/// SQL stores can write each kind with a few multi-row statements. Committing the result has the same effect as the batch:
/// - every write of a job that survives a delete of it came after the delete anyway;
/// - a claim still comes before the task it guards;
/// - jobs and tasks are independent rows.
///
/// The engine records a task several times on its way (queued, running, ended) and a job after
/// each run; when those land in one group commit, only the last of each needs writing.
pub fn coalesce(batch: &[Write]) -> Vec<&Write> {
    let mut deleted = std::collections::HashSet::new();
    let mut jobs = std::collections::HashSet::new();
    let mut tasks = std::collections::HashSet::new();
    let highest_mark = batch
        .iter()
        .filter_map(|w| match w {
            Write::LaunchedThrough(ms) => Some(*ms),
            _ => None,
        })
        .max();
    let mut mark_kept = false;
    let mut kept: Vec<&Write> = Vec::with_capacity(batch.len());
    // Walking backwards, everything already seen happens later than the write at hand.
    for write in batch.iter().rev() {
        if write.job().is_some_and(|job| deleted.contains(job)) {
            continue;
        }
        let keep = match write {
            Write::DeleteJob(name) => deleted.insert(name.as_str()),
            Write::PutJob(stored) => jobs.insert(stored.job.name.as_str()),
            Write::PutTask(task) => tasks.insert(task.id.as_str()),
            Write::ClaimRun { .. } => true,
            Write::LaunchedThrough(ms) => {
                let first = !mark_kept && Some(*ms) == highest_mark;
                mark_kept |= first;
                first
            }
        };
        if keep {
            kept.push(write);
        }
    }
    kept.reverse();
    kept.sort_by_key(|write| match write {
        Write::DeleteJob(_) => 0,
        Write::ClaimRun { .. } => 1,
        Write::PutJob(_) => 2,
        Write::PutTask(_) => 3,
        Write::LaunchedThrough(_) => 4,
    });
    kept
}

/// The tasks whose [`Write::ClaimRun`] was lost to another scheduler in a commit.
pub type LostClaims = Vec<String>;

/// The durable store. Implementations must make [`Store::commit`] atomic and durable before it returns.
pub trait Store: Send + Sync + 'static {
    /// Applies every write of the batch, or none of them, with the effect of applying them in order. A batch can be committed again after a
    /// failure: every write is idempotent.
    fn commit(&self, batch: &[Write]) -> impl Future<Output = Result<LostClaims, Error>> + Send;
    /// Every job, in the order they were first created.
    fn load_jobs(&self) -> impl Future<Output = Result<Vec<StoredJob>, Error>> + Send;
    /// Every task that is not final (queued, running or waiting).
    fn load_open_tasks(&self) -> impl Future<Output = Result<Vec<TaskRecord>, Error>> + Send;
    /// The highest [`Write::LaunchedThrough`] committed so far (0 when none was).
    fn launched_through(&self) -> impl Future<Output = Result<i64, Error>> + Send;
    fn task(&self, id: &str) -> impl Future<Output = Result<Option<TaskRecord>, Error>> + Send;
    /// The newest tasks of a job, newest first.
    fn job_tasks(&self, job: &str, limit: u32)
    -> impl Future<Output = Result<Vec<TaskRecord>, Error>> + Send;
    /// Durations (ms) of each job's most recent successful tasks, at most `per_job` per job.
    fn recent_durations(
        &self,
        per_job: u32,
    ) -> impl Future<Output = Result<Vec<(String, f64)>, Error>> + Send;
    /// Adds to a task's processed-elements count; false when the task is unknown. The count
    /// saturates at `i64::MAX`, and a negative `elements` adds nothing (the engine refuses those).
    fn add_progress(&self, task_id: &str, elements: i64) -> impl Future<Output = Result<bool, Error>> + Send;
    /// Deletes final tasks beyond the newest `keep_per_job` of each job; returns how many went.
    fn prune_history(&self, keep_per_job: u32) -> impl Future<Output = Result<u64, Error>> + Send;
    /// Deletes the claims of runs due before `before_ms`, in short transactions; returns how many
    /// went. One claim is written per scheduled run, so without this they would grow forever.
    fn prune_claims(&self, before_ms: i64) -> impl Future<Output = Result<u64, Error>> + Send;
}
