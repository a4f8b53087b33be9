//! Schedules and timers: when each scheduled job's next occurrence is recorded (ahead of its
//! instant), the rule of one waiting occurrence per job, and the timers for retries, launches
//! and occurrences past their epsilon.

use chrono::{DateTime, Utc};

use super::core::{Core, SCHEDULE_LEAD_MS, STORE_FAILING_RECHECK_MS, Timer, Trigger};
use crate::clock;
use crate::job::TaskId;
use crate::schedule::Schedule;
use crate::store::{TaskRecord, TaskState, Write};

impl Core {
    /// Sets (or clears) the schedule timer of a job from its runtime schedule.
    pub(super) fn arm_schedule(&mut self, name: &str) {
        if let Some(at) = self.schedule_timer.remove(name) {
            self.timers.remove(&(at, Timer::Schedule(name.to_owned())));
        }
        let Some(entry) = self.state.jobs.get(name) else {
            return;
        };
        if entry.job.disabled {
            return;
        }
        if let Some(at) = entry.schedule.as_ref().and_then(Schedule::next_run) {
            let at = at.timestamp_millis() - SCHEDULE_LEAD_MS;
            self.timers.insert((at, Timer::Schedule(name.to_owned())));
            self.schedule_timer.insert(name.to_owned(), at);
        }
    }

    /// Handles every timer that is due.
    pub(super) fn fire_timers(&mut self) {
        let now_ms = self.now_ms();
        while let Some((at, timer)) = self.timers.first().cloned() {
            if at > now_ms {
                break;
            }
            self.timers.remove(&(at, timer.clone()));
            match timer {
                // Stopping: what is due now is run by the next start, within its epsilon.
                Timer::Schedule(_) | Timer::Retry(_) | Timer::Launch(_) if self.quiesced => {}
                Timer::Schedule(name) if self.state.store_failing() => {
                    // While the store refuses writes, new runs would only pile up in memory
                    // behind the group being retried; look again in a second, when a run that
                    // is later than its epsilon by then is skipped as usual.
                    let retry_at = now_ms + STORE_FAILING_RECHECK_MS;
                    self.timers.insert((retry_at, Timer::Schedule(name.clone())));
                    self.schedule_timer.insert(name, retry_at);
                }
                Timer::Schedule(name) => {
                    self.schedule_timer.remove(&name);
                    self.fire_schedule(&name);
                }
                Timer::Retry(task_id) => {
                    if let Some(job) = self.state.retrying.remove(&task_id)
                        && let Some(entry) = self.state.jobs.get_mut(&job)
                    {
                        entry.queue.push_back(task_id);
                        self.state.mark_queued(&job);
                        self.try_start(&job);
                    }
                }
                Timer::Launch(task_id) => {
                    if let Some((worker, launch)) = self.early.remove(&task_id) {
                        self.launch(&task_id, &worker, launch);
                    }
                }
                Timer::Expire(task_id) => self.expire(&task_id),
                Timer::Late(task_id) => self.fire_late(&task_id),
            }
        }
    }

    /// A scheduled job's next occurrence is due: run it unless it is later than epsilon allows.
    pub(super) fn fire_schedule(&mut self, name: &str) {
        let now = self.now;
        let Some(entry) = self.state.jobs.get(name) else {
            return;
        };
        let Some(before) = entry.schedule.clone() else {
            return;
        };
        if entry.job.disabled {
            return;
        }
        let arguments = entry.job.arguments.join(" ");
        let epsilon = entry.epsilon;
        let (schedule, skipped) = before.skip_missed(now, entry.epsilon);
        let mut batch = Vec::new();
        let mut updated = schedule.clone();
        let horizon = now + chrono::Duration::milliseconds(SCHEDULE_LEAD_MS);
        let mut expiring = None;
        if let Some(due) = schedule.next_run().filter(|due| *due <= horizon) {
            let due_ms = due.timestamp_millis();
            let task_id = match self.waiting_occurrence(name) {
                Some(earlier) => {
                    // One occurrence waits per job: this one is passed over, and says why.
                    updated = schedule.pass();
                    let why = format!(
                        "skipped: the run due at {} had not started yet",
                        clock::iso(clock::from_millis(earlier))
                    );
                    self.state.metrics.skipped_runs += 1;
                    let id = self.record_skipped(name, due_ms, &arguments, why.clone(), now, &mut batch);
                    self.notify_skipped(name, due_ms, Some(&id), &why);
                    Some(id)
                }
                None => {
                    updated = schedule.advance();
                    let id = self.enqueue(name, due_ms, 0, &arguments, Trigger::Schedule, &mut batch);
                    expiring = id
                        .clone()
                        .map(|id| (due_ms.saturating_add(epsilon.num_milliseconds()), id));
                    id
                }
            };
            if let Some(task_id) = task_id {
                // Claimed before the task is written, in the same transaction, so only one
                // scheduler ever records this occurrence; a lost claim skips the task's writes.
                batch.insert(
                    0,
                    Write::ClaimRun {
                        job: name.to_owned(),
                        due_ms,
                        task_id,
                    },
                );
            }
        }
        if updated != before {
            let Some(entry) = self.state.jobs.get_mut(name) else {
                return;
            };
            entry.schedule = Some(updated.clone());
            entry.job.schedule = Some(updated.render());
            batch.push(self.put_job(name));
        }
        self.record(batch);
        if skipped > 0 {
            tracing::warn!(job = name, skipped, "Skipped occurrences later than epsilon.");
            self.state.metrics.skipped_runs += skipped;
            if let Some(first) = before.next_run() {
                let why = format!("skipped {skipped} run(s) later than epsilon, the first due then");
                self.notify_skipped(name, first.timestamp_millis(), None, &why);
            }
        }
        self.arm_schedule(name);
        self.try_start(name);
        if let Some((deadline, task_id)) = expiring
            && self
                .state
                .tasks
                .get(&task_id)
                .is_some_and(|t| t.record.state == TaskState::Queued)
        {
            // It waits (for the job's running task, or for room): it must start by its deadline.
            self.timers
                .insert((deadline.saturating_add(1), Timer::Expire(task_id)));
        }
    }

    /// The due instant of the scheduled occurrence of this job that waits to start, if one does.
    pub(super) fn waiting_occurrence(&self, name: &str) -> Option<i64> {
        let entry = self.state.jobs.get(name)?;
        entry
            .queue
            .iter()
            .filter_map(|id| self.state.tasks.get(id))
            .find(|t| t.record.scheduled && t.record.attempt == 0)
            .map(|t| t.record.due_ms)
    }

    /// Records an occurrence that is passed over as a skipped task, for the job's history.
    pub(super) fn record_skipped(
        &mut self,
        name: &str,
        due_ms: i64,
        arguments: &str,
        why: String,
        now: DateTime<Utc>,
        batch: &mut Vec<Write>,
    ) -> TaskId {
        let mut id = TaskId::new(due_ms, 0, name, arguments);
        while self.state.tasks.contains_key(&id) {
            id = id.later(1);
        }
        let record = TaskRecord {
            id: id.clone(),
            job: name.to_owned(),
            attempt: 0,
            due_ms: id.due_millis(),
            arguments: id.arguments().to_owned(),
            state: TaskState::Skipped,
            created_ms: now.timestamp_millis(),
            started_ms: None,
            finished_ms: Some(now.timestamp_millis()),
            exit_code: None,
            message: why,
            stdout: String::new(),
            stderr: String::new(),
            elements_processed: 0,
            worker: String::new(),
            scheduled: true,
        };
        let id = record.id.clone();
        batch.push(Write::PutTask(record));
        id
    }
}
