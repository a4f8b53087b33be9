//! An in-memory [`Store`] for unit tests of the engine: the same contract as SQLite, no I/O.

use std::sync::Mutex;

use indexmap::IndexMap;

use super::{Error, LostClaims, Store, StoredJob, TaskRecord, Write};

/// Jobs in creation order and tasks by id, behind one lock held only for plain map updates.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: IndexMap<String, StoredJob>,
    tasks: IndexMap<String, TaskRecord>,
    claims: std::collections::HashSet<(String, i64)>,
    launched_through: i64,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock can only come from a bug in this file; keep serving.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }
}

impl Store for MemoryStore {
    async fn commit(&self, batch: &[Write]) -> Result<LostClaims, Error> {
        self.with(|inner| {
            let mut lost = LostClaims::new();
            for write in batch {
                match write {
                    Write::PutJob(stored) => {
                        inner.jobs.insert(stored.job.name.clone(), (**stored).clone());
                    }
                    Write::ClaimRun { job, due_ms, task_id } => {
                        if !inner.claims.insert((job.clone(), *due_ms)) {
                            lost.push(task_id.clone());
                        }
                    }
                    Write::DeleteJob(name) => {
                        inner.claims.retain(|(job, _)| job != name);
                        inner.jobs.shift_remove(name);
                        inner.tasks.retain(|_, t| t.job != *name);
                    }
                    Write::LaunchedThrough(ms) => {
                        inner.launched_through = inner.launched_through.max(*ms);
                    }
                    Write::PutTask(task) if lost.contains(&task.id) => {}
                    Write::PutTask(task) => {
                        let elements = inner
                            .tasks
                            .get(&task.id)
                            .map_or(task.elements_processed, |t| t.elements_processed);
                        inner.tasks.insert(
                            task.id.clone(),
                            TaskRecord {
                                elements_processed: elements,
                                ..task.clone()
                            },
                        );
                    }
                }
            }
            Ok(lost)
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

    async fn launched_through(&self) -> Result<i64, Error> {
        Ok(self.with(|inner| inner.launched_through))
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, Error> {
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

    async fn add_progress(&self, task_id: &str, elements: i64) -> Result<bool, Error> {
        Ok(self.with(|inner| match inner.tasks.get_mut(task_id) {
            Some(t) => {
                t.elements_processed = t.elements_processed.saturating_add(elements.max(0));
                true
            }
            None => false,
        }))
    }

    async fn prune_claims(&self, before_ms: i64) -> Result<u64, Error> {
        Ok(self.with(|inner| {
            let before = inner.claims.len();
            inner.claims.retain(|(_, due_ms)| *due_ms >= before_ms);
            (before - inner.claims.len()) as u64
        }))
    }

    async fn prune_history(&self, keep_per_job: u32) -> Result<u64, Error> {
        Ok(self.with(|inner| {
            let mut seen: IndexMap<String, u32> = IndexMap::new();
            let mut doomed = Vec::new();
            let mut ordered: Vec<&TaskRecord> = inner.tasks.values().filter(|t| !t.state.is_open()).collect();
            ordered.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
            for t in ordered {
                let n = seen.entry(t.job.clone()).or_default();
                *n += 1;
                if *n > keep_per_job {
                    doomed.push(t.id.clone());
                }
            }
            for id in &doomed {
                inner.tasks.shift_remove(id);
            }
            doomed.len() as u64
        }))
    }
}
