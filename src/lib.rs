//! kairos: a Chronos-compatible job scheduler in one binary.
//!
//! # Layout
//! - [`job`]: the job definition and the Chronos task id, shared by everything else.
//! - [`schedule`]: pure ISO 8601 repeating-interval parsing and next-run arithmetic.
//! - [`graph`]: the dependency DAG (petgraph behind `JobGraph`), readiness and dot/csv export.
//! - [`engine`]: the single owner of scheduling state, driven by events over a channel.
//! - [`executor`]: runs tasks on a worker: fetch, then a process group or a Docker container.
//! - [`store`]: durable state behind one trait; SQLite is the embedded default.
//! - [`placement`]: pure matching of tasks to workers (resources and constraints).
//! - [`agent`]: the gRPC agent protocol, both the scheduler's service and the agent process.
//! - [`api`]: the Chronos REST API over warp.
//! - [`cluster`]: who leads; leader election over PostgreSQL.
//! - [`notify`]: notifications of failures, recoveries, skipped and late runs, by email and webhook.
//! - [`config`], [`server`], [`clock`]: settings, wiring, and the one wall-clock reader.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod executor;
pub mod graph;
pub mod job;
pub mod notify;
pub mod placement;
pub mod schedule;
pub mod server;
pub mod store;
pub mod swarm;
pub mod tls;
