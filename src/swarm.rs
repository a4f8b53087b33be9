//! The Docker Swarm backend on the worker seam: every ready Swarm node is a worker, each kairos
//! task it runs is a one-replica service pinned to it, and what becomes of that service is the
//! task's end. It talks to the engine only through [`Handle`] and [`WorkerLink`], as agents do,
//! and to Swarm only through [`crate::executor::swarm`].
//!
//! One loop owns all state: the nodes registered as workers, and the tasks with their services.
//! Links, and the calls the loop starts in the background, report to it over one channel, so
//! nothing here takes a lock. It runs on the leader only: it stops when its engine stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{self, Handle, Lease, WorkerInfo, WorkerLink, WorkerUpdate};
use crate::executor::docker::{self, ContainerSpec};
use crate::executor::live::TaskFeed;
use crate::executor::runner::{StartFailure, TaskEnd, TaskLaunch};
use crate::executor::swarm::{self as api, NodeCondition, NodeOffer, Seen, Swarm};
use crate::executor::{Outcome, Policy};
use crate::job::TaskId;
use crate::placement::{Resources, Runs};

/// How the backend works, from the server's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `kairos.owner` label of this cluster's services.
    pub namespace: String,
    /// Disk (MB) a node offers; Swarm reports none. A node label `kairos.disk_mb` overrides it.
    pub node_disk: f64,
    /// How often the tasks of all services are read (one request).
    pub poll: Duration,
    /// How often the nodes are read, which is each node's heartbeat.
    pub node_poll: Duration,
    /// Set on every service as its stop grace period: SIGTERM, then SIGKILL after this long.
    pub kill_grace: Duration,
    /// Output kept of services found at a restart (new ones carry their job's limit).
    pub output_limit: usize,
    /// The same checks of containers as on the built-in worker and agents.
    pub policy: Policy,
}

/// The node label that sets a node's disk offer.
pub const LABEL_NODE_DISK: &str = "kairos.disk_mb";
/// The service label with a task's time limit (epoch ms), so that a new leader enforces it.
const LABEL_DEADLINE: &str = "kairos.deadline_ms";
/// A task Swarm has not started after this long (no node with room for its reservations, an
/// image it cannot get) is given up as a launch failure, with Swarm's words.
const PENDING_LIMIT: Duration = Duration::from_secs(60);
/// A service whose task Swarm does not show for this long is taken to be gone.
const NO_TASK_LIMIT: Duration = Duration::from_secs(30);
/// Live tails (one log stream each) followed at once; tasks past it show their output at the end.
const FOLLOW_LIMIT: usize = 256;
/// How long a read of a finished service's output may take.
const READ_LIMIT: Duration = Duration::from_secs(10);
/// Output still on its way when a stopped task is seen to end.
const DRAIN: Duration = Duration::from_millis(300);

/// Connects to the Swarm manager, checking that it is one: a server told to use Swarm fails at
/// its start when there is none.
///
/// # Errors
/// The engine cannot be reached, or it does not manage a Swarm.
pub async fn connect(settings: &Settings) -> Result<Swarm, api::Error> {
    Swarm::connect(&settings.namespace).await
}

/// Runs the backend for one engine (one leadership term); it ends when the engine stops.
pub fn start(swarm: Swarm, handle: Handle, settings: Settings, lease: Option<Lease>) -> JoinHandle<()> {
    let (ops, rx) = mpsc::unbounded_channel();
    let backend = Backend {
        swarm,
        handle,
        settings: Arc::new(settings),
        lease,
        ops,
        nodes: HashMap::new(),
        tasks: HashMap::new(),
        generation: 0,
        recovered: HashMap::new(),
        unfollowed: 0,
    };
    tokio::spawn(backend.run(rx))
}

/// What the loop is told.
enum Op {
    /// The engine launches a task on a node (through that node's link of `generation`).
    Launch {
        generation: u64,
        node: String,
        worker: String,
        launch: Box<TaskLaunch>,
    },
    Kill {
        task_id: TaskId,
    },
    /// A service was made (its id), or could not be (why).
    Created {
        task_id: TaskId,
        result: Result<String, String>,
    },
    /// A task's end is reported and its service removed, or left to the next leader.
    Done {
        task_id: TaskId,
    },
}

/// The link of one node's registration.
struct SwarmLink {
    ops: mpsc::UnboundedSender<Op>,
    node: String,
    worker: String,
    generation: u64,
}

