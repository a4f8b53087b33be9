//! The engine's pure core: state, timers and the rules of scheduling. It is driven by the shell
//! (`shell.rs`) one input at a time, each with the instant it happens at, and answers with
//! effects: writes for the store, what waits for their commit (replies, launches), commands for
//! workers, and the tasks that ended. It never awaits, reads no clock and does no I/O, so its
//! tests pick any instant they like.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::state::State;
use super::{Config, Error, Reply};
use crate::executor::runner::TaskLaunch;
use crate::job::{Job, TaskId};
use crate::placement::Resources;
use crate::schedule;
use crate::store::{StoredJob, TaskRecord, TaskState, Write};

/// Why a task is queued, which decides whether it merges with one already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// A scheduled occurrence: at most one waits per job, and it never starts later than the
    /// job's `epsilon`; one that would is skipped.
    Schedule,
    /// A manual run or a dependency fan-out: merged with a request already waiting with the same
    /// arguments, as in Chronos; a different one waits beside it.
    Request,
    /// A retry of a failed attempt.
    Retry,
}

/// What a timer entry wakes up for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Schedule(String),
    Retry(TaskId),
    /// A task recorded ahead of its instant launches at it.
    Launch(TaskId),
    /// A scheduled occurrence still waiting at this instant is past its epsilon: it is skipped.
    Expire(TaskId),
    /// A running task's `warnAfter` is up (`notices.rs`).
    Late(TaskId),
}

/// Scheduled runs are recorded this long before their instant, so that the group commit is done
/// by then and the task launches on time rather than a commit later.
pub(super) const SCHEDULE_LEAD_MS: i64 = 100;

/// How often a scheduled run waiting for a failing store looks again.
pub(super) const STORE_FAILING_RECHECK_MS: i64 = 1000;

/// Something that may happen only once the writes made before it are committed.
pub(super) enum After {
    /// Answers a request, or starts the store read that answers it.
    Reply(Box<dyn FnOnce() + Send>),
    /// Answers a progress report, once its write is committed (and known to have found the task).
    Progress { task_id: TaskId, reply: Reply<()> },
    /// Starts a task whose start is recorded.
    Launch {
        task_id: TaskId,
        worker: String,
        launch: Box<TaskLaunch>,
    },
    /// Hands a notice to the delivery task once its outbox row is committed (`notices.rs`).
    Notice(Box<crate::notify::Notice>),
    /// Sends a task to its worker once the launch mark covering its start is committed
    /// (`Core::dispatch`).
    Dispatch {
        task_id: TaskId,
        worker: String,
        launch: Box<TaskLaunch>,
    },
}

/// What the shell carries out for a worker, through its link.
#[derive(Debug)]
pub(super) enum Command {
    Launch {
        worker: String,
        launch: Box<TaskLaunch>,
    },
    Kill {
        worker: String,
        task_id: TaskId,
    },
    /// A launch is due soon: the worker may get its sandbox ready.
    Prepare {
        worker: String,
        sandbox: PathBuf,
    },
}

/// What the core asks of the shell, gathered over one turn of the loop.
#[derive(Default)]
pub(super) struct Effects {
    /// Writes for the turn's group commit.
    pub(super) writes: Vec<Write>,
    /// What waits for those writes to be committed.
    pub(super) after: Vec<After>,
    /// Commands for workers, carried out at once.
    pub(super) commands: Vec<Command>,
    /// Tasks that ended, with how: for notifications.
    pub(super) ended: Vec<(TaskId, super::ends::End)>,
    /// Resources may have been freed: every waiting job is tried at the end of the turn.
    pub(super) start_all: bool,
}

