//! An in-memory [`Store`] for unit tests of the engine: the same contract as SQLite, no I/O.

use std::sync::Mutex;

use indexmap::IndexMap;

use super::{
    AuditEntry, AuditQuery, CommitReport, Error, Store, StoredJob, StoredNotice, StoredToken, TaskRecord,
    Write,
};
use crate::job::TaskId;

/// Jobs in creation order and tasks by id, behind one lock held only for plain map updates.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: IndexMap<String, StoredJob>,
    tasks: IndexMap<TaskId, TaskRecord>,
    claims: std::collections::HashSet<(String, i64)>,
    launched_through: i64,
    paused_since: Option<i64>,
    tokens: std::collections::BTreeMap<String, StoredToken>,
    audit: Vec<AuditEntry>,
    /// The outbox by id, in insertion order, each with whether it is done.
    notices: IndexMap<String, (StoredNotice, bool)>,
}

impl Inner {
    fn apply(&mut self, write: &Write, report: &mut CommitReport) {
        match write {
            Write::PutJob(stored) => {
                self.jobs.insert(stored.job.name.clone(), (**stored).clone());
            }
            Write::ClaimRun { job, due_ms, task_id } => {
                if !self.claims.insert((job.clone(), *due_ms)) {
                    report.lost_claims.push(task_id.clone());
                }
            }
            Write::DeleteJob(name) => {
                self.claims.retain(|(job, _)| job != name);
                self.jobs.shift_remove(name);
                self.tasks.retain(|_, t| t.job != *name);
            }
            Write::PutToken(token) => {
                self.tokens.insert(token.name.clone(), token.clone());
            }
            Write::DeleteToken(name) => {
                self.tokens.remove(name);
            }
            Write::Audit(entry) => self.audit.push((**entry).clone()),
            Write::PruneAudit { before_ms, limit } => {
                let mut left = *limit;
                self.audit.retain(|e| {
                    let doomed = e.at_ms < *before_ms && left > 0;
                    left -= u32::from(doomed);
                    !doomed
                });
                report.pruned += u64::from(limit - left);
            }
            Write::SetPause(since) => self.paused_since = *since,
            Write::PutNotice(notice) => {
                if self.notices.contains_key(&notice.id) {
                    report.known_notices.push(notice.id.clone());
                } else {
                    self.notices
                        .insert(notice.id.clone(), ((**notice).clone(), false));
                }
            }
            Write::NoticeDone { id, .. } => {
                if let Some((_, done)) = self.notices.get_mut(id) {
                    *done = true;
                }
            }
            Write::PruneNotices { before_ms, limit } => {
                let mut left = *limit;
                self.notices.retain(|_, (n, _)| {
                    let doomed = n.created_ms < *before_ms && left > 0;
                    left -= u32::from(doomed);
                    !doomed
                });
                report.pruned += u64::from(limit - left);
            }
            Write::LaunchedThrough(ms) => {
                self.launched_through = self.launched_through.max(*ms);
            }
            Write::PutTask(task) if report.lost_claims.contains(&task.id) => {}
            Write::PutTask(task) => {
                let elements = self
                    .tasks
                    .get(&task.id)
                    .map_or(task.elements_processed, |t| t.elements_processed);
                self.tasks.insert(
                    task.id.clone(),
                    TaskRecord {
                        elements_processed: elements,
                        ..task.clone()
                    },
                );
            }
            Write::AddProgress { task_id, elements } => match self.tasks.get_mut(task_id) {
                Some(t) => t.elements_processed = t.elements_processed.saturating_add((*elements).max(0)),
                None if report.unknown_progress.contains(task_id) => {}
                None => report.unknown_progress.push(task_id.clone()),
            },
            Write::PruneTasks(ids) => {
                for id in ids {
                    if self.tasks.get(id).is_some_and(|t| !t.state.is_open()) {
                        self.tasks.shift_remove(id);
                        report.pruned += 1;
                    }
                }
            }
            Write::PruneClaims { before_ms, limit } => {
                let mut left = *limit;
                self.claims.retain(|(_, due_ms)| {
                    let doomed = *due_ms < *before_ms && left > 0;
                    left -= u32::from(doomed);
                    !doomed
                });
                report.pruned += u64::from(limit - left);
            }
        }
    }
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock can only come from a bug in this file; keep serving.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }
}

