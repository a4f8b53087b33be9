//! Runs a task in a Docker container on the local engine, with the same bounded output, time
//! limit, kill and [`Outcome`] as the process executor.
//!
//! This is the only file that speaks to Docker (through bollard), and [`Docker::connect`] is the
//! only place a client is made. A container is created with the `kairos.*` labels, attached to
//! before it starts (so no output is lost, whatever the log driver), watched until it ends and
//! then removed; its outcome goes to the launch's callback.
//!
//! # Job parameters
//! A job's `container.parameters` are Docker CLI options (`{"key": "label", "value": "a=b"}`).
//! They are mapped onto the engine API, not passed to a CLI, so only this set is understood:
//!
//! | key | value | API field |
//! | --- | --- | --- |
//! | `label` | `k=v` | `Labels` (the `kairos.` prefix is reserved) |
//! | `env` | `K=V` | `Env` |
//! | `user` | user\[:group\] | `User` |
//! | `workdir` | absolute path | `WorkingDir` |
//! | `hostname` | name | `Hostname` |
//! | `add-host` | `host:ip` (or `host=ip`) | `HostConfig.ExtraHosts` |
//! | `dns` | IP address | `HostConfig.Dns` |
//! | `memory-swap` | size, or `-1` | `HostConfig.MemorySwap` |
//! | `shm-size` | size | `HostConfig.ShmSize` |
//! | `ulimit` | `name=soft[:hard]` | `HostConfig.Ulimits` |
//! | `entrypoint` | program (empty resets it) | `Entrypoint` |
//! | `tmpfs` | `path[:options]` | `HostConfig.Tmpfs` |
//! | `cap-drop` | capability | `HostConfig.CapDrop` |
//! | `read-only` | `true`/`false` (empty is true) | `HostConfig.ReadonlyRootfs` |
//! | `init` | `true`/`false` (empty is true) | `HostConfig.Init` |
//! | `log-driver`, `log-opt` | driver, `k=v` | `HostConfig.LogConfig` |
//! | `network` | network name or mode | `HostConfig.NetworkMode` (overrides the job's `network`) |
//! | `volume`, `v` | `src:dst[:opts]` or `dst` | `HostConfig.Binds`, or an anonymous volume |
//!
//! Sizes are bytes or a number with a `k`, `m`, `g`, `t` suffix (as the CLI takes them).
//!
//! These escalate privilege and are refused by [`check_parameters`] unless the server allows
//! privileged containers; when allowed they map onto the API too: `privileged`, `cap-add`,
//! `device` (`host[:container[:rwm]]`), `device-cgroup-rule`, `security-opt` (except
//! `no-new-privileges`, which only takes privilege away), `pid`, `ipc` (`host` or
//! `container:…`), `uts`, `userns`, `cgroupns` (`host`), `sysctl` (`k=v`), `cgroup-parent`, and a
//! `volume` that mounts the Docker socket or a directory holding it. Any other key is refused.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Outcome, Policy};
use crate::job::TaskId;

/// The label holding the task id, by which kill and reconciliation find a container.
pub(super) const LABEL_TASK_ID: &str = "kairos.task_id";
/// The label marking every container this launcher made.
pub(super) const LABEL_MANAGED: &str = "kairos.managed";
/// The label recording the job's disk request (see [`ContainerSpec::disk_mb`]).
pub(super) const LABEL_DISK_MB: &str = "kairos.disk_mb";
/// The label naming the worker that launched the container ([`ContainerSpec::owner`]): a worker
/// lists, adopts and kills only its own, so workers and clusters can share one engine.
pub(super) const LABEL_OWNER: &str = "kairos.owner";
/// The label holding the instant (epoch ms) a container with a time limit must end by, so that
/// a worker that adopts it after a restart still enforces the limit.
pub(super) const LABEL_DEADLINE: &str = "kairos.deadline_ms";
/// The label holding the bytes of output kept per stream, for the same reason.
pub(super) const LABEL_OUTPUT_LIMIT: &str = "kairos.output_limit";
/// Where the task's sandbox appears inside the container, as under Mesos.
pub(super) const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";
/// Output kept per stream of an adopted container whose launch did not record its limit.
const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;
/// A pull that reports no progress for this long is given up.
const PULL_IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the output may still take to arrive once the container has ended.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// The Docker sockets a volume must not expose without privilege.
const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {source}")]
    Connect {
        #[source]
        source: DockerError,
    },
    #[error("cannot pull image '{image}': {reason}")]
    Pull { image: String, reason: String },
    #[error("the container of task '{task_id}' cannot be set up: {reason}")]
    Invalid { task_id: TaskId, reason: String },
    #[error("cannot create a container of image '{image}' for task '{task_id}': {source}")]
    Create {
        task_id: TaskId,
        image: String,
        #[source]
        source: DockerError,
    },
    #[error("cannot start the container of task '{task_id}': {source}")]
    Start {
        task_id: TaskId,
        #[source]
        source: DockerError,
    },
    #[error("the Docker engine failed to {action}: {source}")]
    Engine {
        action: String,
        #[source]
        source: DockerError,
    },
}

/// A task's container, as the job describes it and a worker runs it: the one container type
/// from the engine to Docker (the agent protocol carries it field by field).
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub image: String,
    /// "BRIDGE", "HOST", "NONE" (or "USER", treated as bridge unless a `network` parameter names
    /// the network). Any other value is taken as the name of a user-defined network.
    pub network: String,
    pub volumes: Vec<VolumeSpec>,
    pub force_pull: bool,
    /// Docker CLI-style options from the job's `parameters` (`{"key": "label", "value": "a=b"}`).
    pub parameters: Vec<(String, String)>,
    /// Becomes `NanoCpus` (`cpus * 1e9`); zero or less sets no limit.
    pub cpus: f64,
    /// Becomes `Memory` in bytes (MB * 1024 * 1024); zero or less sets no limit.
    pub mem_mb: f64,
    /// Recorded as the `kairos.disk_mb` label only: overlay2 can limit a container's writable
    /// layer (`--storage-opt size`) only on xfs with project quotas, which hosts rarely have, and
    /// the engine refuses to create the container otherwise.
    pub disk_mb: f64,
}

/// What a container task needs: its container and the process it runs.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub task_id: TaskId,
    pub container: Container,
    /// With `shell`, the script run as `/bin/sh -c <command>` (entrypoint overridden with
    /// `/bin/sh -c`); without, `command` (if non-empty) then `arguments` become the container's
    /// Cmd and the image's entrypoint is kept. An empty command runs the image's own default.
    pub command: String,
    pub shell: bool,
    pub arguments: Vec<String>,
    pub env: Vec<(String, String)>,
    pub time_limit: Option<Duration>,
    pub output_limit: usize,
    /// The task's sandbox on the host, bind-mounted at /mnt/mesos/sandbox (and MESOS_SANDBOX
    /// points there). The caller owns the directory: it is neither made nor removed here.
    pub sandbox: Option<PathBuf>,
    /// The identity of the worker launching it, kept as a label (see [`LABEL_OWNER`]).
    pub owner: String,
    /// The user the container runs as (`User`), resolved by Docker in the image; `None` keeps
    /// the image's own. A `user` parameter wins over it.
    pub user: Option<String>,
    /// Where the output goes as it is written, besides the outcome at the end.
    pub feed: Option<super::live::TaskFeed>,
}

impl ContainerSpec {
    /// The container of a task's launch, as every worker (and a Swarm service) runs it.
    pub fn for_launch(
        p: &super::LaunchSpec,
        container: &Container,
        sandbox: Option<PathBuf>,
        owner: String,
        feed: Option<super::live::TaskFeed>,
    ) -> ContainerSpec {
        ContainerSpec {
            task_id: p.task_id.clone(),
            container: container.clone(),
            command: p.command.clone(),
            shell: p.shell,
            arguments: p.arguments.clone(),
            env: p.env.clone(),
            time_limit: p.time_limit,
            output_limit: p.output_limit,
            sandbox,
            owner,
            // The default `root` keeps the image's own user: forcing root on an image built to
            // run as someone else would add privilege, not take it away.
            user: p.user.clone().filter(|u| !u.is_empty() && u != "root"),
            feed,
        }
    }
}

/// A container of this worker's found on the engine, running or ended but not yet removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub task_id: TaskId,
    pub container: String,
    /// When its time limit runs out (epoch ms), if it has one.
    pub deadline_ms: Option<i64>,
    /// Bytes of stdout and of stderr to keep, as its launch said.
    pub output_limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSpec {
    /// A host path to bind; without one, an anonymous volume removed with the container.
    pub host_path: Option<String>,
    pub container_path: String,
    pub read_only: bool,
}

/// The Docker engine of this host.
#[derive(Debug, Clone)]
pub struct Docker {
    client: bollard::Docker,
    /// The containers this process launched and still watches, by task id.
    tasks: Arc<Mutex<HashMap<TaskId, Tracked>>>,
    /// The identity of the worker using this engine ([`LABEL_OWNER`]).
    owner: String,
}

/// A container being watched by its launch.
#[derive(Debug)]
struct Tracked {
    container: String,
    /// Set once kairos signalled the container, so that a 137/143 is reported as a signal.
    killed: Arc<AtomicBool>,
    /// Turns true when the container has ended, so that a pending SIGKILL is not sent.
    ended: watch::Receiver<bool>,
}

/// A client of the engine that `DOCKER_HOST` (or the default socket) names, speaking its API
/// version: bollard speaks a newer one than many installed engines, and agreeing on the
/// engine's first keeps every later request acceptable to it. Plain containers and Swarm both
/// start here.
pub(super) async fn client() -> Result<bollard::Docker, DockerError> {
    bollard::Docker::connect_with_defaults()?
        .negotiate_version()
        .await
}

