//! The engine's side of workers: the built-in one, agents joining and leaving, heartbeats,
//! reconciliation after a reconnect, and declaring silent workers lost.

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::state::{Link, Worker, WorkerState};
use super::{Engine, lost_end};
use crate::clock;
use crate::executor::runner::{TaskEnd, TaskLaunch};
use crate::placement::Resources;
use crate::store::{Store, TaskState};

/// What an agent says about itself when it registers.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub name: String,
    /// Its identity, kept in its work directory.
    pub id: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    pub total: Resources,
    /// Tasks it still runs.
    pub running: Vec<String>,
    /// Tasks that ended while it was away.
    pub finished: Vec<TaskEnd>,
}

/// What the engine asks of a remote worker.
#[derive(Debug)]
pub enum WorkerCommand {
    Launch(Box<TaskLaunch>),
    Kill {
        task_id: String,
        grace: std::time::Duration,
    },
}

impl<S: Store> Engine<S> {
    pub(super) fn add_local_worker(&mut self) {
        let Some(local) = self.config.local_worker.clone() else {
            return;
        };
        let name = self.config.worker_name.clone();
        self.state.workers.insert(
            name.clone(),
            Worker {
                hostname: name.clone(),
                id: self.config.worker_id.clone(),
                name,
                attributes: local.attributes,
                total: local.resources,
                used: Resources::default(),
                state: WorkerState::Active,
                last_heartbeat: clock::now(),
                tasks: Default::default(),
                link: Link::Local,
            },
        );
    }

    pub(super) fn is_local(&self, worker: &str) -> bool {
        self.state.workers.get(worker).is_some_and(Worker::is_local)
            || (worker.is_empty() || worker == self.config.worker_name) && self.config.local_worker.is_some()
    }

    /// After a restart: a task that an agent was running; the agent has until the timeout to return.
    pub(super) fn expect_worker(
        &mut self,
        name: &str,
        task_id: &str,
        resources: Resources,
        now: DateTime<Utc>,
    ) {
        let worker = self
            .state
            .workers
            .entry(name.to_owned())
            .or_insert_with(|| Worker {
                name: name.to_owned(),
                id: String::new(),
                hostname: name.to_owned(),
                attributes: Vec::new(),
                total: Resources::default(),
                used: Resources::default(),
                state: WorkerState::Disconnected,
                last_heartbeat: now,
                tasks: Default::default(),
                link: Link::None,
            });
        worker.tasks.insert(task_id.to_owned());
        worker.used = worker.used.plus(&resources);
        if let Some(open) = self.state.tasks.get_mut(task_id) {
            open.resources = resources;
        }
    }