impl Store for MemoryStore {
    async fn commit(&self, batch: &[Write]) -> Result<CommitReport, Error> {
        // The reference semantics: every write applied in order, nothing coalesced.
        self.with(|inner| {
            let mut report = CommitReport::default();
            for write in batch {
                inner.apply(write, &mut report);
            }
            Ok(report)
        })
    }

    async fn load_jobs(&self) -> Result<Vec<StoredJob>, Error> {
        Ok(self.with(|inner| inner.jobs.values().cloned().collect()))
    }

    async fn load_open_tasks(&self) -> Result<Vec<TaskRecord>, Error> {
        Ok(self.with(|inner| {
            inner
                .tasks
                .values()
                .filter(|t| t.state.is_open())
                .cloned()
                .collect()
        }))
    }

    async fn load_tokens(&self) -> Result<Vec<StoredToken>, Error> {
        Ok(self.with(|inner| inner.tokens.values().cloned().collect()))
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, Error> {
        Ok(self.with(|inner| {
            inner
                .audit
                .iter()
                .rev()
                .filter(|e| q.job.as_ref().is_none_or(|j| e.job.as_ref() == Some(j)))
                .filter(|e| q.principal.as_ref().is_none_or(|p| e.principal == *p))
                .filter(|e| q.since_ms.is_none_or(|s| e.at_ms >= s))
                .take(q.limit as usize)
                .cloned()
                .collect()
        }))
    }

    async fn pending_notices(&self, limit: u32) -> Result<Vec<StoredNotice>, Error> {
        Ok(self.with(|inner| {
            let mut pending: Vec<StoredNotice> = inner
                .notices
                .values()
                .filter(|(_, done)| !done)
                .map(|(n, _)| n.clone())
                .collect();
            pending.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            pending.truncate(limit as usize);
            pending
        }))
    }

    async fn launched_through(&self) -> Result<i64, Error> {
        Ok(self.with(|inner| inner.launched_through))
    }

    async fn paused_since(&self) -> Result<Option<i64>, Error> {
        Ok(self.with(|inner| inner.paused_since))
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, Error> {
        Ok(self.with(|inner| inner.tasks.get(id).cloned()))
    }

    async fn job_tasks(&self, job: &str, limit: u32) -> Result<Vec<TaskRecord>, Error> {
        Ok(self.with(|inner| {
            let mut tasks: Vec<TaskRecord> = inner.tasks.values().filter(|t| t.job == job).cloned().collect();
            tasks.reverse();
            tasks.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
            tasks.truncate(limit as usize);
            tasks
        }))
    }

    async fn recent_durations(&self, per_job: u32) -> Result<Vec<(String, f64)>, Error> {
        Ok(self.with(|inner| {
            let mut by_job: IndexMap<String, Vec<(i64, f64)>> = IndexMap::new();
            for t in inner.tasks.values() {
                if let (super::TaskState::Finished, Some(s), Some(f)) = (t.state, t.started_ms, t.finished_ms)
                {
                    by_job.entry(t.job.clone()).or_default().push((f, (f - s) as f64));
                }
            }
            let mut out = Vec::new();
            for (job, mut durations) in by_job {
                durations.sort_by_key(|d| std::cmp::Reverse(d.0));
                durations.truncate(per_job as usize);
                out.extend(durations.into_iter().rev().map(|(_, d)| (job.clone(), d)));
            }
            out
        }))
    }

    async fn prune_history(&self, keep_per_job: u32) -> Result<u64, Error> {
        let doomed = self.with(|inner| {
            let mut seen: IndexMap<&str, u32> = IndexMap::new();
            let mut doomed = Vec::new();
            let mut ordered: Vec<&TaskRecord> = inner.tasks.values().filter(|t| !t.state.is_open()).collect();
            ordered.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
            for t in ordered {
                let n = seen.entry(t.job.as_str()).or_default();
                *n += 1;
                if *n > keep_per_job {
                    doomed.push(t.id.clone());
                }
            }
            doomed
        });
        super::prune_tasks(self, doomed).await
    }
}
