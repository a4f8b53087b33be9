//! Wires the store, the engine, the HTTP API and the agent protocol into a running scheduler.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, Context, dto::Defaults};
use crate::config::ServerConfig;
use crate::engine::{self, Handle};
use crate::schedule;
use crate::store::SqliteStore;

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
    engine: Handle,
    stop_agents: oneshot::Sender<()>,
    agents: JoinHandle<()>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<()>,
}

impl Server {
    /// Starts the scheduler: opens the store, loads jobs, serves the API and the agent protocol.
    ///
    /// # Errors
    /// Fails when the data directory, the store or a listen address can't be used.
    pub async fn start(config: ServerConfig) -> Result<Server, Error> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Arc::new(SqliteStore::open(&config.data_dir).await?);
        let epsilon =
            chrono::Duration::from_std(config.task_epsilon).unwrap_or_else(|_| chrono::Duration::seconds(60));
        let engine_config = engine::Config {
            failure_retry: config.failure_retry,
            default_epsilon: epsilon,
            disable_after_failures: config.disable_after_failures,
            kill_grace: config.kill_grace,
            output_limit: config.output_limit,
            sandbox_dir: config.data_dir.join("sandbox"),
            worker_name: config.hostname.clone(),
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
        };
        let engine = engine::start(engine_config, store).await?;
        let (stop_agents, agents_stopped) = oneshot::channel::<()>();
        let (agent_addr, agents) = crate::agent::service::serve(
            config.agent_listen,
            engine.clone(),
            config.heartbeat_interval,
            async {
                let _ = agents_stopped.await;
            },
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
        let context = Arc::new(Context {
            engine: engine.clone(),
            defaults: Defaults {
                cpus: config.task_cpus,
                mem: config.task_mem,
                disk: config.task_disk,
                run_as_user: config.user.clone(),
                epsilon: schedule::format_duration(epsilon),
                allow_privileged: config.allow_privileged_containers,
            },
            leader: format!("{}:{}", config.hostname, addr.port()),
        });
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(
            warp::serve(api::routes(context))
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        tracing::info!(%addr, %agent_addr, data_dir = %config.data_dir.display(), "kairos is serving.");
        Ok(Server {
            addr,
            agent_addr,
            engine,
            stop_agents,
            agents,
            stop_http,
            http,
        })
    }

    /// Stops serving HTTP, then stops the engine (killing tasks of the built-in worker), which
    /// ends every agent stream so agents go looking for a scheduler again, then the agent server.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        self.engine.shutdown().await;
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
