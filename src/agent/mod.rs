//! The agent protocol (`proto/agent.proto`): the scheduler's gRPC service that agents connect to,
//! and the agent process that runs tasks for it. The only module that knows protobuf types.

pub mod service;
pub mod worker;

use std::time::Duration;

use crate::executor::LaunchSpec;
use crate::executor::Outcome;
use crate::executor::docker::Container;
use crate::executor::docker::VolumeSpec;
use crate::executor::fetch::FetchSpec;
use crate::executor::live::Stream;
use crate::executor::runner::{StartFailure, TaskEnd, TaskLaunch};
use crate::job::TaskId;

/// The code generated from `proto/agent.proto`.
#[allow(clippy::all, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("kairos.agent.v1");
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("'{address}' is not a usable scheduler address: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot use the work directory {path}: {source}")]
    WorkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the CA certificates (--ca-cert) {path}: {source}")]
    CaCert {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The secret shared by a scheduler and its agents (`--agent-token`). It is never shown: its
/// `Debug` is redacted, and nothing logs it.
#[derive(Clone)]
pub struct Token(String);

/// What the agent sends, and the scheduler reads, as `authorization: Bearer <token>`.
pub const TOKEN_METADATA: &str = "authorization";

impl Token {
    /// A token from its text, which must be non-empty visible ASCII (it travels in a header).
    ///
    /// # Errors
    /// Says what is wrong, without repeating the text.
    pub fn new(text: String) -> Result<Token, &'static str> {
        if text.is_empty() {
            Err("it is empty")
        } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
            Err("it must be visible ASCII characters, without spaces")
        } else {
            Ok(Token(text))
        }
    }

    /// Whether `presented` (the text after `Bearer `) is this token. Both sides are hashed first,
    /// so the comparison takes the same time whatever the length or content of a guess.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let ours = sha2::Sha256::digest(self.0.as_bytes());
        let theirs = sha2::Sha256::digest(presented);
        ours.as_slice().ct_eq(theirs.as_slice()).into()
    }

    /// The metadata value an agent attaches with, marked sensitive so HTTP/2 never indexes it.
    pub fn bearer(&self) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        // `new` admitted only visible ASCII, which is always a valid value.
        let mut value = tonic::metadata::MetadataValue::try_from(format!("Bearer {}", self.0))
            .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A task id off the wire; the scheduler only ever sends ids it made, so one that is not in
/// the Chronos shape is dropped with a warning rather than acted on.
fn task_id_from_proto(text: &str) -> Option<TaskId> {
    let id = TaskId::parse(text);
    if id.is_none() {
        tracing::warn!(task = text, "Ignored a message about a malformed task id.");
    }
    id
}

