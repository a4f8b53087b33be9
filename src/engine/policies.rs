//! Rules beyond Chronos: pausing the whole scheduler, what a run does when the job's previous
//! run still goes (`concurrencyPolicy`), how long a retry waits (`retryDelay`, `retryBackoff`,
//! `retryDelayMax`) and which failures it follows (`retryOn`), and catching up on missed
//! occurrences (`catchUp`). Each is a rule of the pure core: it takes `now` from the core and
//! answers with writes and commands.

use chrono::{DateTime, Utc};

use super::Error;
use super::core::{Command, Core};
use super::ends::End;
use crate::clock;
use crate::job::{ConcurrencyPolicy, Failure, Job};
use crate::schedule::{self, Schedule};
use crate::store::{TaskState, Write};

/// What a run that comes due does, under its job's concurrency policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Admission {
    /// It is queued (and starts when the policy and the workers allow).
    Run,
    /// It is skipped, for this reason (recorded in the history).
    Skip(String),
}

impl Core {
    /// Whether the scheduler is paused: nothing new starts.
    pub(super) fn paused(&self) -> bool {
        self.state.paused_since.is_some()
    }

    /// Pauses the scheduler: no schedule, dependency, retry or manual run starts until it
    /// resumes; running tasks go on. Returns false when it already was paused.
    pub(super) fn pause(&mut self) -> bool {
        if self.paused() {
            return false;
        }
        let now = self.now_ms();
        self.state.paused_since = Some(now);
        self.record(vec![Write::SetPause(Some(now))]);
        // No occurrence is recorded while paused: resuming arms every schedule again, and each
        // job's epsilon and catch-up rules then decide what of the missed runs still runs.
        for (name, at) in std::mem::take(&mut self.schedule_timer) {
            self.timers.remove(&(at, super::core::Timer::Schedule(name)));
        }
        tracing::warn!("The scheduler is paused: nothing new starts until it resumes.");
        true
    }

    /// Resumes a paused scheduler. Returns false when it was not paused.
    pub(super) fn resume(&mut self) -> bool {
        if !self.paused() {
            return false;
        }
        self.state.paused_since = None;
        self.record(vec![Write::SetPause(None)]);
        let names: Vec<String> = self
            .state
            .jobs
            .iter()
            .filter(|(_, entry)| entry.schedule.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.arm_schedule(&name);
        }
        // What waited in the queues (retries that came due, dependency runs) starts now.
        self.out.start_all = true;
        tracing::info!("The scheduler resumed.");
        true
    }

    /// Refuses a manual run that cannot start: while paused, or while the job runs under
    /// `forbid`. `replace` kills what runs, so that the run starts as soon as it has ended.
    pub(super) fn admit_request(&mut self, name: &str) -> Result<(), Error> {
        if self.paused() {
            return Err(Error::Conflict {
                message: "the scheduler is paused: nothing starts until it resumes \
                          (PUT /v1/scheduler/resume)"
                    .to_owned(),
            });
        }
        match self.admit(name, self.now_ms()) {
            Admission::Run => Ok(()),
            Admission::Skip(why) => Err(Error::Conflict { message: why }),
        }
    }

    /// What a run of `name` due at `due_ms` does under the job's concurrency policy, while
    /// another of its runs is running (or waits for its async completion).
    pub(super) fn admit(&mut self, name: &str, due_ms: i64) -> Admission {
        let Some(entry) = self.state.jobs.get(name) else {
            return Admission::Run;
        };
        if entry.running.is_empty() {
            return Admission::Run;
        }
        match entry.job.concurrency() {
            ConcurrencyPolicy::Queue | ConcurrencyPolicy::Allow => Admission::Run,
            ConcurrencyPolicy::Forbid => Admission::Skip(format!(
                "skipped: job '{name}' was still running (task {}) and its concurrencyPolicy is forbid",
                entry.running[0]
            )),
            ConcurrencyPolicy::Replace => {
                self.replace_running(name, due_ms);
                Admission::Run
            }
        }
    }