impl Docker {
    /// Connects to the local engine (DOCKER_HOST or the default socket) and checks it answers.
    ///
    /// # Errors
    /// Fails when no engine answers there.
    pub async fn connect(owner: &str) -> Result<Docker, Error> {
        let client = client().await.map_err(|source| Error::Connect { source })?;
        client.ping().await.map_err(|source| Error::Connect { source })?;
        Ok(Docker {
            client,
            tasks: Arc::new(Mutex::new(HashMap::new())),
            owner: owner.to_owned(),
        })
    }

    /// Creates and starts the container and returns at once; `on_exit` runs once with the
    /// outcome when it has ended, after its output has been read and the container removed.
    ///
    /// The image is pulled only if `force_pull` or it is missing.
    ///
    /// # Errors
    /// Fails, with nothing left running, when the settings are invalid, the image cannot be had,
    /// or the engine refuses to create or start the container.
    pub async fn launch(
        &self,
        spec: ContainerSpec,
        on_exit: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<(), Error> {
        let body = container_body(&spec).map_err(|reason| Error::Invalid {
            task_id: spec.task_id.clone(),
            reason,
        })?;
        self.ensure_image(&spec.container.image, spec.container.force_pull)
            .await?;

        let name = container_name(&spec.task_id);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        self.client
            .create_container(Some(options), body)
            .await
            .map_err(|source| Error::Create {
                task_id: spec.task_id.clone(),
                image: spec.container.image.clone(),
                source,
            })?;

        // Attaching before the start is what `docker run` does: the stream then holds
        // everything the task writes, and it works with any log driver (even `none`).
        let attach_options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attach = match self.client.attach_container(&name, Some(attach_options)).await {
            Ok(attach) => attach,
            Err(source) => {
                remove_container(&self.client, &name).await;
                return Err(Error::Engine {
                    action: format!("attach to the container of task '{}'", spec.task_id),
                    source,
                });
            }
        };

        // Tracked before the start, so that a kill arriving during the start is not lost.
        let killed = Arc::new(AtomicBool::new(false));
        let (ended_tx, ended_rx) = watch::channel(false);
        self.tasks().insert(
            spec.task_id.clone(),
            Tracked {
                container: name.clone(),
                killed: killed.clone(),
                ended: ended_rx,
            },
        );
        if let Err(source) = self.client.start_container(&name, None).await {
            self.untrack(&spec.task_id, &name);
            remove_container(&self.client, &name).await;
            return Err(Error::Start {
                task_id: spec.task_id,
                source,
            });
        }
        if killed.load(Ordering::SeqCst) {
            // A kill came while the container was only created, when the engine cannot signal
            // it: it is carried out now.
            send_signal(&self.client, &name, "SIGKILL").await;
        }

        let watcher = Watcher {
            docker: self.clone(),
            name,
            killed,
            ended: ended_tx,
        };
        tokio::spawn(watcher.watch(spec, attach, on_exit));
        Ok(())
    }

    /// Stops the task's container: SIGTERM, then SIGKILL after `grace` (`docker stop`
    /// semantics), and returns once SIGTERM is sent. The `on_exit` of its launch still runs,
    /// with the signal Docker reports. Unknown task ids are ignored.
    ///
    /// # Errors
    /// Fails when the engine cannot be asked.
    pub async fn kill(&self, task_id: &TaskId, grace: Duration) -> Result<(), Error> {
        let tracked = self.tasks().get(task_id).map(|t| {
            t.killed.store(true, Ordering::SeqCst);
            (t.container.clone(), Some(t.ended.clone()))
        });
        let (container, ended) = match tracked {
            Some(found) => found,
            // A container from before a restart of kairos is found by its label.
            None => match self.find_running(task_id).await? {
                Some(container) => (container, None),
                None => return Ok(()),
            },
        };
        let options = KillContainerOptionsBuilder::new().signal("SIGTERM").build();
        match self.client.kill_container(&container, Some(options)).await {
            Ok(()) => {}
            Err(error) if is_gone(&error) => return Ok(()),
            Err(source) => {
                return Err(Error::Engine {
                    action: format!("signal the container of task '{task_id}'"),
                    source,
                });
            }
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            let grace_over = tokio::time::sleep(grace);
            match ended {
                Some(mut ended) => {
                    tokio::select! {
                        () = grace_over => {}
                        _ = ended.wait_for(|ended| *ended) => return,
                    }
                }
                None => {
                    // Nobody watches this one: it ends here, and is removed here.
                    tokio::select! {
                        () = grace_over => send_signal(&client, &container, "SIGKILL").await,
                        _ = wait_exit(&client, &container) => {}
                    }
                    wait_exit(&client, &container).await;
                    remove_container(&client, &container).await;
                    return;
                }
            }
            send_signal(&client, &container, "SIGKILL").await;
        });
        Ok(())
    }

