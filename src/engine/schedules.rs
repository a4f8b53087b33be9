//! Schedules and timers: when each scheduled job's next occurrence is recorded (ahead of its
//! instant), the rule of one waiting occurrence per job, and the timers for retries, launches
//! and occurrences past their epsilon.

use chrono::{DateTime, Utc};

use super::core::{Core, SCHEDULE_LEAD_MS, STORE_FAILING_RECHECK_MS, Timer, Trigger, keep_progress};
use crate::job::TaskId;
use crate::schedule::Schedule;
use crate::store::{TaskRecord, TaskState, Write};

impl Core {
    /// Sets (or clears) the schedule timer of a job from its runtime schedule.
    /// Also keeps the job's place in [`State::next_runs`](super::state::State). A paused
    /// scheduler arms no timer: resuming arms them all.
    pub(super) fn arm_schedule(&mut self, name: &str) {
        if let Some(at) = self.schedule_timer.remove(name) {
            self.timers.remove(&(at, Timer::Schedule(name.to_owned())));
        }
        if let Some(at) = self.listed_run.remove(name) {
            self.state.next_runs.remove(&(at, name.to_owned()));
        }
        let Some(entry) = self.state.jobs.get(name) else {
            return;
        };
        if entry.job.disabled {
            return;
        }
        if let Some(at) = entry.schedule.as_ref().and_then(Schedule::next_run) {
            let at = at.timestamp_millis();
            self.state.next_runs.insert((at, name.to_owned()));
            self.listed_run.insert(name.to_owned(), at);
            if self.state.paused_since.is_some() {
                return;
            }
            let at = at - SCHEDULE_LEAD_MS;
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
        let catch_up = entry.job.catch_up_runs();
        let mut batch = Vec::new();
        // Missed occurrences past epsilon are skipped, unless the job catches up on them: then
        // the newest of them run, oldest first, late rather than never, so that at most
        // `catchUpLimit` late runs wait (counting those that already do, say from before a stop).
        let (schedule, skipped) = match catch_up {
            0 => before.skip_missed(now, epsilon),
            limit => {
                let waiting = u32::try_from(self.waiting_occurrences(name).len()).unwrap_or(u32::MAX);
                match Core::missed_runs(&before, now, epsilon, limit.saturating_sub(waiting)) {
                    None => (before.clone(), 0),
                    Some((runs, after, dropped)) => {
                        for due in runs {
                            self.occur(name, due.timestamp_millis(), &arguments, &mut batch);
                        }
                        (after, dropped)
                    }
                }
            }
        };
        let mut updated = schedule.clone();
        let horizon = now + chrono::Duration::milliseconds(SCHEDULE_LEAD_MS);
        let mut expiring = None;
        if let Some(due) = schedule.next_run().filter(|due| *due <= horizon) {
            let due_ms = due.timestamp_millis();
            let queued = self.occur(name, due_ms, &arguments, &mut batch);
            updated = if queued.is_some() {
                schedule.advance()
            } else {
                schedule.pass()
            };
            if catch_up == 0 {
                expiring = queued.map(|id| (due_ms.saturating_add(epsilon.num_milliseconds()), id));
            }
        }
        if updated != before {
            let Some(entry) = self.state.jobs.get_mut(name) else {
                return;
            };
            keep_progress(&mut entry.job, &updated);
            entry.schedule = Some(updated);
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

    /// One scheduled occurrence of a job comes due: it is queued (and claimed), or passed over
    /// and recorded as skipped, with the reason, when an earlier one still waits (beyond the
    /// `catchUpLimit` waiting runs of a job that catches up) or the concurrency policy forbids
    /// it. Returns the queued task.
    fn occur(&mut self, name: &str, due_ms: i64, arguments: &str, batch: &mut Vec<Write>) -> Option<TaskId> {
        let now = self.now;
        // One run waits; a job that catches up lets its late runs wait too, and then one more.
        let limit = self.state.jobs.get(name)?.job.catch_up_runs() as usize + 1;
        let waiting = self.waiting_occurrences(name);
        let skip = match waiting.first() {
            Some(&earlier) if waiting.len() >= limit => Some(super::policies::already_waiting(earlier)),
            _ => match self.admit(name, due_ms) {
                super::policies::Admission::Run => None,
                super::policies::Admission::Skip(why) => Some(why),
            },
        };
        let (task_id, queued) = match skip {
            Some(why) => {
                self.state.metrics.skipped_runs += 1;
                let id = self.record_skipped(name, due_ms, arguments, why.clone(), now, batch);
                self.notify_skipped(name, due_ms, Some(&id), &why);
                (id, None)
            }
            None => {
                let id = self.enqueue(name, due_ms, 0, arguments, Trigger::Schedule, batch)?;
                (id.clone(), Some(id))
            }
        };
        // Claimed before the task is written, in the same transaction, so only one scheduler
        // ever records this occurrence; a lost claim skips the task's writes.
        batch.insert(
            0,
            Write::ClaimRun {
                job: name.to_owned(),
                due_ms,
                task_id,
            },
        );
        queued
    }

    /// The due instants of the scheduled occurrences of this job that wait to start, oldest first.
    fn waiting_occurrences(&self, name: &str) -> Vec<i64> {
        let Some(entry) = self.state.jobs.get(name) else {
            return Vec::new();
        };
        entry
            .queue
            .iter()
            .filter_map(|id| self.state.tasks.get(id))
            .filter(|t| t.record.scheduled && t.record.attempt == 0)
            .map(|t| t.record.due_ms)
            .collect()
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
