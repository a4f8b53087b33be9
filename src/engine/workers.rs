//! The worker seam and registry. Every worker (the scheduler's built-in one, an agent over gRPC,
//! a Docker Swarm node) joins through [`Core::worker_connected`] with a [`WorkerLink`],
//! reports ends through the same channel, and is reconciled the same way; the core cannot tell
//! them apart. Silent workers are declared lost, and their tasks with them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::core::{Command, Core, job_resources};
use super::state::{Worker, WorkerState};
use crate::executor::runner::{TaskEnd, TaskLaunch};
use crate::job::TaskId;
use crate::placement::Resources;
use crate::store::{TaskState, Write};

/// How the engine reaches a worker. Calls return at once; what they start is reported later as
/// a [`TaskEnd`] ([`super::Handle::task_ended`]; the built-in worker has a channel of its own).
pub trait WorkerLink: Send + Sync {
    /// Hands a task to the worker; false when the worker can no longer be reached.
    fn launch(&self, launch: TaskLaunch) -> bool;
    /// Stops a task: SIGTERM, then SIGKILL after `grace` (or the container equivalent).
    fn kill(&self, task_id: &TaskId, grace: Duration);
    /// A launch with this sandbox is due soon; a worker on this host may make it now.
    fn prepare(&self, _sandbox: &Path) {}
}

/// What a worker says about itself when it registers.
#[derive(Clone)]
pub struct WorkerInfo {
    pub name: String,
    /// Its identity, kept in its work directory.
    pub id: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    pub total: Resources,
    /// Tasks it still runs.
    pub running: Vec<TaskId>,
    /// Tasks that ended while it was away.
    pub finished: Vec<TaskEnd>,
    /// The scheduler's own worker: its tasks end with the scheduler, and no agent may take its
    /// name.
    pub local: bool,
    /// The kinds of work it does: everything for agents and the built-in worker, containers
    /// only for a cluster engine's nodes.
    pub runs: crate::placement::Runs,
}

/// A connected worker's new offer ([`Core::worker_update`]).
#[derive(Debug, Clone)]
pub struct WorkerUpdate {
    pub attributes: Vec<(String, String)>,
    pub total: Resources,
    /// Whether it takes new tasks; `false` keeps it and its running tasks, as a paused Swarm node
    /// or a cordoned Kubernetes node does.
    pub accepting: bool,
}

impl Core {
    /// Whether tasks recorded on this worker ended with the previous scheduler process.
    pub(super) fn ends_with_scheduler(&self, worker: &str) -> bool {
        self.state.workers.get(worker).is_some_and(|w| w.local)
            || (worker.is_empty() || worker == self.config.worker_name) && self.config.local_worker.is_some()
    }

    /// After a restart: a task a worker was running counts on that worker until it registers
    /// again (and says what became of it) or times out.
    pub(super) fn expect_worker(&mut self, name: &str, task_id: &TaskId, resources: Resources) {
        let now = self.now;
        let worker = self
            .state
            .workers
            .entry(name.to_owned())
            .or_insert_with(|| Worker::expected(name, now));
        worker.tasks.insert(task_id.to_owned());
        worker.used = worker.used.plus(&resources);
        if let Some(open) = self.state.tasks.get_mut(task_id) {
            open.resources = resources;
        }
    }

    /// A worker registers. A name that another worker holds (one that is connected, or gone for
    /// less than the worker timeout) is refused, unless it is the same worker (same identity)
    /// starting again, which takes over at once.
    pub(super) fn worker_connected(
        &mut self,
        info: WorkerInfo,
        link: Arc<dyn WorkerLink>,
    ) -> Result<u64, String> {
        self.check_name(&info)?;
        self.next_connection += 1;
        let connection = self.next_connection;
        tracing::info!(worker = %info.name, hostname = %info.hostname, "Worker registered.");
        let now = self.now;
        let worker = self
            .state
            .workers
            .entry(info.name.clone())
            .or_insert_with(|| Worker::expected(&info.name, now));
        if worker.id != info.id && !worker.id.is_empty() {
            tracing::warn!(worker = %info.name, "A different worker takes over this name.");
        }
        worker.id = info.id.clone();
        worker.local = info.local;
        worker.hostname = info.hostname.clone();
        worker.attributes = info.attributes.clone();
        worker.total = info.total;
        worker.runs = info.runs;
        worker.accepting = true;
        worker.state = WorkerState::Active;
        worker.last_heartbeat = now;
        worker.link = Some(link);
        worker.connection = connection;
        self.reconcile(&info);
        self.out.start_all = true;
        Ok(connection)
    }

    fn check_name(&self, info: &WorkerInfo) -> Result<(), String> {
        let Some(existing) = self.state.workers.get(&info.name) else {
            return Ok(());
        };
        if existing.local && !info.local {
            return Err(format!(
                "the name '{}' is the scheduler's built-in worker; give this agent another --name",
                info.name
            ));
        }
        let same = existing.id.is_empty() || existing.id == info.id;
        if same || existing.state == WorkerState::Lost {
            return Ok(());
        }
        let held = if existing.state == WorkerState::Active {
            "connected"
        } else {
            "expected back"
        };
        Err(format!(
            "another agent named '{}' (on {}) is {held}; give this agent another --name, or it \
             takes over once that one has been gone for the worker timeout",
            info.name, existing.hostname
        ))
    }

