//! The agent process (`kairos agent`): registers with the scheduler, keeps the stream alive with
//! heartbeats, runs the tasks it is sent, reports how they end, and reconnects when the stream breaks.

use crate::job::TaskId;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};

use super::proto::agent_link_client::AgentLinkClient;
use super::proto::{self, agent_message, scheduler_message};
use super::{Error, TOKEN_METADATA, Token, end_to_proto, launch_from_proto, output_to_proto};
use crate::executor::runner::Runner;
use crate::placement::Resources;

/// How an agent presents itself and where it works.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The schedulers' agent addresses, `host:port` or URLs, comma-separated; the agent attaches
    /// to whichever leads, following a standby's hint.
    pub server: String,
    pub name: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    pub resources: Resources,
    /// Sandboxes and the fetch cache live here.
    pub work_dir: PathBuf,
    pub fetch_timeout: Duration,
    /// What tasks may reach on this agent's host, checked here before each launch: the host is
    /// the agent's, so its own settings decide, whatever the scheduler allows.
    pub policy: crate::executor::Policy,
    /// Presented on every attach; the scheduler refuses agents without its `--agent-token`.
    pub token: Option<Token>,
    /// Certificates the scheduler's must chain to; given, the agent connects over TLS only.
    pub ca_cert: Option<PathBuf>,
    /// How `main` writes the log lines.
    pub log_format: crate::config::LogFormat,
}

/// How the agent reaches schedulers: plain, or over TLS trusting `--ca-cert` (or the public
/// roots, for `https://` addresses without it).
#[derive(Clone)]
enum Transport {
    Plain,
    Tls(tonic::transport::ClientTlsConfig),
}

/// Where task ends go: the open stream, or a buffer until the next one.
#[derive(Default)]
struct Outbox {
    /// The open stream's lane for registration and ends: never dropped, and bounded by the
    /// tasks, since each task ends once.
    stream: Option<mpsc::UnboundedSender<proto::AgentMessage>>,
    /// The open stream's lane for live output, which a chatty task can fill faster than the
    /// scheduler reads: past [`OUTPUT_QUEUE`] chunks, new ones are dropped and counted.
    output: Option<mpsc::Sender<proto::AgentMessage>>,
    /// Output chunks dropped on this stream.
    dropped_output: u64,
    /// Output chunks dropped since the agent started, which heartbeats report.
    dropped_output_total: u64,
    buffered: Vec<proto::TaskStatus>,
    /// Ends sent on the current stream. A stream that breaks may have lost them in flight, so
    /// the next registration repeats them; the scheduler ignores ends it already has.
    sent: Vec<proto::TaskStatus>,
}

/// Ends kept for repeating after a break; older ones were surely delivered long ago.
const RESEND_LIMIT: usize = 1000;

/// Output chunks waiting for the stream, beyond which new ones are dropped. A dropped chunk costs
/// only liveliness: the task's final status carries the output it keeps.
const OUTPUT_QUEUE: usize = 256;

fn status_message(status: proto::TaskStatus) -> proto::AgentMessage {
    proto::AgentMessage {
        kind: Some(agent_message::Kind::Status(status)),
    }
}

/// The endpoint for one scheduler address: `host:port` takes the transport's scheme, so a
/// standby's hint (always `host:port`) leads to the leader over TLS when the agent uses TLS.
fn endpoint(address: &str, transport: &Transport) -> Result<tonic::transport::Endpoint, Error> {
    let invalid = |reason: &str| Error::Address {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let url = match (address.split_once("://"), transport) {
        (None, Transport::Plain) => format!("http://{address}"),
        (None, Transport::Tls(_)) => format!("https://{address}"),
        (Some(("http" | "https", _)), Transport::Plain) | (Some(("https", _)), Transport::Tls(_)) => {
            address.to_owned()
        }
        (Some(("http", _)), Transport::Tls(_)) => {
            return Err(invalid(
                "plain http:// while the agent uses TLS (--ca-cert or an https:// address)",
            ));
        }
        (Some(_), _) => return Err(invalid("use host:port, http:// or https://")),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| invalid(&e.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        // A scheduler that is frozen (stopped, swapped out) keeps its connections open but
        // answers nothing: HTTP/2 pings find it within the keepalive timeout, so the agent moves
        // to another server rather than waiting on it for the whole freeze.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match transport {
        Transport::Plain => Ok(endpoint),
        Transport::Tls(tls) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| invalid(&e.to_string())),
    }
}

/// TLS when `--ca-cert` is given (trusting only it) or an address says `https://` (trusting the
/// public roots); plain otherwise.
fn transport(config: &AgentConfig, servers: &[String]) -> Result<Transport, Error> {
    if let Some(path) = &config.ca_cert {
        let pem = std::fs::read(path).map_err(|source| Error::CaCert {
            path: path.display().to_string(),
            source,
        })?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem));
        return Ok(Transport::Tls(tls));
    }
    if servers.iter().any(|s| s.starts_with("https://")) {
        return Ok(Transport::Tls(
            tonic::transport::ClientTlsConfig::new().with_webpki_roots(),
        ));
    }
    Ok(Transport::Plain)
}

