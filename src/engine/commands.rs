//! What clients ask of the engine: create, update and delete jobs, run, mark success, kill,
//! purge, complete async tasks and report progress. Each answers once its writes are committed.

use super::core::{Command, Core, Timer, Trigger, keep_progress};
use super::ends::End;
use super::state::JobEntry;
use super::{Error, Provided};
use crate::clock;
use crate::graph;
use crate::job::{Job, TaskId};
use crate::schedule::Schedule;
use crate::store::{StoredJob, TaskState, Write};

impl Core {
    pub(super) fn upsert(&mut self, mut job: Job, provided: Provided) -> Result<(), Error> {
        let now = self.now;
        let name = job.name.clone();
        if let Some(parents) = &job.parents {
            self.state
                .graph
                .check_parents(&name, parents)
                .map_err(|errors| Error::Graph { errors })?;
        }
        // An empty start means "now"; store the instant so a restart doesn't move it. (A cron
        // expression is kept as given; its cursor is set below.)
        if let Some(text) = &job.schedule
            && !crate::schedule::is_cron(text)
        {
            let parts: Vec<&str> = text.splitn(3, '/').collect();
            if parts.len() == 3 && parts[1].is_empty() {
                job.schedule = Some(format!("{}/{}/{}", parts[0], clock::iso(now), parts[2]));
            }
        }
        let (mut schedule, epsilon) = self.runtime_schedule(&job)?;
        if let Some(old) = self.state.jobs.get(&name) {
            keep_unsent_counters(&mut job, &old.job, provided);
            // Occurrences that fell due while the job was disabled are passed over, without
            // using repeats: enabling it again does not replay them.
            if old.job.disabled
                && !job.disabled
                && let Some(parsed) = schedule.as_mut()
            {
                let (moved, passed) = parsed.skip_missed(now, chrono::Duration::zero());
                if passed > 0 {
                    *parsed = moved;
                    keep_progress(&mut job, parsed);
                }
            }
        }
        // A cron schedule's first run is stored from the start, so a restart before it still
        // knows what it missed.
        if let Some(parsed @ Schedule::Cron(_)) = &schedule {
            keep_progress(&mut job, parsed);
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

    pub(super) fn delete(&mut self, name: &str) -> Result<(), Error> {
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
            let job = without_parent(&child_entry.job, &deleted);
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
        self.forget_tasks_of(name);
        self.state.tasks.retain(|_, t| t.record.job != name);
        self.state.retrying.retain(|_, job| job != name);
        self.arm_schedule(name);
        for job in changed {
            let child = job.name.clone();
            let (schedule, epsilon) = self
                .runtime_schedule(&job)
                .unwrap_or((None, self.config.default_epsilon));
            if let Some(entry) = self.state.jobs.get_mut(&child) {
                entry.replace(job, schedule, epsilon);
            }
            self.arm_schedule(&child);
        }
        Ok(())
    }

    /// A deleted job's tasks go with it; running ones are killed (their ends are ignored).
    fn forget_tasks_of(&mut self, name: &str) {
        let Some(entry) = self.state.jobs.shift_remove(name) else {
            return;
        };
        for id in entry.running.iter().chain(entry.queue.iter()) {
            if self
                .state
                .tasks
                .get(id)
                .is_some_and(|t| t.record.state == TaskState::Running)
            {
                let worker = self.state.tasks[id].record.worker.clone();
                let task_id = id.clone();
                self.out.commands.push(Command::Kill { worker, task_id });
                self.release(id);
            }
            self.state.tasks.remove(id);
        }
    }

    pub(super) fn run_now(&mut self, name: &str, arguments: Option<String>) -> Result<(), Error> {
        if !self.state.jobs.contains_key(name) {
            return Err(Error::JobNotFound {
                name: name.to_owned(),
            });
        }
        self.admit_request(name)?;
        let Some(entry) = self.state.jobs.get(name) else {
            return Ok(());
        };
        let arguments = arguments
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| entry.job.arguments.join(" "));
        let mut batch = Vec::new();
        if self
            .enqueue(name, self.now_ms(), 0, &arguments, Trigger::Request, &mut batch)
            .is_some()
        {
            self.record(batch);
            self.try_start(name);
        }
        Ok(())
    }

    pub(super) fn mark_success(&mut self, name: &str) -> Result<bool, Error> {
        if !self.state.jobs.contains_key(name) {
            return Ok(false);
        }
        self.state.graph.reset(name);
        let mut batch = Vec::new();
        self.after_success(name, &mut batch);
        self.record(batch);
        self.start_ready(name);
        Ok(true)
    }

    pub(super) fn kill(&mut self, name: &str) -> Result<(), Error> {
        let Some(entry) = self.state.jobs.get_mut(name) else {
            return Err(Error::JobNotFound {
                name: name.to_owned(),
            });
        };
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
                self.out.commands.push(Command::Kill { worker, task_id: id });
            } else {
                to_close.push(id);
            }
        }
        self.close_killed(to_close, "killed on request");
        self.try_start(name);
        Ok(())
    }

    /// `DELETE /scheduler/task/all`: every queued task and pending retry is dropped (recorded as
    /// killed); running tasks go on.
    pub(super) fn purge(&mut self) {
        let names: Vec<String> = self.state.jobs.keys().cloned().collect();
        let mut to_close = Vec::new();
        for name in &names {
            to_close.extend(self.waiting_tasks(name));
        }
        self.close_killed(to_close, "purged on request: it was waiting to start");
    }

    /// A job's queued tasks and pending retries, taken out of its queue.
    fn waiting_tasks(&mut self, name: &str) -> Vec<TaskId> {
        let mut waiting: Vec<TaskId> = self
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
    fn close_killed(&mut self, ids: Vec<TaskId>, why: &str) {
        for id in ids {
            let message = why.to_owned();
            self.end_task(&id, End::Killed { message });
        }
        self.timers
            .retain(|(_, t)| !matches!(t, Timer::Retry(id) if !self.state.tasks.contains_key(id)));
    }

    /// `PUT /task/<id>`: an async task says how it went. Only async jobs take it; their tasks
    /// otherwise end with their process, and a completion must not let the next run (or a
    /// child) start while the process still runs.
    pub(super) fn complete(&mut self, task_id: &TaskId, status_code: i64) -> Result<(), Error> {
        let Some(entry) = self.state.jobs.get(task_id.job()) else {
            return Err(Error::JobNotFound {
                name: task_id.job().to_owned(),
            });
        };
        let is_async = entry.job.is_async;
        let Some(open) = self
            .state
            .tasks
            .get_mut(task_id)
            .filter(|t| matches!(t.record.state, TaskState::Running | TaskState::Waiting))
        else {
            return Err(Error::TaskNotFound {
                id: task_id.to_string(),
            });
        };
        if !is_async {
            return Err(Error::Invalid {
                field: "taskId",
                message: format!(
                    "job '{}' is not async: its tasks end when their process ends, not by a completion call",
                    task_id.job()
                ),
            });
        }
        if open.completed.is_some() {
            return Err(Error::Invalid {
                field: "taskId",
                message: format!("task {task_id} was already completed; it ends when its process ends"),
            });
        }
        let mut batch = Vec::new();
        if open.record.state == TaskState::Running {
            // The process still runs: the task keeps its slot (and its job's concurrency) until
            // the process ends, and then ends with this status.
            open.completed = Some(status_code);
            // Stored with the record, so the completion outlives a restart of the scheduler.
            open.record.exit_code = Some(super::ends::clamp_status(status_code));
            open.record.message =
                format!("completed asynchronously with status {status_code}; waiting for its process to end");
            batch.push(Write::PutTask(open.record.clone()));
            self.record(batch);
            return Ok(());
        }
        self.finish_async(task_id, status_code);
        Ok(())
    }

    /// Checks a progress report against the job; `None` when there is nothing to add.
    pub(super) fn check_progress(
        &self,
        job: &str,
        task_id: &TaskId,
        elements: Option<i64>,
    ) -> Result<Option<i64>, Error> {
        let entry = self
            .state
            .jobs
            .get(job)
            .ok_or_else(|| Error::JobNotFound { name: job.to_owned() })?;
        if task_id.job() != job {
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
    }
}

/// Counters the client did not send keep their stored values.
fn keep_unsent_counters(job: &mut Job, old: &Job, provided: Provided) {
    if !provided.success_count {
        job.success_count = old.success_count;
    }
    if !provided.error_count {
        job.error_count = old.error_count;
    }
    if !provided.last_success {
        job.last_success = old.last_success.clone();
    }
    if !provided.last_error {
        job.last_error = old.last_error.clone();
    }
    if !provided.errors_since_last_success {
        job.errors_since_last_success = old.errors_since_last_success;
    }
}

/// A child of a deleted job, rewritten: it keeps its place in a chain by inheriting the deleted
/// job's parents, or takes over the deleted job's schedule when that was its only parent.
fn without_parent(child: &Job, deleted: &Job) -> Job {
    let mut job = child.clone();
    let mut parents: Vec<String> = job
        .parents()
        .iter()
        .filter(|p| **p != deleted.name)
        .cloned()
        .collect();
    if deleted.is_dependent() {
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
        job.schedule_cursor = deleted.schedule_cursor;
    } else {
        job.parents = Some(parents);
    }
    job
}
