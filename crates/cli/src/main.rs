//! `tollgate`: one binary for the gateway, the offline validator, the CRD
//! generator and the mock provider.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod controller;
mod validate;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "AI gateway and MCP gateway for Kubernetes"
)]
struct Cli {
    /// Log format: text for terminals, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOLLGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the data plane from manifest files, hot-reloading them on change.
    Gateway(GatewayArgs),
    /// Check manifests offline (schema, CEL rules, references); exit 1 on any error.
    Validate {
        /// Files or directories of YAML manifests.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the Kubernetes controller (in-cluster config, or KUBECONFIG).
    Controller(controller::ControllerArgs),
    /// Run the mock LLM provider (OpenAI and Anthropic wire formats).
    Mock(tollgate_mock::MockArgs),
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// Manifest files or directories (AIGateway, ModelProvider, AIRoute, Secret).
    #[arg(long, short, required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// Which AIGateway to serve (`name` or `namespace/name`) when several are defined.
    #[arg(long)]
    gateway: Option<String>,
    /// Address for the spec's ports. 127.0.0.1 by default so a laptop run is
    /// not exposed; containers pass 0.0.0.0.
    #[arg(long, default_value = "127.0.0.1", env = "TOLLGATE_BIND")]
    bind: IpAddr,
    /// Override the client-facing address (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the admin address (port 0 picks a free port).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Seconds in-flight requests may take to finish on shutdown.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// On SIGTERM, seconds to keep serving with /readyz failing before the
    /// listeners close (set it to your load balancer's probe interval).
    #[arg(long, default_value_t = 0)]
    shutdown_delay_secs: u64,
    /// Data-plane worker threads, each serving its own connections (default: one per core).
    #[arg(long, env = "TOLLGATE_WORKERS")]
    workers: Option<usize>,
    /// Milliseconds of quiet after a file change before reloading.
    #[arg(long, default_value_t = 100)]
    reload_debounce_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Crds { out_dir: None } => match tollgate_api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(error),
        },
        Command::Crds { out_dir: Some(dir) } => match write_crds(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(error),
        },
        Command::Validate { paths } => validate::run(&paths),
        Command::Gateway(args) => {
            let options = tollgate_gateway::standalone::Options {
                paths: args.config,
                gateway: args.gateway,
                listen: args.listen,
                admin_listen: args.admin_listen,
                bind: args.bind,
                drain_timeout: Duration::from_secs(args.drain_timeout_secs),
                reload_debounce: Duration::from_millis(args.reload_debounce_ms),
                shutdown_delay: Duration::from_secs(args.shutdown_delay_secs),
                workers: args
                    .workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            match tollgate_gateway::standalone::run(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(error),
            }
        }
        Command::Controller(args) => match runtime().map(|rt| rt.block_on(controller::run(args))) {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(error)) => fail(error),
            Err(error) => fail(error),
        },
        Command::Mock(args) => match runtime().map(|rt| rt.block_on(tollgate_mock::run(args))) {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(error)) => fail(error),
            Err(error) => fail(error),
        },
    }
}

fn write_crds(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    for crd in tollgate_api::crds() {
        let path = dir.join(tollgate_api::crd_file_name(&crd));
        std::fs::write(&path, tollgate_api::crd_yaml(&crd)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

fn init_tracing(format: LogFormat) {
    // TOLLGATE_LOG wins; RUST_LOG is honoured as the Rust-wide convention.
    let filter = ["TOLLGATE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| tracing_subscriber::EnvFilter::try_from_env(var).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
