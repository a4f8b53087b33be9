//! Runs whole tasks on one worker: sandbox, fetch, then a process or a Docker container; tracks
//! them so they can be killed and listed. The scheduler's built-in worker and every agent use it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::docker::{self, Container, ContainerSpec, Docker};
use super::fetch::{self, FetchSpec};
use super::live::{Feed, TaskFeed};
use super::user::Identity;
use super::{LaunchSpec, Outcome, Policy, Running};
use crate::job::TaskId;

/// Everything a worker needs to run one task.
#[derive(Debug, Clone)]
pub struct TaskLaunch {
    pub process: LaunchSpec,
    pub container: Option<Container>,
    pub fetch: Vec<FetchSpec>,
}

/// How a task ended on its worker.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEnd {
    pub task_id: TaskId,
    pub outcome: Outcome,
    /// A kill was requested before it ended.
    pub killed: bool,
    /// Set when the task never got to run its command (fetch or launch failed).
    pub error: Option<StartFailure>,
}

/// Why a task never got to run its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// Its `fetch` failed (rather than its sandbox, user, image or launch): retry policies tell
    /// the two apart.
    pub fetch: bool,
    pub message: String,
}

impl StartFailure {
    pub(crate) fn launch(message: String) -> StartFailure {
        StartFailure {
            fetch: false,
            message,
        }
    }
}

impl TaskEnd {
    /// A sentence for the task's record.
    pub fn describe(&self) -> String {
        match &self.error {
            Some(error) => error.message.clone(),
            None if self.killed => format!("killed on request ({})", self.outcome.describe()),
            None => self.outcome.describe(),
        }
    }

    pub fn success(&self) -> bool {
        self.error.is_none() && !self.killed && self.outcome.success()
    }

    pub(crate) fn failed_before_start(task_id: &TaskId, killed: bool, error: StartFailure) -> TaskEnd {
        TaskEnd {
            task_id: task_id.to_owned(),
            outcome: Outcome {
                task_id: task_id.to_owned(),
                exit_code: None,
                signal: None,
                timed_out: false,
                stdout: String::new(),
                stderr: format!("kairos: {}\n", error.message),
            },
            killed,
            error: Some(error),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Preparing the sandbox or fetching; a kill stops it before the command starts.
    Preparing {
        kill_requested: bool,
    },
    Process {
        running: Running,
        kill_requested: bool,
    },
    Container {
        kill_requested: bool,
    },
}

impl Slot {
    fn kill_requested(self) -> bool {
        match self {
            Slot::Preparing { kill_requested }
            | Slot::Process { kill_requested, .. }
            | Slot::Container { kill_requested } => kill_requested,
        }
    }
}

/// The tasks running on this worker.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    cache_dir: PathBuf,
    fetch_timeout: Duration,
    /// What this worker's tasks may reach on its host; checked again here before every launch.
    policy: Policy,
    /// This worker's identity, on every container it launches: it adopts and kills only its own.
    owner: String,
    /// Remove this worker's containers from an earlier process when first connecting to Docker,
    /// before anything is launched (see [`Runner::reaping`]).
    reap: std::sync::atomic::AtomicBool,
    /// Connected on first use, so a worker without Docker still runs plain tasks.
    docker: tokio::sync::OnceCell<Result<Docker, String>>,
    /// Held only for map updates, never across an await.
    tasks: Mutex<HashMap<TaskId, Slot>>,
    /// Where the tasks' output goes as it is written ([`Runner::feed_output_to`]).
    feed: OnceLock<Feed>,
}

/// Policies of the built-in workers of this process, by worker identity.
///
/// The engine makes its built-in worker's runner itself, from a configuration that knows
/// nothing of host policy; the server registers the policy under the worker's identity before
/// it starts the engine, and [`Runner::new`] finds it there.
fn registered() -> &'static Mutex<HashMap<String, Policy>> {
    static POLICIES: OnceLock<Mutex<HashMap<String, Policy>>> = OnceLock::new();
    POLICIES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Sets the policy of the worker with identity `owner` whose runner is made by [`Runner::new`].
pub fn register_policy(owner: &str, policy: Policy) {
    registered()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(owner.to_owned(), policy);
}

impl Runner {
    /// A runner with the policy registered for `owner` ([`register_policy`]), or the strict
    /// default ([`Policy::default`]) when none is.
    pub fn new(cache_dir: PathBuf, fetch_timeout: Duration, owner: String) -> Runner {
        let policy = registered()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&owner)
            .cloned()
            .unwrap_or_default();
        Runner::with_policy(cache_dir, fetch_timeout, owner, policy)
    }

