//! The scheduler's side of the agent protocol: each agent stream becomes engine events, and the
//! engine's commands for that worker go back down the stream. With `--agent-token`, a gate in
//! front of the service refuses agents that do not present it before the engine hears of them.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::proto::agent_link_server::{AgentLink, AgentLinkServer};
use super::proto::{self, agent_message, scheduler_message};
use super::{TOKEN_METADATA, Token, end_from_proto, launch_to_proto, output_from_proto};
use crate::cluster::Cluster;
use crate::engine::{WorkerInfo, WorkerLink};
use crate::executor::runner::TaskLaunch;
use crate::job::TaskId;
use crate::placement::Resources;

pub struct AgentService {
    cluster: Cluster,
    heartbeat_interval: Duration,
}

/// The metadata entry in which a standby's refusal names the leader's agent address.
pub const LEADER_METADATA: &str = "kairos-leader";

type Outbound = Pin<Box<dyn Stream<Item = Result<proto::SchedulerMessage, Status>> + Send>>;

/// What the scheduler sends down an agent's stream.
#[derive(Debug)]
enum WorkerCommand {
    Launch(Box<TaskLaunch>),
    Kill {
        task_id: TaskId,
        grace: std::time::Duration,
    },
}

/// An agent, reached through its open stream: the engine's [`WorkerLink`] for it.
struct RemoteLink {
    tx: mpsc::UnboundedSender<WorkerCommand>,
}

impl WorkerLink for RemoteLink {
    fn launch(&self, launch: TaskLaunch) -> bool {
        self.tx.send(WorkerCommand::Launch(Box::new(launch))).is_ok()
    }

    fn kill(&self, task_id: &TaskId, grace: Duration) {
        let _ = self.tx.send(WorkerCommand::Kill {
            task_id: task_id.to_owned(),
            grace,
        });
    }
}

fn command_to_proto(command: WorkerCommand) -> proto::SchedulerMessage {
    let kind = match command {
        WorkerCommand::Launch(launch) => scheduler_message::Kind::Launch(launch_to_proto(&launch)),
        WorkerCommand::Kill { task_id, grace } => scheduler_message::Kind::Kill(proto::Kill {
            task_id: task_id.to_string(),
            grace_ms: u32::try_from(grace.as_millis()).unwrap_or(u32::MAX),
        }),
    };
    proto::SchedulerMessage { kind: Some(kind) }
}

#[tonic::async_trait]
impl AgentLink for AgentService {
    type AttachStream = Outbound;

