//! Docker Swarm for the Swarm backend (`crate::swarm`): the calls to a manager's API ([`Swarm`]),
//! and the pure functions they build on, over the Engine API's models: a node as a worker's
//! offer, a Swarm task's status as a kairos task's end, the name of the one-replica service that
//! runs a kairos task, and the service itself, translated from the container the built-in worker
//! and agents would run.

use std::collections::HashMap;

use bollard::models::{
    Limit, Mount, MountTmpfsOptions, MountType, NetworkAttachmentConfig, Node, NodeSpecAvailabilityEnum,
    NodeState, ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecDnsConfig, TaskSpecContainerSpecPrivileges,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
    TaskState,
};

use super::docker::{self, ContainerSpec};

use crate::job::TaskId;

/// Where a node stands for kairos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCondition {
    /// Ready and active: it takes tasks.
    Ready,
    /// Ready but paused: its tasks go on, it takes no new ones.
    Paused,
    /// Drained, down or unreachable: its tasks are lost. The text says which, for the record.
    Gone(String),
}

/// A Swarm node as a kairos worker: its identity, attributes, resources and condition.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOffer {
    pub id: String,
    pub hostname: String,
    /// Its node labels (`docker node update --label-add`), in name order.
    pub labels: Vec<(String, String)>,
    pub cpus: f64,
    /// Memory in MB (mebibytes, as jobs ask for it).
    pub mem: f64,
    pub condition: NodeCondition,
}

/// The offer of a node the API listed; `None` for an entry without an id (the API always gives
/// one, so such an entry is not a node to use).
pub fn node_offer(node: &Node) -> Option<NodeOffer> {
    let id = node.id.clone().filter(|id| !id.is_empty())?;
    let spec = node.spec.as_ref();
    let description = node.description.as_ref();
    let hostname = description
        .and_then(|d| d.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| id.clone());
    let mut labels: Vec<(String, String)> = spec
        .and_then(|s| s.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.sort();
    let resources = description.and_then(|d| d.resources.as_ref());
    let cpus = resources.and_then(|r| r.nano_cpus).unwrap_or(0).max(0) as f64 / 1e9;
    // Whole MB: a fraction of one is no use to a task, and reads badly in every listing.
    let mem = (resources.and_then(|r| r.memory_bytes).unwrap_or(0).max(0) / 1_048_576) as f64;
    let state = node.status.as_ref().and_then(|s| s.state);
    let availability = spec.and_then(|s| s.availability);
    let condition = match (state, availability) {
        (Some(NodeState::READY), Some(NodeSpecAvailabilityEnum::DRAIN)) => {
            NodeCondition::Gone(format!("the Swarm node {hostname} is drained"))
        }
        (Some(NodeState::READY), Some(NodeSpecAvailabilityEnum::PAUSE)) => NodeCondition::Paused,
        (Some(NodeState::READY), _) => NodeCondition::Ready,
        (state, _) => {
            let state = state.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            NodeCondition::Gone(format!("the Swarm node {hostname} is {state}"))
        }
    };
    Some(NodeOffer {
        id,
        hostname,
        labels,
        cpus,
        mem,
        condition,
    })
}

/// What a Swarm task's status says about the kairos task its service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not ended: from `new` to `running`. `waiting` carries Swarm's words while it is not
    /// running yet (for example "no suitable node"), so a task stuck there can be reported.
    Running { waiting: Option<String> },
    /// Its command ran and exited with this status.
    Exited(i64),
    /// It never ran its command (a missing image, a refused mount): Swarm's words.
    NotStarted(String),
    /// Swarm stopped or removed it (a kill, a drain, a node that went away); the exit status
    /// when the container had one. Whether kairos asked for it decides killed or lost.
    Stopped { exit_code: Option<i64> },
}