/// Runs the agent until `shutdown` resolves, then kills its process tasks.
///
/// # Errors
/// Fails on a malformed scheduler address or an unusable work directory; connection problems
/// are retried forever.
pub async fn run(
    mut config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    // Sandboxes become Docker bind sources and `MESOS_SANDBOX`: absolute from here on.
    config.work_dir = crate::config::resolve_dir(&config.work_dir).map_err(|source| Error::WorkDir {
        path: config.work_dir.display().to_string(),
        source,
    })?;
    let servers: Vec<String> = config
        .server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if servers.is_empty() {
        return Err(Error::Address {
            address: config.server.clone(),
            reason: "no address given".to_owned(),
        });
    }
    let transport = transport(&config, &servers)?;
    for server in &servers {
        endpoint(server, &transport)?;
    }
    let id = crate::config::worker_identity(&config.work_dir).map_err(|source| Error::WorkDir {
        path: config.work_dir.display().to_string(),
        source,
    })?;
    let runner = Runner::with_policy(
        config.work_dir.join("fetch-cache"),
        config.fetch_timeout,
        id.clone(),
        config.policy.clone(),
    );
    let outbox = Arc::new(Mutex::new(Outbox::default()));
    {
        // Output goes out as it is written while a stream is open; the final status carries
        // what is kept, so a chunk lost to a break costs nothing but liveliness.
        let outbox = outbox.clone();
        runner.feed_output_to(Arc::new(move |task_id, stream, data| {
            offer_output(&outbox, output_to_proto(task_id, stream, data));
        }));
    }
    // Containers this agent launched before it restarted are watched to their end and reported
    // like any other; they are among the running tasks of the first registration.
    let adopted = {
        let outbox = outbox.clone();
        runner.adopt(move |end| report(&outbox, end)).await
    };
    if !adopted.is_empty() {
        tracing::info!(
            containers = adopted.len(),
            "Adopted this agent's containers from before its restart."
        );
    }
    let sandbox_dir = config.work_dir.join("sandbox");
    let session = async {
        let mut backoff = Duration::from_millis(100);
        let mut next = 0;
        let mut hint: Option<String> = None;
        loop {
            // A standby's hint names the leader; otherwise go round the list.
            let server = hint.take().unwrap_or_else(|| {
                next = (next + 1) % servers.len();
                servers[next].clone()
            });
            let Ok(endpoint) = endpoint(&server, &transport) else {
                continue;
            };
            match session(&endpoint, &config, &id, &runner, &outbox, &sandbox_dir).await {
                Ok(()) => {
                    tracing::warn!(%server, "The scheduler closed the stream; reconnecting.");
                    backoff = Duration::from_millis(100);
                }
                Err(Refused::Name(error)) => {
                    // Refused for its name: say so plainly, and try again less often, since
                    // it takes the name over once the other one has been gone long enough.
                    tracing::error!(%server, %error, "The scheduler refused this agent's name.");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(Refused::Token(reason)) => {
                    // The operator must fix the token; retrying quickly would only fill the
                    // scheduler's log.
                    tracing::error!(%server, %reason, "The scheduler refused this agent's token.");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(Refused::Standby { leader }) => {
                    tracing::info!(%server, %leader, "Following the standby's hint to the leader.");
                    hint = Some(leader);
                    continue;
                }
                Err(Refused::Other(error)) => {
                    tracing::warn!(%server, %error, "Cannot attach to the scheduler; retrying.");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    };
    tokio::select! {
        () = session => {}
        () = shutdown => {}
    }
    tracing::info!("Agent stopping; killing its process tasks.");
    runner.kill_processes(Duration::from_millis(500));
    Ok(())
}

/// How often the agent pings the scheduler's connection, and how long it waits for the answer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a session ended or never began.
enum Refused {
    /// Another agent holds this agent's name.
    Name(String),
    /// The agent token is missing or wrong.
    Token(String),
    /// A standby, naming the leader's agent address.
    Standby {
        leader: String,
    },
    Other(String),
}

impl From<tonic::Status> for Refused {
    fn from(status: tonic::Status) -> Refused {
        let leader = status
            .metadata()
            .get(crate::agent::service::LEADER_METADATA)
            .and_then(|v| v.to_str().ok());
        match (status.code(), leader) {
            (tonic::Code::AlreadyExists, _) => Refused::Name(status.message().to_owned()),
            (tonic::Code::Unauthenticated, _) => Refused::Token(status.message().to_owned()),
            (tonic::Code::FailedPrecondition, Some(leader)) => Refused::Standby {
                leader: leader.to_owned(),
            },
            _ => Refused::Other(status.to_string()),
        }
    }
}

/// One connection: register, then serve commands until the stream ends.
async fn session(
    endpoint: &tonic::transport::Endpoint,
    config: &AgentConfig,
    id: &str,
    runner: &Runner,
    outbox: &Arc<Mutex<Outbox>>,
    sandbox_dir: &std::path::Path,
) -> Result<(), Refused> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Refused::Other(e.to_string()))?;
    let mut client = AgentLinkClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let (output_tx, output_rx) = mpsc::channel(OUTPUT_QUEUE);
    // One heartbeat waits at most: while the stream is held back, more would only pile up.
    let (beat_tx, beat_rx) = mpsc::channel(1);
    let finished = {
        let mut outbox = lock(outbox);
        let mut finished = std::mem::take(&mut outbox.sent);
        finished.append(&mut outbox.buffered);
        finished
    };
    let register = proto::Register {
        name: config.name.clone(),
        hostname: config.hostname.clone(),
        attributes: config.attributes.iter().cloned().collect(),
        total: Some(proto::Resources {
            cpus: config.resources.cpus,
            mem_mb: config.resources.mem,
            disk_mb: config.resources.disk,
        }),
        running_task_ids: runner.running().await.iter().map(ToString::to_string).collect(),
        finished: finished.clone(),
        agent_id: id.to_owned(),
    };
    let _ = tx.send(proto::AgentMessage {
        kind: Some(agent_message::Kind::Register(register)),
    });
    let outgoing = UnboundedReceiverStream::new(rx)
        .merge(ReceiverStream::new(beat_rx))
        .merge(ReceiverStream::new(output_rx));
    let mut request = tonic::Request::new(outgoing);
    if let Some(token) = &config.token {
        request.metadata_mut().insert(TOKEN_METADATA, token.bearer());
    }
    // A frozen scheduler accepts the connection in its kernel but never answers.
    let attached = tokio::time::timeout(KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT, client.attach(request)).await;
    let mut inbound = match attached {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            // Keep the ends for the next attempt.
            lock(outbox).buffered.extend(finished);
            return Err(status.into());
        }
        Err(_) => {
            lock(outbox).buffered.extend(finished);
            return Err(Refused::Other(
                "the scheduler did not answer the attach in time".to_owned(),
            ));
        }
    };
    {
        let mut outbox = lock(outbox);
        outbox.stream = Some(tx.clone());
        outbox.output = Some(output_tx);
        outbox.dropped_output = 0;
    }
    tracing::info!(name = %config.name, "Registered with the scheduler.");
    let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break Ok(()),
            Err(status) => break Err(status.into()),
        };
        match message.kind {
            Some(scheduler_message::Kind::Registered(registered)) => {
                let every = Duration::from_millis(u64::from(registered.heartbeat_interval_ms.max(50)));
                let (beat_tx, outbox) = (beat_tx.clone(), outbox.clone());
                heartbeat = Some(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let output_dropped = lock(&outbox).dropped_output_total;
                        let beat = proto::AgentMessage {
                            kind: Some(agent_message::Kind::Heartbeat(proto::Heartbeat {
                                output_dropped,
                            })),
                        };
                        if let Err(mpsc::error::TrySendError::Closed(_)) = beat_tx.try_send(beat) {
                            return;
                        }
                    }
                }));
            }
            Some(scheduler_message::Kind::Launch(launch)) => {
                let Some(launch) = launch_from_proto(launch, sandbox_dir) else {
                    continue;
                };
                tracing::info!(task = %launch.process.task_id, "Launching task.");
                let outbox = outbox.clone();
                runner.start(launch, move |end| report(&outbox, end));
            }
            Some(scheduler_message::Kind::Kill(kill)) => {
                if let Some(task_id) = TaskId::parse(&kill.task_id) {
                    runner.kill(&task_id, Duration::from_millis(u64::from(kill.grace_ms)));
                }
            }
            None => {}
        }
    };
    let dropped = {
        let mut outbox = lock(outbox);
        outbox.stream = None;
        outbox.output = None;
        outbox.dropped_output
    };
    if dropped > 0 {
        tracing::info!(chunks = dropped, "Live output chunks dropped on this stream.");
    }
    if let Some(heartbeat) = heartbeat {
        heartbeat.abort();
    }
    result
}