    pub fn with_policy(cache_dir: PathBuf, fetch_timeout: Duration, owner: String, policy: Policy) -> Runner {
        Runner {
            inner: Arc::new(Inner {
                cache_dir,
                fetch_timeout,
                policy,
                owner,
                reap: std::sync::atomic::AtomicBool::new(false),
                docker: tokio::sync::OnceCell::new(),
                tasks: Mutex::new(HashMap::new()),
                feed: OnceLock::new(),
            }),
        }
    }

    /// Sends the output of the tasks started from now on to `feed` as it is written, besides
    /// the outcome at their end. Set once; later calls change nothing.
    pub fn feed_output_to(&self, feed: Feed) {
        let _ = self.inner.feed.set(feed);
    }

    fn task_feed(&self, task_id: &TaskId) -> Option<TaskFeed> {
        self.inner.feed.get().map(|feed| TaskFeed {
            task_id: task_id.clone(),
            feed: feed.clone(),
        })
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Slot>> {
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn docker(&self) -> Result<Docker, String> {
        self.inner
            .docker
            .get_or_init(|| async {
                let docker = Docker::connect(&self.inner.owner)
                    .await
                    .map_err(|e| e.to_string())?;
                if self.inner.reap.load(std::sync::atomic::Ordering::SeqCst) {
                    match docker.reap(Duration::from_secs(2)).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(containers = n, "Removed containers left by the previous server."),
                        Err(error) => {
                            tracing::warn!(%error, "Could not remove containers left by the previous server.");
                        }
                    }
                }
                Ok(docker)
            })
            .await
            .clone()
    }

    /// Task ids this worker runs now, containers left from a previous agent process included.
    pub async fn running(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.tasks().keys().cloned().collect();
        if let Ok(docker) = self.docker().await
            && let Ok(containers) = docker.running_tasks().await
        {
            for id in containers {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Takes over this worker's containers left by its previous process (found by their owner
    /// label, running or ended): each is watched to its end, and `on_end` reports it as if it had
    /// been launched here. Returns their task ids. Without a Docker engine there is none.
    pub async fn adopt(&self, on_end: impl Fn(TaskEnd) + Clone + Send + 'static) -> Vec<TaskId> {
        let Ok(docker) = self.docker().await else {
            return Vec::new();
        };
        let owned = match docker.owned().await {
            Ok(owned) => owned,
            Err(error) => {
                tracing::warn!(%error, "Cannot list this worker's containers; none adopted.");
                return Vec::new();
            }
        };
        let mut adopted = Vec::new();
        for container in owned {
            let task_id = container.task_id.clone();
            if self.tasks().contains_key(&task_id) {
                continue;
            }
            tracing::info!(task = %task_id, "Adopting a container from before this worker restarted.");
            self.tasks().insert(
                task_id.clone(),
                Slot::Container {
                    kill_requested: false,
                },
            );
            let runner = self.clone();
            let on_end = on_end.clone();
            let id = task_id.clone();
            docker.adopt(container, move |outcome| {
                let killed = runner.forget(&id).is_some_and(Slot::kill_requested);
                on_end(TaskEnd {
                    task_id: id,
                    outcome,
                    killed,
                    error: None,
                });
            });
            adopted.push(task_id);
        }
        adopted
    }

    /// Starts a task in the background; `on_end` runs once when it has ended.
    pub fn start(&self, launch: TaskLaunch, on_end: impl FnOnce(TaskEnd) + Send + 'static) {
        let task_id = launch.process.task_id.clone();
        self.tasks().insert(
            task_id.clone(),
            Slot::Preparing {
                kill_requested: false,
            },
        );
        let runner = self.clone();
        let finish = Finish::new(on_end);
        tokio::spawn(async move {
            let failed = |runner: &Runner, error: StartFailure| {
                let killed = runner.forget(&task_id).is_some_and(Slot::kill_requested);
                let _ = std::fs::remove_dir_all(&launch.process.sandbox);
                finish.call(TaskEnd::failed_before_start(&task_id, killed, error));
            };
            let identity = match runner.identity(&launch) {
                Ok(identity) => identity,
                Err(error) => {
                    failed(&runner, StartFailure::launch(error));
                    return;
                }
            };
            if let Err(error) = runner.prepare(&launch, &identity).await {
                failed(&runner, error);
                return;
            }
            if runner.tasks().get(&task_id).is_some_and(|s| s.kill_requested()) {
                failed(
                    &runner,
                    StartFailure::launch("killed before it started".to_owned()),
                );
                return;
            }
            let ended = {
                let runner = runner.clone();
                let task_id = task_id.clone();
                let finish = finish.clone();
                move |outcome: Outcome| {
                    let killed = runner.forget(&task_id).is_some_and(Slot::kill_requested);
                    finish.call(TaskEnd {
                        task_id,
                        outcome,
                        killed,
                        error: None,
                    });
                }
            };
            let result = match &launch.container {
                Some(container) => runner.start_container(&launch, container, ended).await,
                None => runner.start_process(&launch, &identity, ended),
            };
            if let Err(error) = result {
                tracing::warn!(task = %task_id, %error, "Task failed to launch.");
                failed(&runner, StartFailure::launch(error));
            }
        });
    }

    /// Whose rights the task has on this host: a process task's `runAsUser` must be had (see
    /// [`Identity::for_process`]); a container's user is Docker's to resolve in the image.
    fn identity(&self, launch: &TaskLaunch) -> Result<Identity, String> {
        let user = launch.process.user.as_deref();
        let identity = match launch.container {
            Some(_) => Identity::for_container(user),
            None => Identity::for_process(user),
        };
        identity.map_err(|e| e.to_string())
    }

    async fn prepare(&self, launch: &TaskLaunch, identity: &Identity) -> Result<(), StartFailure> {
        let sandbox = &launch.process.sandbox;
        // Refused before anything is made or fetched: a job stored before the policy (or on a
        // more permissive server) must not get past the worker.
        if let Some(container) = &launch.container {
            docker::check_container(container, &self.inner.policy).map_err(|r| {
                StartFailure::launch(format!("the container is refused: {}: {}", r.field, r.reason))
            })?;
        }
        // A process's launch makes its sandbox itself; fetching and containers need it first.
        if !launch.fetch.is_empty() || launch.container.is_some() {
            tokio::fs::create_dir_all(sandbox).await.map_err(|e| {
                StartFailure::launch(format!("cannot create the sandbox {}: {e}", sandbox.display()))
            })?;
        }
        if !launch.fetch.is_empty() {
            fetch::fetch_all(
                &launch.fetch,
                sandbox,
                &self.inner.cache_dir,
                self.inner.fetch_timeout,
                identity,
                &self.inner.policy.fetch_schemes,
            )
            .await
            .map_err(|e| StartFailure {
                fetch: true,
                message: format!("fetch failed: {e}"),
            })?;
        }
        if identity.account().is_some() && (!launch.fetch.is_empty() || launch.container.is_some()) {
            // The worker made the sandbox and fetched into it; the task's user must own it.
            let (dir, who) = (sandbox.clone(), identity.clone());
            tokio::task::spawn_blocking(move || who.hand_over(&dir))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| {
                    StartFailure::launch(format!(
                        "cannot hand the sandbox {} to the task's user: {e}",
                        sandbox.display()
                    ))
                })?;
        }
        Ok(())
    }

    fn start_process(
        &self,
        launch: &TaskLaunch,
        identity: &Identity,
        ended: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<(), String> {
        let feed = self.inner.feed.get().cloned();
        let running = super::launch_as(launch.process.clone(), identity, feed, ended)
            .map_err(|e| format!("failed to launch: {e}"))?;
        let task_id = &launch.process.task_id;
        let mut tasks = self.tasks();
        if let Some(slot) = tasks.get_mut(task_id) {
            let kill_requested = slot.kill_requested();
            *slot = Slot::Process {
                running,
                kill_requested,
            };
            if kill_requested {
                super::kill(running, Duration::from_millis(0));
            }
        }
        Ok(())
    }

    async fn start_container(
        &self,
        launch: &TaskLaunch,
        container: &Container,
        ended: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<(), String> {
        let docker = self
            .docker()
            .await
            .map_err(|e| format!("docker is not available on this worker: {e}"))?;
        let p = &launch.process;
        let spec = ContainerSpec::for_launch(
            p,
            container,
            Some(p.sandbox.clone()),
            self.inner.owner.clone(),
            self.task_feed(&p.task_id),
        );
        let sandbox = p.sandbox.clone();
        docker
            .launch(spec, move |outcome| {
                let _ = std::fs::remove_dir_all(&sandbox);
                ended(outcome);
            })
            .await
            .map_err(|e| format!("failed to launch the container: {e}"))?;
        let kill_now = match self.tasks().get_mut(&p.task_id) {
            Some(slot) => {
                let kill_requested = slot.kill_requested();
                *slot = Slot::Container { kill_requested };
                kill_requested
            }
            None => false,
        };
        if kill_now {
            // A kill arrived while the container was being started: carry it out now.
            self.kill_container(&p.task_id, Duration::ZERO);
        }
        Ok(())
    }

    fn forget(&self, task_id: &TaskId) -> Option<Slot> {
        self.tasks().remove(task_id)
    }

    /// Kills a task: its process group or its container, or stops it before it starts.
    pub fn kill(&self, task_id: &TaskId, grace: Duration) {
        let slot = {
            let mut tasks = self.tasks();
            let Some(slot) = tasks.get_mut(task_id) else {
                drop(tasks);
                // Possibly a container from a previous agent process: ask Docker.
                self.kill_container(task_id, grace);
                return;
            };
            match slot {
                Slot::Preparing { kill_requested }
                | Slot::Process { kill_requested, .. }
                | Slot::Container { kill_requested } => *kill_requested = true,
            }
            *slot
        };
        match slot {
            Slot::Preparing { .. } => {}
            Slot::Process { running, .. } => super::kill(running, grace),
            Slot::Container { .. } => self.kill_container(task_id, grace),
        }
    }

    fn kill_container(&self, task_id: &TaskId, grace: Duration) {
        let runner = self.clone();
        let task_id = task_id.to_owned();
        tokio::spawn(async move {
            if let Ok(docker) = runner.docker().await
                && let Err(error) = docker.kill(&task_id, grace).await
            {
                tracing::warn!(task = %task_id, %error, "Could not stop the container.");
            }
        });
    }

    /// Kills every process task (containers are left to run; a returning agent reconciles them).
    pub fn kill_processes(&self, grace: Duration) {
        for slot in self.tasks().values() {
            if let Slot::Process { running, .. } = slot {
                super::kill(*running, grace);
            }
        }
    }

    /// Kills every task, containers included: the built-in worker's tasks end with the server.
    pub fn kill_all(&self, grace: Duration) {
        let ids: Vec<TaskId> = self.tasks().keys().cloned().collect();
        for id in ids {
            self.kill(&id, grace);
        }
    }

    /// For a worker whose earlier tasks are recorded as lost (the built-in worker, on a
    /// server's start): its containers left by an earlier process are stopped and removed, in
    /// the background but before this runner launches any container, so nothing of theirs
    /// runs on.
    pub fn reaping(&self) {
        self.inner.reap.store(true, std::sync::atomic::Ordering::SeqCst);
        let runner = self.clone();
        tokio::spawn(async move {
            let _ = runner.docker().await;
        });
    }
}

/// A task's end callback, callable from whichever path ends the task first, and only once.
type EndCallback = Box<dyn FnOnce(TaskEnd) + Send>;

#[derive(Clone)]
struct Finish(Arc<Mutex<Option<EndCallback>>>);

impl Finish {
    fn new(on_end: impl FnOnce(TaskEnd) + Send + 'static) -> Finish {
        Finish(Arc::new(Mutex::new(Some(Box::new(on_end)))))
    }

    fn call(&self, end: TaskEnd) {
        let callback = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(callback) = callback {
            callback(end);
        }
    }
}