/// The state of one Swarm task, as the API reports it.
pub fn seen(task: &Task) -> Seen {
    let status = task.status.as_ref();
    let words = || {
        status
            .and_then(|s| {
                s.err
                    .clone()
                    .filter(|e| !e.is_empty())
                    .or_else(|| s.message.clone())
            })
            .unwrap_or_default()
    };
    // The exit status means something only once the task is over: a running task shows 0 or -1.
    let exit_code = status
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code);
    let ran = status
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.as_ref())
        .is_some_and(|id| !id.is_empty());
    match status.and_then(|s| s.state) {
        Some(TaskState::RUNNING) => Seen::Running { waiting: None },
        Some(
            TaskState::NEW
            | TaskState::ALLOCATED
            | TaskState::PENDING
            | TaskState::ASSIGNED
            | TaskState::ACCEPTED
            | TaskState::PREPARING
            | TaskState::READY
            | TaskState::STARTING,
        )
        | None => Seen::Running {
            waiting: Some(words()).filter(|w| !w.is_empty()),
        },
        Some(TaskState::COMPLETE) => Seen::Exited(exit_code.unwrap_or(0)),
        Some(TaskState::FAILED) => match exit_code {
            Some(code) if ran => Seen::Exited(code),
            _ => Seen::NotStarted(words()),
        },
        Some(TaskState::REJECTED) => Seen::NotStarted(words()),
        Some(TaskState::SHUTDOWN | TaskState::REMOVE | TaskState::ORPHANED) => Seen::Stopped {
            exit_code: exit_code.filter(|_| ran),
        },
    }
}

/// The label every service kairos makes carries: its value, the cluster's namespace, keeps two
/// kairos clusters on one Swarm apart.
pub const LABEL_OWNER: &str = "kairos.owner";
/// The kairos task a service runs.
pub const LABEL_TASK: &str = "kairos.task";
/// The job of that task.
pub const LABEL_JOB: &str = "kairos.job";
/// The node kairos placed it on.
pub const LABEL_NODE: &str = "kairos.node";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {source}")]
    Connect {
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "this Docker engine is not a Swarm manager ({state}); run `docker swarm init` or point DOCKER_HOST at a manager"
    )]
    NotManager { state: String },
    #[error("a service named '{name}' exists already")]
    Exists { name: String },
    #[error("Swarm failed to {action}: {source}")]
    Api {
        action: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
}

/// A Swarm manager, reached as the local engine is (`DOCKER_HOST` and the usual defaults), and
/// the namespace of the services this kairos cluster makes there.
#[derive(Debug, Clone)]
pub struct Swarm {
    client: bollard::Docker,
    namespace: String,
}