/// State, timers and rules.
pub(super) struct Core {
    pub(super) config: Config,
    pub(super) state: State,
    /// Next wake-ups, ordered by instant (epoch ms); ties are broken by the timer itself.
    pub(super) timers: BTreeSet<(i64, Timer)>,
    /// The timer entry of each scheduled job, so a changed schedule can remove its old one.
    pub(super) schedule_timer: HashMap<String, i64>,
    /// Each job's entry in `State::next_runs`, so a changed schedule can remove its old one.
    pub(super) listed_run: HashMap<String, i64>,
    /// Launches recorded ahead of their instant, by task id, until their `Timer::Launch`.
    pub(super) early: HashMap<TaskId, (String, TaskLaunch)>,
    /// The latest `started_ms` of a task handed to its worker, and the last value recorded as
    /// [`Write::LaunchedThrough`]: a task recorded as running with a later start never launched.
    pub(super) launched_through: i64,
    pub(super) marked_through: i64,
    /// Set when the server begins to stop: nothing launches or is recorded to run any more.
    pub(super) quiesced: bool,
    /// Numbers worker connections, so a stale stream's events are ignored.
    pub(super) next_connection: u64,
    /// The instant of the input being handled.
    pub(super) now: DateTime<Utc>,
    pub(super) out: Effects,
}

impl Core {
    pub(super) fn new(config: Config, now: DateTime<Utc>) -> Core {
        Core {
            config,
            state: State::default(),
            timers: BTreeSet::new(),
            schedule_timer: HashMap::new(),
            listed_run: HashMap::new(),
            early: HashMap::new(),
            launched_through: 0,
            marked_through: 0,
            quiesced: false,
            next_connection: 0,
            now,
            out: Effects::default(),
        }
    }

    /// Sets the instant of the next input.
    pub(super) fn at(&mut self, now: DateTime<Utc>) -> &mut Core {
        self.now = now;
        self
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.now.timestamp_millis()
    }

    /// The effects gathered so far, with the launch mark recorded if it moved.
    pub(super) fn take_effects(&mut self) -> Effects {
        if std::mem::take(&mut self.out.start_all) {
            self.try_start_all();
        }
        if self.launched_through > self.marked_through {
            self.marked_through = self.launched_through;
            self.out.writes.push(Write::LaunchedThrough(self.marked_through));
        }
        std::mem::take(&mut self.out)
    }

    /// The instant of the next timer, if any.
    pub(super) fn next_timer(&self) -> Option<i64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Adds writes to the turn's group.
    pub(super) fn record(&mut self, batch: Vec<Write>) {
        self.out.writes.extend(batch);
    }