    /// What we think runs on a worker against what it says runs there.
    fn reconcile(&mut self, info: &WorkerInfo) {
        // What we expected on it, taken before anything below launches new tasks there.
        let finished: Vec<&str> = info.finished.iter().map(|e| e.task_id.as_str()).collect();
        let ours: Vec<TaskId> = self
            .state
            .workers
            .get(&info.name)
            .map(|w| {
                w.tasks
                    .iter()
                    .filter(|t| !finished.contains(&t.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Ends that happened while it was away.
        for end in info.finished.iter().cloned() {
            self.on_task_end(&info.name, end);
        }
        for task_id in &ours {
            if !info.running.contains(task_id) {
                self.lose(&info.name, task_id, "the worker came back without it");
            }
        }
        for task_id in &info.running {
            let known = self
                .state
                .tasks
                .get(task_id)
                .is_some_and(|t| t.record.state == TaskState::Running && t.record.worker == info.name);
            if !known && !self.adopt(&info.name, task_id) {
                // Nobody expects this task any more (it was declared lost and retried): stop it.
                tracing::warn!(worker = %info.name, task = %task_id, "Killing a task the scheduler does not know.");
                self.out.commands.push(Command::Kill {
                    worker: info.name.clone(),
                    task_id: task_id.clone(),
                });
            }
        }
    }

    /// A task this scheduler holds as queued, because its launch was not yet marked when the
    /// previous scheduler stopped, that the worker does run: it is running there, not queued.
    fn adopt(&mut self, worker: &str, task_id: &TaskId) -> bool {
        let now = self.now_ms();
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return false;
        };
        if open.record.state != TaskState::Queued || self.state.retrying.contains_key(task_id) {
            return false;
        }
        let (Some(entry), Some(w)) = (
            self.state.jobs.get_mut(&open.record.job),
            self.state.workers.get_mut(worker),
        ) else {
            return false;
        };
        tracing::info!(
            worker,
            task = %task_id,
            "Adopting a task the worker runs that was recorded as queued."
        );
        let resources = job_resources(&entry.job);
        entry.queue.retain(|id| id != task_id);
        entry.running.push(task_id.to_owned());
        open.record.state = TaskState::Running;
        open.record.worker = worker.to_owned();
        open.record.started_ms = Some(now);
        open.resources = resources;
        w.used = w.used.plus(&resources);
        w.tasks.insert(task_id.to_owned());
        let record = open.record.clone();
        self.launched_through = self.launched_through.max(now);
        self.record(vec![Write::PutTask(record)]);
        true
    }

    pub(super) fn worker_heartbeat(&mut self, name: &str, connection: u64, output_dropped: u64) {
        let now = self.now;
        if let Some(worker) = self.state.workers.get_mut(name)
            && worker.link.is_some()
            && worker.connection == connection
        {
            worker.last_heartbeat = now;
            worker.output_dropped = output_dropped;
        }
    }

    pub(super) fn worker_disconnected(&mut self, name: &str, connection: u64) {
        if let Some(worker) = self.state.workers.get_mut(name)
            && worker.link.is_some()
            && worker.connection == connection
        {
            tracing::warn!(worker = name, "Worker disconnected; waiting for it to come back.");
            worker.link = None;
            worker.state = WorkerState::Disconnected;
        }
    }

    /// A connected worker's offer changed (a cluster node's labels or resources, or whether it
    /// takes new tasks): placement sees it at once, and nothing it runs is touched. Unlike a new
    /// registration, this reconciles nothing, so a launch still on its way is not taken for
    /// missing.
    pub(super) fn worker_update(&mut self, name: &str, connection: u64, update: WorkerUpdate) {
        if let Some(worker) = self.state.workers.get_mut(name)
            && worker.link.is_some()
            && worker.connection == connection
        {
            worker.attributes = update.attributes;
            worker.total = update.total;
            worker.accepting = update.accepting;
            self.out.start_all = true;
        }
    }

    /// A backend knows one of its workers is gone (a cluster node drained or down): it is lost
    /// now rather than after the timeout, and its tasks with it, `why` in their records.
    pub(super) fn worker_lost(&mut self, name: &str, connection: u64, why: &str) {
        let current = self
            .state
            .workers
            .get(name)
            .is_some_and(|w| w.link.is_some() && w.connection == connection);
        if current {
            tracing::warn!(worker = %name, why, "Worker lost.");
            self.lose_worker(name, why);
        }
    }

    fn lose_worker(&mut self, name: &str, why: &str) {
        let tasks: Vec<TaskId> = match self.state.workers.get_mut(name) {
            Some(worker) => {
                worker.state = WorkerState::Lost;
                worker.link = None;
                worker.tasks.iter().cloned().collect()
            }
            None => return,
        };
        for task_id in tasks {
            self.lose(name, &task_id, why);
        }
    }

    /// Declares workers lost that have been silent longer than the timeout; their tasks are lost.
    pub(super) fn check_workers(&mut self) {
        let now = self.now;
        let timeout = chrono::Duration::from_std(self.config.worker_timeout).unwrap_or_default();
        let silent: Vec<String> = self
            .state
            .workers
            .values()
            .filter(|w| w.state != WorkerState::Lost && now - w.last_heartbeat > timeout)
            .map(|w| w.name.clone())
            .collect();
        for name in silent {
            tracing::warn!(worker = %name, "Worker lost: no heartbeat within the timeout.");
            self.lose_worker(&name, &format!("worker {name} stopped responding"));
        }
    }
}