impl Swarm {
    /// Connects and checks that the engine manages a Swarm.
    ///
    /// # Errors
    /// The engine cannot be reached, or it is not a Swarm manager.
    pub async fn connect(namespace: &str) -> Result<Swarm, Error> {
        let client = docker::client()
            .await
            .map_err(|source| Error::Connect { source })?;
        let info = client.info().await.map_err(|source| Error::Connect { source })?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map_or_else(|| "no Swarm".to_owned(), |s| format!("Swarm state {s}"));
            return Err(Error::NotManager { state });
        }
        Ok(Swarm {
            client,
            namespace: namespace.to_owned(),
        })
    }

    fn owned(&self) -> HashMap<&'static str, Vec<String>> {
        HashMap::from([("label", vec![format!("{LABEL_OWNER}={}", self.namespace)])])
    }

    /// The labels a task's service carries, by which this cluster finds it again.
    pub fn labels(&self, task_id: &TaskId, node_id: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_OWNER.to_owned(), self.namespace.clone()),
            (LABEL_TASK.to_owned(), task_id.to_string()),
            (LABEL_JOB.to_owned(), task_id.job().to_owned()),
            (LABEL_NODE.to_owned(), node_id.to_owned()),
        ])
    }

    /// Every node, as offers.
    ///
    /// # Errors
    /// The manager did not answer.
    pub async fn nodes(&self) -> Result<Vec<NodeOffer>, Error> {
        let nodes = self.client.list_nodes(None).await.map_err(|source| Error::Api {
            action: "list its nodes",
            source,
        })?;
        Ok(nodes.iter().filter_map(node_offer).collect())
    }

    /// Creates a task's service; returns its id.
    ///
    /// # Errors
    /// [`Error::Exists`] when a service of that name is there already (another leader made it).
    pub async fn create(&self, spec: ServiceSpec) -> Result<String, Error> {
        let name = spec.name.clone().unwrap_or_default();
        match self.client.create_service(spec, None).await {
            Ok(created) => Ok(created.id.unwrap_or(name)),
            Err(source) if docker::status_of(&source) == Some(409) => Err(Error::Exists { name }),
            Err(source) => Err(Error::Api {
                action: "create a service",
                source,
            }),
        }
    }

    /// The services this cluster made, with their labels.
    ///
    /// # Errors
    /// The manager did not answer.
    pub async fn services(&self) -> Result<Vec<bollard::models::Service>, Error> {
        let options = bollard::query_parameters::ListServicesOptionsBuilder::new()
            .filters(&self.owned())
            .build();
        self.client
            .list_services(Some(options))
            .await
            .map_err(|source| Error::Api {
                action: "list its services",
                source,
            })
    }

    /// The Swarm tasks of this cluster's services, in one request (the label filter matches
    /// the services' labels).
    ///
    /// # Errors
    /// The manager did not answer.
    pub async fn tasks(&self) -> Result<Vec<Task>, Error> {
        let options = bollard::query_parameters::ListTasksOptionsBuilder::new()
            .filters(&self.owned())
            .build();
        self.client
            .list_tasks(Some(options))
            .await
            .map_err(|source| Error::Api {
                action: "list its tasks",
                source,
            })
    }

    /// A service's output so far, at most `limit` bytes of each stream.
    pub async fn logs(&self, service: &str, limit: usize) -> (String, String) {
        let options = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .build();
        let stream = self.client.service_logs(service, Some(options));
        docker::read_stream(Box::pin(stream), limit, None).await
    }

    /// A service's output as it is written, pushed into `feed`, until `stop` fires: the
    /// stream does not end by itself when the task ends (observed on Engine 20.10).
    pub async fn follow(
        &self,
        service: &str,
        limit: usize,
        feed: Option<super::live::TaskFeed>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> (String, String) {
        use futures_util::StreamExt as _;
        let options = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .build();
        let stream = self.client.service_logs(service, Some(options)).take_until(stop);
        docker::read_stream(Box::pin(stream), limit, feed).await
    }

    /// The Swarm tasks of one service.
    ///
    /// # Errors
    /// The manager did not answer.
    pub async fn tasks_of(&self, service: &str) -> Result<Vec<Task>, Error> {
        let options = bollard::query_parameters::ListTasksOptionsBuilder::new()
            .filters(&HashMap::from([("service", vec![service.to_owned()])]))
            .build();
        self.client
            .list_tasks(Some(options))
            .await
            .map_err(|source| Error::Api {
                action: "list a service's tasks",
                source,
            })
    }

    /// Stops a service's task by scaling it to no replica: the container gets SIGTERM, then
    /// SIGKILL after the service's stop grace period, and while that goes on its task and its
    /// output stay readable (removing the service at once would hide both).
    ///
    /// # Errors
    /// The manager did not answer (a service already gone is no error).
    pub async fn stop(&self, service: &str) -> Result<(), Error> {
        let found = match self.client.inspect_service(service, None).await {
            Ok(found) => found,
            Err(source) if docker::status_of(&source) == Some(404) => return Ok(()),
            Err(source) => {
                return Err(Error::Api {
                    action: "inspect a service",
                    source,
                });
            }
        };
        let mut spec = found.spec.unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        });
        let version = found.version.and_then(|v| v.index).unwrap_or(0);
        let options = bollard::query_parameters::UpdateServiceOptionsBuilder::new()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .build();
        match self.client.update_service(service, spec, options, None).await {
            Err(source) if docker::status_of(&source) != Some(404) => Err(Error::Api {
                action: "stop a service",
                source,
            }),
            _ => Ok(()),
        }
    }

    /// Removes a service, and with it its container; one already gone is no error.
    ///
    /// # Errors
    /// The manager did not answer.
    pub async fn remove(&self, service: &str) -> Result<(), Error> {
        match self.client.delete_service(service).await {
            Err(source) if docker::status_of(&source) != Some(404) => Err(Error::Api {
                action: "remove a service",
                source,
            }),
            _ => Ok(()),
        }
    }
}