/// A launch as it travels to an agent.
pub fn launch_to_proto(launch: &TaskLaunch) -> proto::Launch {
    let p = &launch.process;
    let container = launch.container.as_ref();
    proto::Launch {
        task_id: p.task_id.to_string(),
        command: p.command.clone(),
        shell: p.shell,
        arguments: p.arguments.clone(),
        environment: p
            .env
            .iter()
            .map(|(name, value)| proto::EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        resources: container.map(|c| proto::Resources {
            cpus: c.cpus,
            mem_mb: c.mem_mb,
            disk_mb: c.disk_mb,
        }),
        time_limit_seconds: p.time_limit.map_or(0, |d| d.as_secs()),
        output_limit_bytes: p.output_limit as u64,
        container: container.map(|c| proto::Container {
            image: c.image.clone(),
            network: c.network.clone(),
            volumes: c
                .volumes
                .iter()
                .map(|v| proto::Volume {
                    host_path: v.host_path.clone(),
                    container_path: v.container_path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            force_pull: c.force_pull,
            parameters: c
                .parameters
                .iter()
                .map(|(key, value)| proto::Parameter {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }),
        fetch: launch
            .fetch
            .iter()
            .map(|f| proto::Fetch {
                uri: f.uri.clone(),
                executable: f.executable,
                cache: f.cache,
                extract: f.extract,
                output_file: f.output_file.clone(),
            })
            .collect(),
        run_as_user: p.user.clone(),
    }
}

/// A launch as an agent runs it, with its sandbox under `sandbox_dir`.
pub fn launch_from_proto(launch: proto::Launch, sandbox_dir: &std::path::Path) -> Option<TaskLaunch> {
    let task_id = task_id_from_proto(&launch.task_id)?;
    let sandbox = sandbox_dir.join(crate::executor::sandbox_name(&task_id));
    let env = launch
        .environment
        .into_iter()
        .map(|v| {
            // The sandbox is the agent's, not the scheduler's.
            let value = if v.name == "MESOS_SANDBOX" {
                sandbox.display().to_string()
            } else {
                v.value
            };
            (v.name, value)
        })
        .collect();
    let resources = launch.resources.unwrap_or_default();
    let container = launch.container.map(|c| Container {
        image: c.image,
        network: c.network,
        volumes: c
            .volumes
            .into_iter()
            .map(|v| VolumeSpec {
                host_path: v.host_path,
                container_path: v.container_path,
                read_only: v.read_only,
            })
            .collect(),
        force_pull: c.force_pull,
        parameters: c.parameters.into_iter().map(|p| (p.key, p.value)).collect(),
        cpus: resources.cpus,
        mem_mb: resources.mem_mb,
        disk_mb: resources.disk_mb,
    });
    let fetch = launch
        .fetch
        .into_iter()
        .map(|f| FetchSpec {
            uri: f.uri,
            executable: f.executable,
            cache: f.cache,
            extract: f.extract,
            output_file: f.output_file,
        })
        .collect();
    Some(TaskLaunch {
        process: LaunchSpec {
            task_id,
            command: launch.command,
            shell: launch.shell,
            arguments: launch.arguments,
            env,
            sandbox,
            time_limit: (launch.time_limit_seconds > 0)
                .then(|| Duration::from_secs(launch.time_limit_seconds)),
            output_limit: usize::try_from(launch.output_limit_bytes).unwrap_or(usize::MAX),
            user: launch.run_as_user,
        },
        container,
        fetch,
    })
}

/// A task's end as it travels to the scheduler.
pub fn end_to_proto(end: &TaskEnd) -> proto::TaskStatus {
    use proto::task_status::State;
    let state = if end.killed {
        State::Killed
    } else if end.success() {
        State::Finished
    } else {
        State::Failed
    };
    proto::TaskStatus {
        task_id: end.task_id.to_string(),
        state: state as i32,
        exit_code: end.outcome.exit_code,
        signal: end.outcome.signal,
        timed_out: end.outcome.timed_out,
        message: end.error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
        fetch_failed: end.error.as_ref().is_some_and(|e| e.fetch),
        stdout: end.outcome.stdout.clone(),
        stderr: end.outcome.stderr.clone(),
    }
}

/// A final status as the engine sees it; `None` for non-final states.
pub fn end_from_proto(status: proto::TaskStatus) -> Option<TaskEnd> {
    use proto::task_status::State;
    let state = State::try_from(status.state).unwrap_or(State::Unspecified);
    if matches!(state, State::Unspecified | State::Running) {
        return None;
    }
    let task_id = task_id_from_proto(&status.task_id)?;
    Some(TaskEnd {
        outcome: Outcome {
            task_id: task_id.clone(),
            exit_code: status.exit_code,
            signal: status.signal,
            timed_out: status.timed_out,
            stdout: status.stdout,
            stderr: status.stderr,
        },
        killed: state == State::Killed,
        error: (!status.message.is_empty()).then_some(StartFailure {
            fetch: status.fetch_failed,
            message: status.message,
        }),
        task_id,
    })
}

/// A chunk of a running task's output as it travels to the scheduler.
pub fn output_to_proto(task_id: &TaskId, stream: Stream, data: &[u8]) -> proto::AgentMessage {
    use proto::output::Stream as Wire;
    let stream = match stream {
        Stream::Stdout => Wire::Stdout,
        Stream::Stderr => Wire::Stderr,
    };
    proto::AgentMessage {
        kind: Some(proto::agent_message::Kind::Output(proto::Output {
            task_id: task_id.to_string(),
            stream: stream as i32,
            data: data.to_vec(),
        })),
    }
}

/// A chunk of output as the scheduler's tails take it; `None` for a malformed one.
pub fn output_from_proto(output: proto::Output) -> Option<(TaskId, Stream, Vec<u8>)> {
    use proto::output::Stream as Wire;
    let stream = match Wire::try_from(output.stream).ok()? {
        Wire::Stdout => Stream::Stdout,
        Wire::Stderr => Stream::Stderr,
        Wire::Unspecified => return None,
    };
    Some((task_id_from_proto(&output.task_id)?, stream, output.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_chunks_round_trip_and_malformed_ones_are_dropped() {
        let task = TaskId::new(5, 0, "job", "");
        let Some(proto::agent_message::Kind::Output(output)) =
            output_to_proto(&task, Stream::Stderr, b"oops\n").kind
        else {
            panic!("an output message");
        };
        assert_eq!(
            output_from_proto(output.clone()),
            Some((task.clone(), Stream::Stderr, b"oops\n".to_vec()))
        );
        let mut unnamed = output.clone();
        unnamed.stream = 0;
        assert_eq!(output_from_proto(unnamed), None);
        let mut malformed = output;
        malformed.task_id = "not a task".to_owned();
        assert_eq!(output_from_proto(malformed), None);
    }

    #[test]
    fn tokens_match_only_themselves_and_never_show() {
        let token = Token::new("s3cret-token".to_owned()).unwrap();
        assert!(token.matches(b"s3cret-token"));
        for wrong in [&b""[..], b"s3cret-toke", b"s3cret-token2", b"S3cret-token"] {
            assert!(!token.matches(wrong), "{}", String::from_utf8_lossy(wrong));
        }
        assert!(!format!("{token:?}").contains("s3cret"));
        assert_eq!(token.bearer().to_str().unwrap(), "Bearer s3cret-token");
        assert!(token.bearer().is_sensitive());
        assert!(Token::new(String::new()).is_err());
        assert!(Token::new("two words".to_owned()).is_err());
        assert!(Token::new("caf\u{e9}".to_owned()).is_err());
    }

    #[test]
    fn launches_round_trip() {
        let launch = TaskLaunch {
            process: LaunchSpec {
                task_id: TaskId::new(1, 0, "j", ""),
                command: "echo hi".to_owned(),
                shell: true,
                arguments: vec!["a".to_owned()],
                env: vec![
                    ("A".to_owned(), "1".to_owned()),
                    ("MESOS_SANDBOX".to_owned(), "/srv/x".to_owned()),
                ],
                sandbox: "/srv/x".into(),
                time_limit: Some(Duration::from_secs(5)),
                output_limit: 100,
                user: Some("nobody".to_owned()),
            },
            container: Some(Container {
                image: "busybox".to_owned(),
                network: "BRIDGE".to_owned(),
                volumes: vec![VolumeSpec {
                    host_path: Some("/h".to_owned()),
                    container_path: "/c".to_owned(),
                    read_only: true,
                }],
                force_pull: true,
                parameters: vec![("label".to_owned(), "a=b".to_owned())],
                cpus: 0.5,
                mem_mb: 64.0,
                disk_mb: 10.0,
            }),
            fetch: vec![FetchSpec {
                uri: "http://x/y".to_owned(),
                executable: true,
                cache: false,
                extract: false,
                output_file: "z".to_owned(),
            }],
        };
        let back = launch_from_proto(launch_to_proto(&launch), std::path::Path::new("/agent")).unwrap();
        assert_eq!(back.container, launch.container);
        assert_eq!(back.fetch, launch.fetch);
        assert_eq!(back.process.command, "echo hi");
        assert_eq!(back.process.time_limit, Some(Duration::from_secs(5)));
        assert_eq!(back.process.user.as_deref(), Some("nobody"), "runAsUser travels");
        assert_eq!(back.process.sandbox, std::path::Path::new("/agent/ct_1_0_j_"));
        assert!(
            back.process
                .env
                .contains(&("MESOS_SANDBOX".to_owned(), "/agent/ct_1_0_j_".to_owned()))
        );
    }

    #[test]
    fn ends_round_trip() {
        let end = TaskEnd {
            task_id: TaskId::new(1, 0, "j", ""),
            outcome: Outcome {
                task_id: TaskId::new(1, 0, "j", ""),
                exit_code: Some(3),
                signal: None,
                timed_out: false,
                stdout: "o".to_owned(),
                stderr: "e".to_owned(),
            },
            killed: false,
            error: None,
        };
        assert_eq!(end_from_proto(end_to_proto(&end)), Some(end.clone()));
        let killed = TaskEnd { killed: true, ..end };
        assert!(end_from_proto(end_to_proto(&killed)).unwrap().killed);
    }
}