impl WorkerLink for SwarmLink {
    fn launch(&self, launch: TaskLaunch) -> bool {
        self.ops
            .send(Op::Launch {
                generation: self.generation,
                node: self.node.clone(),
                worker: self.worker.clone(),
                launch: Box::new(launch),
            })
            .is_ok()
    }

    /// The grace was set on the service when it was made (`--kill-grace`).
    fn kill(&self, task_id: &TaskId, _grace: Duration) {
        let _ = self.ops.send(Op::Kill {
            task_id: task_id.clone(),
        });
    }
}

/// A node registered as a worker.
struct NodeWorker {
    name: String,
    connection: u64,
    generation: u64,
    offer: NodeOffer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its service is being made.
    Creating,
    /// Its service exists; the poll watches its Swarm task.
    Running,
    /// Its end is being read and reported; the poll leaves it alone.
    Ending,
}

/// A kairos task on Swarm.
struct Entry {
    worker: String,
    node: String,
    /// The service's id, once it exists.
    service: Option<String>,
    phase: Phase,
    kill: bool,
    deadline: Option<std::time::SystemTime>,
    output_limit: usize,
    follower: Option<Follower>,
    since: Instant,
}

/// A live tail: a log stream feeding the task's tail until it is stopped.
struct Follower {
    stop: oneshot::Sender<()>,
    join: JoinHandle<(String, String)>,
}

impl Follower {
    /// What it read, after letting output still on its way arrive.
    async fn finish(self) -> (String, String) {
        tokio::time::sleep(DRAIN).await;
        let _ = self.stop.send(());
        self.join.await.unwrap_or_default()
    }
}

/// Why a task is being stopped.
#[derive(Clone, Copy)]
enum Stopping {
    Killed,
    TimedOut,
}

struct Backend {
    swarm: Swarm,
    handle: Handle,
    settings: Arc<Settings>,
    lease: Option<Lease>,
    ops: mpsc::UnboundedSender<Op>,
    nodes: HashMap<String, NodeWorker>,
    tasks: HashMap<TaskId, Entry>,
    generation: u64,
    /// Ends found at the start, per node, given with the node's first registration.
    recovered: HashMap<String, Vec<TaskEnd>>,
    /// Tasks that got no live tail (past [`FOLLOW_LIMIT`]), as nodes' `output_dropped`.
    unfollowed: u64,
}