    /// `replace`: kills the job's running tasks so the run due at `due_ms` takes their place.
    /// An async task whose process is done and waits for its completion call is closed as
    /// killed at once; the others end when their worker reports the kill.
    fn replace_running(&mut self, name: &str, due_ms: i64) {
        let Some(entry) = self.state.jobs.get(name) else {
            return;
        };
        let why = format!(
            "killed: replaced by the run due at {} (concurrencyPolicy replace)",
            clock::iso(clock::from_millis(due_ms))
        );
        let mut waiting = Vec::new();
        for id in entry.running.clone() {
            let Some(open) = self.state.tasks.get_mut(&id) else {
                continue;
            };
            match open.record.state {
                TaskState::Running if !open.kill_requested => {
                    open.kill_requested = true;
                    open.kill_reason = Some(why.clone());
                    let worker = open.record.worker.clone();
                    self.out.commands.push(Command::Kill { worker, task_id: id });
                }
                TaskState::Waiting => waiting.push(id),
                _ => {}
            }
        }
        for id in waiting {
            self.end_task(&id, End::Killed { message: why.clone() });
        }
    }

    /// How long the retry after a failed `attempt` (0 for the first run) waits, in ms:
    /// `retryDelay` (or the server's `--failure-retry`) times `retryBackoff` per earlier retry,
    /// at most `retryDelayMax`.
    pub(super) fn retry_delay_ms(&self, job: &Job, attempt: u32) -> i64 {
        let default = i64::try_from(self.config.failure_retry.as_millis()).unwrap_or(i64::MAX);
        retry_delay_ms(job, attempt, default)
    }

    /// The missed occurrences of a `catchUp` job between its schedule and `now - epsilon`:
    /// the newest `limit` of them (oldest first) and the schedule after all of them, with how
    /// many older ones are dropped. `None` when nothing was missed.
    pub(super) fn missed_runs(
        before: &Schedule,
        now: DateTime<Utc>,
        epsilon: chrono::Duration,
        limit: u32,
    ) -> Option<(Vec<DateTime<Utc>>, Schedule, u64)> {
        let (after, missed) = before.skip_missed(now, epsilon);
        if missed == 0 {
            return None;
        }
        let keep = u64::from(limit).min(missed);
        let dropped = missed - keep;
        let mut at = if dropped == 0 {
            before.clone()
        } else {
            first_kept(before, now - epsilon, dropped)
        };
        let mut runs = Vec::new();
        while (runs.len() as u64) < keep
            && let Some(due) = at.next_run()
        {
            runs.push(due);
            at = at.advance();
        }
        // The kept runs are the newest missed ones, so `at` now stands where `after` does, with
        // the runs taken counted off a finite schedule (skipped ones use no repeats).
        debug_assert!(at.next_run().is_none() || at.next_run() == after.next_run());
        Some((runs, at, dropped))
    }
}

/// The retry delay rule, apart from the core so it can be tested alone.
pub(super) fn retry_delay_ms(job: &Job, attempt: u32, default_ms: i64) -> i64 {
    let parse = |text: &str| {
        (!text.is_empty())
            .then(|| schedule::parse_duration(text).ok())
            .flatten()
            .map(|d| d.num_milliseconds())
    };
    let base = parse(&job.retry_delay).unwrap_or(default_ms);
    let grown = base as f64 * job.retry_backoff.max(1.0).powi(attempt.min(1024) as i32);
    // A float past i64 saturates in `as`; the cap, when set, bounds it anyway.
    let delay = grown as i64;
    match parse(&job.retry_delay_max) {
        Some(max) => delay.min(max),
        None => delay,
    }
}

/// How a failed end looks to a retry policy; `None` for ends that are not failures.
pub(super) fn failure_of(end: &End, exit_code: Option<i32>) -> Option<Failure> {
    match end {
        End::Failed { .. } => Some(Failure::Exit(exit_code)),
        End::TimedOut { .. } => Some(Failure::Timeout),
        End::LaunchFailed { fetch: true, .. } => Some(Failure::Fetch),
        End::LaunchFailed { fetch: false, .. } => Some(Failure::Launch),
        End::Lost { .. } => Some(Failure::Lost),
        End::Succeeded { .. } | End::Killed { .. } | End::Skipped { .. } => None,
    }
}

