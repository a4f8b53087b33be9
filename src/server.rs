//! Wires the store, the engine, the HTTP API and the agent protocol into a running scheduler,
//! either alone on SQLite or as one of several servers on PostgreSQL that elect a leader.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{self, Context, dto::Defaults};
use crate::cluster::{self, Cluster, Member};
use crate::config::ServerConfig;
use crate::engine;
use crate::schedule;
use crate::store::{PostgresStore, SqliteStore, Store};
use crate::tls::ServerTls;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Agent(#[from] crate::agent::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    #[error("--swarm: {0}")]
    Swarm(#[from] crate::executor::swarm::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running scheduler.
pub struct Server {
    /// The address the API listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    /// Where agents connect.
    pub agent_addr: SocketAddr,
    cluster: Cluster,
    /// Stops the election loop (PostgreSQL only).
    election: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    stop_agents: oneshot::Sender<()>,
    agents: JoinHandle<()>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<()>,
}

fn engine_config(
    config: &ServerConfig,
    worker_id: String,
    tokens: crate::auth::Tokens,
    public_url: String,
) -> engine::Config {
    engine::Config {
        failure_retry: config.failure_retry,
        default_epsilon: epsilon(config),
        disable_after_failures: config.disable_after_failures,
        kill_grace: config.kill_grace,
        output_limit: config.output_limit,
        sandbox_dir: config.data_dir.join("sandbox"),
        worker_name: config.hostname.clone(),
        worker_id,
        job_history_limit: config.job_history_limit,
        task_history_per_job: config.task_history_per_job,
        local_worker: config.local_worker.map(|resources| engine::LocalWorker {
            resources,
            attributes: config.worker_attributes.clone(),
        }),
        worker_timeout: config.worker_timeout,
        heartbeat_interval: config.heartbeat_interval,
        fetch_cache_dir: config.data_dir.join("fetch-cache"),
        fetch_timeout: config.fetch_timeout,
        tokens,
        task_tokens: config
            .http_credentials
            .as_ref()
            .map(crate::auth::Credentials::task_tokens),
        audit_retention: chrono::Duration::from_std(config.audit_retention)
            .unwrap_or(chrono::Duration::days(90)),
        notify: crate::notify::Settings {
            public_url,
            ..config.notify.clone()
        },
        store_timeout: config.store_timeout,
        lease: None,
    }
}

fn epsilon(config: &ServerConfig) -> chrono::Duration {
    chrono::Duration::from_std(config.task_epsilon).unwrap_or_else(|_| chrono::Duration::seconds(60))
}

/// How long a server started again waits for its port to come free.
const PORT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds a listener. A port that is busy is tried again for a while: right after a crash the
/// port can still be held for a moment (a task process of the dead server that has not yet
/// exited), and a supervisor restarting the server at once should not make it fail.
async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let began = std::time::Instant::now();
    let mut warned = false;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(source)
                if source.kind() == std::io::ErrorKind::AddrInUse && began.elapsed() < PORT_BUSY_WAIT =>
            {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(%addr, "The port is busy; trying again for a few seconds.");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(source) => return Err(Error::Listen { addr, source }),
        }
    }
}

/// The Swarm backend's client and settings, when `--swarm` is on.
type SwarmBackend = Option<(crate::executor::swarm::Swarm, crate::swarm::Settings)>;

/// Starts an engine on `store` (the first thing a new leader does), and the Swarm backend that
/// leader alone drives.
async fn start_engine<S: Store>(
    config: engine::Config,
    store: Arc<S>,
    swarm: SwarmBackend,
) -> Result<engine::Handle, engine::Error> {
    let lease = config.lease.clone();
    let handle = engine::start(config, store).await?;
    if let Some((client, settings)) = swarm {
        crate::swarm::start(client, handle.clone(), settings, lease);
    }
    Ok(handle)
}

