//! The `kairos` command: `kairos server` runs the scheduler, `kairos agent` a worker, and the
//! client subcommands (`jobs`, `tasks`, `workers`, `export`, `import`, `completions`) call a
//! server's API through `kairos::cli`.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use kairos::agent::worker::AgentConfig;
use kairos::config::{AgentArgs, LogFormat, ServerArgs, ServerConfig};
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
    Agent(Box<AgentArgs>),
    #[command(flatten)]
    Client(kairos::cli::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The configuration comes first: it says how to log. Its errors reach stderr through `main`'s
    // result, without the logger.
    let command = match cli.command {
        Command::Client(command) => return client(command),
        Command::Server(args) => Loaded::Server(Box::new(
            ServerConfig::load(&args).context("reading the configuration")?,
        )),
        Command::Agent(args) => Loaded::Agent(Box::new(
            AgentConfig::load(&args).context("reading the configuration")?,
        )),
    };
    init_logging(match &command {
        Loaded::Server(config) => config.log_format,
        Loaded::Agent(config) => config.log_format,
    });
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            Loaded::Server(config) => {
                let server = Server::start(*config).await.context("starting the server")?;
                wait_for_signal().await?;
                tracing::info!("Shutting down.");
                server.shutdown().await;
                Ok(())
            }
            Loaded::Agent(config) => {
                let shutdown = async {
                    if let Err(error) = wait_for_signal().await {
                        tracing::error!(%error, "Signal handling failed.");
                    }
                };
                kairos::agent::worker::run(*config, shutdown)
                    .await
                    .context("running the agent")?;
                Ok(())
            }
        }
    })
}

/// Runs a client command and exits with its documented code (0 ok, 1 refused, 2 usage, 3 cannot
/// connect), the error on stderr.
fn client(command: kairos::cli::Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(kairos::cli::run(command, Cli::command)) {
        Ok(()) => Ok(()),
        Err(error) => {
            eprintln!("kairos: {error}");
            std::process::exit(error.exit_code());
        }
    }
}

/// A command with its configuration read.
enum Loaded {
    Server(Box<ServerConfig>),
    Agent(Box<AgentConfig>),
}

/// Logs to stderr, filtered by `KAIROS_LOG` (default `info`), as text or one JSON object a line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAIROS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Flattened, so a shipper finds `job`, `task`, `worker` beside `message` at the top level.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        // Colours only for a person at a terminal, not in journald or a log file.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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