    /// This worker's containers on the engine (by [`LABEL_OWNER`]), running or ended but not
    /// removed: what a worker starting again adopts.
    ///
    /// # Errors
    /// Fails when the engine cannot be asked.
    pub async fn owned(&self) -> Result<Vec<Owned>, Error> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={}", self.owner)])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|source| Error::Engine {
                action: "list this worker's containers".to_owned(),
                source,
            })?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                Some(Owned {
                    task_id: TaskId::parse(labels.get(LABEL_TASK_ID)?)?,
                    container: c.id?,
                    deadline_ms: labels.get(LABEL_DEADLINE).and_then(|d| d.parse().ok()),
                    output_limit: labels.get(LABEL_OUTPUT_LIMIT).and_then(|d| d.parse().ok()),
                })
            })
            .collect())
    }

    /// Stops (SIGTERM, SIGKILL after `grace`) and removes every container of this worker's;
    /// returns how many there were.
    ///
    /// # Errors
    /// Fails when the engine cannot be asked.
    pub async fn reap(&self, grace: Duration) -> Result<usize, Error> {
        let owned = self.owned().await?;
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        for container in &owned {
            let options = bollard::query_parameters::StopContainerOptionsBuilder::new()
                .t(seconds)
                .build();
            let _ = self
                .client
                .stop_container(&container.container, Some(options))
                .await;
            remove_container(&self.client, &container.container).await;
        }
        Ok(owned.len())
    }

    /// Watches a container this worker launched before it restarted, as its launch would have:
    /// `on_exit` runs once with the outcome (the output read from the engine's log) when it has
    /// ended and been removed. A kill reaches it like any other.
    pub fn adopt(&self, owned: Owned, on_exit: impl FnOnce(Outcome) + Send + 'static) {
        let output_limit = owned.output_limit.unwrap_or(DEFAULT_OUTPUT_LIMIT);
        let killed = Arc::new(AtomicBool::new(false));
        let (ended_tx, ended_rx) = watch::channel(false);
        self.tasks().insert(
            owned.task_id.clone(),
            Tracked {
                container: owned.container.clone(),
                killed: killed.clone(),
                ended: ended_rx,
            },
        );
        let watcher = Watcher {
            docker: self.clone(),
            name: owned.container.clone(),
            killed,
            ended: ended_tx,
        };
        tokio::spawn(watcher.watch_adopted(owned, output_limit, on_exit));
    }

    /// Task ids of kairos containers that are running on this engine (found by label), for
    /// reconciliation after a restart.
    ///
    /// # Errors
    /// Fails when the engine cannot be asked.
    pub async fn running_tasks(&self) -> Result<Vec<TaskId>, Error> {
        let containers = self.list_running(format!("{LABEL_OWNER}={}", self.owner)).await?;
        let mut ids: Vec<TaskId> = containers
            .into_iter()
            .filter_map(|c| c.labels.and_then(|l| TaskId::parse(l.get(LABEL_TASK_ID)?)))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// This worker's running container of a task, if there is one.
    async fn find_running(&self, task_id: &TaskId) -> Result<Option<String>, Error> {
        let containers = self.list_running(format!("{LABEL_TASK_ID}={task_id}")).await?;
        Ok(containers
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_some_and(|l| l.get(LABEL_OWNER).is_some_and(|v| *v == self.owner))
            })
            .find_map(|c| c.id))
    }

    async fn list_running(&self, label: String) -> Result<Vec<bollard::models::ContainerSummary>, Error> {
        let filters = HashMap::from([("label", vec![label]), ("status", vec!["running".to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(false)
            .filters(&filters)
            .build();
        self.client
            .list_containers(Some(options))
            .await
            .map_err(|source| Error::Engine {
                action: "list the running containers".to_owned(),
                source,
            })
    }

    /// Makes sure the image is here, pulling it when asked to or when it is missing.
    async fn ensure_image(&self, image: &str, force_pull: bool) -> Result<(), Error> {
        let reference = image_reference(image);
        if !force_pull {
            match self.client.inspect_image(&reference).await {
                Ok(_) => return Ok(()),
                Err(error) if status_of(&error) == Some(404) => {}
                Err(source) => {
                    return Err(Error::Engine {
                        action: format!("look up image '{image}'"),
                        source,
                    });
                }
            }
        }
        tracing::info!(image = %reference, "pulling image");
        let options = CreateImageOptionsBuilder::new().from_image(&reference).build();
        // Private registries would need credentials here (X-Registry-Auth); none are passed,
        // so only public images and images already on the host can be used.
        let mut progress = self.client.create_image(Some(options), None, None);
        loop {
            match tokio::time::timeout(PULL_IDLE_LIMIT, progress.next()).await {
                Ok(None) => return Ok(()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(error))) => {
                    return Err(Error::Pull {
                        image: image.to_owned(),
                        reason: docker_message(&error),
                    });
                }
                Err(_) => {
                    return Err(Error::Pull {
                        image: image.to_owned(),
                        reason: format!("the registry sent nothing for {} s", PULL_IDLE_LIMIT.as_secs()),
                    });
                }
            }
        }
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<TaskId, Tracked>> {
        // The map stays consistent even if a holder panicked: every update is one insert or
        // remove.
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets a task's container, unless the task was launched again meanwhile.
    fn untrack(&self, task_id: &TaskId, container: &str) {
        let mut tasks = self.tasks();
        if tasks.get(task_id).is_some_and(|t| t.container == container) {
            tasks.remove(task_id);
        }
    }
}

/// Watches one started container to its end.
struct Watcher {
    docker: Docker,
    name: String,
    killed: Arc<AtomicBool>,
    ended: watch::Sender<bool>,
}

impl Watcher {
    /// Waits for an adopted container (with what is left of its time limit), then reads its
    /// output from the engine's log and finishes it like any other.
    async fn watch_adopted(
        self,
        owned: Owned,
        output_limit: usize,
        on_exit: impl FnOnce(Outcome) + Send + 'static,
    ) {
        let client = self.docker.client.clone();
        let name = self.name.clone();
        let waited = wait_exit(&client, &name);
        tokio::pin!(waited);
        let mut timed_out = false;
        let code = match owned.deadline_ms {
            Some(deadline) => {
                let left = (deadline - crate::clock::now().timestamp_millis()).max(0) as u64;
                match tokio::time::timeout(Duration::from_millis(left), &mut waited).await {
                    Ok(code) => code,
                    Err(_) => {
                        timed_out = true;
                        self.killed.store(true, Ordering::SeqCst);
                        send_signal(&client, &name, "SIGKILL").await;
                        waited.await
                    }
                }
            }
            None => waited.await,
        };
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let logs = client.logs(&name, Some(options));
        let (stdout, stderr) = tokio::time::timeout(
            OUTPUT_DRAIN_LIMIT,
            read_stream(Box::pin(logs), output_limit, None),
        )
        .await
        .unwrap_or_default();
        self.finish(owned.task_id, code, timed_out, stdout, stderr, on_exit)
            .await;
    }

    async fn watch(
        self,
        spec: ContainerSpec,
        attach: AttachContainerResults,
        on_exit: impl FnOnce(Outcome) + Send + 'static,
    ) {
        let client = &self.docker.client.clone();
        let name = self.name.clone();
        let output = tokio::spawn(read_output(attach, spec.output_limit, spec.feed.clone()));
        let mut timed_out = false;
        let waited = wait_exit(client, &name);
        tokio::pin!(waited);
        let code = match spec.time_limit {
            Some(limit) => match tokio::time::timeout(limit, &mut waited).await {
                Ok(code) => code,
                Err(_) => {
                    timed_out = true;
                    self.killed.store(true, Ordering::SeqCst);
                    send_signal(client, &name, "SIGKILL").await;
                    waited.await
                }
            },
            None => waited.await,
        };
        let (stdout, stderr) = match tokio::time::timeout(OUTPUT_DRAIN_LIMIT, output).await {
            Ok(Ok(output)) => output,
            _ => {
                tracing::warn!(container = %self.name, "the container's output could not be read to its end");
                (String::new(), String::new())
            }
        };
        self.finish(spec.task_id, code, timed_out, stdout, stderr, on_exit)
            .await;
    }

    /// The end of every watched container: OOM noted, container removed and forgotten, then
    /// `on_exit` with the outcome.
    async fn finish(
        self,
        task_id: TaskId,
        code: Option<i32>,
        timed_out: bool,
        stdout: String,
        mut stderr: String,
        on_exit: impl FnOnce(Outcome) + Send + 'static,
    ) {
        let client = &self.docker.client;
        let state = client
            .inspect_container(&self.name, None)
            .await
            .ok()
            .and_then(|info| info.state);
        let code = code.or_else(|| {
            state
                .as_ref()
                .and_then(|s| s.exit_code)
                .and_then(|c| i32::try_from(c).ok())
        });
        if state.as_ref().and_then(|s| s.oom_killed) == Some(true) {
            stderr.push_str("\n[kairos: the container was killed for exceeding its memory limit]\n");
        }
        remove_container(client, &self.name).await;
        self.docker.untrack(&task_id, &self.name);
        let _ = self.ended.send(true);

        // Docker reports a signal death as 128 + the signal; only after a kill of ours is that
        // known to be a signal rather than a status the task chose.
        let signal = match code {
            Some(137) if self.killed.load(Ordering::SeqCst) => Some(libc::SIGKILL),
            Some(143) if self.killed.load(Ordering::SeqCst) => Some(libc::SIGTERM),
            _ => None,
        };
        on_exit(Outcome {
            task_id,
            exit_code: code,
            signal,
            timed_out,
            stdout,
            stderr,
        });
    }
}

/// Waits for the container to stop and returns its exit status.
async fn wait_exit(client: &bollard::Docker, name: &str) -> Option<i32> {
    // A broken wait connection is retried a few times; the container's recorded state is the
    // fallback once it has stopped.
    for attempt in 0..4u32 {
        let mut stream = client.wait_container(name, None);
        match stream.next().await {
            Some(Ok(response)) => return i32::try_from(response.status_code).ok(),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                return i32::try_from(code).ok();
            }
            Some(Err(error)) => {
                tracing::warn!(container = %name, %error, "waiting for the container failed");
            }
            None => {}
        }
        match client.inspect_container(name, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                if state.running != Some(true) {
                    return state.exit_code.and_then(|c| i32::try_from(c).ok());
                }
            }
            Err(error) if status_of(&error) == Some(404) => return None,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt)).await;
    }
    None
}

/// Reads the attached stdout and stderr to their end, keeping at most `limit` bytes of each.
/// What is kept also goes to `feed` as it comes.
async fn read_output(
    attach: AttachContainerResults,
    limit: usize,
    feed: Option<super::live::TaskFeed>,
) -> (String, String) {
    read_stream(attach.output, limit, feed).await
}

/// Reads a stream of output (attached, or the engine's log) to its end, keeping at most `limit`
/// bytes of stdout and of stderr.
pub(super) async fn read_stream(
    mut output: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>,
    limit: usize,
    feed: Option<super::live::TaskFeed>,
) -> (String, String) {
    use super::Bounded;
    use super::live::Stream;
    let mut stdout = Bounded::new(limit);
    let mut stderr = Bounded::new(limit);
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                let kept = stdout.push(&message);
                if let Some(feed) = &feed {
                    feed.push(Stream::Stdout, kept);
                }
            }
            Ok(LogOutput::StdErr { message }) => {
                let kept = stderr.push(&message);
                if let Some(feed) = &feed {
                    feed.push(Stream::Stderr, kept);
                }
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(error) => {
                tracing::warn!(%error, "reading a container's output failed");
                break;
            }
        }
    }
    (stdout.finish(), stderr.finish())
}

/// Sends a signal, ignoring a container that is already gone or stopped.
async fn send_signal(client: &bollard::Docker, container: &str, signal: &str) {
    let options = KillContainerOptionsBuilder::new().signal(signal).build();
    if let Err(error) = client.kill_container(container, Some(options)).await
        && !is_gone(&error)
    {
        tracing::warn!(%container, signal, %error, "signalling the container failed");
    }
}

/// Removes a container and its anonymous volumes, whatever state it is in.
async fn remove_container(client: &bollard::Docker, container: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    if let Err(error) = client.remove_container(container, Some(options)).await
        && status_of(&error) != Some(404)
    {
        tracing::warn!(%container, %error, "removing the container failed");
    }
}

pub(super) fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether an error says the container no longer exists or no longer runs.
fn is_gone(error: &DockerError) -> bool {
    matches!(status_of(error), Some(404 | 409))
}

/// The engine's own words for an error, without bollard's wrapping when there is some.
fn docker_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// An image reference with an explicit tag: the engine pulls every tag of an untagged name.
fn image_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// A container name from the task id: Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, and a
/// short random suffix keeps a relaunch of the same task id from colliding with a leftover.
fn container_name(task_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let readable: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let suffix = hasher.finish() & 0xffff_ffff;
    format!("kairos-{readable}-{suffix:08x}")
}

