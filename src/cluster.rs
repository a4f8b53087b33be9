//! Who leads. A single server on SQLite always leads; servers sharing PostgreSQL elect one leader
//! with a session advisory lock, and only the leader runs an engine. The API and the agent
//! service read the current state from a [`Cluster`] to serve, proxy or redirect.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::engine::{self, Handle};
use crate::store::PostgresStore;

/// How to reach a server: its HTTP API and its agent (gRPC) address, both `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub http: String,
    pub agent: String,
}

/// The state every request handler consults.
#[derive(Clone)]
pub struct Cluster {
    me: Member,
    /// Held only to copy small values in or out, never across an await.
    state: Arc<RwLock<Leadership>>,
}

#[derive(Default)]
struct Leadership {
    /// Our engine while we lead.
    engine: Option<Handle>,
    /// The leader as last seen in the store (ourselves while we lead).
    leader: Option<Member>,
}

impl Cluster {
    /// A server that leads from the start (the embedded SQLite store has no one to share with).
    pub fn single(me: Member, engine: Handle) -> Cluster {
        let cluster = Cluster {
            me: me.clone(),
            state: Arc::default(),
        };
        cluster.set(Some(engine), Some(me));
        cluster
    }

    fn standby(me: Member) -> Cluster {
        Cluster {
            me,
            state: Arc::default(),
        }
    }

    fn set(&self, engine: Option<Handle>, leader: Option<Member>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.engine = engine;
        state.leader = leader;
    }

    /// Our engine, if we lead.
    pub fn engine(&self) -> Option<Handle> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .engine
            .clone()
    }

    /// The current leader, as far as this server knows.
    pub fn leader(&self) -> Option<Member> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .leader
            .clone()
    }

    pub fn me(&self) -> &Member {
        &self.me
    }
}

/// How often the election runs, and how long a leader's lease lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between campaigns, and between a leader's lease renewals.
    pub poll: Duration,
    /// How long a lease lasts without renewal (at least three polls).
    pub lease: Duration,
}

/// Starts the election over PostgreSQL: campaign, lead while the lease holds, step down when it
/// doesn't, campaign again. `start_engine` loads state from the store and starts an engine for
/// a term (its epoch, which fences its commits, and its lease, past which it launches nothing).
/// Returns the cluster view and a sender that stops the loop (stepping down first).
pub fn elect<F, Fut>(
    me: Member,
    store: Arc<PostgresStore>,
    start_engine: F,
    timing: Timing,
) -> (Cluster, watch::Sender<bool>, tokio::task::JoinHandle<()>)
where
    F: Fn(i64, engine::Lease) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Handle, engine::Error>> + Send,
{
    let cluster = Cluster::standby(me);
    let (stop, mut stopped) = watch::channel(false);
    let view = cluster.clone();
    let poll = timing.poll;
    let task = tokio::spawn(async move {
        let holder = serde_json::to_string(view.me()).unwrap_or_default();
        loop {
            if *stopped.borrow() {
                return;
            }
            match store.try_acquire_leadership(&holder, timing.lease).await {
                Ok(Some(mut guard)) => {
                    tracing::info!(me = %view.me().http, term = guard.epoch(), "Elected leader; loading state.");
                    let lease = engine::Lease::new(guard.valid_until());
                    // Loading a large store can outlast the lease: keep renewing it meanwhile.
                    let starting = start_engine(guard.epoch(), lease.clone());
                    tokio::pin!(starting);
                    let started = loop {
                        tokio::select! {
                            started = &mut starting => break Some(started),
                            () = tokio::time::sleep(poll) => {
                                if !guard.renew().await {
                                    break None;
                                }
                                lease.extend(guard.valid_until());
                            }
                        }
                    };
                    let engine = match started {
                        Some(Ok(engine)) => engine,
                        Some(Err(error)) => {
                            tracing::error!(%error, "Could not start the engine; stepping down.");
                            drop(guard);
                            tokio::time::sleep(poll).await;
                            continue;
                        }
                        None => {
                            tracing::error!("Lost the leader lease while loading state; stepping down.");
                            drop(guard);
                            continue;
                        }
                    };
                    view.set(Some(engine.clone()), Some(view.me().clone()));
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = stopped.changed() => {}
                        }
                        if *stopped.borrow() {
                            view.set(None, None);
                            engine.shutdown().await;
                            let _ = guard.close().await;
                            return;
                        }
                        if engine.is_stopped() {
                            // It stopped itself: a commit was fenced, or its lease ran out.
                            tracing::error!("The engine stopped; stepping down.");
                            break;
                        }
                        if !guard.renew().await {
                            tracing::error!("Lost the leader lease; stepping down.");
                            break;
                        }
                        lease.extend(guard.valid_until());
                    }
                    // Another server may lead now. Stop at once so that nothing is scheduled
                    // without the lease; the commits of this term are fenced besides.
                    view.set(None, None);
                    engine.abandon().await;
                    drop(guard);
                }
                Ok(None) => {
                    let leader = store
                        .current_leader()
                        .await
                        .ok()
                        .flatten()
                        .and_then(|text| serde_json::from_str::<Member>(&text).ok());
                    view.set(None, leader);
                }
                Err(error) => {
                    tracing::warn!(%error, "Cannot reach the store for the election.");
                    view.set(None, None);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stopped.changed() => {}
            }
        }
    });
    (cluster, stop, task)
}