    async fn attach(
        &self,
        request: Request<Streaming<proto::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        // Only the leader takes agents; a standby points them at the leader.
        let Some(engine) = self.cluster.engine() else {
            let mut refusal = Status::failed_precondition("this server is not the leader");
            if let Some(leader) = self.cluster.leader().filter(|l| l != self.cluster.me())
                && let Ok(value) = leader.agent.parse()
            {
                refusal.metadata_mut().insert(LEADER_METADATA, value);
            }
            return Err(refusal);
        };
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream was empty"))?;
        let Some(agent_message::Kind::Register(register)) = first.kind else {
            return Err(Status::invalid_argument("the first message must be Register"));
        };
        let name = register.name.clone();
        let info = worker_from_register(register)?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let link = std::sync::Arc::new(RemoteLink { tx: commands });
        let connection = engine
            .worker_connected(info, link)
            .await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?
            .map_err(Status::already_exists)?;
        tokio::spawn(async move {
            // Until the stream ends: heartbeats and task ends go to the engine.
            while let Ok(Some(message)) = inbound.message().await {
                match message.kind {
                    Some(agent_message::Kind::Heartbeat(beat)) => {
                        let dropped = beat.output_dropped;
                        if engine
                            .worker_heartbeat(name.clone(), connection, dropped)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(agent_message::Kind::Status(status)) => {
                        if let Some(end) = end_from_proto(status)
                            && engine.task_ended(name.clone(), end).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(agent_message::Kind::Output(output)) => {
                        if let Some((task_id, stream, data)) = output_from_proto(output) {
                            engine.live().push(&task_id, stream, &data);
                        }
                    }
                    Some(agent_message::Kind::Register(_)) | None => {}
                }
            }
            let _ = engine.worker_disconnected(name, connection).await;
        });
        let registered = proto::SchedulerMessage {
            kind: Some(scheduler_message::Kind::Registered(proto::Registered {
                heartbeat_interval_ms: u32::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u32::MAX),
            })),
        };
        let outbound = stream::once(async move { Ok(registered) })
            .chain(UnboundedReceiverStream::new(command_rx).map(|c| Ok(command_to_proto(c))));
        Ok(Response::new(Box::pin(outbound)))
    }
}

/// The worker an agent's `Register` describes, as the engine takes it: malformed task ids and
/// non-final statuses are dropped, as everywhere on this edge. Public so that the fuzz targets
/// (`fuzz/`) can feed it arbitrary messages.
///
/// # Errors
/// `INVALID_ARGUMENT` when the agent's name is empty.
pub fn worker_from_register(register: proto::Register) -> Result<WorkerInfo, Status> {
    if register.name.trim().is_empty() {
        return Err(Status::invalid_argument("the agent's name is empty"));
    }
    let total = register.total.unwrap_or_default();
    Ok(WorkerInfo {
        name: register.name,
        id: register.agent_id,
        hostname: register.hostname,
        attributes: register.attributes.into_iter().collect(),
        total: Resources {
            cpus: total.cpus,
            mem: total.mem_mb,
            disk: total.disk_mb,
        },
        running: register
            .running_task_ids
            .iter()
            .filter_map(|id| TaskId::parse(id))
            .collect(),
        finished: register.finished.into_iter().filter_map(end_from_proto).collect(),
        local: false,
        runs: crate::placement::Runs::EVERYTHING,
    })
}

/// Lets a request through if it carries `authorization: Bearer <token>` with our token, or if no
/// token is configured. Runs before every call, so a refused agent reaches neither a standby's
/// hint nor the engine.
fn admit(token: Option<&Token>, request: Request<()>) -> Result<Request<()>, Status> {
    let Some(token) = token else {
        return Ok(request);
    };
    let presented = request
        .metadata()
        .get(TOKEN_METADATA)
        .map(|value| value.as_bytes())
        .and_then(|value| {
            value
                .strip_prefix(b"Bearer ")
                .or_else(|| value.strip_prefix(b"bearer "))
        });
    let refusal = match presented {
        Some(presented) if token.matches(presented) => return Ok(request),
        Some(_) => "the agent token does not match the scheduler's --agent-token",
        None => {
            "this scheduler requires the agent token: start the agent with --agent-token (KAIROS_AGENT_TOKEN)"
        }
    };
    // The peer, never what it presented.
    let peer = request
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    tracing::warn!(%peer, reason = refusal, "Refused an agent.");
    Err(Status::unauthenticated(refusal))
}

/// Serves the agent protocol on `listener` with `server` (plain, or configured for TLS) until
/// `shutdown` resolves, only to agents presenting `token` when there is one.
pub fn serve(
    listener: tokio::net::TcpListener,
    mut server: tonic::transport::Server,
    cluster: Cluster,
    heartbeat_interval: Duration,
    token: Option<Token>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let service = AgentLinkServer::with_interceptor(
        AgentService {
            cluster,
            heartbeat_interval,
        },
        move |request| admit(token.as_ref(), request),
    );
    tokio::spawn(async move {
        let result = server
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "The agent protocol server stopped.");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&'static str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert(TOKEN_METADATA, tonic::metadata::MetadataValue::from_static(value));
        }
        request
    }

    #[test]
    fn only_the_right_token_is_admitted() {
        let token = Token::new("right".to_owned()).unwrap();
        assert!(admit(Some(&token), request(Some("Bearer right"))).is_ok());
        for (authorization, why) in [
            (None, "requires the agent token"),
            (Some("Bearer wrong"), "does not match"),
            (Some("Bearer "), "does not match"),
            (Some("Basic right"), "requires the agent token"),
            (Some("right"), "requires the agent token"),
        ] {
            let refusal = admit(Some(&token), request(authorization)).unwrap_err();
            assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{authorization:?}");
            assert!(
                refusal.message().contains(why),
                "{authorization:?}: {}",
                refusal.message()
            );
            assert!(!refusal.message().contains("right"), "never echoes a token");
        }
        // Without a configured token, every agent is admitted (on a loopback port, or with
        // --insecure-no-auth: the configuration sees to that).
        assert!(admit(None, request(None)).is_ok());
        assert!(admit(None, request(Some("Bearer anything"))).is_ok());
    }
}
