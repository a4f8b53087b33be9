//! The engine's in-memory state, readable by queries through `Handle::read`.

use std::collections::{HashMap, VecDeque};

use indexmap::IndexMap;

use super::stats;
use crate::executor::Running;
use crate::graph::JobGraph;
use crate::job::Job;
use crate::schedule::Schedule;
use crate::store::TaskRecord;

/// One job and what the engine tracks about it.
#[derive(Debug)]
pub struct JobEntry {
    pub job: Job,
    /// The parsed schedule of a scheduled job; `job.schedule` is its rendered form.
    pub schedule: Option<Schedule>,
    pub epsilon: chrono::Duration,
    /// Tasks whose process runs, or async tasks waiting for their completion call.
    pub running: Vec<String>,
    /// Tasks accepted and ready to start, oldest first.
    pub queue: VecDeque<String>,
    /// Durations (ms) of the most recent successful tasks, oldest first.
    pub durations: VecDeque<f64>,
}

impl JobEntry {
    pub(super) fn new(job: Job, schedule: Option<Schedule>, epsilon: chrono::Duration) -> JobEntry {
        JobEntry {
            job,
            schedule,
            epsilon,
            running: Vec::new(),
            queue: VecDeque::new(),
            durations: VecDeque::new(),
        }
    }

    pub(super) fn record_duration(&mut self, ms: f64) {
        if self.durations.len() == stats::KEPT as usize {
            self.durations.pop_front();
        }
        self.durations.push_back(ms);
    }
}

/// A task that is not final yet.
#[derive(Debug)]
pub struct OpenTask {
    pub record: TaskRecord,
    /// The process group, while the process runs.
    pub pid: Option<Running>,
    /// Set by kill, so the process's end counts as killed rather than failed.
    pub kill_requested: bool,
}

impl OpenTask {
    pub(super) fn new(record: TaskRecord) -> OpenTask {
        OpenTask {
            record,
            pid: None,
            kill_requested: false,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub tasks_started: u64,
    pub skipped_runs: u64,
    pub successes: HashMap<String, u64>,
    pub failures: HashMap<String, u64>,
}

impl Metrics {
    pub(super) fn record_success(&mut self, job: &str) {
        *self.successes.entry(job.to_owned()).or_default() += 1;
    }

    pub(super) fn record_failure(&mut self, job: &str) {
        *self.failures.entry(job.to_owned()).or_default() += 1;
    }
}

/// Everything the engine owns in memory.
#[derive(Debug, Default)]
pub struct State {
    /// Jobs in creation order.
    pub jobs: IndexMap<String, JobEntry>,
    pub graph: JobGraph,
    /// Open tasks by task id.
    pub tasks: HashMap<String, OpenTask>,
    /// Retries waiting for their due time: task id to job name.
    pub retrying: HashMap<String, String>,
    pub metrics: Metrics,
    /// Children enqueued by a fan-out, to be started once the batch is committed.
    pub(super) pending_starts: Vec<String>,
}

impl State {
    /// Chronos' live state of a job: `N running`, `queued` or `idle`.
    pub fn job_state(&self, name: &str) -> String {
        let Some(entry) = self.jobs.get(name) else {
            return "idle".to_owned();
        };
        if !entry.running.is_empty() {
            format!("{} running", entry.running.len())
        } else if !entry.queue.is_empty() || self.retrying.values().any(|job| job == name) {
            "queued".to_owned()
        } else {
            "idle".to_owned()
        }
    }

    /// Tasks that are open, queued or waiting for a retry.
    pub fn queued_count(&self) -> usize {
        self.jobs.values().map(|e| e.queue.len()).sum::<usize>() + self.retrying.len()
    }

    pub fn running_count(&self) -> usize {
        self.jobs.values().map(|e| e.running.len()).sum()
    }
}
