//! Tasks from queue to worker: enqueueing with the merge rules, placement, recording a start,
//! and handing the launch to the worker once the start is committed (at its instant, for a
//! scheduled run recorded ahead).

use super::core::{After, Command, Core, Timer, Trigger, job_needs, job_resources, unstart};
use super::ends::End;
use super::state::{self, OpenTask};
use crate::executor::runner::TaskLaunch;
use crate::job::TaskId;
use crate::placement::{self, Resources};
use crate::store::{TaskRecord, TaskState, Write};

impl Core {
    /// Creates a queued task for a job and returns its id; `None` when a request merges with
    /// one already waiting with the same arguments (Chronos keeps one queued task per job). A
    /// scheduled occurrence is never merged: the caller passes over one that comes due while
    /// another waits.
    pub(super) fn enqueue(
        &mut self,
        name: &str,
        due_ms: i64,
        attempt: u32,
        arguments: &str,
        trigger: Trigger,
        batch: &mut Vec<Write>,
    ) -> Option<TaskId> {
        let now = self.now_ms();
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
        while self.state.tasks.contains_key(&id) {
            id = id.later(1);
        }
        let record = TaskRecord {
            id: id.clone(),
            job: name.to_owned(),
            attempt,
            due_ms: id.due_millis(),
            arguments: id.arguments().to_owned(),
            state: TaskState::Queued,
            created_ms: now,
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
    pub(super) fn try_start(&mut self, name: &str) {
        let mut offers = self.state.offers();
        self.try_start_with(name, &mut offers);
    }

    /// Like `try_start`, with the workers' offers built once by the caller and kept up to date
    /// here, so a pass over many waiting jobs doesn't rebuild them for each. Returns why the job's
    /// next task found no place, if that is what stopped it.
    pub(super) fn try_start_with(
        &mut self,
        name: &str,
        offers: &mut [placement::Offer],
    ) -> Option<placement::Unplaceable> {
        if self.quiesced || self.state.paused_since.is_some() {
            return None;
        }
        loop {
            let entry = self.state.jobs.get_mut(name)?;
            if entry.job.concurrency() != crate::job::ConcurrencyPolicy::Allow && !entry.running.is_empty() {
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
                && !entry.job.catch_up
                && self.now_ms() > open.record.due_ms.saturating_add(deadline)
            {
                self.expire(&task_id);
                continue;
            }
            let entry = self.state.jobs.get_mut(name)?;
            let need = job_resources(&entry.job);
            match placement::place(&need, job_needs(&entry.job), &entry.constraints, offers) {
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
    /// without constraints found no room, a later one without constraints that asks for the same
    /// kind of worker and needs at least as much of everything cannot either, so it is not placed
    /// again; and once no worker has room for the smallest job there is, the pass ends.
    pub(super) fn try_start_all(&mut self) {
        if self.state.paused_since.is_some() {
            return;
        }
        let mut offers = self.state.offers();
        let mut no_room: Option<(Resources, placement::Needs, placement::Unplaceable)> = None;
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
            let needs = job_needs(&entry.job);
            let unconstrained = entry.constraints.is_empty();
            if unconstrained
                && let Some((smallest, kind, reason)) = &no_room
                && *kind == needs
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
                    .is_none_or(|(smallest, kind, _)| *kind != needs || need.fits_in(smallest))
            {
                no_room = Some((need, needs, reason));
            }
        }
    }

    pub(super) fn forget_queued(&mut self, key: Option<&state::QueuedJob>) {
        if let Some(key) = key {
            self.state.queued_jobs.remove(key);
        }
    }

    /// Starts a task on a worker: records the start now and launches once it is committed.
    pub(super) fn start_task(&mut self, name: &str, task_id: TaskId, worker_name: &str) {
        let now = self.now_ms();
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
        let launch = super::launch::task_launch(&entry.job, &open.record, &self.config, &worker.hostname);
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
        self.arm_late(&task_id);
        self.out.after.push(After::Launch {
            task_id,
            worker: worker_name.to_owned(),
            launch: Box::new(launch),
        });
    }

    /// Launches a task whose start is committed, at its instant if that is still ahead.
    pub(super) fn launch_when_due(&mut self, task_id: TaskId, worker: String, launch: TaskLaunch) {
        let due = self.state.tasks.get(&task_id).map_or(0, |t| t.record.due_ms);
        if due > self.now_ms() {
            // The worker may make the sandbox now, so the launch at the instant is only a spawn.
            self.out.commands.push(Command::Prepare {
                worker: worker.clone(),
                sandbox: launch.process.sandbox.clone(),
            });
            self.timers.insert((due, Timer::Launch(task_id.clone())));
            self.early.insert(task_id, (worker, launch));
        } else {
            self.launch(&task_id, &worker, launch);
        }
    }

    /// Sends a task whose start is committed to its worker, unless it was ended or killed meanwhile.
    pub(super) fn launch(&mut self, task_id: &TaskId, worker_name: &str, launch: TaskLaunch) {
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
        let due = open.record.due_ms;
        if open.kill_requested {
            let end = End::Killed {
                message: "killed on request before it started".to_owned(),
            };
            self.end_task(task_id, end);
            return;
        }
        if self
            .state
            .workers
            .get(worker_name)
            .is_none_or(|w| !w.is_connected())
        {
            // The worker went away between placement and launch: the task is lost.
            self.lose(
                worker_name,
                task_id,
                "the worker disconnected before the task could be sent to it",
            );
            return;
        }
        let lag_ms = self.now_ms() - due;
        self.state.metrics.record_launch(worker_name, lag_ms);
        tracing::info!(job = %task_id.job(), task = %task_id, worker = %worker_name, "Task started.");
        if started <= self.marked_through {
            self.out.commands.push(Command::Launch {
                worker: worker_name.to_owned(),
                launch: Box::new(launch),
            });
            return;
        }
        // The launch mark is written ahead: the worker gets the task only once a mark covering
        // its start is committed. So after a crash a recorded start past the mark surely never
        // reached a worker (it runs, as the same instant), and one within it surely did (it is
        // running, or lost with its worker): no run is started twice or skipped by mistake.
        self.launched_through = self.launched_through.max(started);
        self.out.after.push(After::Dispatch {
            task_id: task_id.clone(),
            worker: worker_name.to_owned(),
            launch: Box::new(launch),
        });
    }

    /// Sends a task to its worker now that its launch is marked, unless it ended meanwhile (a
    /// kill, its worker lost) or the server is stopping (then the next start finds it marked
    /// as launched and counts it lost, or finds it queued again by the stop).
    pub(super) fn dispatch(&mut self, task_id: TaskId, worker: String, launch: TaskLaunch) {
        let still = self
            .state
            .tasks
            .get(&task_id)
            .is_some_and(|t| t.record.state == TaskState::Running && t.record.worker == worker);
        if !still || self.quiesced {
            return;
        }
        if self.state.workers.get(&worker).is_none_or(|w| !w.is_connected()) {
            self.lose(
                &worker,
                &task_id,
                "the worker disconnected before the task could be sent to it",
            );
            return;
        }
        self.out.commands.push(Command::Launch {
            worker,
            launch: Box::new(launch),
        });
    }

    /// Another scheduler recorded this scheduled run first (a leader that was not yet deposed):
    /// the task never existed here, and its launch, if it was placed, is dropped.
    pub(super) fn forget_lost_claim(&mut self, task_id: &TaskId) {
        tracing::warn!(
            task = %task_id,
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
        self.out.start_all = true;
    }
}
