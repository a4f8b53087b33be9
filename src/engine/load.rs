//! Rebuilding the core from what the store holds, when a scheduler starts or takes over: jobs
//! with their schedules and dependency progress, recent durations, and the tasks that were open.

use super::core::{Core, Timer, skipped_message, unstart};
use super::join_graph_errors;
use super::state::{JobEntry, OpenTask};
use crate::job::TaskId;
use crate::store::{StoredJob, TaskRecord, TaskState, Write};

/// What the store holds, read by the shell for [`Core::restore`].
pub(super) struct Stored {
    pub(super) jobs: Vec<StoredJob>,
    pub(super) durations: Vec<(String, f64)>,
    pub(super) open_tasks: Vec<TaskRecord>,
    pub(super) launched_through: i64,
    pub(super) paused_since: Option<i64>,
}

impl Core {
    /// Loads the stored state. Tasks that were open come back as they were, except:
    /// - a task recorded as started after the launch mark never reached a worker: it is queued;
    /// - a scheduled occurrence still queued past its epsilon is skipped;
    /// - a task that ran on a worker whose tasks end with the scheduler (the built-in one) is lost.
    ///
    /// Tasks on other workers are kept until those workers register again or time out.
    pub(super) fn restore(&mut self, stored: Stored) {
        // Before the schedules are armed: a paused scheduler arms no timers.
        self.state.paused_since = stored.paused_since;
        for s in &stored.jobs {
            self.state.graph.add_job(&s.job.name);
        }
        for StoredJob { job, satisfied } in stored.jobs {
            if let Some(parents) = &job.parents {
                if let Err(errors) = self.state.graph.set_parents(&job.name, parents) {
                    // Only a hand-edited store can get here: the API never stores such a job.
                    tracing::error!(job = %job.name, error = %join_graph_errors(&errors), "Stored job has invalid parents.");
                }
                self.state.graph.restore_satisfied(&job.name, &satisfied);
            }
            let (schedule, epsilon) = match self.runtime_schedule(&job) {
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
        for (job, duration) in stored.durations {
            if let Some(entry) = self.state.jobs.get_mut(&job) {
                entry.durations.push_back(duration);
            }
        }
        self.launched_through = stored.launched_through;
        self.marked_through = stored.launched_through;
        let mut lost = Vec::new();
        for task in stored.open_tasks {
            if let Some(id) = self.restore_task(task) {
                lost.push(id);
            }
        }
        for task_id in lost {
            // Its process died with the previous server: Mesos calls this TASK_LOST.
            self.end_lost(&task_id, "the server stopped while the task ran");
        }
        // Starts are recorded by the first turn of the loop, before they launch.
        self.try_start_all();
    }

    /// Puts one open task back; returns its id when it is lost.
    fn restore_task(&mut self, mut task: TaskRecord) -> Option<TaskId> {
        let now = self.now_ms();
        let ends_with_scheduler = self.ends_with_scheduler(&task.worker);
        let entry = self.state.jobs.get_mut(&task.job)?;
        if task.state == TaskState::Running && task.started_ms.is_none_or(|s| s > self.launched_through) {
            // Recorded as started (a scheduled run is recorded ahead of its instant) but never
            // handed to a worker before the last scheduler stopped: it runs now.
            unstart(&mut task);
            self.out.writes.push(Write::PutTask(task.clone()));
        }
        if task.state == TaskState::Queued && task.scheduled && task.attempt == 0 && !entry.job.catch_up {
            let deadline = task.due_ms.saturating_add(entry.epsilon.num_milliseconds());
            if now > deadline {
                task.state = TaskState::Skipped;
                task.finished_ms = Some(now);
                task.message = skipped_message(entry.epsilon);
                let (name, due_ms, id, why) = (
                    task.job.clone(),
                    task.due_ms,
                    task.id.clone(),
                    task.message.clone(),
                );
                self.out.writes.push(Write::PutTask(task));
                self.notify_skipped(&name, due_ms, Some(&id), &why);
                return None;
            }
            self.timers
                .insert((deadline.saturating_add(1), Timer::Expire(task.id.clone())));
        }
        let id = task.id.clone();
        match task.state {
            TaskState::Queued => {
                if task.due_ms > now && task.attempt > 0 {
                    self.timers.insert((task.due_ms, Timer::Retry(id.clone())));
                    self.state.retrying.insert(id.clone(), task.job.clone());
                } else {
                    entry.queue.push_back(id.clone());
                    self.state.mark_queued(&task.job);
                }
                self.state.tasks.insert(id, OpenTask::new(task));
                None
            }
            TaskState::Waiting => {
                entry.running.push(id.clone());
                self.state.tasks.insert(id.clone(), OpenTask::new(task));
                self.arm_late(&id);
                None
            }
            TaskState::Running => {
                entry.running.push(id.clone());
                let resources = super::core::job_resources(&entry.job);
                let worker = task.worker.clone();
                self.state.tasks.insert(id.clone(), OpenTask::new(task));
                // Counted on its worker until that worker says what became of it.
                self.expect_worker(&worker, &id, resources);
                self.arm_late(&id);
                ends_with_scheduler.then_some(id)
            }
            _ => None,
        }
    }
}