impl Backend {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        tracing::info!(namespace = %self.settings.namespace, "Running container tasks on Docker Swarm.");
        // Before any node registers: what the last leader left running or finished.
        while let Err(error) = self.recover().await {
            tracing::warn!(%error, "Cannot read the Swarm services; trying again.");
            tokio::time::sleep(self.settings.node_poll).await;
            if self.handle.is_stopped() {
                return;
            }
        }
        let mut poll = tokio::time::interval(self.settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut node_poll = tokio::time::interval(self.settings.node_poll);
        node_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopped = tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => self.on(op).await,
                    None => true,
                },
                _ = poll.tick() => self.poll_tasks().await,
                _ = node_poll.tick() => self.poll_nodes().await,
            };
            if stopped || self.handle.is_stopped() {
                break;
            }
        }
        // Services stay: the next leader (or this server started again) takes them over.
        for entry in self.tasks.values_mut() {
            if let Some(follower) = entry.follower.take() {
                follower.join.abort();
            }
        }
        tracing::info!("The Swarm backend stopped with its engine.");
    }

    fn may_remove(&self) -> bool {
        self.lease.as_ref().is_none_or(Lease::is_valid)
    }

    /// Takes over the services of this namespace: those still running are tracked, those that
    /// ended are reported with their nodes' first registration, and those on nodes that are
    /// gone, or that name no task, are removed.
    async fn recover(&mut self) -> Result<(), api::Error> {
        let nodes = self.swarm.nodes().await?;
        let services = self.swarm.services().await?;
        let tasks = newest_tasks(self.swarm.tasks().await?);
        for service in services {
            let Some(id) = service.id.clone() else { continue };
            let labels = service
                .spec
                .as_ref()
                .and_then(|s| s.labels.clone())
                .unwrap_or_default();
            let task_id = labels.get(api::LABEL_TASK).and_then(|t| TaskId::parse(t));
            let node = labels
                .get(api::LABEL_NODE)
                .and_then(|n| nodes.iter().find(|o| &o.id == n));
            let (Some(task_id), Some(node)) = (task_id, node) else {
                tracing::warn!(service = %id, "Removing a kairos service of no task, or of a node that is gone.");
                self.remove_later(id, None);
                continue;
            };
            if matches!(node.condition, NodeCondition::Gone(_)) {
                tracing::warn!(service = %id, task = %task_id, "Removing a service on a node that is gone.");
                self.remove_later(id, None);
                continue;
            }
            let deadline = labels
                .get(LABEL_DEADLINE)
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
            let worker = worker_name(node, &nodes);
            // Scaled to none: the last leader was killing it.
            let killing = service
                .spec
                .as_ref()
                .and_then(|s| s.mode.as_ref())
                .and_then(|m| m.replicated.as_ref())
                .is_some_and(|r| r.replicas == Some(0));
            let mut entry = Entry {
                worker,
                node: node.id.clone(),
                service: Some(id.clone()),
                phase: Phase::Running,
                kill: killing,
                deadline,
                output_limit: self.settings.output_limit,
                follower: None,
                since: Instant::now(),
            };
            match tasks.get(&id).map(api::seen) {
                Some(Seen::Running { .. }) | None => {
                    entry.follower = self.follow(&task_id, &id, entry.output_limit);
                }
                Some(seen) => {
                    let (stdout, stderr) = read_logs(&self.swarm, &id, entry.output_limit).await;
                    let end = end_of(&task_id, &seen, killing, stdout, stderr);
                    self.recovered.entry(node.id.clone()).or_default().push(end);
                    entry.phase = Phase::Ending;
                }
            }
            self.tasks.insert(task_id, entry);
        }
        Ok(())
    }

    /// Returns true when the engine has stopped.
    async fn on(&mut self, op: Op) -> bool {
        match op {
            Op::Launch {
                generation,
                node,
                worker,
                launch,
            } => self.launch(generation, node, worker, *launch),
            Op::Kill { task_id } => self.kill(task_id),
            Op::Created { task_id, result } => self.created(task_id, result),
            Op::Done { task_id } => {
                self.tasks.remove(&task_id);
            }
        }
        false
    }

    fn launch(&mut self, generation: u64, node: String, worker: String, launch: TaskLaunch) {
        let task_id = launch.process.task_id.clone();
        if self.nodes.get(&node).is_none_or(|n| n.generation != generation) {
            // The engine gave up that registration (and this task with it) already.
            self.fail(
                worker,
                &task_id,
                "the Swarm node registered again before the launch".to_owned(),
            );
            return;
        }
        let spec = match self.service_spec(&launch, &node) {
            Ok(spec) => spec,
            Err(message) => return self.fail(worker, &task_id, message),
        };
        let deadline = launch
            .process
            .time_limit
            .map(|limit| std::time::SystemTime::now() + limit);
        let mut spec = spec;
        if let (Some(deadline), Some(labels)) = (deadline, spec.labels.as_mut()) {
            let ms = deadline
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            labels.insert(LABEL_DEADLINE.to_owned(), ms.to_string());
        }
        self.tasks.insert(
            task_id.clone(),
            Entry {
                worker,
                node,
                service: None,
                phase: Phase::Creating,
                kill: false,
                deadline,
                output_limit: launch.process.output_limit,
                follower: None,
                since: Instant::now(),
            },
        );
        let swarm = self.swarm.clone();
        let ops = self.ops.clone();
        tokio::spawn(async move {
            let name = spec.name.clone().unwrap_or_default();
            let result = match swarm.create(spec).await {
                Ok(id) => Ok(id),
                // The same task's service, made by a leader before this one: deterministic
                // names make a double launch one service.
                Err(api::Error::Exists { .. }) => Ok(name),
                Err(error) => Err(error.to_string()),
            };
            let _ = ops.send(Op::Created { task_id, result });
        });
    }

    /// The service for a launch, with the checks every worker makes.
    fn service_spec(&self, launch: &TaskLaunch, node: &str) -> Result<bollard::models::ServiceSpec, String> {
        let Some(container) = &launch.container else {
            return Err("a Swarm node runs container tasks only".to_owned());
        };
        if !launch.fetch.is_empty() {
            return Err("a Swarm node cannot fetch a task's files".to_owned());
        }
        docker::check_container(container, &self.settings.policy)
            .map_err(|refusal| format!("the container is refused: {}: {}", refusal.field, refusal.reason))?;
        let p = &launch.process;
        let spec = ContainerSpec::for_launch(p, container, None, self.settings.namespace.clone(), None);
        api::service_spec(
            &spec,
            api::service_name(&p.task_id),
            node,
            self.swarm.labels(&p.task_id, node),
            self.settings.kill_grace,
        )
    }

    /// Reports a task that never started.
    fn fail(&self, worker: String, task_id: &TaskId, message: String) {
        let end = TaskEnd::failed_before_start(task_id, false, StartFailure::launch(message));
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let _ = handle.task_ended(worker, end).await;
        });
    }

    fn created(&mut self, task_id: TaskId, result: Result<String, String>) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
            // Its node was lost meanwhile.
            if let Ok(service) = result {
                self.remove_later(service, None);
            }
            return;
        };
        match result {
            Err(message) => {
                let worker = entry.worker.clone();
                self.tasks.remove(&task_id);
                self.fail(worker, &task_id, format!("Swarm refused the service: {message}"));
            }
            Ok(service) => {
                entry.service = Some(service.clone());
                entry.phase = Phase::Running;
                if entry.kill {
                    self.stop(task_id, Stopping::Killed);
                } else {
                    let limit = entry.output_limit;
                    let follower = self.follow(&task_id, &service, limit);
                    if let Some(entry) = self.tasks.get_mut(&task_id) {
                        entry.follower = follower;
                    }
                }
            }
        }
    }

    /// Starts a live tail, unless too many run.
    fn follow(&mut self, task_id: &TaskId, service: &str, limit: usize) -> Option<Follower> {
        let following = self.tasks.values().filter(|e| e.follower.is_some()).count();
        if following >= FOLLOW_LIMIT {
            self.unfollowed += 1;
            return None;
        }
        let (stop, stopped) = oneshot::channel();
        let swarm = self.swarm.clone();
        let service = service.to_owned();
        let feed = TaskFeed {
            task_id: task_id.clone(),
            feed: self.handle.live().feed(),
        };
        let join = tokio::spawn(async move { swarm.follow(&service, limit, Some(feed), stopped).await });
        Some(Follower { stop, join })
    }

    fn kill(&mut self, task_id: TaskId) {
        match self.tasks.get_mut(&task_id) {
            Some(entry) => {
                entry.kill = true;
                // One being made is stopped when it exists; one ending ends as it is.
                if entry.phase == Phase::Running {
                    self.stop(task_id, Stopping::Killed);
                }
            }
            None => {
                // A service the engine does not know (reconciliation): its name is the task's.
                tracing::info!(task = %task_id, "Removing a Swarm service the scheduler does not know.");
                self.remove_later(api::service_name(&task_id), None);
            }
        }
    }

    /// Stops a running task's service and reports it killed (or timed out) once it has ended,
    /// with the output its live tail read until then, which the service takes with it.
    fn stop(&mut self, task_id: TaskId, why: Stopping) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(service) = entry.service.clone() else {
            return;
        };
        entry.phase = Phase::Ending;
        let follower = entry.follower.take();
        let worker = entry.worker.clone();
        let swarm = self.swarm.clone();
        let handle = self.handle.clone();
        let ops = self.ops.clone();
        let bound = self.settings.kill_grace + Duration::from_secs(10);
        tokio::spawn(async move {
            if let Err(error) = swarm.stop(&service).await {
                tracing::warn!(%error, task = %task_id, "Cannot stop a Swarm service; removing it.");
            }
            // Its task ends within the grace; the exit status shows for a moment after.
            let began = Instant::now();
            let mut seen = None;
            while began.elapsed() < bound {
                match swarm.tasks_of(&service).await {
                    Ok(tasks) => match newest(tasks).as_ref().map(api::seen) {
                        Some(Seen::Running { .. }) => {}
                        other => {
                            seen = other;
                            break;
                        }
                    },
                    Err(error) => tracing::warn!(%error, "Cannot read a stopping service's task."),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (stdout, stderr) = match follower {
                Some(follower) => follower.finish().await,
                None => (String::new(), String::new()),
            };
            let exit_code = match seen {
                Some(
                    Seen::Exited(code)
                    | Seen::Stopped {
                        exit_code: Some(code),
                    },
                ) => Some(code),
                _ => None,
            };
            let end = stopped_end(&task_id, why, exit_code, stdout, stderr);
            let _ = handle.task_ended(worker, end).await;
            if let Err(error) = swarm.remove(&service).await {
                tracing::warn!(%error, task = %task_id, "Cannot remove a stopped Swarm service.");
            }
            let _ = ops.send(Op::Done { task_id });
        });
    }

    /// Removes a service in the background, while this server leads; `task` is forgotten after.
    fn remove_later(&self, service: String, task: Option<TaskId>) {
        if !self.may_remove() {
            return;
        }
        let swarm = self.swarm.clone();
        let ops = self.ops.clone();
        tokio::spawn(async move {
            if let Err(error) = swarm.remove(&service).await {
                tracing::warn!(%error, %service, "Cannot remove a Swarm service.");
            }
            if let Some(task_id) = task {
                let _ = ops.send(Op::Done { task_id });
            }
        });
    }

    /// Reads the tasks of every service at once and acts on those that ended, overran their
    /// time or never started. Returns true when the engine has stopped.
    async fn poll_tasks(&mut self) -> bool {
        if !self.tasks.values().any(|e| e.phase == Phase::Running) {
            return self.handle.is_stopped();
        }
        let tasks = match self.swarm.tasks().await {
            Ok(tasks) => newest_tasks(tasks),
            Err(error) => {
                tracing::warn!(%error, "Cannot read the Swarm tasks.");
                return self.handle.is_stopped();
            }
        };
        let now = std::time::SystemTime::now();
        let mut ended = Vec::new();
        let mut overran = Vec::new();
        for (task_id, entry) in &self.tasks {
            let (Phase::Running, Some(service)) = (entry.phase, &entry.service) else {
                continue;
            };
            match tasks.get(service).map(api::seen) {
                Some(Seen::Running { waiting }) => {
                    if entry.deadline.is_some_and(|d| d <= now) {
                        overran.push(task_id.clone());
                    } else if let Some(words) = waiting.filter(|_| entry.since.elapsed() > PENDING_LIMIT) {
                        ended.push((
                            task_id.clone(),
                            Seen::NotStarted(format!("Swarm did not start it: {words}")),
                        ));
                    }
                }
                Some(seen) => ended.push((task_id.clone(), seen)),
                None if entry.since.elapsed() > NO_TASK_LIMIT => ended.push((
                    task_id.clone(),
                    Seen::NotStarted("the Swarm service disappeared, or Swarm gave it no task".to_owned()),
                )),
                None => {}
            }
        }
        for task_id in overran {
            self.stop(task_id, Stopping::TimedOut);
        }
        // Swarm stops tasks itself when their node is drained or leaves: reading the nodes
        // first makes those lost with their node (and retried), not failures of their own.
        if ended.iter().any(|(_, seen)| matches!(seen, Seen::Stopped { .. })) && self.poll_nodes().await {
            return true;
        }
        for (task_id, seen) in ended {
            self.finish(task_id, seen);
        }
        self.handle.is_stopped()
    }

    /// Reports a task whose Swarm task ended by itself, then removes its service once the end
    /// is stored: if this server dies in between, the next leader finds the service and reports
    /// the end again (the engine ignores a repeat).
    fn finish(&mut self, task_id: TaskId, seen: Seen) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(service) = entry.service.clone() else {
            return;
        };
        entry.phase = Phase::Ending;
        let killed = entry.kill;
        let follower = entry.follower.take();
        let limit = entry.output_limit;
        let worker = entry.worker.clone();
        let swarm = self.swarm.clone();
        let handle = self.handle.clone();
        let ops = self.ops.clone();
        let lease = self.lease.clone();
        tokio::spawn(async move {
            if let Some(follower) = follower {
                let _ = follower.stop.send(());
                follower.join.abort();
            }
            // The service still exists, so its whole output can be read.
            let (stdout, stderr) = read_logs(&swarm, &service, limit).await;
            let end = end_of(&task_id, &seen, killed, stdout, stderr);
            if handle.task_ended(worker.clone(), end).await.is_err() {
                return;
            }
            settle(&swarm, &handle, lease.as_ref(), &task_id, &worker, &service).await;
            let _ = ops.send(Op::Done { task_id });
        });
    }

    /// Reads the nodes: registers the new and ready ones, heartbeats the known ones, tells the
    /// engine of changed labels and of paused, drained and departed nodes. Returns true when
    /// the engine has stopped.
    async fn poll_nodes(&mut self) -> bool {
        let offers = match self.swarm.nodes().await {
            Ok(offers) => offers,
            Err(error) => {
                // No heartbeat: if the manager stays out of reach, the nodes time out as lost.
                tracing::warn!(%error, "Cannot read the Swarm nodes.");
                return self.handle.is_stopped();
            }
        };
        let connections: Vec<(String, u64)> = self
            .nodes
            .values()
            .map(|n| (n.name.clone(), n.connection))
            .collect();
        let live = match self
            .handle
            .read(move |state| {
                connections
                    .into_iter()
                    .filter(|(name, connection)| {
                        state
                            .workers
                            .get(name)
                            .is_some_and(|w| w.is_connected_as(*connection))
                    })
                    .map(|(name, _)| name)
                    .collect::<Vec<String>>()
            })
            .await
        {
            Ok(live) => live,
            Err(_) => return true,
        };
        // Nodes that left the Swarm.
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|id| !offers.iter().any(|o| &o.id == *id))
            .cloned()
            .collect();
        for id in gone {
            if self
                .lose_node(&id, "the Swarm node left the Swarm".to_owned())
                .await
            {
                return true;
            }
        }
        for offer in &offers {
            let stopped = match &offer.condition {
                NodeCondition::Gone(why) => self.lose_node(&offer.id, why.clone()).await,
                NodeCondition::Ready | NodeCondition::Paused => {
                    let registered = self.nodes.get(&offer.id).is_some_and(|n| live.contains(&n.name));
                    if registered {
                        self.refresh(offer).await
                    } else {
                        self.register(offer, &offers).await
                    }
                }
            };
            if stopped {
                return true;
            }
        }
        false
    }

    fn resources(&self, offer: &NodeOffer) -> Resources {
        let disk = offer
            .labels
            .iter()
            .find(|(key, _)| key == LABEL_NODE_DISK)
            .and_then(|(_, value)| value.parse::<f64>().ok())
            .filter(|disk| disk.is_finite() && *disk >= 0.0)
            .unwrap_or(self.settings.node_disk);
        Resources {
            cpus: offer.cpus,
            mem: offer.mem,
            disk,
        }
    }

    /// Registers a node, with what runs on it and what ended there meanwhile.
    async fn register(&mut self, offer: &NodeOffer, offers: &[NodeOffer]) -> bool {
        let name = worker_name(offer, offers);
        self.generation += 1;
        let generation = self.generation;
        // Launches through an older registration of the node were lost with it.
        let running: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.node == offer.id && e.phase != Phase::Ending)
            .map(|(id, _)| id.clone())
            .collect();
        let finished = self.recovered.get(&offer.id).cloned().unwrap_or_default();
        let settling: Vec<TaskId> = finished.iter().map(|e| e.task_id.clone()).collect();
        let info = WorkerInfo {
            name: name.clone(),
            id: offer.id.clone(),
            hostname: offer.hostname.clone(),
            attributes: offer.labels.clone(),
            total: self.resources(offer),
            running,
            finished,
            local: false,
            runs: Runs::CONTAINERS,
        };
        let link = Arc::new(SwarmLink {
            ops: self.ops.clone(),
            node: offer.id.clone(),
            worker: name.clone(),
            generation,
        });
        match self.handle.worker_connected(info, link).await {
            Err(_) => return true,
            Ok(Err(refusal)) => {
                tracing::warn!(node = %offer.hostname, %refusal, "The engine refused a Swarm node; trying again.");
                return false;
            }
            Ok(Ok(connection)) => {
                // Given to the engine: a refused registration keeps them for the next try.
                self.recovered.remove(&offer.id);
                tracing::info!(worker = %name, node = %offer.id, "A Swarm node joined as a worker.");
                self.nodes.insert(
                    offer.id.clone(),
                    NodeWorker {
                        name: name.clone(),
                        connection,
                        generation,
                        offer: NodeOffer {
                            condition: NodeCondition::Ready,
                            ..offer.clone()
                        },
                    },
                );
            }
        }
        // Ends found at the start are stored now: their services can go.
        for task_id in settling {
            if let Some(service) = self.tasks.get(&task_id).and_then(|e| e.service.clone()) {
                let (swarm, handle, ops, lease) = (
                    self.swarm.clone(),
                    self.handle.clone(),
                    self.ops.clone(),
                    self.lease.clone(),
                );
                let worker = name.clone();
                tokio::spawn(async move {
                    settle(&swarm, &handle, lease.as_ref(), &task_id, &worker, &service).await;
                    let _ = ops.send(Op::Done { task_id });
                });
            }
        }
        self.refresh(offer).await
    }

    /// Heartbeats a registered node, and passes on a change of its offer.
    async fn refresh(&mut self, offer: &NodeOffer) -> bool {
        let resources = self.resources(offer);
        let Some(node) = self.nodes.get_mut(&offer.id) else {
            return false;
        };
        let (name, connection) = (node.name.clone(), node.connection);
        let changed = node.offer != *offer;
        node.offer = offer.clone();
        if changed {
            let update = WorkerUpdate {
                attributes: offer.labels.clone(),
                total: resources,
                accepting: offer.condition == NodeCondition::Ready,
            };
            if self
                .handle
                .worker_update(name.clone(), connection, update)
                .await
                .is_err()
            {
                return true;
            }
        }
        self.handle
            .worker_heartbeat(name, connection, self.unfollowed)
            .await
            .is_err()
    }

    /// A drained, down or departed node: its tasks are lost (and retried elsewhere), and their
    /// services removed, since nothing else will remove them.
    async fn lose_node(&mut self, id: &str, why: String) -> bool {
        let Some(node) = self.nodes.remove(id) else {
            return false;
        };
        tracing::warn!(worker = %node.name, %why, "A Swarm node is gone; its tasks are lost.");
        if self
            .handle
            .worker_lost(node.name.clone(), node.connection, why)
            .await
            .is_err()
        {
            return true;
        }
        let lost: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.node == id)
            .map(|(task_id, _)| task_id.clone())
            .collect();
        for task_id in lost {
            if let Some(mut entry) = self.tasks.remove(&task_id) {
                if let Some(follower) = entry.follower.take() {
                    follower.join.abort();
                }
                if let Some(service) = entry.service {
                    self.remove_later(service, None);
                } else {
                    // Still being made: removed by its deterministic name once it exists.
                    self.remove_later(api::service_name(&task_id), None);
                }
            }
        }
        false
    }
}