/// The longest service name Swarm takes.
const NAME_LIMIT: usize = 63;

/// The name of the service that runs `task_id`: readable (`kairos-`, then the job's name in
/// letters, digits and dashes) and the same for the same task, so two leaders that launch it
/// both get one service (the second create fails with a conflict). Swarm names take letters and
/// digits joined by single `-` or `_`, at most 63 characters; task ids hold `:`, so the end is
/// a digest of the whole id instead.
pub fn service_name(task_id: &TaskId) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(task_id.to_string().as_bytes());
    let suffix: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut readable = String::new();
    for c in task_id.job().chars() {
        if c.is_ascii_alphanumeric() {
            readable.push(c.to_ascii_lowercase());
        } else if !readable.ends_with('-') {
            readable.push('-');
        }
    }
    let room = NAME_LIMIT - "kairos-".len() - 1 - suffix.len();
    let readable: String = readable.chars().take(room).collect();
    let readable = readable.trim_matches('-');
    if readable.is_empty() {
        format!("kairos-{suffix}")
    } else {
        format!("kairos-{readable}-{suffix}")
    }
}

/// The service that runs one kairos task on one node: one replica, never restarted by Swarm
/// (kairos owns retries), pinned to the node placement chose, with reservations and limits from
/// the job's cpus and mem.
///
/// The container is the one the built-in worker and agents would run ([`docker::container_body`],
/// parameters and their checks included), translated; a setting Swarm services cannot take is
/// refused with its name. `labels` go on the service, where kairos finds its services again.
/// Swarm tasks have no sandbox (they cannot fetch), so the task starts in an empty
/// `/mnt/mesos/sandbox`, as `MESOS_SANDBOX` says.
///
/// # Errors
/// What Swarm cannot run, in words for the task's record.
pub fn service_spec(
    spec: &ContainerSpec,
    name: String,
    node_id: &str,
    labels: HashMap<String, String>,
    stop_grace: std::time::Duration,
) -> Result<ServiceSpec, String> {
    if spec.sandbox.is_some() {
        return Err("a Swarm service has no sandbox to mount".to_owned());
    }
    let mut body = docker::container_body(spec)?;
    let mut host = body.host_config.take().unwrap_or_default();
    let nano_cpus = host.nano_cpus.take();
    let memory_bytes = host.memory.take();
    let network = match host.network_mode.take().as_deref() {
        None | Some("bridge") => "bridge".to_owned(),
        Some("none") => {
            return Err("the NONE network is not available to Swarm services; use BRIDGE or HOST".to_owned());
        }
        Some(other) => other.to_owned(),
    };
    let mut mounts = Vec::new();
    for bind in host.binds.take().unwrap_or_default() {
        mounts.push(bind_mount(&bind)?);
    }
    for target in body.volumes.take().unwrap_or_default() {
        mounts.push(Mount {
            target: Some(target),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        });
    }
    let mut tmpfs: Vec<(String, String)> = host.tmpfs.take().unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    for (target, options) in tmpfs {
        mounts.push(tmpfs_mount(target, &options)?);
    }
    let mut no_new_privileges = None;
    for option in host.security_opt.take().unwrap_or_default() {
        match option.as_str() {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => {
                no_new_privileges = Some(true)
            }
            other => return Err(format!("the security option '{other}' is not available on Swarm")),
        }
    }
    // The sandbox is a directory in the container here, not the scheduler's path.
    let mut env: Vec<String> = body
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|var| !var.starts_with("MESOS_SANDBOX="))
        .collect();
    env.push(format!("MESOS_SANDBOX={}", docker::SANDBOX_IN_CONTAINER));
    // The labels agents and the built-in worker find their containers by stay off: no worker on
    // the same engine may take a Swarm task's container for its own.
    let mut container_labels = body.labels.take().unwrap_or_default();
    for label in [
        docker::LABEL_TASK_ID,
        docker::LABEL_MANAGED,
        docker::LABEL_OWNER,
        docker::LABEL_DISK_MB,
        docker::LABEL_OUTPUT_LIMIT,
        docker::LABEL_DEADLINE,
    ] {
        container_labels.remove(label);
    }
    let container = TaskSpecContainerSpec {
        image: body.image.take(),
        labels: (!container_labels.is_empty()).then_some(container_labels),
        command: body.entrypoint.take(),
        args: body.cmd.take(),
        hostname: body.hostname.take(),
        env: Some(env),
        dir: Some(
            body.working_dir
                .take()
                .unwrap_or_else(|| docker::SANDBOX_IN_CONTAINER.to_owned()),
        ),
        user: body.user.take(),
        read_only: host.readonly_rootfs.take(),
        mounts: (!mounts.is_empty()).then_some(mounts),
        stop_grace_period: Some(i64::try_from(stop_grace.as_nanos()).unwrap_or(i64::MAX)),
        // hosts(5) order: the address first.
        hosts: host.extra_hosts.take().map(|hosts| {
            hosts
                .into_iter()
                .map(|entry| match entry.split_once(':') {
                    Some((name, address)) => format!("{address} {name}"),
                    None => entry,
                })
                .collect()
        }),
        dns_config: host.dns.take().map(|nameservers| TaskSpecContainerSpecDnsConfig {
            nameservers: Some(nameservers),
            ..Default::default()
        }),
        privileges: no_new_privileges.map(|on| TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(on),
            ..Default::default()
        }),
        init: host.init.take(),
        sysctls: host.sysctls.take(),
        capability_add: host.cap_add.take(),
        capability_drop: host.cap_drop.take(),
        ulimits: host.ulimits.take(),
        ..Default::default()
    };
    // Attaching is how a plain container's output is read; a service's comes from its logs.
    body.attach_stdout = None;
    body.attach_stderr = None;
    let left: Vec<String> = settings_left(&body)
        .into_iter()
        .chain(settings_left(&host))
        .collect();
    if !left.is_empty() {
        return Err(format!(
            "Swarm services cannot take these container settings (from the job's parameters): {}",
            left.join(", ")
        ));
    }
    let resources = TaskSpecResources {
        limits: Some(Limit {
            nano_cpus,
            memory_bytes,
            pids: None,
        }),
        reservations: Some(ResourceObject {
            nano_cpus,
            memory_bytes,
            generic_resources: None,
        }),
        ..Default::default()
    };
    Ok(ServiceSpec {
        name: Some(name),
        labels: Some(labels),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(resources),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(0),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec![format!("node.id=={node_id}")]),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(network),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The settings still set in a container's configuration, by their API names: whatever the
/// translation did not take. Serializing skips the unset ones, so nothing can slip through
/// unseen when Docker's models grow.
fn settings_left<T: serde::Serialize>(settings: &T) -> Vec<String> {
    match serde_json::to_value(settings) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, _)| key)
            .collect(),
        _ => Vec::new(),
    }
}