impl Server {
    /// Starts the scheduler: opens the store, then leads at once (SQLite) or joins the election
    /// (PostgreSQL), serving the API and the agent protocol either way.
    ///
    /// # Errors
    /// Fails when the data directory, the store or a listen address can't be used.
    pub async fn start(mut config: ServerConfig) -> Result<Server, Error> {
        // Certificates first: a bad one should stop the start before anything listens.
        let tls = match &config.tls {
            Some(files) => Some(ServerTls::load(files, config.ca_cert.as_deref())?),
            None => None,
        };
        let leader_client = tls.as_ref().map(ServerTls::leader_client).transpose()?;
        let agent_server = match &tls {
            Some(tls) => tls.grpc_server()?,
            None => tonic::transport::Server::builder(),
        };
        // Sandboxes, bind mounts and the store all derive from it: absolute from here on.
        config.data_dir = crate::config::resolve_dir(&config.data_dir).map_err(|source| Error::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let http_listener = listen(config.listen).await?;
        let addr = http_listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let agent_listener = listen(config.agent_listen).await?;
        let agent_addr = agent_listener.local_addr().map_err(|source| Error::Listen {
            addr: config.agent_listen,
            source,
        })?;
        let me = Member {
            http: format!("{}:{}", config.hostname, addr.port()),
            agent: format!("{}:{}", config.hostname, agent_addr.port()),
        };
        let worker_id =
            crate::config::worker_identity(&config.data_dir).map_err(|source| Error::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
        let policy = crate::executor::Policy {
            allow_privileged: config.allow_privileged_containers,
            allowed_host_paths: config.allowed_host_paths.clone(),
            fetch_schemes: config.fetch_schemes.clone(),
        };
        // The built-in worker checks its launches against the same policy as the API.
        crate::executor::runner::register_policy(&worker_id, policy.clone());

        if config.insecure_no_auth && config.http_credentials.is_none() && !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen,
                "Serving WITHOUT authentication on a network address (--insecure-no-auth): anyone who can reach it can run commands.");
        }
        let tokens = crate::auth::Tokens::default();
        // Links in notifications: the configured address, else this server's own.
        let public_url = config.public_url.clone().unwrap_or_else(|| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", me.http)
        });
        // A server told to use Swarm fails at its start when the engine is no Swarm manager.
        let swarm: SwarmBackend = match &config.swarm {
            Some(swarm) => {
                let settings = crate::swarm::Settings {
                    namespace: swarm.namespace.clone(),
                    node_disk: swarm.node_disk,
                    poll: swarm.poll,
                    node_poll: config.heartbeat_interval,
                    kill_grace: config.kill_grace,
                    output_limit: config.output_limit,
                    policy: policy.clone(),
                };
                Some((crate::swarm::connect(&settings).await?, settings))
            }
            None => None,
        };
        let engine_config = engine_config(&config, worker_id, tokens.clone(), public_url);
        let (cluster, election) = match &config.store {
            None => {
                let store = Arc::new(SqliteStore::open(&config.data_dir).await?);
                let engine = start_engine(engine_config, store, swarm).await?;
                (Cluster::single(me, engine), None)
            }
            Some(url) => {
                let store = Arc::new(PostgresStore::open(url).await?);
                let for_engine = store.clone();
                let (cluster, stop, task) = cluster::elect(
                    me,
                    store,
                    move |epoch, lease| {
                        // Each term commits fenced by its epoch and launches only within its lease.
                        let config = engine::Config {
                            lease: Some(lease),
                            ..engine_config.clone()
                        };
                        start_engine(config, Arc::new(for_engine.for_term(epoch)), swarm.clone())
                    },
                    cluster::Timing {
                        poll: config.election_interval,
                        lease: config.leader_lease,
                    },
                );
                (cluster, Some((stop, task)))
            }
        };
        let (stop_agents, agents_stopped) = oneshot::channel::<()>();
        let agents = crate::agent::service::serve(
            agent_listener,
            agent_server,
            cluster.clone(),
            config.heartbeat_interval,
            config.agent_token.clone(),
            async {
                let _ = agents_stopped.await;
            },
        );
        if config.agent_token.is_none() && !agent_addr.ip().is_loopback() {
            // `load` refuses this unless the operator passed --insecure-no-auth.
            tracing::warn!(
                %agent_addr,
                "No --agent-token is set and --insecure-no-auth is given: any agent that reaches \
                 this port may attach and receive tasks."
            );
        }
        let mut context = Context::new(
            cluster.clone(),
            Defaults {
                cpus: config.task_cpus,
                mem: config.task_mem,
                disk: config.task_disk,
                run_as_user: config.user.clone(),
                epsilon: schedule::format_duration(epsilon(&config)),
                allow_privileged: config.allow_privileged_containers,
            },
            api::Protection {
                credentials: config.http_credentials.clone(),
                tokens,
                cors_origins: config.cors_origins.clone(),
                max_body_bytes: config.max_body_bytes,
                policy,
            },
        );
        context = context.with_metrics_per_job(config.metrics_per_job);
        // The leader answers within the store timeout; a second more covers the hop.
        context = context.with_proxy_timeout(config.store_timeout + std::time::Duration::from_secs(1));
        if let Some(client) = leader_client {
            // Every server of a cluster serves TLS alike, so the leader is reached over HTTPS.
            context = context.proxy_over_tls(client);
        }
        let routes = api::routes(Arc::new(context));
        let (stop_http, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let http = match &tls {
            Some(tls) => tls.serve_https(http_listener, routes, stopped),
            None => tokio::spawn(
                warp::serve(routes)
                    .incoming(http_listener)
                    .graceful(stopped)
                    .run(),
            ),
        };
        tracing::info!(
            %addr,
            %agent_addr,
            tls = tls.is_some(),
            agent_token = config.agent_token.is_some(),
            data_dir = %config.data_dir.display(),
            "kairos is serving."
        );
        Ok(Server {
            addr,
            agent_addr,
            cluster,
            election,
            stop_agents,
            agents,
            stop_http,
            http,
        })
    }

    /// Whether this server leads now.
    pub fn is_leader(&self) -> bool {
        self.cluster.engine().is_some()
    }

    /// Stops serving HTTP, then stops the engine (killing tasks of the built-in worker), which
    /// ends every agent stream so agents go looking for a scheduler again, then the agent server.
    pub async fn shutdown(self) {
        // First nothing new starts: requests still in flight are answered below, but an
        // occurrence falling due meanwhile is left to the next start rather than cut short.
        if let Some(engine) = self.cluster.engine() {
            engine.quiesce().await;
        }
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        match self.election {
            Some((stop, task)) => {
                let _ = stop.send(true);
                let _ = task.await;
            }
            None => {
                if let Some(engine) = self.cluster.engine() {
                    engine.shutdown().await;
                }
            }
        }
        let _ = self.stop_agents.send(());
        let mut agents = self.agents;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut agents)
            .await
            .is_err()
        {
            tracing::warn!("Agent connections did not close in time; dropping them.");
            agents.abort();
        }
    }
}