/// After an end is reported: once the store holds it (the read waits for the group commit of a
/// task that is no longer open), the service is removed; a task still running on this worker
/// by the store's account keeps it.
async fn settle(
    swarm: &Swarm,
    handle: &Handle,
    lease: Option<&Lease>,
    task_id: &TaskId,
    worker: &str,
    service: &str,
) {
    let stored = match handle.task(task_id.clone()).await {
        Ok(record) => !(record.state == crate::store::TaskState::Running && record.worker == worker),
        Err(engine::Error::Stopped) => false,
        // Not in the store at all: nothing waits for this service.
        Err(_) => true,
    };
    if stored
        && lease.is_none_or(Lease::is_valid)
        && let Err(error) = swarm.remove(service).await
    {
        tracing::warn!(%error, task = %task_id, "Cannot remove a finished Swarm service.");
    }
}

async fn read_logs(swarm: &Swarm, service: &str, limit: usize) -> (String, String) {
    tokio::time::timeout(READ_LIMIT, swarm.logs(service, limit))
        .await
        .unwrap_or_else(|_| {
            (
                String::new(),
                "kairos: reading the output from Swarm took too long\n".to_owned(),
            )
        })
}

/// A node's worker name: `swarm:` and its hostname (never the built-in worker's name, which is
/// the machine's hostname too on a one-machine Swarm), with its id when two nodes share one.
fn worker_name(offer: &NodeOffer, offers: &[NodeOffer]) -> String {
    let shared = offers
        .iter()
        .any(|other| other.id != offer.id && other.hostname == offer.hostname);
    if shared {
        let short: String = offer.id.chars().take(12).collect();
        format!("swarm:{}:{short}", offer.hostname)
    } else {
        format!("swarm:{}", offer.hostname)
    }
}