/// Queues a live output chunk on the open stream's output lane; with the lane full it is
/// dropped and counted.
fn offer_output(outbox: &Mutex<Outbox>, chunk: proto::AgentMessage) {
    let mut outbox = lock(outbox);
    if let Some(tx) = &outbox.output
        && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(chunk)
    {
        outbox.dropped_output += 1;
        outbox.dropped_output_total += 1;
        if outbox.dropped_output == 1 {
            tracing::warn!(
                "The scheduler takes live output slower than tasks write it; chunks are dropped \
                 until it catches up (final statuses carry what tasks keep)."
            );
        }
    }
}

/// Sends a task's end on the open stream, or keeps it for the next one.
fn report(outbox: &Mutex<Outbox>, end: crate::executor::runner::TaskEnd) {
    let status = end_to_proto(&end);
    let mut outbox = lock(outbox);
    let sent = outbox
        .stream
        .as_ref()
        .is_some_and(|s| s.send(status_message(status.clone())).is_ok());
    if sent {
        if outbox.sent.len() == RESEND_LIMIT {
            outbox.sent.remove(0);
        }
        outbox.sent.push(status);
    } else {
        outbox.buffered.push(status);
    }
}

fn lock(outbox: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8) -> proto::AgentMessage {
        proto::AgentMessage {
            kind: Some(agent_message::Kind::Output(proto::Output {
                data: vec![n],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn output_past_the_lane_is_dropped_and_counted_across_streams() {
        let outbox = Mutex::new(Outbox::default());
        offer_output(&outbox, chunk(0)); // no stream: nowhere to go, and not counted
        let (tx, mut rx) = mpsc::channel(2);
        lock(&outbox).output = Some(tx);
        for n in 1..=5 {
            offer_output(&outbox, chunk(n));
        }
        let first = rx.try_recv().unwrap();
        assert!(matches!(first.kind, Some(agent_message::Kind::Output(o)) if o.data == [1]));
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_err(), "two chunks fit");
        let counts = |outbox: &Mutex<Outbox>| {
            let outbox = lock(outbox);
            (outbox.dropped_output, outbox.dropped_output_total)
        };
        assert_eq!(counts(&outbox), (3, 3));
        // A new stream starts its own count; the total, which heartbeats report, goes on.
        let (tx, _rx) = mpsc::channel(1);
        {
            let mut outbox = lock(&outbox);
            outbox.output = Some(tx);
            outbox.dropped_output = 0;
        }
        offer_output(&outbox, chunk(6));
        offer_output(&outbox, chunk(7));
        assert_eq!(counts(&outbox), (1, 4));
    }
}