    /// An agent registers. A name that another worker holds (one that is connected, or gone for
    /// less than the worker timeout) is refused, unless it is the same agent (same identity)
    /// starting again, which takes over at once.
    pub(super) fn worker_connected(
        &mut self,
        info: WorkerInfo,
        link: mpsc::UnboundedSender<WorkerCommand>,
    ) -> Result<u64, String> {
        if let Some(existing) = self.state.workers.get(&info.name) {
            if existing.is_local() {
                return Err(format!(
                    "the name '{}' is the scheduler's built-in worker; give this agent another --name",
                    info.name
                ));
            }
            let same = existing.id.is_empty() || existing.id == info.id;
            if !same && existing.state != WorkerState::Lost {
                return Err(format!(
                    "another agent named '{}' (on {}) is {}; give this agent another --name, or it \
                     takes over once that one has been gone for the worker timeout",
                    info.name,
                    existing.hostname,
                    if existing.state == WorkerState::Active {
                        "connected"
                    } else {
                        "expected back"
                    }
                ));
            }
        }
        self.next_connection += 1;
        let connection = self.next_connection;
        let now = clock::now();
        tracing::info!(worker = %info.name, hostname = %info.hostname, "Worker registered.");
        let worker = self
            .state
            .workers
            .entry(info.name.clone())
            .or_insert_with(|| Worker {
                name: info.name.clone(),
                id: info.id.clone(),
                hostname: info.hostname.clone(),
                attributes: Vec::new(),
                total: Resources::default(),
                used: Resources::default(),
                state: WorkerState::Active,
                last_heartbeat: now,
                tasks: Default::default(),
                link: Link::None,
            });
        if worker.id != info.id && !worker.tasks.is_empty() {
            // Another agent takes over a name whose holder was lost: nothing of the old one's
            // runs here.
            tracing::warn!(worker = %info.name, "A different agent takes over this name.");
        }
        worker.id = info.id.clone();
        worker.hostname = info.hostname.clone();
        worker.attributes = info.attributes.clone();
        worker.total = info.total;
        worker.state = WorkerState::Active;
        worker.last_heartbeat = now;
        worker.link = Link::Remote {
            tx: link.clone(),
            connection,
        };
        // What we expected on it, taken before anything below launches new tasks there.
        let finished_ids: Vec<String> = info.finished.iter().map(|e| e.task_id.clone()).collect();
        let ours: Vec<String> = self
            .state
            .workers
            .get(&info.name)
            .map(|w| {
                w.tasks
                    .iter()
                    .filter(|t| !finished_ids.contains(t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Ends that happened while it was away.
        for end in info.finished {
            self.on_task_end(&info.name, end);
        }
        // Reconcile: what we think runs there against what it says runs there.
        for task_id in &ours {
            if !info.running.contains(task_id) {
                let end = lost_end(task_id, "the worker came back without it");
                self.on_task_end(&info.name, end);
            }
        }
        for task_id in &info.running {
            let known = self
                .state
                .tasks
                .get(task_id)
                .is_some_and(|t| t.record.state == TaskState::Running && t.record.worker == info.name);
            if !known && self.adopt(&info.name, task_id, now) {
                continue;
            }
            if !known {
                // Nobody expects this task any more (it was declared lost and retried): stop it.
                tracing::warn!(worker = %info.name, task = %task_id, "Killing a task the scheduler does not know.");
                let _ = link.send(WorkerCommand::Kill {
                    task_id: task_id.clone(),
                    grace: self.config.kill_grace,
                });
            }
        }
        self.start_all = true;
        Ok(connection)
    }

    /// A task this scheduler holds as queued, because its launch was not yet marked when the
    /// previous scheduler stopped, that the worker does run: it is running there, not queued.
    fn adopt(&mut self, worker: &str, task_id: &str, now: DateTime<Utc>) -> bool {
        let Some(open) = self.state.tasks.get_mut(task_id) else {
            return false;
        };
        if open.record.state != TaskState::Queued || self.state.retrying.contains_key(task_id) {
            return false;
        }
        let Some(entry) = self.state.jobs.get_mut(&open.record.job) else {
            return false;
        };
        let Some(w) = self.state.workers.get_mut(worker) else {
            return false;
        };
        tracing::info!(
            worker,
            task = task_id,
            "Adopting a task the worker runs that was recorded as queued."
        );
        let resources = super::job_resources(&entry.job);
        entry.queue.retain(|id| id != task_id);
        entry.running.push(task_id.to_owned());
        open.record.state = TaskState::Running;
        open.record.worker = worker.to_owned();
        open.record.started_ms = Some(now.timestamp_millis());
        open.resources = resources;
        w.used = w.used.plus(&resources);
        w.tasks.insert(task_id.to_owned());
        let record = open.record.clone();
        self.launched_through = self.launched_through.max(now.timestamp_millis());
        self.record(vec![crate::store::Write::PutTask(record)]);
        true
    }

    pub(super) fn worker_heartbeat(&mut self, name: &str, connection: u64) {
        if let Some(worker) = self.state.workers.get_mut(name)
            && matches!(worker.link, Link::Remote { connection: c, .. } if c == connection)
        {
            worker.last_heartbeat = clock::now();
        }
    }

    pub(super) fn worker_disconnected(&mut self, name: &str, connection: u64) {
        if let Some(worker) = self.state.workers.get_mut(name)
            && matches!(worker.link, Link::Remote { connection: c, .. } if c == connection)
        {
            tracing::warn!(worker = name, "Worker disconnected; waiting for it to come back.");
            worker.link = Link::None;
            worker.state = WorkerState::Disconnected;
        }
    }

    /// Declares workers lost that have been silent longer than the timeout; their tasks are lost.
    pub(super) fn check_workers(&mut self) {
        let now = clock::now();
        let timeout = chrono::Duration::from_std(self.config.worker_timeout).unwrap_or_default();
        let silent: Vec<String> = self
            .state
            .workers
            .values()
            .filter(|w| !w.is_local() && w.state != WorkerState::Lost && now - w.last_heartbeat > timeout)
            .map(|w| w.name.clone())
            .collect();
        for name in silent {
            tracing::warn!(worker = %name, "Worker lost: no heartbeat within the timeout.");
            let tasks: Vec<String> = match self.state.workers.get_mut(&name) {
                Some(worker) => {
                    worker.state = WorkerState::Lost;
                    worker.link = Link::None;
                    worker.tasks.iter().cloned().collect()
                }
                None => continue,
            };
            for task_id in tasks {
                let end = lost_end(&task_id, &format!("worker {name} stopped responding"));
                self.on_task_end(&name, end);
            }
        }
    }
}