    /// Answers a request once the writes made so far are committed.
    pub(super) fn respond<T: Send + 'static>(&mut self, reply: Reply<T>, result: Result<T, Error>) {
        self.out.after.push(After::Reply(Box::new(move || {
            let _ = reply.send(result);
        })));
    }

    pub(super) fn put_job(&self, name: &str) -> Write {
        let entry = &self.state.jobs[name];
        Write::PutJob(Box::new(StoredJob {
            job: entry.job.clone(),
            satisfied: self.state.graph.satisfied_parents(name),
        }))
    }

    /// The server is stopping: from now on nothing is launched and no run is recorded.
    pub(super) fn quiesce(&mut self) {
        self.quiesced = true;
        tracing::info!("Stopping: no more launches or scheduled runs.");
    }

    /// On a stop: every task recorded as started that never launched is recorded as queued
    /// again, so that the next start runs it (it would anyway: its start is past the mark).
    pub(super) fn unlaunched_back_to_queue(&mut self, mut unlaunched: Vec<TaskId>) {
        self.quiesced = true;
        self.out.start_all = false;
        unlaunched.extend(self.early.drain().map(|(id, _)| id));
        for task_id in unlaunched {
            if let Some(open) = self.state.tasks.get_mut(&task_id)
                && open.record.state == TaskState::Running
            {
                unstart(&mut open.record);
                self.out.writes.push(Write::PutTask(open.record.clone()));
            }
        }
    }

    /// Records who asked for a change and how it went, in the same group commit as the change.
    pub(super) fn audit<T>(
        &mut self,
        who: Option<Box<super::Actor>>,
        job: Option<&str>,
        result: &Result<T, Error>,
    ) {
        let Some(who) = who else {
            return;
        };
        let super::Actor {
            principal,
            role,
            source,
            method,
            route,
        } = *who;
        self.out
            .writes
            .push(Write::Audit(Box::new(crate::store::AuditEntry {
                at_ms: self.now_ms(),
                principal,
                role,
                source,
                method,
                route,
                job: job.map(str::to_owned),
                outcome: match result {
                    Ok(_) => "ok".to_owned(),
                    Err(error) => error.to_string(),
                },
            })));
    }

    /// Creates or replaces an API token.
    pub(super) fn put_token(&mut self, token: crate::store::StoredToken) {
        if let Ok(role) = crate::auth::Role::parse(&token.role) {
            self.config.tokens.put(crate::auth::Token {
                name: token.name.clone(),
                role,
                hash: token.hash.clone(),
                created_ms: token.created_ms,
                last_used_ms: token.last_used_ms,
            });
        }
        self.out.writes.push(Write::PutToken(token));
    }

    /// Deletes an API token; false when there is none by that name.
    pub(super) fn delete_token(&mut self, name: &str) -> bool {
        let found = self.config.tokens.remove(name).is_some();
        if found {
            self.out.writes.push(Write::DeleteToken(name.to_owned()));
        }
        found
    }

    /// Stores when a token was last used.
    pub(super) fn token_used(&mut self, name: &str, at_ms: i64) {
        if let Some(token) = self.config.tokens.named(name) {
            self.out.writes.push(Write::PutToken(crate::store::StoredToken {
                name: token.name,
                role: token.role.as_str().to_owned(),
                hash: token.hash,
                created_ms: token.created_ms,
                last_used_ms: Some(at_ms),
            }));
        }
    }

    /// Parses a scheduled job's schedule and the job's epsilon.
    pub(super) fn runtime_schedule(
        &self,
        job: &Job,
    ) -> Result<(Option<schedule::Schedule>, chrono::Duration), schedule::Error> {
        let epsilon = if job.epsilon.is_empty() {
            self.config.default_epsilon
        } else {
            schedule::parse_duration(&job.epsilon)?
        };
        let schedule = match (&job.parents, &job.schedule) {
            (None, Some(text)) => {
                let mut parsed =
                    schedule::parse(text, job.schedule_time_zone.as_deref().unwrap_or(""), self.now)?;
                // A cron schedule goes on from its kept cursor, not from now, so the runs a
                // downtime missed are skipped and counted as for an ISO 8601 schedule.
                if let Some(cursor) = job.schedule_cursor {
                    parsed.resume(cursor);
                }
                Some(parsed)
            }
            _ => None,
        };
        Ok((schedule, epsilon))
    }
}

/// Writes where a schedule is into its job, for the store: an ISO 8601 schedule is rewritten
/// from its next run on, as Chronos does; a cron schedule keeps its expression as given and
/// moves its cursor.
pub(super) fn keep_progress(job: &mut Job, schedule: &schedule::Schedule) {
    match schedule {
        schedule::Schedule::Interval(interval) => job.schedule = Some(interval.render()),
        schedule::Schedule::Cron(cron) => {
            job.schedule_cursor = cron.next_run().map(|t| t.timestamp_millis());
        }
    }
}

/// What a task of this job needs from a worker.
pub(super) fn job_resources(job: &Job) -> Resources {
    Resources {
        cpus: job.cpus,
        mem: job.mem,
        disk: job.disk,
    }
}

/// The kinds of work a job's tasks ask of a worker.
pub(super) fn job_needs(job: &Job) -> crate::placement::Needs {
    crate::placement::Needs {
        process: job.container.is_none(),
        fetch: !job.fetch.is_empty() || !job.uris.is_empty(),
    }
}

/// Turns a task recorded as started but never launched back into a queued one.
pub(super) fn unstart(record: &mut TaskRecord) {
    record.state = TaskState::Queued;
    record.started_ms = None;
    record.worker = String::new();
    record.message = String::new();
}

/// Why a scheduled occurrence was skipped.
pub(super) fn skipped_message(epsilon: chrono::Duration) -> String {
    format!(
        "skipped: it could not start within its epsilon ({})",
        schedule::format_duration(epsilon)
    )
}