/// The newest Swarm task of a list (one service's).
fn newest(tasks: Vec<bollard::models::Task>) -> Option<bollard::models::Task> {
    tasks.into_iter().max_by(|a, b| a.created_at.cmp(&b.created_at))
}

/// The newest Swarm task of each service, by service id.
fn newest_tasks(tasks: Vec<bollard::models::Task>) -> HashMap<String, bollard::models::Task> {
    let mut by_service: HashMap<String, bollard::models::Task> = HashMap::new();
    for task in tasks {
        let Some(service) = task.service_id.clone() else {
            continue;
        };
        match by_service.get(&service) {
            Some(known) if known.created_at >= task.created_at => {}
            _ => {
                by_service.insert(service, task);
            }
        }
    }
    by_service
}

/// The end of a task whose Swarm task ended by itself.
fn end_of(task_id: &TaskId, seen: &Seen, killed: bool, stdout: String, mut stderr: String) -> TaskEnd {
    let exit_code = match seen {
        Seen::Exited(code) => Some(*code),
        Seen::NotStarted(words) => {
            return TaskEnd::failed_before_start(task_id, killed, StartFailure::launch(words.clone()));
        }
        Seen::Stopped { exit_code } if killed => {
            return stopped_end(task_id, Stopping::Killed, *exit_code, stdout, stderr);
        }
        Seen::Stopped { exit_code } => {
            stderr.push_str("kairos: Swarm stopped the task\n");
            *exit_code
        }
        Seen::Running { .. } => None,
    };
    TaskEnd {
        task_id: task_id.clone(),
        outcome: Outcome {
            task_id: task_id.clone(),
            exit_code: exit_code.map(|c| i32::try_from(c).unwrap_or(-1)),
            signal: None,
            timed_out: false,
            stdout,
            stderr,
        },
        killed,
        error: None,
    }
}