/// The whole container configuration for a spec, parameters included.
pub(super) fn container_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, String> {
    if spec.container.image.trim().is_empty() {
        return Err("the image is empty".to_owned());
    }
    let mut env: Vec<String> = spec
        .env
        .iter()
        // Inside the container the sandbox is at its mount point, not at the host path.
        .filter(|(k, _)| !(spec.sandbox.is_some() && k == "MESOS_SANDBOX"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut binds = Vec::new();
    let mut anonymous = Vec::new();
    if let Some(sandbox) = &spec.sandbox {
        // Docker takes a relative bind source for the name of a volume.
        if !sandbox.is_absolute() {
            return Err(format!("the sandbox path {} is not absolute", sandbox.display()));
        }
        let host = sandbox
            .to_str()
            .ok_or_else(|| format!("the sandbox path {} is not UTF-8", sandbox.display()))?;
        binds.push(format!("{host}:{SANDBOX_IN_CONTAINER}"));
        env.push(format!("MESOS_SANDBOX={SANDBOX_IN_CONTAINER}"));
    }
    for volume in &spec.container.volumes {
        if !volume.container_path.starts_with('/') {
            return Err(format!(
                "the volume path '{}' in the container is not absolute",
                volume.container_path
            ));
        }
        match &volume.host_path {
            Some(host) => {
                let mode = if volume.read_only { ":ro" } else { "" };
                binds.push(format!("{host}:{}{mode}", volume.container_path));
            }
            None => anonymous.push(volume.container_path.clone()),
        }
    }

    let (entrypoint, cmd) = if spec.shell && !spec.command.trim().is_empty() {
        (
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
            Some(vec![spec.command.clone()]),
        )
    } else {
        // Without a shell (or without a command) the words are given as they are and the
        // image's entrypoint stays; with nothing at all the image's own Cmd runs.
        let words: Vec<String> = (!spec.command.is_empty())
            .then(|| spec.command.clone())
            .into_iter()
            .chain(spec.arguments.iter().cloned())
            .collect();
        (None, (!words.is_empty()).then_some(words))
    };

    let network_mode = match spec.container.network.to_ascii_uppercase().as_str() {
        "" | "BRIDGE" | "USER" => "bridge".to_owned(),
        "HOST" => "host".to_owned(),
        "NONE" => "none".to_owned(),
        _ => spec.container.network.clone(),
    };
    let mut labels = HashMap::from([
        (LABEL_TASK_ID.to_owned(), spec.task_id.to_string()),
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_DISK_MB.to_owned(), spec.container.disk_mb.to_string()),
        (LABEL_OWNER.to_owned(), spec.owner.clone()),
        (LABEL_OUTPUT_LIMIT.to_owned(), spec.output_limit.to_string()),
    ]);
    if let Some(limit) = spec.time_limit {
        let deadline =
            crate::clock::now().timestamp_millis() + i64::try_from(limit.as_millis()).unwrap_or(i64::MAX / 2);
        labels.insert(LABEL_DEADLINE.to_owned(), deadline.to_string());
    }
    let host_config = HostConfig {
        nano_cpus: (spec.container.cpus > 0.0).then(|| (spec.container.cpus * 1e9).round() as i64),
        memory: (spec.container.mem_mb > 0.0)
            .then(|| (spec.container.mem_mb * 1024.0 * 1024.0).round() as i64),
        network_mode: Some(network_mode),
        binds: (!binds.is_empty()).then_some(binds),
        ..Default::default()
    };
    let mut body = ContainerCreateBody {
        image: Some(spec.container.image.clone()),
        cmd,
        entrypoint,
        env: Some(env),
        labels: Some(labels),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(host_config),
        // As under Mesos, the task starts in its sandbox, where its fetched files are; a
        // `workdir` parameter below still wins.
        working_dir: spec.sandbox.is_some().then(|| SANDBOX_IN_CONTAINER.to_owned()),
        user: spec.user.clone(),
        ..Default::default()
    };
    // The API and the worker checked privilege ([`check_container`]) before the launch; here
    // every supported key is mapped.
    for (key, value) in &spec.container.parameters {
        apply_parameter(key, value, &mut body, true)?;
    }
    if spec.shell
        && !spec.command.trim().is_empty()
        && spec.container.parameters.iter().any(|(k, _)| k == "entrypoint")
    {
        // An explicit entrypoint wins; the shell then comes as its arguments.
        body.cmd = Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), spec.command.clone()]);
    }
    Ok(body)
}

/// Refuses parameters that would escalate privilege unless `allow_privileged`, and parameters
/// this launcher doesn't support or whose value it cannot read. The message names the
/// parameter and why; the API turns it into a 400.
///
/// # Errors
/// The first refused parameter, described.
pub fn check_parameters(parameters: &[(String, String)], allow_privileged: bool) -> Result<(), String> {
    let mut scratch = ContainerCreateBody::default();
    for (key, value) in parameters {
        apply_parameter(key, value, &mut scratch, allow_privileged)?;
    }
    Ok(())
}

/// Refuses job volumes that mount the Docker socket (or a directory holding it) unless
/// `allow_privileged`: like the `volume` parameter, that hands the container the engine.
///
/// # Errors
/// The first refused volume, described.
pub fn check_volumes(volumes: &[VolumeSpec], allow_privileged: bool) -> Result<(), String> {
    for volume in volumes {
        if let Some(host) = &volume.host_path
            && !allow_privileged
            && exposes_docker_socket(host)
        {
            return Err(format!(
                "volume '{host}' is refused: {}",
                privilege_note(SOCKET_WHY)
            ));
        }
    }
    Ok(())
}

/// A container setting that a worker's [`Policy`] refuses, with the job field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `container.volumes` or `container.parameters`.
    pub field: &'static str,
    pub reason: String,
}

/// Everything a worker checks before it creates a container, so that a job stored before a
/// rule existed (or on a more permissive server) cannot bypass it: privileged parameters and the
/// Docker socket ([`check_parameters`], [`check_volumes`]), and host paths outside the allowed
/// prefixes ([`check_host_paths`]).
///
/// # Errors
/// The first refused setting.
pub fn check_container(container: &Container, policy: &Policy) -> Result<(), Refusal> {
    let refuse = |field: &'static str| move |reason: String| Refusal { field, reason };
    check_volumes(&container.volumes, policy.allow_privileged).map_err(refuse("container.volumes"))?;
    check_parameters(&container.parameters, policy.allow_privileged)
        .map_err(refuse("container.parameters"))?;
    check_host_paths(&container.volumes, &container.parameters, policy)
}

/// Refuses host paths, as `volumes` entries or `volume` parameters, that lie outside every
/// allowed prefix, unless privileged containers are allowed. A path is compared as written (with
/// `.` and `..` resolved) and, when it exists here, through its links too, so a link under an
/// allowed prefix cannot lead out of it. A bind source that is no absolute path names a Docker
/// volume, which is no host path.
///
/// # Errors
/// The first refused host path.
pub fn check_host_paths(
    volumes: &[VolumeSpec],
    parameters: &[(String, String)],
    policy: &Policy,
) -> Result<(), Refusal> {
    if policy.allow_privileged {
        return Ok(());
    }
    let from_volumes = volumes
        .iter()
        .filter_map(|v| v.host_path.as_deref())
        .map(|host| ("container.volumes", host));
    let from_parameters = parameters
        .iter()
        .filter(|(key, _)| key == "volume" || key == "v")
        .filter_map(|(_, value)| value.split_once(':').map(|(source, _)| source))
        .map(|source| ("container.parameters", source));
    for (field, host) in from_volumes.chain(from_parameters) {
        if host.starts_with('/') && !host_path_allowed(host, &policy.allowed_host_paths) {
            let allowed = if policy.allowed_host_paths.is_empty() {
                "none is allowed on this worker".to_owned()
            } else {
                let list: Vec<String> = policy
                    .allowed_host_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("allowed are paths under {}", list.join(", "))
            };
            return Err(Refusal {
                field,
                reason: format!(
                    "host path '{host}' is refused: {allowed} (--allowed-host-path), or any on a server that allows privileged containers"
                ),
            });
        }
    }
    Ok(())
}

/// Whether `host` lies under one of `prefixes`, both as written and through its links.
fn host_path_allowed(host: &str, prefixes: &[PathBuf]) -> bool {
    let prefixes: Vec<(PathBuf, Option<PathBuf>)> = prefixes
        .iter()
        .map(|p| (normalize(p), std::fs::canonicalize(p).ok()))
        .collect();
    let under = |path: &Path| {
        prefixes.iter().any(|(lexical, resolved)| {
            path.starts_with(lexical) || resolved.as_ref().is_some_and(|r| path.starts_with(r))
        })
    };
    under(&normalize(Path::new(host))) && std::fs::canonicalize(host).map_or(true, |real| under(&real))
}

const SOCKET_WHY: &str =
    "mounting the Docker socket gives the container control of the Docker engine, and so of the host";

fn privilege_note(why: &str) -> String {
    format!("{why}; it is allowed only on a server that allows privileged containers")
}