/// The schedule moved past the oldest `dropped` missed occurrences, found by bisecting on the
/// instant, since `skip_missed` counts the occurrences before an instant cheaply (arithmetically
/// for fixed periods) while stepping one by one through years of `PT1S` would not be.
fn first_kept(before: &Schedule, target: DateTime<Utc>, dropped: u64) -> Schedule {
    let zero = chrono::Duration::zero();
    let first = before.next_run().map_or(i64::MAX, |t| t.timestamp_millis());
    let (mut low, mut high) = (first, target.timestamp_millis());
    // Invariant: fewer than `dropped` occurrences lie before `low`; at least `dropped` before
    // `high` + 1 ms.
    while low < high {
        let mid = low + (high - low) / 2;
        let (_, count) = before.skip_missed(clock::from_millis(mid + 1), zero);
        if count >= dropped {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    before.skip_missed(clock::from_millis(low + 1), zero).0
}

/// The reason recorded for a run skipped because an earlier one of the same job still waited.
pub(super) fn already_waiting(earlier_ms: i64) -> String {
    format!(
        "skipped: the run due at {} had not started yet",
        clock::iso(clock::from_millis(earlier_ms))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{FailureKind, RetryOn};

    fn job() -> Job {
        serde_json::from_value(serde_json::json!({
            "name": "j", "command": "false", "shell": true, "epsilon": "PT60S", "executor": "",
            "executorFlags": "", "taskInfoData": "", "retries": 5, "owner": "", "ownerName": "",
            "description": "", "async": false, "successCount": 0, "errorCount": 0,
            "lastSuccess": "", "lastError": "", "cpus": 0.1, "disk": 0.0, "mem": 16.0,
            "disabled": false, "softError": false, "dataProcessingJobType": false,
            "errorsSinceLastSuccess": 0, "fetch": [], "uris": [], "environmentVariables": [],
            "arguments": [], "highPriority": false, "runAsUser": "", "concurrent": false,
            "maxCompletionTime": 0, "constraints": [], "schedule": "R/2030-01-01T00:00:00Z/PT1M"
        }))
        .expect("a valid job")
    }

    #[test]
    fn retry_delays_grow_by_the_backoff_up_to_the_cap() {
        // (retryDelay, retryBackoff, retryDelayMax, attempt) -> ms
        let table = [
            ("", 1.0, "", 0, 60_000),
            ("", 1.0, "", 4, 60_000),
            ("PT10S", 1.0, "", 3, 10_000),
            ("PT10S", 2.0, "", 0, 10_000),
            ("PT10S", 2.0, "", 1, 20_000),
            ("PT10S", 2.0, "", 3, 80_000),
            ("PT10S", 2.0, "PT30S", 3, 30_000),
            ("PT1S", 1.5, "", 2, 2_250),
            ("PT1S", 1000.0, "PT1H", 1000, 3_600_000),
            ("PT1S", 1000.0, "", 1000, i64::MAX),
        ];
        for (delay, backoff, max, attempt, want) in table {
            let mut job = job();
            job.retry_delay = delay.into();
            job.retry_backoff = backoff;
            job.retry_delay_max = max.into();
            assert_eq!(
                retry_delay_ms(&job, attempt, 60_000),
                want,
                "{delay} x{backoff} max {max:?} attempt {attempt}"
            );
        }
    }

    #[test]
    fn retry_on_picks_the_failures_it_names() {
        let mut job = job();
        let all = [
            Failure::Exit(Some(1)),
            Failure::Exit(None),
            Failure::Timeout,
            Failure::Lost,
            Failure::Fetch,
            Failure::Launch,
        ];
        assert!(
            all.iter().all(|f| job.retries_on(*f)),
            "empty means every failure"
        );
        job.retry_on = vec![RetryOn::ExitCode(75), RetryOn::Kind(FailureKind::Lost)];
        assert!(job.retries_on(Failure::Exit(Some(75))));
        assert!(!job.retries_on(Failure::Exit(Some(1))));
        assert!(!job.retries_on(Failure::Exit(None)));
        assert!(job.retries_on(Failure::Lost));
        assert!(!job.retries_on(Failure::Timeout));
        assert!(!job.retries_on(Failure::Fetch));
        job.retry_on = vec![
            RetryOn::Kind(FailureKind::Exit),
            RetryOn::Kind(FailureKind::Fetch),
        ];
        assert!(job.retries_on(Failure::Exit(Some(1))));
        assert!(job.retries_on(Failure::Exit(None)));
        assert!(job.retries_on(Failure::Fetch));
        assert!(!job.retries_on(Failure::Launch));
    }

    #[test]
    fn ends_map_onto_failures() {
        let m = || String::new();
        assert_eq!(
            failure_of(&End::Failed { message: m() }, Some(3)),
            Some(Failure::Exit(Some(3)))
        );
        assert_eq!(
            failure_of(&End::TimedOut { message: m() }, None),
            Some(Failure::Timeout)
        );
        assert_eq!(
            failure_of(
                &End::LaunchFailed {
                    message: m(),
                    fetch: true
                },
                None
            ),
            Some(Failure::Fetch)
        );
        assert_eq!(
            failure_of(
                &End::LaunchFailed {
                    message: m(),
                    fetch: false
                },
                None
            ),
            Some(Failure::Launch)
        );
        assert_eq!(failure_of(&End::Lost { message: m() }, None), Some(Failure::Lost));
        assert_eq!(failure_of(&End::Killed { message: m() }, None), None);
        assert_eq!(failure_of(&End::Succeeded { message: m() }, None), None);
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn catching_up_keeps_the_newest_missed_runs_oldest_first() {
        let every_minute =
            schedule::parse("R/2030-01-01T00:00:00Z/PT1M", "", at("2030-01-01T00:00:00Z")).unwrap();
        let eps = chrono::Duration::seconds(30);
        // Down from 00:00 to 00:59:20: 00:00 to 00:58 are past epsilon, 00:59 is within it.
        let now = at("2030-01-01T00:59:20Z");
        let (runs, after, dropped) = Core::missed_runs(&every_minute, now, eps, 3).unwrap();
        assert_eq!(
            runs,
            [
                at("2030-01-01T00:56:00Z"),
                at("2030-01-01T00:57:00Z"),
                at("2030-01-01T00:58:00Z")
            ]
        );
        assert_eq!(dropped, 56);
        assert_eq!(
            after.next_run(),
            Some(at("2030-01-01T00:59:00Z")),
            "the one within epsilon runs as usual"
        );
        // Fewer missed than the limit: all of them.
        let (runs, _, dropped) =
            Core::missed_runs(&every_minute, at("2030-01-01T00:02:20Z"), eps, 10).unwrap();
        assert_eq!(runs, [at("2030-01-01T00:00:00Z"), at("2030-01-01T00:01:00Z")]);
        assert_eq!(dropped, 0);
        // Nothing missed.
        assert!(Core::missed_runs(&every_minute, at("2030-01-01T00:00:10Z"), eps, 10).is_none());
    }

    #[test]
    fn catching_up_a_finite_schedule_uses_a_repeat_per_run() {
        let three = schedule::parse("R3/2030-01-01T00:00:00Z/PT1H", "", at("2030-01-01T00:00:00Z")).unwrap();
        let (runs, after, dropped) =
            Core::missed_runs(&three, at("2030-01-01T05:00:00Z"), chrono::Duration::zero(), 2).unwrap();
        // Occurrences at 00, 01, 02 (R3 counts runs, and skipped ones don't use repeats, so the
        // schedule goes on: 03 and 04 are missed too).
        assert_eq!(runs.len(), 2);
        assert_eq!(dropped, 3);
        assert_eq!(after.upcoming(5), [at("2030-01-01T05:00:00Z")], "one repeat left");
    }

    #[test]
    fn catching_up_a_second_schedule_after_a_year_is_quick_and_exact() {
        let every_second =
            schedule::parse("R/2030-01-01T00:00:00Z/PT1S", "", at("2030-01-01T00:00:00Z")).unwrap();
        let now = at("2031-01-01T00:00:00Z");
        let (runs, after, _) = Core::missed_runs(&every_second, now, chrono::Duration::zero(), 2).unwrap();
        assert_eq!(runs, [at("2030-12-31T23:59:58Z"), at("2030-12-31T23:59:59Z")]);
        assert_eq!(after.next_run(), Some(now));
    }
}
