//! What kairos reads from and names in Docker Swarm, as pure functions over the Engine API's
//! models: a node as a worker's offer, a Swarm task's status as a kairos task's end, and the
//! names of the one-replica services that run kairos tasks. The calls to the Swarm API build on
//! these (docs/dev/swarm-plan.md); nothing here does I/O.

use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeState, Task, TaskState};

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
    let mem = resources.and_then(|r| r.memory_bytes).unwrap_or(0).max(0) as f64 / 1_048_576.0;
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
        assert_eq!(offer.mem, 25_276_502_016.0 / 1_048_576.0);
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
}
