//! Which notifications a job's events make and where each goes: the core's side of `notify`.
//!
//! An event becomes one [`Write::PutNotice`] per sink, in the same group commit as the outcome it
//! tells of, and one [`After::Notice`] per sink, which the shell hands to the delivery task once
//! that commit is done (unless the store says the notice was there already: another leader made
//! it). Event ids come from what the event is about (its kind and task, or its job and instant),
//! so the same event made twice is one row. Nothing is built for a job nobody listens to.

use super::core::{After, Core, Timer};
use crate::clock;
use crate::job::{Job, TaskId};
use crate::notify::{self, Event, Format, Kind, Notice, Sink, outbox::Done};
use crate::store::{TaskRecord, TaskState, Write};

impl Core {
    /// A task's end worth telling: a final failure, a recovery or a success.
    pub(super) fn notify_task(&mut self, kind: Kind, task: &TaskRecord) {
        self.notify(&task.job, kind, |core| {
            core.task_event(kind, task, task.message.clone())
        });
    }

    /// What a success of this job is: a recovery after a final failure, else a plain success.
    /// Asked before `after_success` resets the count of errors.
    pub(super) fn success_kind(&self, name: &str) -> Kind {
        match self.state.jobs.get(name) {
            Some(entry) if entry.job.errors_since_last_success > 0 => Kind::Recovery,
            _ => Kind::Success,
        }
    }

    /// A run of `name` due at `due_ms` will not happen: missed beyond its epsilon, passed over
    /// while another waited, or refused by the job's concurrency policy; `task` is the skipped
    /// task when one was recorded, and `reason` says why. The hook for every rule that skips.
    pub(super) fn notify_skipped(&mut self, name: &str, due_ms: i64, task: Option<&TaskId>, reason: &str) {
        self.notify(name, Kind::Skipped, |core| {
            let key = match task {
                Some(id) => id.to_string(),
                None => format!("{name}@{due_ms}"),
            };
            Event {
                id: notify::event_id(Kind::Skipped, &key),
                kind: Kind::Skipped,
                job: name.to_owned(),
                task_id: task.map(ToString::to_string),
                worker: None,
                exit_code: None,
                duration_ms: None,
                attempt: None,
                message: reason.to_owned(),
                stderr_tail: String::new(),
                due: Some(clock::iso(clock::from_millis(due_ms))),
                at: clock::iso(core.now),
                link: None,
            }
        });
    }

    /// A task started (or was found running at load): if its job has `warnAfter`, a timer
    /// checks then whether it still runs.
    pub(super) fn arm_late(&mut self, task_id: &TaskId) {
        let Some(open) = self.state.tasks.get(task_id) else {
            return;
        };
        let (Some(started), Some(entry)) = (open.record.started_ms, self.state.jobs.get(&open.record.job))
        else {
            return;
        };
        if let Some(after) = warn_after(&entry.job) {
            let at = started.saturating_add(after.num_milliseconds());
            self.timers.insert((at, Timer::Late(task_id.clone())));
        }
    }

    /// A task's `warnAfter` is up: tell, if it still runs (an ended task is no longer here;
    /// a task started again since, after a lost worker, has a later deadline of its own).
    pub(super) fn fire_late(&mut self, task_id: &TaskId) {
        let now = self.now_ms();
        let Some(open) = self.state.tasks.get(task_id) else {
            return;
        };
        if !matches!(open.record.state, TaskState::Running | TaskState::Waiting) {
            return;
        }
        let (Some(started), Some(entry)) = (open.record.started_ms, self.state.jobs.get(&open.record.job))
        else {
            return;
        };
        let Some(after) = warn_after(&entry.job) else {
            return;
        };
        if started.saturating_add(after.num_milliseconds()) > now {
            return;
        }
        let task = open.record.clone();
        let message = format!(
            "still running after {} (warnAfter {})",
            crate::schedule::format_duration(chrono::Duration::milliseconds(now - started)),
            entry.job.warn_after
        );
        self.notify(&task.job, Kind::Late, |core| {
            core.task_event(Kind::Late, &task, message)
        });
    }

    /// The delivery task is done with a notice: recorded, so no leader sends it again.
    pub(super) fn notice_done(&mut self, done: Done) {
        self.out.writes.push(Write::NoticeDone {
            id: done.id,
            delivered: done.delivered,
            at_ms: done.at_ms,
        });
    }

    /// Where an event of this kind about this job goes: the owners' email and the server's
    /// webhook for the kinds in `notifyOn` (by default all but plain successes), and each of the
    /// job's own webhooks for the kinds in its `on`. A sink named twice gets it once.
    fn sinks(&self, name: &str, kind: Kind) -> Vec<Sink> {
        let Some(entry) = self.state.jobs.get(name) else {
            return Vec::new();
        };
        let job = &entry.job;
        let settings = &self.config.notify;
        let mut sinks = Vec::new();
        if notify::wants(job.notify_on.as_deref().unwrap_or(&Kind::DEFAULT), kind) {
            if settings.mail.is_some() {
                let to = notify::owners(&job.owner);
                if !to.is_empty() {
                    sinks.push(Sink::Email { to });
                }
            }
            if let Some(url) = &settings.webhook {
                sinks.push(Sink::Webhook {
                    url: url.clone(),
                    format: Format::Json,
                });
            }
        }
        for hook in &job.notifications {
            let sink = Sink::Webhook {
                url: hook.webhook.clone(),
                format: hook.format,
            };
            if notify::wants(&hook.on, kind) && !sinks.contains(&sink) {
                sinks.push(sink);
            }
        }
        sinks
    }

    /// Writes one notice per sink, built only when some sink wants the event.
    fn notify(&mut self, name: &str, kind: Kind, event: impl FnOnce(&Core) -> Event) {
        let sinks = self.sinks(name, kind);
        if sinks.is_empty() {
            return;
        }
        let event = event(self);
        let now = self.now_ms();
        for sink in sinks {
            let notice = Notice::new(event.clone(), sink, now);
            self.out.writes.push(Write::PutNotice(Box::new(notice.stored())));
            self.out.after.push(After::Notice(Box::new(notice)));
        }
    }

    fn task_event(&self, kind: Kind, task: &TaskRecord, message: String) -> Event {
        let now = self.now_ms();
        Event {
            id: notify::event_id(kind, task.id.as_str()),
            kind,
            job: task.job.clone(),
            task_id: Some(task.id.to_string()),
            worker: (!task.worker.is_empty()).then(|| task.worker.clone()),
            exit_code: task.exit_code,
            duration_ms: task
                .started_ms
                .map(|started| (task.finished_ms.unwrap_or(now) - started).max(0)),
            attempt: Some(task.attempt),
            message,
            stderr_tail: notify::tail(&task.stderr, notify::STDERR_TAIL_BYTES).to_owned(),
            due: Some(clock::iso(clock::from_millis(task.due_ms))),
            at: clock::iso(self.now),
            link: None,
        }
    }
}

/// The job's `warnAfter`, when it has a usable one (the API refuses others).
fn warn_after(job: &Job) -> Option<chrono::Duration> {
    if job.warn_after.is_empty() {
        return None;
    }
    crate::schedule::parse_duration(&job.warn_after)
        .ok()
        .filter(|d| *d > chrono::Duration::zero())
}
