//! The `kairos` command: `kairos server` runs the scheduler.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kairos::config::{ServerArgs, ServerConfig};
use kairos::server::Server;

#[derive(Debug, Parser)]
#[command(name = "kairos", version, about = "A Chronos-compatible job scheduler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler with its embedded store and built-in local worker.
    Server(Box<ServerArgs>),
    /// Run a worker that takes tasks from a scheduler.
    Agent(AgentArgs),
}

#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// The schedulers' agent addresses (their --agent-listen), host:port[,host:port…]; the agent
    /// attaches to whichever leads.
    #[arg(long, env = "KAIROS_SERVER")]
    server: String,
    /// This worker's name [default: the host name].
    #[arg(long, env = "KAIROS_AGENT_NAME")]
    name: Option<String>,
    /// The host name reported to the scheduler [default: the machine's].
    #[arg(long, env = "KAIROS_AGENT_HOSTNAME")]
    hostname: Option<String>,
    /// An attribute for constraints, KEY=VALUE (repeatable).
    #[arg(long = "attribute", value_name = "KEY=VALUE")]
    attributes: Vec<String>,
    /// Cpus offered [default: detected].
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory offered, MB [default: detected].
    #[arg(long)]
    mem: Option<f64>,
    /// Disk offered, MB [default: detected free space of the work directory].
    #[arg(long)]
    disk: Option<f64>,
    /// Where sandboxes and the fetch cache live (made absolute and created at start).
    #[arg(long, env = "KAIROS_AGENT_DIR", default_value = "kairos-agent")]
    work_dir: std::path::PathBuf,
    /// Seconds all fetches of one task may take.
    #[arg(long, default_value_t = 300.0)]
    fetch_timeout: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KAIROS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => {
                let config = ServerConfig::load(&args).context("reading the configuration")?;
                let server = Server::start(config).await.context("starting the server")?;
                wait_for_signal().await?;
                tracing::info!("Shutting down.");
                server.shutdown().await;
                Ok(())
            }
            Command::Agent(args) => {
                let hostname = args.hostname.unwrap_or_else(kairos::config::machine_hostname);
                let detected = kairos::config::detect_resources(&args.work_dir);
                let config = kairos::agent::worker::AgentConfig {
                    server: args.server,
                    name: args.name.unwrap_or_else(|| hostname.clone()),
                    attributes: kairos::config::attributes(&args.attributes)
                        .context("reading --attribute")?,
                    resources: kairos::placement::Resources {
                        cpus: args.cpus.unwrap_or(detected.cpus),
                        mem: args.mem.unwrap_or(detected.mem),
                        disk: args.disk.unwrap_or(detected.disk),
                    },
                    hostname,
                    work_dir: args.work_dir,
                    fetch_timeout: std::time::Duration::try_from_secs_f64(args.fetch_timeout)
                        .context("reading --fetch-timeout")?,
                };
                let shutdown = async {
                    if let Err(error) = wait_for_signal().await {
                        tracing::error!(%error, "Signal handling failed.");
                    }
                };
                kairos::agent::worker::run(config, shutdown)
                    .await
                    .context("running the agent")?;
                Ok(())
            }
        }
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
