//! How tasks end. Every end, whichever path it comes from (a worker's report, an async
//! completion, a kill, a lost worker, a restart, an occurrence past its epsilon), goes through
//! [`Core::end_task`] with a typed [`End`], which closes the task and applies what follows:
//! counters, retries, the dependency fan-out and starting what waits.

use super::core::{Core, Timer, Trigger, skipped_message};
use crate::clock;
use crate::executor::runner::TaskEnd;
use crate::job::TaskId;
use crate::store::{TaskRecord, TaskState, Write};

/// How a task ended. Each carries the sentence recorded as the task's `message`.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Its command succeeded, or its async completion said so.
    Succeeded { message: String },
    /// Its command exited with a failure status or a signal, or its completion said so.
    Failed { message: String },
    /// It ran past `maxCompletionTime`.
    TimedOut { message: String },
    /// It never got to run its command (sandbox, fetch or launch failed); `fetch` tells a failed
    /// fetch from the rest, for retry policies.
    LaunchFailed { message: String, fetch: bool },
    /// Killed on request (or dropped from the queue by a kill or purge).
    Killed { message: String },
    /// Its worker went away (or the server stopped) while it ran.
    Lost { message: String },
    /// A scheduled occurrence that could not start within its epsilon.
    Skipped { message: String },
}

/// How a task ended, without its message: a metrics and log label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    LaunchFailed,
    Killed,
    Lost,
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::LaunchFailed,
        Outcome::Killed,
        Outcome::Lost,
        Outcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::LaunchFailed => "launch_failed",
            Outcome::Killed => "killed",
            Outcome::Lost => "lost",
            Outcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl End {
    pub fn outcome(&self) -> Outcome {
        match self {
            End::Succeeded { .. } => Outcome::Succeeded,
            End::Failed { .. } => Outcome::Failed,
            End::TimedOut { .. } => Outcome::TimedOut,
            End::LaunchFailed { .. } => Outcome::LaunchFailed,
            End::Killed { .. } => Outcome::Killed,
            End::Lost { .. } => Outcome::Lost,
            End::Skipped { .. } => Outcome::Skipped,
        }
    }

    /// How a worker reported the end of a task whose kill was or was not requested.
    pub(super) fn of(end: &TaskEnd, kill_requested: bool) -> End {
        let message = end.describe();
        if end.killed || kill_requested {
            End::Killed { message }
        } else if let Some(error) = &end.error {
            End::LaunchFailed {
                message,
                fetch: error.fetch,
            }
        } else if end.outcome.timed_out {
            End::TimedOut { message }
        } else if end.success() {
            End::Succeeded { message }
        } else {
            End::Failed { message }
        }
    }

    /// The state a task ends in.
    pub fn state(&self) -> TaskState {
        match self {
            End::Succeeded { .. } => TaskState::Finished,
            End::Failed { .. } | End::TimedOut { .. } | End::LaunchFailed { .. } => TaskState::Failed,
            End::Killed { .. } => TaskState::Killed,
            End::Lost { .. } => TaskState::Lost,
            End::Skipped { .. } => TaskState::Skipped,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            End::Succeeded { message }
            | End::Failed { message }
            | End::TimedOut { message }
            | End::LaunchFailed { message, .. }
            | End::Killed { message }
            | End::Lost { message }
            | End::Skipped { message } => message,
        }
    }

    /// The end of a task whose worker went away.
    pub(super) fn lost(why: &str) -> End {
        End::Lost {
            message: format!("lost: {why}"),
        }
    }
}