/// The end of a task kairos stopped. A container stopped by its signal exits 128 + the signal;
/// after a kill from kairos that is the signal, as on the other workers.
fn stopped_end(
    task_id: &TaskId,
    why: Stopping,
    exit_code: Option<i64>,
    stdout: String,
    stderr: String,
) -> TaskEnd {
    let (exit_code, signal) = match exit_code {
        Some(137) => (None, Some(9)),
        Some(143) => (None, Some(15)),
        Some(code) => (Some(i32::try_from(code).unwrap_or(-1)), None),
        None => (None, Some(15)),
    };
    TaskEnd {
        task_id: task_id.clone(),
        outcome: Outcome {
            task_id: task_id.clone(),
            exit_code,
            signal,
            timed_out: matches!(why, Stopping::TimedOut),
            stdout,
            stderr,
        },
        killed: matches!(why, Stopping::Killed),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, hostname: &str) -> NodeOffer {
        NodeOffer {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
            labels: Vec::new(),
            cpus: 2.0,
            mem: 1024.0,
            condition: NodeCondition::Ready,
        }
    }

    #[test]
    fn worker_names_never_take_the_hostname_alone_and_tell_twins_apart() {
        let a = node("abcdefghijklmnop", "vm");
        let b = node("zyxwvutsrqponmlk", "vm");
        let c = node("q", "other");
        let all = [a.clone(), b.clone(), c.clone()];
        assert_eq!(worker_name(&a, &all), "swarm:vm:abcdefghijkl");
        assert_eq!(worker_name(&b, &all), "swarm:vm:zyxwvutsrqpo");
        assert_eq!(worker_name(&c, &all), "swarm:other");
    }

    #[test]
    fn a_kill_reports_the_signal_and_a_time_limit_says_so() {
        let id = TaskId::parse("ct:1:0:job").expect("id");
        let killed = stopped_end(&id, Stopping::Killed, Some(143), "o".into(), String::new());
        assert!(killed.killed && killed.outcome.signal == Some(15) && killed.outcome.exit_code.is_none());
        let trapped = stopped_end(&id, Stopping::Killed, Some(7), String::new(), String::new());
        assert_eq!(trapped.outcome.exit_code, Some(7));
        let late = stopped_end(&id, Stopping::TimedOut, None, String::new(), String::new());
        assert!(late.outcome.timed_out && !late.killed && !late.success());
    }

    #[test]
    fn ends_follow_what_swarm_saw() {
        let id = TaskId::parse("ct:1:0:job").expect("id");
        let ok = end_of(&id, &Seen::Exited(0), false, "hi\n".into(), String::new());
        assert!(ok.success() && ok.outcome.stdout == "hi\n");
        let failed = end_of(&id, &Seen::Exited(3), false, String::new(), String::new());
        assert_eq!(failed.outcome.exit_code, Some(3));
        assert!(!failed.success() && failed.error.is_none());
        let never = end_of(
            &id,
            &Seen::NotStarted("no such image".into()),
            false,
            String::new(),
            String::new(),
        );
        assert_eq!(never.error.map(|e| e.message).as_deref(), Some("no such image"));
        let stopped = end_of(
            &id,
            &Seen::Stopped { exit_code: None },
            false,
            String::new(),
            String::new(),
        );
        assert!(!stopped.success() && stopped.outcome.stderr.contains("Swarm stopped"));
        // Stopped by a kill that a leader before this one asked for.
        let killed = end_of(
            &id,
            &Seen::Stopped { exit_code: Some(143) },
            true,
            String::new(),
            String::new(),
        );
        assert!(killed.killed && killed.outcome.signal == Some(15) && killed.outcome.stderr.is_empty());
    }
}