/// Maps one CLI-style parameter onto the container configuration.
fn apply_parameter(
    key: &str,
    value: &str,
    body: &mut ContainerCreateBody,
    allow_privileged: bool,
) -> Result<(), String> {
    let invalid =
        |expected: &str| format!("parameter '{key}' has an invalid value '{value}': expected {expected}");
    let privileged = |why: &str| -> Result<(), String> {
        if allow_privileged {
            Ok(())
        } else {
            Err(format!("parameter '{key}' is refused: {}", privilege_note(why)))
        }
    };
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    match key {
        "label" => {
            let (k, v) = value.split_once('=').unwrap_or((value, ""));
            if k.is_empty() {
                return Err(invalid("key=value"));
            }
            if k.starts_with("kairos.") {
                return Err(format!(
                    "parameter 'label' cannot set '{k}': labels starting with 'kairos.' are kairos' own"
                ));
            }
            body.labels
                .get_or_insert_with(HashMap::new)
                .insert(k.to_owned(), v.to_owned());
        }
        "env" => match value.split_once('=') {
            Some((k, _)) if !k.is_empty() => {
                body.env.get_or_insert_with(Vec::new).push(value.to_owned());
            }
            // The CLI would copy a bare name from its own environment; the server's
            // environment is not the job's to read.
            _ => return Err(invalid("NAME=value")),
        },
        "user" => body.user = Some(non_empty(value).ok_or_else(|| invalid("a user"))?),
        "workdir" => {
            if !value.starts_with('/') {
                return Err(invalid("an absolute path"));
            }
            body.working_dir = Some(value.to_owned());
        }
        "hostname" => {
            let valid = !value.is_empty()
                && value.len() <= 253
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                return Err(invalid("a host name"));
            }
            body.hostname = Some(value.to_owned());
        }
        "add-host" => {
            let (name, ip) = value
                .split_once('=')
                .or_else(|| value.split_once(':'))
                .ok_or_else(|| invalid("host:ip"))?;
            if name.is_empty() || (ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err()) {
                return Err(invalid("host:ip"));
            }
            host.extra_hosts
                .get_or_insert_with(Vec::new)
                .push(format!("{name}:{ip}"));
        }
        "dns" => {
            if value.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid("an IP address"));
            }
            host.dns.get_or_insert_with(Vec::new).push(value.to_owned());
        }
        "memory-swap" => {
            host.memory_swap = Some(if value.trim() == "-1" {
                -1
            } else {
                parse_size(value).ok_or_else(|| invalid("a size such as 512m, or -1"))?
            });
        }
        "shm-size" => {
            host.shm_size = Some(parse_size(value).ok_or_else(|| invalid("a size such as 64m"))?);
        }
        "ulimit" => {
            let ulimit = parse_ulimit(value).ok_or_else(|| invalid("name=soft[:hard]"))?;
            host.ulimits.get_or_insert_with(Vec::new).push(ulimit);
        }
        "entrypoint" => body.entrypoint = Some(vec![value.to_owned()]),
        "tmpfs" => {
            let (path, options) = value.split_once(':').unwrap_or((value, ""));
            if !path.starts_with('/') {
                return Err(invalid("an absolute path[:options]"));
            }
            host.tmpfs
                .get_or_insert_with(HashMap::new)
                .insert(path.to_owned(), options.to_owned());
        }
        "cap-drop" => {
            let cap = capability(value).ok_or_else(|| invalid("a capability"))?;
            host.cap_drop.get_or_insert_with(Vec::new).push(cap);
        }
        "read-only" => {
            host.readonly_rootfs = Some(parse_flag(value).ok_or_else(|| invalid("true or false"))?)
        }
        "init" => host.init = Some(parse_flag(value).ok_or_else(|| invalid("true or false"))?),
        "log-driver" => {
            let driver = non_empty(value).ok_or_else(|| invalid("a log driver"))?;
            host.log_config
                .get_or_insert_with(HostConfigLogConfig::default)
                .typ = Some(driver);
        }
        "log-opt" => {
            let (k, v) = value
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| invalid("key=value"))?;
            host.log_config
                .get_or_insert_with(HostConfigLogConfig::default)
                .config
                .get_or_insert_with(HashMap::new)
                .insert(k.to_owned(), v.to_owned());
        }
        "network" => host.network_mode = Some(non_empty(value).ok_or_else(|| invalid("a network"))?),
        "volume" | "v" => {
            let parts: Vec<&str> = value.split(':').collect();
            match parts.as_slice() {
                [target] if target.starts_with('/') => {
                    body.volumes
                        .get_or_insert_with(Vec::new)
                        .push((*target).to_owned());
                }
                [source, target, rest @ ..]
                    if !source.is_empty() && target.starts_with('/') && rest.len() <= 1 =>
                {
                    let options_ok = rest.iter().all(|options| {
                        options.split(',').all(|o| {
                            matches!(
                                o,
                                "ro" | "rw"
                                    | "z"
                                    | "Z"
                                    | "nocopy"
                                    | "shared"
                                    | "rshared"
                                    | "slave"
                                    | "rslave"
                                    | "private"
                                    | "rprivate"
                            )
                        })
                    });
                    if !options_ok {
                        return Err(invalid("src:dst[:ro|rw,…]"));
                    }
                    if exposes_docker_socket(source) {
                        privileged(SOCKET_WHY)?;
                    }
                    host.binds.get_or_insert_with(Vec::new).push(value.to_owned());
                }
                _ => return Err(invalid("src:dst[:options] or an absolute path")),
            }
        }

        // Keys that escalate privilege.
        "privileged" => {
            let on = parse_flag(value).ok_or_else(|| invalid("true or false"))?;
            if on {
                privileged("it gives the container every capability and every host device")?;
            }
            host.privileged = Some(on);
        }
        "cap-add" => {
            let cap = capability(value).ok_or_else(|| invalid("a capability"))?;
            privileged("added capabilities let the container act on the host's kernel")?;
            host.cap_add.get_or_insert_with(Vec::new).push(cap);
        }
        "device" => {
            let device = parse_device(value).ok_or_else(|| invalid("host[:container[:rwm]]"))?;
            privileged("it gives the container a host device")?;
            host.devices.get_or_insert_with(Vec::new).push(device);
        }
        "device-cgroup-rule" => {
            let rule = non_empty(value).ok_or_else(|| invalid("a rule such as 'c 1:3 rwm'"))?;
            privileged("it lets the container use host devices")?;
            host.device_cgroup_rules.get_or_insert_with(Vec::new).push(rule);
        }
        "security-opt" => {
            let option = non_empty(value).ok_or_else(|| invalid("a security option"))?;
            // This one only takes privilege away, so it needs no permission.
            if !matches!(
                option.as_str(),
                "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
            ) {
                privileged("it can lift the container's seccomp, AppArmor or SELinux confinement")?;
            }
            host.security_opt.get_or_insert_with(Vec::new).push(option);
        }
        "pid" => {
            match value {
                "host" => privileged("it shows the container every process of the host")?,
                v if v.starts_with("container:") => {
                    privileged("it joins the processes of another container")?;
                }
                _ => return Err(invalid("host or container:<name>")),
            }
            host.pid_mode = Some(value.to_owned());
        }
        "ipc" => {
            match value {
                "private" | "shareable" | "none" => {}
                "host" => privileged("it shares the host's IPC namespace")?,
                v if v.starts_with("container:") => {
                    privileged("it shares the IPC namespace of another container")?;
                }
                _ => return Err(invalid("private, shareable, none, host or container:<name>")),
            }
            host.ipc_mode = Some(value.to_owned());
        }
        "uts" => {
            if value != "host" {
                return Err(invalid("host"));
            }
            privileged("it lets the container change the host's name")?;
            host.uts_mode = Some(value.to_owned());
        }
        "userns" => {
            if value != "host" {
                return Err(invalid("host"));
            }
            privileged("it turns off the engine's user namespace remapping")?;
            host.userns_mode = Some(value.to_owned());
        }
        "cgroupns" => {
            host.cgroupns_mode = Some(match value {
                "private" => HostConfigCgroupnsModeEnum::PRIVATE,
                "host" => {
                    privileged("it shows the container the host's cgroups")?;
                    HostConfigCgroupnsModeEnum::HOST
                }
                _ => return Err(invalid("private or host")),
            });
        }
        "sysctl" => {
            let (k, v) = value
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| invalid("name=value"))?;
            privileged("it changes kernel settings")?;
            host.sysctls
                .get_or_insert_with(HashMap::new)
                .insert(k.to_owned(), v.to_owned());
        }
        "cgroup-parent" => {
            let parent = non_empty(value).ok_or_else(|| invalid("a cgroup"))?;
            privileged("it moves the container out of the engine's cgroup and its limits")?;
            host.cgroup_parent = Some(parent);
        }
        _ => {
            return Err(format!(
                "parameter '{key}' is not supported (supported: label, env, user, workdir, hostname, \
                 add-host, dns, memory-swap, shm-size, ulimit, entrypoint, tmpfs, cap-drop, \
                 read-only, init, log-driver, log-opt, network, volume)"
            ));
        }
    }
    Ok(())
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// A CLI boolean flag: given without a value it means true.
fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A capability name as the engine wants it: upper case, with or without `CAP_`.
fn capability(value: &str) -> Option<String> {
    let name = value.trim().to_ascii_uppercase();
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// A size as the Docker CLI reads it: bytes, or a number with a k/m/g/t/p suffix (powers of
/// 1024), optionally followed by `b` or `ib`.
pub(super) fn parse_size(value: &str) -> Option<i64> {
    let value = value.trim().to_ascii_lowercase();
    let value = value.strip_suffix('b').unwrap_or(&value);
    let value = value.strip_suffix('i').unwrap_or(value);
    let (number, shift) = match value.chars().last()? {
        'k' => (&value[..value.len() - 1], 10),
        'm' => (&value[..value.len() - 1], 20),
        'g' => (&value[..value.len() - 1], 30),
        't' => (&value[..value.len() - 1], 40),
        'p' => (&value[..value.len() - 1], 50),
        _ => (value, 0),
    };
    let number: f64 = number.trim().parse().ok()?;
    let bytes = number * (1u64 << shift) as f64;
    (number.is_finite() && number >= 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// `name=soft[:hard]`, hard defaulting to soft.
fn parse_ulimit(value: &str) -> Option<ResourcesUlimits> {
    const NAMES: [&str; 15] = [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let (name, limits) = value.split_once('=')?;
    if !NAMES.contains(&name) {
        return None;
    }
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let soft: i64 = soft.trim().parse().ok()?;
    let hard: i64 = hard.trim().parse().ok()?;
    // -1 stands for unlimited.
    let ordered = hard == -1 || (soft != -1 && soft <= hard);
    (soft >= -1 && hard >= -1 && ordered).then(|| ResourcesUlimits {
        name: Some(name.to_owned()),
        soft: Some(soft),
        hard: Some(hard),
    })
}

/// `host[:container[:permissions]]`.
fn parse_device(value: &str) -> Option<DeviceMapping> {
    let mut parts = value.split(':');
    let on_host = parts.next().filter(|p| p.starts_with('/'))?;
    let in_container = parts.next().unwrap_or(on_host);
    let permissions = parts.next().unwrap_or("rwm");
    let valid = in_container.starts_with('/')
        && !permissions.is_empty()
        && permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && parts.next().is_none();
    valid.then(|| DeviceMapping {
        path_on_host: Some(on_host.to_owned()),
        path_in_container: Some(in_container.to_owned()),
        cgroup_permissions: Some(permissions.to_owned()),
    })
}

/// Whether binding this host path would put a Docker socket in the container: the socket itself
/// or any directory above it. The path is read lexically, and through its links when it exists
/// on this host.
fn exposes_docker_socket(host_path: &str) -> bool {
    let lexical = normalize(Path::new(host_path));
    let resolved = std::fs::canonicalize(host_path).ok();
    [Some(lexical), resolved].into_iter().flatten().any(|path| {
        DOCKER_SOCKETS
            .iter()
            .any(|socket| Path::new(socket).starts_with(&path))
    })
}

/// `.` and `..` resolved and repeated slashes dropped, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use bollard::query_parameters::ListContainersOptions;
    use tokio::sync::oneshot;

    const IMAGE: &str = "kairos-test/busybox:latest";
    /// Bound on waiting for any outcome: containers here start in well under a second.
    const BOUND: Duration = Duration::from_secs(30);

    async fn engine() -> Docker {
        let docker = Docker::connect(&format!("docker-test-{}", std::process::id()))
            .await
            .expect("a Docker engine must answer (start dockerd)");
        docker
            .client
            .inspect_image(IMAGE)
            .await
            .expect("the test image must exist: run tests/docker_image.sh");
        docker
    }

    fn spec(task_id: &TaskId, command: &str) -> ContainerSpec {
        ContainerSpec {
            task_id: task_id.clone(),
            container: Container {
                image: IMAGE.to_owned(),
                network: "BRIDGE".to_owned(),
                volumes: Vec::new(),
                force_pull: false,
                parameters: Vec::new(),
                cpus: 0.0,
                mem_mb: 0.0,
                disk_mb: 0.0,
            },
            command: command.to_owned(),
            shell: true,
            arguments: Vec::new(),
            env: Vec::new(),
            time_limit: None,
            output_limit: 4096,
            sandbox: None,
            owner: format!("docker-test-{}", std::process::id()),
            user: None,
            feed: None,
        }
    }

    /// A task id no other test (or earlier run) uses.
    fn task_id(name: &str) -> TaskId {
        TaskId::new(i64::from(std::process::id()), 0, &format!("docker-{name}"), "")
    }

    async fn launch(docker: &Docker, spec: ContainerSpec) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        docker
            .launch(spec, move |outcome| {
                let _ = tx.send(outcome);
            })
            .await
            .expect("launch");
        rx
    }

    async fn outcome(rx: oneshot::Receiver<Outcome>) -> Outcome {
        tokio::time::timeout(BOUND, rx)
            .await
            .expect("the container ended in time")
            .expect("an outcome")
    }

    async fn run(docker: &Docker, spec: ContainerSpec) -> Outcome {
        outcome(launch(docker, spec).await).await
    }

    /// Every container, running or not, labelled with the task id.
    async fn containers_of(docker: &Docker, task_id: &str) -> Vec<bollard::models::ContainerSummary> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_TASK_ID}={task_id}")])]);
        let options: ListContainersOptions = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        docker.client.list_containers(Some(options)).await.expect("list")
    }

    #[tokio::test]
    async fn status_and_both_outputs_are_reported_and_the_container_removed() {
        let docker = engine().await;
        let id = task_id("status");
        let out = run(&docker, spec(&id, "echo to-out; echo to-err >&2; exit 3")).await;
        assert_eq!(out.task_id, id);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.signal, None);
        assert!(!out.timed_out);
        assert_eq!(out.stdout, "to-out\n");
        assert_eq!(out.stderr, "to-err\n");
        assert!(containers_of(&docker, &id).await.is_empty(), "container removed");
        assert!(docker.tasks().get(&id).is_none(), "no longer tracked");
    }

    #[tokio::test]
    async fn limits_labels_and_network_are_set_and_kill_reports_the_signal() {
        let docker = engine().await;
        let id = task_id("limits");
        let mut s = spec(&id, "sleep 30");
        s.container.cpus = 0.5;
        s.container.mem_mb = 64.0;
        s.container.disk_mb = 100.0;
        let rx = launch(&docker, s).await;

        let found = containers_of(&docker, &id).await;
        assert_eq!(found.len(), 1);
        let container = found[0].id.clone().expect("id");
        let info = docker
            .client
            .inspect_container(&container, None)
            .await
            .expect("inspect");
        assert_eq!(info.state.and_then(|s| s.running), Some(true));
        let host = info.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        let labels = info.config.and_then(|c| c.labels).expect("labels");
        assert_eq!(labels.get(LABEL_TASK_ID), Some(&id.to_string()));
        assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(labels.get(LABEL_DISK_MB).map(String::as_str), Some("100"));
        let name = info.name.expect("name");
        assert!(name.starts_with("/kairos-ct_"), "{name}");

        let asked = std::time::Instant::now();
        docker.kill(&id, Duration::from_secs(1)).await.expect("kill");
        let out = outcome(rx).await;
        assert!(asked.elapsed() < Duration::from_secs(10), "{:?}", asked.elapsed());
        // `sleep` as the container's first process ignores SIGTERM, so SIGKILL ends it after
        // the grace; a shell that forwards SIGTERM would end with 143 instead.
        match out.signal {
            Some(signal) => assert_eq!(out.exit_code, Some(128 + signal)),
            None => panic!("the kill was not reported: {out:?}"),
        }
        assert!(!out.timed_out);
        assert!(!out.success());
        assert!(containers_of(&docker, &id).await.is_empty(), "container removed");
    }

    #[tokio::test]
    async fn without_a_shell_arguments_are_taken_literally() {
        let docker = engine().await;
        let mut s = spec(&task_id("literal"), "echo");
        s.shell = false;
        s.arguments = vec!["a;b".to_owned(), "$HOME".to_owned()];
        let out = run(&docker, s).await;
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout, "a;b $HOME\n", "no shell expansion happened");
    }

    #[tokio::test]
    async fn env_volumes_and_the_sandbox_reach_the_container() {
        let docker = engine().await;
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::write(data.path().join("f"), "from the host\n").expect("write");
        let sandbox = tempfile::tempdir().expect("tempdir");
        let mut s = spec(
            &task_id("env"),
            "echo \"$KAIROS_TEST\"; cat /data/f; \
             if echo x > /data/g; then echo writable; else echo read-only; fi; \
             echo \"$MESOS_SANDBOX\"; echo made > \"$MESOS_SANDBOX/out\"",
        );
        s.env = vec![
            ("KAIROS_TEST".to_owned(), "yes it is".to_owned()),
            ("MESOS_SANDBOX".to_owned(), "/host/path".to_owned()),
        ];
        s.container.volumes = vec![VolumeSpec {
            host_path: Some(data.path().display().to_string()),
            container_path: "/data".to_owned(),
            read_only: true,
        }];
        s.sandbox = Some(sandbox.path().to_owned());
        let out = run(&docker, s).await;
        assert_eq!(out.exit_code, Some(0), "{out:?}");
        assert_eq!(
            out.stdout,
            "yes it is\nfrom the host\nread-only\n/mnt/mesos/sandbox\n"
        );
        assert!(!data.path().join("g").exists());
        let made = std::fs::read_to_string(sandbox.path().join("out")).expect("sandbox file");
        assert_eq!(made, "made\n");
    }

    #[tokio::test]
    async fn output_is_bounded_per_stream() {
        let docker = engine().await;
        let mut s = spec(&task_id("bounded"), "yes x | head -c 100; yes e | head -c 10 >&2");
        s.output_limit = 16;
        let out = run(&docker, s).await;
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(
            out.stdout,
            format!(
                "{}\n[kairos: output truncated, 84 more bytes dropped]\n",
                "x\n".repeat(8)
            )
        );
        assert_eq!(out.stderr, "e\n".repeat(5), "under the limit: kept whole");

        // Far more than any pipe buffer: everything is still read, so the task is not blocked.
        let mut s = spec(&task_id("flood"), "yes | head -c 1000000");
        s.output_limit = 4;
        let out = run(&docker, s).await;
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(
            out.stdout,
            "y\ny\n\n[kairos: output truncated, 999996 more bytes dropped]\n"
        );
    }

    #[tokio::test]
    async fn the_time_limit_kills_the_container() {
        let docker = engine().await;
        let id = task_id("timeout");
        let mut s = spec(&id, "echo started; sleep 30; echo never");
        s.time_limit = Some(Duration::from_millis(500));
        let began = std::time::Instant::now();
        let out = run(&docker, s).await;
        assert!(out.timed_out);
        assert_eq!(out.exit_code, Some(137));
        assert_eq!(out.signal, Some(libc::SIGKILL));
        assert_eq!(out.stdout, "started\n");
        assert!(began.elapsed() < Duration::from_secs(15));
        assert!(containers_of(&docker, &id).await.is_empty(), "container removed");
    }

    #[tokio::test]
    async fn running_tasks_lists_running_containers_and_kill_finds_them_by_label() {
        let docker = engine().await;
        let id = task_id("running");
        let rx = launch(&docker, spec(&id, "sleep 30")).await;
        let running = docker.running_tasks().await.expect("running tasks");
        assert!(running.contains(&id), "{running:?}");

        // Another worker on the same engine neither lists nor kills it.
        let other = Docker {
            client: docker.client.clone(),
            tasks: Arc::default(),
            owner: "someone-else".to_owned(),
        };
        assert!(!other.running_tasks().await.expect("running").contains(&id));
        other.kill(&id, Duration::ZERO).await.expect("kill");
        // A second handle knows nothing of the launch, as after a restart: kill goes by label.
        let restarted = Docker {
            client: docker.client.clone(),
            tasks: Arc::default(),
            owner: docker.owner.clone(),
        };
        restarted
            .kill(&id, Duration::from_millis(200))
            .await
            .expect("kill");
        let out = outcome(rx).await;
        assert!(out.exit_code.is_some_and(|c| c != 0), "{out:?}");
        assert!(!docker.running_tasks().await.expect("running").contains(&id));
        // Unknown ids are ignored.
        docker
            .kill(&TaskId::new(0, 0, "nobody", ""), Duration::from_secs(1))
            .await
            .expect("unknown ids are fine");
    }

    /// A container as a worker that died left it: made with the CLI, watched by nobody.
    fn leave_container(owner: &str, task_id: &str, script: &str) -> String {
        let output = std::process::Command::new("docker")
            .args(["run", "-d", "--label", &format!("{LABEL_OWNER}={owner}")])
            .args(["--label", &format!("{LABEL_TASK_ID}={task_id}")])
            .args(["--label", &format!("{LABEL_OUTPUT_LIMIT}=6")])
            .args([IMAGE, "sh", "-c", script])
            .output()
            .expect("docker CLI");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[tokio::test]
    async fn a_restarted_worker_adopts_its_own_containers_and_no_one_elses() {
        let docker = engine().await;
        let mine = task_id("adopt-mine");
        let theirs = task_id("adopt-theirs");
        let ended = task_id("adopt-ended");
        leave_container(
            &docker.owner,
            &mine,
            "echo early; sleep 1; echo late; echo oops >&2; exit 5",
        );
        leave_container(&docker.owner, &ended, "exit 0");
        let their_container = leave_container("another-worker", &theirs, "sleep 30");
        // Let the short one end before the worker comes back.
        wait_exit(
            &docker.client,
            &containers_of(&docker, &ended).await[0].id.clone().unwrap(),
        )
        .await;
        let owned = docker.owned().await.expect("owned");
        let ids: Vec<&str> = owned.iter().map(|o| o.task_id.as_str()).collect();
        assert!(
            ids.contains(&mine.as_str()) && ids.contains(&ended.as_str()),
            "{ids:?}"
        );
        assert!(!ids.contains(&theirs.as_str()), "{ids:?}");
        let mut outcomes = Vec::new();
        for container in owned
            .into_iter()
            .filter(|o| o.task_id == mine || o.task_id == ended)
        {
            let (tx, rx) = oneshot::channel();
            docker.adopt(container, move |outcome| {
                let _ = tx.send(outcome);
            });
            outcomes.push(rx);
        }
        let mut outcomes = futures_util::future::join_all(outcomes.into_iter().map(outcome)).await;
        outcomes.sort_by_key(|o| o.exit_code);
        assert_eq!(
            (outcomes[0].task_id.as_str(), outcomes[0].exit_code),
            (ended.as_str(), Some(0))
        );
        let adopted = &outcomes[1];
        assert_eq!(
            (adopted.task_id.as_str(), adopted.exit_code),
            (mine.as_str(), Some(5))
        );
        // Output comes from the engine's log, bounded by the limit its launch recorded.
        assert_eq!(
            adopted.stdout,
            "early\n\n[kairos: output truncated, 5 more bytes dropped]\n"
        );
        assert_eq!(adopted.stderr, "oops\n");
        assert!(containers_of(&docker, &mine).await.is_empty(), "removed");
        assert!(containers_of(&docker, &ended).await.is_empty(), "removed");
        // The other worker's container runs on, untouched.
        assert_eq!(containers_of(&docker, &theirs).await.len(), 1);
        remove_container(&docker.client, &their_container).await;
    }

    #[tokio::test]
    async fn parameters_reach_the_engine() {
        let docker = engine().await;
        let id = task_id("params");
        let mut s = spec(&id, "sleep 30");
        s.container.network = "NONE".to_owned();
        s.container.mem_mb = 64.0;
        s.container.parameters = [
            ("label", "team=data"),
            ("env", "FROM_PARAM=1"),
            ("user", "1000:1000"),
            ("workdir", "/tmp"),
            ("hostname", "job-host"),
            ("add-host", "db:10.0.0.5"),
            ("memory-swap", "128m"),
            ("shm-size", "32m"),
            ("ulimit", "nofile=512:1024"),
            ("tmpfs", "/scratch:size=1m"),
            ("cap-drop", "net_raw"),
            ("read-only", "true"),
            ("volume", "/kairos-anonymous"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rx = launch(&docker, s).await;
        let container = containers_of(&docker, &id).await[0].id.clone().expect("id");
        let info = docker
            .client
            .inspect_container(&container, None)
            .await
            .expect("inspect");
        docker.kill(&id, Duration::ZERO).await.expect("kill");

        let config = info.config.expect("config");
        let host = info.host_config.expect("host config");
        assert_eq!(
            config.labels.expect("labels").get("team").map(String::as_str),
            Some("data")
        );
        assert!(config.env.expect("env").contains(&"FROM_PARAM=1".to_owned()));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(config.hostname.as_deref(), Some("job-host"));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.extra_hosts, Some(vec!["db:10.0.0.5".to_owned()]));
        assert_eq!(host.memory_swap, Some(128 * 1024 * 1024));
        assert_eq!(host.shm_size, Some(32 * 1024 * 1024));
        let ulimit = &host.ulimits.expect("ulimits")[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(512), Some(1024))
        );
        assert_eq!(
            host.tmpfs.expect("tmpfs").get("/scratch").map(String::as_str),
            Some("size=1m")
        );
        assert_eq!(host.cap_drop, Some(vec!["NET_RAW".to_owned()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert!(
            config
                .volumes
                .expect("volumes")
                .contains(&"/kairos-anonymous".to_owned())
        );

        let out = outcome(rx).await;
        assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
    }

    #[tokio::test]
    async fn the_container_runs_as_the_tasks_user_unless_a_parameter_names_one() {
        let docker = engine().await;
        // The test image knows only root by name; Docker takes a numeric user as it is.
        let mut s = spec(&task_id("user"), "id -u");
        s.user = Some("4321".to_owned());
        let out = run(&docker, s).await;
        assert_eq!(out.stdout, "4321\n", "{out:?}");

        let mut s = spec(&task_id("user-param"), "id -u");
        s.user = Some("4321".to_owned());
        s.container.parameters = vec![("user".to_owned(), "1234".to_owned())];
        let out = run(&docker, s).await;
        assert_eq!(out.stdout, "1234\n", "{out:?}");

        // A user the image does not know fails the start with Docker's own words.
        let mut s = spec(&task_id("user-missing"), "true");
        s.user = Some("kairos-no-such-user".to_owned());
        let error = docker.launch(s, |_| {}).await.expect_err("must fail");
        assert!(error.to_string().contains("kairos-no-such-user"), "{error}");
    }

    #[test]
    fn host_paths_must_lie_under_an_allowed_prefix_unless_privileged() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("data");
        std::fs::create_dir(&allowed).unwrap();
        // A link under the allowed prefix that leads out of it.
        std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
        let allowed_text = allowed.display().to_string();
        let policy = Policy {
            allowed_host_paths: vec![allowed.clone()],
            ..Policy::default()
        };
        let volume = |host: &str| VolumeSpec {
            host_path: Some(host.to_owned()),
            container_path: "/c".to_owned(),
            read_only: false,
        };
        let check = |host: &str, policy: &Policy| check_host_paths(&[volume(host)], &[], policy);
        for ok in [
            allowed_text.clone(),
            format!("{allowed_text}/sub/dir"),
            format!("{allowed_text}/./x"),
            "named-volume".to_owned(),
        ] {
            assert_eq!(check(&ok, &policy), Ok(()), "{ok}");
        }
        for refused in [
            "/etc".to_owned(),
            "/".to_owned(),
            format!("{allowed_text}/../other"),
            format!("{allowed_text}-sibling"),
            format!("{allowed_text}/escape"),
        ] {
            let refusal = check(&refused, &policy).expect_err(&refused);
            assert_eq!(refusal.field, "container.volumes");
            assert!(refusal.reason.contains(&format!("'{refused}'")), "{refusal:?}");
            assert!(refusal.reason.contains(&allowed_text), "{refusal:?}");
        }
        let none = check("/srv", &Policy::default()).unwrap_err();
        assert!(none.reason.contains("none is allowed"), "{none:?}");
        let privileged = Policy {
            allow_privileged: true,
            ..Policy::default()
        };
        assert_eq!(check("/etc", &privileged), Ok(()));

        // A `volume` parameter is a host path too.
        let parameters = vec![("v".to_owned(), "/etc:/host-etc:ro".to_owned())];
        let refusal = check_host_paths(&[], &parameters, &policy).unwrap_err();
        assert_eq!(refusal.field, "container.parameters");
        let inside = vec![("volume".to_owned(), format!("{allowed_text}:/data"))];
        assert_eq!(check_host_paths(&[], &inside, &policy), Ok(()));
    }

    #[test]
    fn the_docker_socket_is_refused_even_under_an_allowed_prefix() {
        let policy = Policy {
            allowed_host_paths: vec![PathBuf::from("/var/run"), PathBuf::from("/run")],
            ..Policy::default()
        };
        let mut container = spec(&TaskId::new(1, 0, "t", ""), "true").container;
        container.volumes = vec![VolumeSpec {
            host_path: Some("/var/run/docker.sock".to_owned()),
            container_path: "/d.sock".to_owned(),
            read_only: false,
        }];
        let refusal = check_container(&container, &policy).unwrap_err();
        assert_eq!(refusal.field, "container.volumes");
        assert!(refusal.reason.contains("Docker socket"), "{refusal:?}");
        container.volumes.clear();
        container.parameters = vec![("privileged".to_owned(), "true".to_owned())];
        let refusal = check_container(&container, &policy).unwrap_err();
        assert_eq!(refusal.field, "container.parameters");
        let privileged = Policy {
            allow_privileged: true,
            ..policy
        };
        assert_eq!(check_container(&container, &privileged), Ok(()));
    }

    #[tokio::test]
    async fn a_missing_image_that_cannot_be_pulled_is_an_error_naming_it() {
        let docker = engine().await;
        let mut s = spec(&task_id("missing"), "true");
        s.container.image = "kairos-test/does-not-exist:1".to_owned();
        let err = tokio::time::timeout(Duration::from_secs(90), docker.launch(s, |_| {}))
            .await
            .expect("the failed pull is reported in bounded time")
            .expect_err("no such image can be had");
        assert!(matches!(err, Error::Pull { .. }), "{err:?}");
        assert!(err.to_string().contains("kairos-test/does-not-exist:1"), "{err}");
    }

    #[tokio::test]
    async fn an_invalid_parameter_fails_the_launch_and_leaves_nothing() {
        let docker = engine().await;
        let id = task_id("invalid");
        let mut s = spec(&id, "true");
        s.container.parameters = vec![("ulimit".to_owned(), "nofile=lots".to_owned())];
        let err = docker.launch(s, |_| {}).await.expect_err("refused");
        assert!(err.to_string().contains("ulimit"), "{err}");
        assert!(containers_of(&docker, &id).await.is_empty());
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn check_parameters_refuses_privilege_and_unknown_keys() {
        // (key, value, allow_privileged, None when accepted or Some(text in the refusal))
        let table = [
            (
                "privileged",
                "true",
                false,
                Some("parameter 'privileged' is refused"),
            ),
            ("privileged", "true", true, None),
            ("privileged", "false", false, None),
            (
                "cap-add",
                "SYS_ADMIN",
                false,
                Some("parameter 'cap-add' is refused"),
            ),
            ("cap-add", "SYS_ADMIN", true, None),
            (
                "volume",
                "/var/run/docker.sock:/var/run/docker.sock",
                false,
                Some("Docker socket"),
            ),
            ("v", "/run/docker.sock:/d.sock:ro", false, Some("Docker socket")),
            ("v", "/var/run/:/host-run", false, Some("Docker socket")),
            ("v", "/var/run/docker.sock:/s", true, None),
            ("volume", "/srv/data:/data:ro", false, None),
            ("label", "a=b", false, None),
            ("label", "kairos.task_id=x", false, Some("kairos.")),
            (
                "nonsense",
                "1",
                false,
                Some("parameter 'nonsense' is not supported"),
            ),
            (
                "nonsense",
                "1",
                true,
                Some("parameter 'nonsense' is not supported"),
            ),
            ("pid", "host", false, Some("parameter 'pid' is refused")),
            ("ipc", "private", false, None),
            ("ipc", "host", false, Some("parameter 'ipc' is refused")),
            ("security-opt", "no-new-privileges", false, None),
            (
                "security-opt",
                "seccomp=unconfined",
                false,
                Some("'security-opt' is refused"),
            ),
            (
                "sysctl",
                "net.ipv4.ip_forward=1",
                false,
                Some("'sysctl' is refused"),
            ),
            ("cgroup-parent", "/x", false, Some("'cgroup-parent' is refused")),
            ("device", "/dev/fuse", false, Some("'device' is refused")),
            ("userns", "host", false, Some("'userns' is refused")),
            (
                "ulimit",
                "nofile=10:5",
                false,
                Some("parameter 'ulimit' has an invalid value"),
            ),
            ("env", "JUST_A_NAME", false, Some("'env' has an invalid value")),
        ];
        for (key, value, allow, expected) in table {
            let result = check_parameters(&params(&[(key, value)]), allow);
            match (expected, result) {
                (None, Ok(())) => {}
                (Some(text), Err(message)) => assert!(message.contains(text), "{key}={value}: {message}"),
                (expected, result) => {
                    panic!("{key}={value} (allow {allow}): expected {expected:?}, got {result:?}")
                }
            }
        }
        let several = params(&[("shm-size", "64m"), ("env", "A=1"), ("ulimit", "nproc=10")]);
        assert_eq!(check_parameters(&several, false), Ok(()));
        let one_bad = params(&[("label", "a=b"), ("cap-add", "NET_ADMIN")]);
        assert!(check_parameters(&one_bad, false).is_err());
    }

    #[test]
    fn privileged_keys_map_onto_the_api_when_allowed() {
        let mut s = spec(&TaskId::new(1, 0, "p", ""), "true");
        s.container.parameters = params(&[
            ("privileged", ""),
            ("cap-add", "sys_admin"),
            ("device", "/dev/fuse"),
            ("security-opt", "apparmor=unconfined"),
            ("pid", "host"),
            ("ipc", "host"),
            ("sysctl", "net.core.somaxconn=1024"),
        ]);
        let body = container_body(&s).expect("body");
        let host = body.host_config.expect("host config");
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.cap_add, Some(vec!["SYS_ADMIN".to_owned()]));
        let device = &host.devices.expect("devices")[0];
        assert_eq!(device.path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(device.cgroup_permissions.as_deref(), Some("rwm"));
        assert_eq!(host.security_opt, Some(vec!["apparmor=unconfined".to_owned()]));
        assert_eq!(host.pid_mode.as_deref(), Some("host"));
        assert_eq!(host.ipc_mode.as_deref(), Some("host"));
        assert_eq!(
            host.sysctls
                .expect("sysctls")
                .get("net.core.somaxconn")
                .map(String::as_str),
            Some("1024")
        );
    }

    #[test]
    fn commands_entrypoints_and_networks_follow_the_spec() {
        let mut s = spec(&TaskId::new(1, 0, "c", ""), "echo hi");
        let body = container_body(&s).expect("body");
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]));
        assert_eq!(body.cmd, Some(vec!["echo hi".to_owned()]));

        s.container.parameters = params(&[("entrypoint", "/bin/tini")]);
        let body = container_body(&s).expect("body");
        assert_eq!(body.entrypoint, Some(vec!["/bin/tini".to_owned()]));
        assert_eq!(
            body.cmd,
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()])
        );

        s.container.parameters.clear();
        s.shell = false;
        s.command = String::new();
        let body = container_body(&s).expect("body");
        assert_eq!(
            (body.entrypoint, body.cmd),
            (None, None),
            "the image's defaults run"
        );

        for (network, mode) in [
            ("BRIDGE", "bridge"),
            ("HOST", "host"),
            ("NONE", "none"),
            ("USER", "bridge"),
            ("my-net", "my-net"),
        ] {
            s.container.network = network.to_owned();
            let body = container_body(&s).expect("body");
            assert_eq!(
                body.host_config.and_then(|h| h.network_mode).as_deref(),
                Some(mode)
            );
        }
        s.container.network = "USER".to_owned();
        s.container.parameters = params(&[("network", "jobs")]);
        let body = container_body(&s).expect("body");
        assert_eq!(
            body.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("jobs")
        );
    }

    #[test]
    fn the_sandbox_is_an_absolute_bind_and_the_working_directory() {
        let mut s = spec(&TaskId::new(1, 0, "c", ""), "ls");
        assert_eq!(container_body(&s).expect("body").working_dir, None);
        s.sandbox = Some(PathBuf::from("/srv/kairos/sandbox/ct_1_0_c_"));
        let body = container_body(&s).expect("body");
        assert_eq!(body.working_dir.as_deref(), Some(SANDBOX_IN_CONTAINER));
        assert_eq!(
            body.host_config.and_then(|h| h.binds),
            Some(vec![format!(
                "/srv/kairos/sandbox/ct_1_0_c_:{SANDBOX_IN_CONTAINER}"
            )])
        );
        s.container.parameters = params(&[("workdir", "/tmp")]);
        assert_eq!(
            container_body(&s).expect("body").working_dir.as_deref(),
            Some("/tmp")
        );
        // Docker would take this for the name of a volume.
        s.sandbox = Some(PathBuf::from("kairos-data/sandbox/ct_1_0_c_"));
        let error = container_body(&s).expect_err("a relative sandbox is refused");
        assert!(error.contains("not absolute"), "{error}");
    }

    #[test]
    fn names_are_valid_for_docker_and_unique() {
        let a = container_name("ct:1700000000000:2:my job/with ünicode:x y");
        let b = container_name("ct:1700000000000:2:my job/with ünicode:x y");
        assert_ne!(a, b);
        assert!(
            a.starts_with("kairos-ct_1700000000000_2_my_job_with__nicode_x_y-"),
            "{a}"
        );
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
            "{a}"
        );
        assert!(container_name(&"x".repeat(500)).len() < 120);
    }

    #[test]
    fn sizes_references_and_socket_paths_are_read_as_docker_does() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5gb"), Some(3 << 29));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-5m"), None);

        assert_eq!(image_reference("busybox"), "busybox:latest");
        assert_eq!(image_reference("reg:5000/team/app"), "reg:5000/team/app:latest");
        assert_eq!(image_reference("team/app:1.2"), "team/app:1.2");
        assert_eq!(image_reference("app@sha256:abc"), "app@sha256:abc");

        for path in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/var/run",
            "/run/",
            "/",
            "//var//run/../run/./docker.sock",
        ] {
            assert!(exposes_docker_socket(path), "{path}");
        }
        for path in ["/srv/data", "/var/lib/kairos", "/run/user"] {
            assert!(!exposes_docker_socket(path), "{path}");
        }

        let volumes = [VolumeSpec {
            host_path: Some("/var/run/docker.sock".to_owned()),
            container_path: "/var/run/docker.sock".to_owned(),
            read_only: false,
        }];
        assert!(check_volumes(&volumes, false).is_err());
        assert!(check_volumes(&volumes, true).is_ok());
    }
}