impl Core {
    /// Ends an open task (queued, running or waiting) and applies everything that follows.
    pub(super) fn end_task(&mut self, task_id: &TaskId, end: End) {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return;
        };
        open.record.state = end.state();
        open.record.message = end.message().to_owned();
        let record = open.record.clone();
        let outcome = end.outcome();
        self.state.metrics.record_end(&record.worker, outcome);
        // Skipped runs never started: their end is worth a line only when someone looks closely.
        if outcome == Outcome::Skipped {
            tracing::debug!(job = %record.job, task = %task_id, outcome = %outcome, "Task ended.");
        } else {
            tracing::info!(
                job = %record.job,
                task = %task_id,
                worker = %record.worker,
                outcome = %outcome,
                detail = %end.message(),
                "Task ended."
            );
        }
        self.release(task_id);
        let mut batch = Vec::new();
        self.close_task(task_id, &mut batch);
        match &end {
            End::Succeeded { .. } => {
                let kind = self.success_kind(&record.job);
                self.after_success(&record.job, &mut batch);
                self.notify_task(kind, &record);
            }
            End::Failed { .. } | End::TimedOut { .. } | End::LaunchFailed { .. } | End::Lost { .. } => {
                self.after_failure(&record, &end, &mut batch);
            }
            End::Killed { .. } => {}
            End::Skipped { .. } => {
                self.give_back_repeat(&record.job, &mut batch);
                self.notify_skipped(&record.job, record.due_ms, Some(task_id), end.message());
            }
        }
        self.record(batch);
        self.out.ended.push((task_id.to_owned(), end));
        self.start_ready(&record.job);
    }

    /// A worker reports how a task ended.
    pub(super) fn on_task_end(&mut self, worker: &str, end: TaskEnd) {
        let Some(open) = self.state.tasks.get_mut(&end.task_id) else {
            return; // Already completed through the API, or its job was deleted.
        };
        if open.record.state != TaskState::Running || open.record.worker != worker {
            return; // A stale report: the task was declared lost and runs elsewhere now.
        }
        let Some(entry) = self.state.jobs.get(&open.record.job) else {
            return;
        };
        let is_async = entry.job.is_async;
        open.record.stdout = end.outcome.stdout.clone();
        open.record.stderr = end.outcome.stderr.clone();
        open.record.exit_code = end.outcome.exit_code;
        let how = match (End::of(&end, open.kill_requested), open.kill_reason.take()) {
            (End::Killed { .. }, Some(message)) => End::Killed { message },
            (how, _) => how,
        };
        match (open.completed, &how) {
            (Some(_), End::Killed { .. }) => self.end_task(&end.task_id, how),
            // Completed through the API while its process ran; now that the process is done
            // too, the task ends the way the client said.
            (Some(status), _) => self.finish_async(&end.task_id, status),
            (None, End::Succeeded { .. }) if is_async => {
                // The process is done, but the task is not until `PUT /task/<id>` says how it went.
                open.record.state = TaskState::Waiting;
                open.record.message = "waiting for asynchronous completion".to_owned();
                let (record, name) = (open.record.clone(), open.record.job.clone());
                self.release(&end.task_id);
                self.record(vec![Write::PutTask(record)]);
                self.start_ready(&name);
            }
            (None, _) => self.end_task(&end.task_id, how),
        }
    }

    /// A task running on `worker` is lost, unless it has moved on since (a stale call).
    pub(super) fn lose(&mut self, worker: &str, task_id: &TaskId, why: &str) {
        let running_there = self
            .state
            .tasks
            .get(task_id)
            .is_some_and(|t| t.record.state == TaskState::Running && t.record.worker == worker);
        if running_there {
            self.end_lost(task_id, why);
        }
    }

    /// Ends a task whose process was lost, unless the client already completed it through the
    /// API: then it ends the way the client said, since the acknowledged completion is final.
    pub(super) fn end_lost(&mut self, task_id: &TaskId, why: &str) {
        match self.state.tasks.get(task_id).and_then(|t| t.completed) {
            Some(status) => self.finish_async(task_id, status),
            None => self.end_task(task_id, End::lost(why)),
        }
    }

    /// Ends an async task whose process has ended with the status its completion call gave.
    pub(super) fn finish_async(&mut self, task_id: &TaskId, status_code: i64) {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return;
        };
        // The status the client gave is the task's outcome, so it is what `exitCode` shows.
        open.record.exit_code = Some(clamp_status(status_code));
        let end = if status_code == 0 {
            End::Succeeded {
                message: "completed asynchronously".to_owned(),
            }
        } else {
            End::Failed {
                message: format!("completed asynchronously with status {status_code}"),
            }
        };
        self.end_task(task_id, end);
    }

    /// Gives a task's resources back to its worker.
    pub(super) fn release(&mut self, task_id: &TaskId) {
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
    fn close_task(&mut self, task_id: &TaskId, batch: &mut Vec<Write>) {
        let Some(mut open) = self.state.tasks.remove(task_id) else {
            return;
        };
        let now = self.now_ms();
        open.record.finished_ms = Some(now);
        self.state.metrics.tasks_ended += 1;
        if let Some(entry) = self.state.jobs.get_mut(&open.record.job) {
            entry.running.retain(|id| id != task_id);
            entry.queue.retain(|id| id != task_id);
            if open.record.state == TaskState::Finished
                && let Some(started) = open.record.started_ms
            {
                entry.record_duration((now - started) as f64);
            }
        }
        self.state.retrying.remove(task_id);
        batch.push(Write::PutTask(open.record));
    }

    /// Success accounting and the dependency fan-out.
    pub(super) fn after_success(&mut self, name: &str, batch: &mut Vec<Write>) {
        let now = self.now;
        let Some(entry) = self.state.jobs.get_mut(name) else {
            return;
        };
        entry.job.success_count += 1;
        entry.job.errors_since_last_success = 0;
        entry.job.last_success = clock::iso(now);
        self.state.metrics.record_success(name);
        batch.push(self.put_job(name));
        self.fan_out(name, batch);
    }

    /// Children whose parents have now all succeeded get a task each.
    fn fan_out(&mut self, parent: &str, batch: &mut Vec<Write>) {
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
            let now = self.now_ms();
            match self.admit(&child, now) {
                super::policies::Admission::Run => {
                    self.enqueue(&child, now, 0, &arguments, Trigger::Request, batch);
                    self.state.pending_starts.push(child);
                }
                super::policies::Admission::Skip(why) => {
                    self.state.metrics.skipped_runs += 1;
                    let at = self.now;
                    let id = self.record_skipped(&child, now, &arguments, why.clone(), at, batch);
                    self.notify_skipped(&child, now, Some(&id), &why);
                }
            }
        }
    }

    /// A failed attempt: retry while attempts remain and the job's `retryOn` names this kind of
    /// failure, else count the error.
    fn after_failure(&mut self, task: &TaskRecord, end: &End, batch: &mut Vec<Write>) {
        let now = self.now;
        let Some(entry) = self.state.jobs.get(&task.job) else {
            return;
        };
        let retried = task.attempt < entry.job.retries
            && super::policies::failure_of(end, task.exit_code).is_some_and(|f| entry.job.retries_on(f));
        let delay = self.retry_delay_ms(&entry.job, task.attempt);
        let Some(entry) = self.state.jobs.get_mut(&task.job) else {
            return;
        };
        if retried {
            let due = now.timestamp_millis().saturating_add(delay);
            let name = task.job.clone();
            let retry = self.enqueue(
                &name,
                due,
                task.attempt + 1,
                &task.arguments,
                Trigger::Retry,
                batch,
            );
            // `enqueue` put it in the queue; a retry waits for its due time instead.
            if retry.is_some()
                && let Some(entry) = self.state.jobs.get_mut(&name)
                && let Some(id) = entry.queue.pop_back()
            {
                self.timers.insert((due, Timer::Retry(id.clone())));
                self.state.retrying.insert(id, name);
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
            self.fan_out(&task.job, batch);
        }
        self.notify_task(crate::notify::Kind::Failure, task);
        self.arm_schedule(&task.job.clone());
    }

    /// A skipped occurrence gives its repeat back, since `Rn` counts runs that happen.
    fn give_back_repeat(&mut self, name: &str, batch: &mut Vec<Write>) {
        self.state.metrics.skipped_runs += 1;
        let Some(entry) = self.state.jobs.get_mut(name) else {
            return;
        };
        if let Some(schedule) = entry.schedule.as_mut()
            && schedule.give_back_repeat()
        {
            super::core::keep_progress(&mut entry.job, schedule);
            batch.push(self.put_job(name));
            self.arm_schedule(name);
        }
    }

    /// A scheduled occurrence that has not started by its deadline is skipped: it is recorded
    /// as such and never runs.
    pub(super) fn expire(&mut self, task_id: &TaskId) {
        let Some(open) = self.state.tasks.get(task_id) else {
            return;
        };
        if open.record.state != TaskState::Queued || !open.record.scheduled {
            return;
        }
        let Some(entry) = self.state.jobs.get(&open.record.job) else {
            return;
        };
        if entry.job.catch_up {
            return; // It runs late rather than never.
        }
        tracing::warn!(job = %open.record.job, task = %task_id, "Skipped a scheduled run that could not start within its epsilon.");
        let message = skipped_message(entry.epsilon);
        self.end_task(task_id, End::Skipped { message });
    }

    /// Starts whatever became startable: this job's queue, children just enqueued, and, since
    /// resources may have been freed, every other job that waits (once, at the end of the turn).
    pub(super) fn start_ready(&mut self, name: &str) {
        self.try_start(name);
        let pending = std::mem::take(&mut self.state.pending_starts);
        for child in pending {
            self.try_start(&child);
        }
        self.out.start_all = true;
    }
}

/// A completion's status as an exit code, saturating at `i32`'s bounds.
pub(super) fn clamp_status(status_code: i64) -> i32 {
    i32::try_from(status_code).unwrap_or(if status_code < 0 { i32::MIN } else { i32::MAX })
}