/// A `host:container[:ro]` bind as a Swarm mount.
fn bind_mount(bind: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [source, target] => (*source, *target, ""),
        [source, target, options] => (*source, *target, *options),
        _ => return Err(format!("the volume '{bind}' cannot be mounted on Swarm")),
    };
    let read_only = match options {
        "" | "rw" => false,
        "ro" => true,
        other => return Err(format!("the volume option '{other}' is not available on Swarm")),
    };
    // A relative source names a volume, as with `docker run -v`.
    let typ = if source.starts_with('/') {
        MountType::BIND
    } else {
        MountType::VOLUME
    };
    Ok(Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(typ),
        read_only: Some(read_only),
        ..Default::default()
    })
}

/// A `tmpfs` parameter's mount: Swarm takes its size and mode, not other mount options.
fn tmpfs_mount(target: String, options: &str) -> Result<Mount, String> {
    let mut tmpfs = MountTmpfsOptions::default();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", size)) => {
                tmpfs.size_bytes = Some(
                    docker::parse_size(size)
                        .ok_or_else(|| format!("the tmpfs size '{size}' is not a size"))?,
                );
            }
            Some(("mode", mode)) => {
                tmpfs.mode = Some(
                    i64::from_str_radix(mode, 8)
                        .map_err(|_| format!("the tmpfs mode '{mode}' is not octal"))?,
                );
            }
            _ => return Err(format!("the tmpfs option '{option}' is not available on Swarm")),
        }
    }
    Ok(Mount {
        target: Some(target),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(tmpfs),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(body: serde_json::Value) -> Node {
        serde_json::from_value(body).unwrap()
    }

    fn task(status: serde_json::Value) -> Task {
        serde_json::from_value(json!({"ID": "t1", "Status": status})).unwrap()
    }

    /// A node as `GET /nodes` lists it on a single-node Swarm (Engine 20.10).
    fn listed(availability: &str, state: &str) -> serde_json::Value {
        json!({
            "ID": "q1w2e3r4t5y6",
            "Spec": {"Labels": {"rack": "r1", "disk": "ssd"}, "Role": "manager", "Availability": availability},
            "Description": {"Hostname": "vm", "Resources": {"NanoCPUs": 2_000_000_000_i64, "MemoryBytes": 25_276_502_016_i64}},
            "Status": {"State": state, "Addr": "127.0.0.1"}
        })
    }

    #[test]
    fn a_node_offers_its_resources_labels_and_condition() {
        let offer = node_offer(&node(listed("active", "ready"))).unwrap();
        assert_eq!(offer.id, "q1w2e3r4t5y6");
        assert_eq!(offer.hostname, "vm");
        assert_eq!(
            offer.labels,
            [
                ("disk".to_owned(), "ssd".to_owned()),
                ("rack".to_owned(), "r1".to_owned())
            ]
        );
        assert_eq!(offer.cpus, 2.0);
        assert_eq!(offer.mem, 24_105.0, "whole MB, rounded down");
        let cases = [
            ("active", "ready", NodeCondition::Ready),
            ("pause", "ready", NodeCondition::Paused),
            (
                "drain",
                "ready",
                NodeCondition::Gone("the Swarm node vm is drained".into()),
            ),
            (
                "active",
                "down",
                NodeCondition::Gone("the Swarm node vm is down".into()),
            ),
            (
                "active",
                "disconnected",
                NodeCondition::Gone("the Swarm node vm is disconnected".into()),
            ),
            (
                "drain",
                "down",
                NodeCondition::Gone("the Swarm node vm is down".into()),
            ),
        ];
        for (availability, state, condition) in cases {
            let offer = node_offer(&node(listed(availability, state))).unwrap();
            assert_eq!(offer.condition, condition, "{availability} {state}");
        }
    }

    #[test]
    fn a_node_without_an_id_is_skipped_and_missing_parts_read_as_nothing() {
        assert_eq!(node_offer(&node(json!({"Spec": {}}))), None);
        let bare = node_offer(&node(json!({"ID": "n2"}))).unwrap();
        assert_eq!((bare.hostname.as_str(), bare.cpus, bare.mem), ("n2", 0.0, 0.0));
        assert_eq!(
            bare.condition,
            NodeCondition::Gone("the Swarm node n2 is unknown".into())
        );
    }

    #[test]
    fn a_swarm_tasks_status_reads_as_the_kairos_tasks_end() {
        let container = json!({"ContainerID": "c0ffee", "ExitCode": 3});
        let cases = [
            (
                json!({"State": "running", "ContainerStatus": {"ContainerID": "c0ffee", "ExitCode": 0}}),
                Seen::Running { waiting: None },
            ),
            (
                json!({"State": "pending", "Message": "pending task scheduling", "Err": "no suitable node (insufficient resources on 1 node)"}),
                Seen::Running {
                    waiting: Some("no suitable node (insufficient resources on 1 node)".into()),
                },
            ),
            (
                json!({"State": "preparing", "Message": "preparing"}),
                Seen::Running {
                    waiting: Some("preparing".into()),
                },
            ),
            (
                json!({"State": "complete", "ContainerStatus": {"ContainerID": "c0ffee", "ExitCode": 0}}),
                Seen::Exited(0),
            ),
            (
                json!({"State": "failed", "Err": "task: non-zero exit (3)", "ContainerStatus": container}),
                Seen::Exited(3),
            ),
            (
                json!({"State": "rejected", "Err": "No such image: kairos-test/missing:latest"}),
                Seen::NotStarted("No such image: kairos-test/missing:latest".into()),
            ),
            (
                json!({"State": "failed", "Err": "invalid mount config", "ContainerStatus": {"ExitCode": 0}}),
                Seen::NotStarted("invalid mount config".into()),
            ),
            (
                json!({"State": "shutdown", "ContainerStatus": {"ContainerID": "c0ffee", "ExitCode": 143}}),
                Seen::Stopped { exit_code: Some(143) },
            ),
            (json!({"State": "orphaned"}), Seen::Stopped { exit_code: None }),
        ];
        for (status, expected) in cases {
            assert_eq!(seen(&task(status.clone())), expected, "{status}");
        }
    }

    #[test]
    fn service_names_are_valid_for_swarm_stable_and_tell_tasks_apart() {
        let valid = regex::Regex::new("^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$").unwrap();
        let ids = [
            "ct:1420843781398:0:Nightly_ETL.v2:",
            "ct:1420843781398:1:Nightly_ETL.v2:",
            "ct:1:0:..a..b__c--:--x",
            "ct:1:0:---:",
            &format!("ct:1:0:{}:", "a".repeat(300)),
        ];
        let names: Vec<String> = ids
            .iter()
            .map(|id| service_name(&TaskId::parse(id).unwrap()))
            .collect();
        for (id, name) in ids.iter().zip(&names) {
            assert!(valid.is_match(name) && name.len() <= NAME_LIMIT, "{id} → {name}");
            assert_eq!(name, &service_name(&TaskId::parse(id).unwrap()), "stable");
        }
        assert!(names[0].starts_with("kairos-nightly-etl-v2-"), "{}", names[0]);
        assert_ne!(names[0], names[1], "each attempt has its own service");
        assert!(
            names[3].starts_with("kairos-") && names[3].len() == "kairos-".len() + 16,
            "{}",
            names[3]
        );
    }

    fn container_spec(parameters: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            task_id: TaskId::parse("ct:1420843781398:0:nightly:").unwrap(),
            container: docker::Container {
                image: "kairos-test/busybox".to_owned(),
                network: "BRIDGE".to_owned(),
                volumes: Vec::new(),
                force_pull: false,
                parameters: parameters
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                cpus: 0.25,
                mem_mb: 64.0,
                disk_mb: 256.0,
            },
            command: "echo hi".to_owned(),
            shell: true,
            arguments: Vec::new(),
            env: vec![
                (
                    "mesos_task_id".to_owned(),
                    "ct:1420843781398:0:nightly:".to_owned(),
                ),
                ("MESOS_SANDBOX".to_owned(), "/var/lib/kairos/sandbox/x".to_owned()),
            ],
            time_limit: None,
            output_limit: 4096,
            sandbox: None,
            owner: "scheduler-1".to_owned(),
            user: None,
            feed: None,
        }
    }

    fn build(spec: &ContainerSpec) -> Result<ServiceSpec, String> {
        let labels = HashMap::from([("kairos.task".to_owned(), spec.task_id.to_string())]);
        service_spec(
            spec,
            "kairos-nightly-0123".to_owned(),
            "n1",
            labels,
            std::time::Duration::from_secs(3),
        )
    }

    #[test]
    fn a_task_becomes_one_pinned_replica_that_swarm_never_restarts() {
        let service = build(&container_spec(&[])).unwrap();
        assert_eq!(service.name.as_deref(), Some("kairos-nightly-0123"));
        assert_eq!(service.mode.unwrap().replicated.unwrap().replicas, Some(1));
        assert_eq!(
            service.labels.unwrap()["kairos.task"],
            "ct:1420843781398:0:nightly:"
        );
        let task = service.task_template.unwrap();
        let restart = task.restart_policy.unwrap();
        assert_eq!(restart.condition, Some(TaskSpecRestartPolicyConditionEnum::NONE));
        assert_eq!(task.placement.unwrap().constraints.unwrap(), ["node.id==n1"]);
        assert_eq!(task.networks.unwrap()[0].target.as_deref(), Some("bridge"));
        let resources = task.resources.unwrap();
        let limits = resources.limits.unwrap();
        let reserved = resources.reservations.unwrap();
        assert_eq!(
            (limits.nano_cpus, limits.memory_bytes),
            (Some(250_000_000), Some(64 << 20))
        );
        assert_eq!(
            (reserved.nano_cpus, reserved.memory_bytes),
            (Some(250_000_000), Some(64 << 20))
        );
        let container = task.container_spec.unwrap();
        assert_eq!(container.image.as_deref(), Some("kairos-test/busybox"));
        assert_eq!(container.command.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(container.args.unwrap(), ["echo hi"]);
        assert_eq!(container.dir.as_deref(), Some("/mnt/mesos/sandbox"));
        assert_eq!(container.stop_grace_period, Some(3_000_000_000));
        let env = container.env.unwrap();
        assert!(
            env.contains(&"mesos_task_id=ct:1420843781398:0:nightly:".to_owned()),
            "{env:?}"
        );
        assert_eq!(
            env.iter()
                .filter(|v| v.starts_with("MESOS_SANDBOX="))
                .collect::<Vec<_>>(),
            ["MESOS_SANDBOX=/mnt/mesos/sandbox"],
            "the scheduler's sandbox path stays behind"
        );
        assert_eq!(
            container.labels, None,
            "no worker's own labels on a Swarm container"
        );
    }

    #[test]
    fn parameters_translate_to_their_swarm_settings() {
        let spec = container_spec(&[
            ("add-host", "db:10.0.0.5"),
            ("dns", "10.0.0.53"),
            ("tmpfs", "/scratch:size=64m,mode=1777"),
            ("volume", "/srv/data:/data:ro"),
            ("cap-drop", "ALL"),
            ("read-only", "true"),
            ("label", "team=etl"),
            ("security-opt", "no-new-privileges"),
            ("network", "host"),
        ]);
        let task = build(&spec).unwrap().task_template.unwrap();
        assert_eq!(task.networks.unwrap()[0].target.as_deref(), Some("host"));
        let container = task.container_spec.unwrap();
        assert_eq!(container.hosts.unwrap(), ["10.0.0.5 db"]);
        assert_eq!(container.dns_config.unwrap().nameservers.unwrap(), ["10.0.0.53"]);
        assert_eq!(container.capability_drop.unwrap(), ["ALL"]);
        assert_eq!(container.read_only, Some(true));
        assert_eq!(
            container.labels.unwrap(),
            HashMap::from([("team".to_owned(), "etl".to_owned())])
        );
        assert_eq!(container.privileges.unwrap().no_new_privileges, Some(true));
        let mounts = container.mounts.unwrap();
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        let bind = mounts.iter().find(|m| m.typ == Some(MountType::BIND)).unwrap();
        assert_eq!(
            (bind.source.as_deref(), bind.target.as_deref(), bind.read_only),
            (Some("/srv/data"), Some("/data"), Some(true))
        );
        let tmpfs = mounts.iter().find(|m| m.typ == Some(MountType::TMPFS)).unwrap();
        let options = tmpfs.tmpfs_options.as_ref().unwrap();
        assert_eq!((options.size_bytes, options.mode), (Some(64 << 20), Some(0o1777)));
    }

    #[test]
    fn what_swarm_cannot_run_is_refused_by_name() {
        let refused = |parameters: &[(&str, &str)]| build(&container_spec(parameters)).unwrap_err();
        assert!(refused(&[("network", "none")]).contains("NONE network"));
        assert!(
            refused(&[("shm-size", "64m")]).contains("ShmSize"),
            "{}",
            refused(&[("shm-size", "64m")])
        );
        assert!(refused(&[("tmpfs", "/t:noexec")]).contains("'noexec'"));
        let mut with_sandbox = container_spec(&[]);
        with_sandbox.sandbox = Some("/var/lib/kairos/sandbox/x".into());
        assert!(build(&with_sandbox).unwrap_err().contains("no sandbox"));
    }
}
