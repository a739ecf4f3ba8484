//! `tollgate`: one binary for the gateway, the controller, the offline
//! validator, the CRD generator, the mock provider and the MCP stdio bridge.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use tollgate_gateway::standalone::{FileSource, Source};
use tollgate_gateway::subscriber::{ControllerOptions, ControllerUrl, GatewayId};

mod audit;
mod controller;
mod keys;
mod usage;
mod validate;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "AI gateway for Kubernetes")]
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
    /// Run the data plane from manifest files (hot-reloaded on change) or
    /// from the configuration the controller pushes.
    Gateway(GatewayArgs),
    /// Check manifests offline (schema, CEL rules, references); exit 1 on any error.
    Validate {
        /// Files or directories of YAML manifests.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// What to make of references (ModelProvider, AIGateway, Secret) not
        /// found in these files: `error`, `warn` (print, exit 0) or `off`
        /// (say nothing), for checking files one at a time when the rest
        /// lives in other files or only in the cluster.
        #[arg(long, value_enum, default_value_t = validate::References::Error)]
        references: validate::References,
    },
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the Kubernetes controller (in-cluster config, or KUBECONFIG).
    Controller(controller::ControllerArgs),
    /// Run the mock LLM provider (OpenAI, Azure OpenAI, Anthropic, Gemini and
    /// Bedrock wire formats).
    Mock(tollgate_mock::MockArgs),
    /// Serve a stdio MCP server (the command after `--`) over MCP
    /// Streamable HTTP, one server process per MCP session.
    McpBridge(tollgate_mcp_bridge::BridgeArgs),
    /// Client API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Who drives cost: tokens and USD by user, team, app, key, route,
    /// provider or model, from the gateways' admin ports (`/v1/usage`).
    Usage(usage::UsageArgs),
    /// Audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check audit log files' hash chains: report every edited, removed or
    /// unreadable record by file and line; exit 1 if there is any.
    Verify(audit::VerifyArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Mint a key: print a Secret labelled tollgate.dev/api-key (stdout; pipe
    /// it to `kubectl apply -f -`) and the key itself (stderr, once).
    Create(keys::CreateArgs),
}

#[derive(clap::Args)]
#[command(group(
    ArgGroup::new("source")
        .required(true)
        .multiple(false)
        .args(["config", "controller"])
))]
struct GatewayArgs {
    /// Manifest files or directories (AIGateway, ModelProvider, AIRoute, Secret).
    #[arg(long, short, num_args = 1..)]
    config: Vec<PathBuf>,
    /// Take configuration from the Tollgate controller at this https URL
    /// instead of files.
    #[arg(long, value_name = "URL", requires_all = ["gateway", "controller_token_file"])]
    controller: Option<ControllerUrl>,
    /// The token presented to the controller (the projected ServiceAccount
    /// token); re-read on every connect.
    #[arg(long, value_name = "PATH", requires = "controller")]
    controller_token_file: Option<PathBuf>,
    /// PEM bundle of CAs to trust for the controller (default: the system roots).
    #[arg(long, value_name = "PATH", requires = "controller")]
    controller_ca_file: Option<PathBuf>,
    /// This pod's name, reported to the controller (default: the hostname).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Which AIGateway to serve (`name` or `namespace/name`; a bare name is
    /// in `default`): required with --controller, and with --config when the
    /// files define several.
    #[arg(long)]
    gateway: Option<GatewayId>,
    /// Address for the spec's ports. 127.0.0.1 by default so a laptop run is
    /// not exposed; containers pass 0.0.0.0.
    #[arg(long, default_value = "127.0.0.1", env = "TOLLGATE_BIND")]
    bind: IpAddr,
    /// Override the client-facing address (default: --bind with the
    /// AIGateway's spec.listener.port, so 127.0.0.1:8080 when neither is set;
    /// port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override the admin address for /metrics, /healthz, /readyz, /config
    /// (default: --bind with the AIGateway's spec.admin.port, so
    /// 127.0.0.1:9090 when neither is set; port 0 picks a free port).
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
    /// With --config: the file holding the key of the configuration hash and
    /// API-key digests, created with a new random key if missing. Without
    /// it each start generates a key, so /config hashes differ per process.
    #[arg(
        long,
        value_name = "PATH",
        env = "TOLLGATE_DIGEST_KEY_FILE",
        conflicts_with = "controller"
    )]
    digest_key_file: Option<PathBuf>,
    /// Open client connections on the data port (all workers together);
    /// over it new connections are closed at once.
    #[arg(long, default_value_t = 10_000, env = "TOLLGATE_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Open client connections from one peer address (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_connections_per_ip: usize,
    /// A new connection that has not sent a complete request head (HTTP/1)
    /// or opened a stream (h2c) within this is closed (`10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight for this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
}

/// `10s`, `500ms`, `2m`, or bare seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value * 60),
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    if duration.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(duration)
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
        Command::Validate { paths, references } => validate::run(&paths, references),
        Command::Usage(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return fail(error),
            };
            match runtime.block_on(usage::run(&args)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("tollgate usage: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Audit(AuditCommand::Verify(args)) => audit::verify(&args),
        Command::Keys(KeysCommand::Create(args)) => {
            match keys::create(&args, std::time::SystemTime::now()) {
                Ok((key, manifest)) => {
                    print!("{manifest}");
                    eprintln!(
                        "key: {key}\n(shown once: store it now; the Secret above holds it for the gateway)"
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("tollgate keys create: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Gateway(args) => {
            match gateway_options(args).map(tollgate_gateway::standalone::run) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(error)) => fail(error),
                Err(error) => fail(error),
            }
        }
        Command::Controller(args) => run_async(controller::run(args)),
        Command::Mock(args) => run_async(tollgate_mock::run(args)),
        Command::McpBridge(args) => run_async(async move {
            // Handlers first, so a signal during startup is not missed.
            let signal = tollgate_gateway::standalone::ShutdownSignal::install();
            tollgate_mcp_bridge::run(args, signal.recv()).await
        }),
    }
}

fn gateway_options(args: GatewayArgs) -> Result<tollgate_gateway::standalone::Options, String> {
    let source = match args.controller {
        Some(url) => {
            // clap's `requires_all` already insists on both; this keeps it total.
            let (Some(token_file), Some(gateway)) = (args.controller_token_file, args.gateway)
            else {
                return Err("--controller needs --gateway and --controller-token-file".into());
            };
            Source::Controller(ControllerOptions {
                url,
                gateway,
                token_file,
                ca_file: args.controller_ca_file,
                pod_name: args.pod_name.unwrap_or_else(hostname),
            })
        }
        None => Source::Files(FileSource {
            paths: args.config,
            gateway: args.gateway.map(|g| g.to_string()),
            reload_debounce: Duration::from_millis(args.reload_debounce_ms),
            digest_key: match &args.digest_key_file {
                Some(path) => {
                    tollgate_config::digest::load_or_create(path).map_err(|e| e.to_string())?
                }
                None => tollgate_config::DigestKey::generate(),
            },
        }),
    };
    Ok(tollgate_gateway::standalone::Options {
        source,
        listen: args.listen,
        admin_listen: args.admin_listen,
        bind: args.bind,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        shutdown_delay: Duration::from_secs(args.shutdown_delay_secs),
        connections: tollgate_gateway::server::ConnectionLimits {
            max_connections: args.max_connections.max(1),
            max_connections_per_ip: args.max_connections_per_ip,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
        },
        workers: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    })
}

/// The pod name when `POD_NAME` is not set: in Kubernetes the hostname is the pod's name.
fn hostname() -> String {
    tollgate_gateway::audit::hostname().unwrap_or_else(|| "unknown".to_string())
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

/// Runs `future` to its end on a multi-threaded runtime.
fn run_async<E: std::fmt::Display>(future: impl Future<Output = Result<(), E>>) -> ExitCode {
    match runtime().map(|rt| rt.block_on(future)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => fail(error),
        Err(error) => fail(error),
    }
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
        .find_map(|var| std::env::var(var).ok())
        .map_or_else(|| "info".to_string(), |spec| log_filter(&spec));
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in files, pipes and
    // `kubectl logs` they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The filter spec, with the file watcher's own logging capped at `info`
/// unless the spec names it: at trace, notify logs every inotify event, and
/// a log file in a watched directory then feeds itself without end.
fn log_filter(spec: &str) -> String {
    if spec.contains("notify") {
        spec.to_string()
    } else if spec.trim().is_empty() {
        "info,notify=info,inotify=info".to_string()
    } else {
        format!("{spec},notify=info,inotify=info")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn gateway(args: &[&str]) -> Result<GatewayArgs, clap::Error> {
        let cli = Cli::try_parse_from(["tollgate", "gateway"].iter().chain(args))?;
        match cli.command {
            Command::Gateway(args) => Ok(args),
            _ => panic!("parsed as another command"),
        }
    }

    const CONTROLLER: [&str; 6] = [
        "--controller",
        "https://tollgate-controller.tollgate-system.svc:8443",
        "--gateway",
        "team-a/gw",
        "--controller-token-file",
        "/var/run/secrets/tollgate.dev/token/token",
    ];

    #[test]
    fn exactly_one_source_is_required() {
        let neither = gateway(&[]).err().map(|e| e.kind());
        assert_eq!(neither, Some(ErrorKind::MissingRequiredArgument));
        let mut both = CONTROLLER.to_vec();
        both.extend(["--config", "gw.yaml"]);
        let both = gateway(&both).err().map(|e| e.kind());
        assert_eq!(both, Some(ErrorKind::ArgumentConflict));
        assert!(gateway(&["--config", "a.yaml", "b.yaml"]).is_ok());
    }

    #[test]
    fn the_controller_needs_a_gateway_and_a_token() {
        for missing in ["--gateway", "--controller-token-file"] {
            let position = CONTROLLER.iter().position(|a| *a == missing).unwrap();
            let mut args = CONTROLLER.to_vec();
            args.drain(position..position + 2);
            let error = gateway(&args).err().expect("rejected");
            assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
            assert!(error.to_string().contains(missing), "{error}");
        }
        let error = gateway(&["--config", "gw.yaml", "--controller-token-file", "t"]).err();
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::MissingRequiredArgument),
            "the token file belongs to --controller"
        );
    }

    #[test]
    fn controller_options_are_parsed() {
        let mut args = CONTROLLER.to_vec();
        args.extend([
            "--pod-name",
            "gw-7d9f-abcde",
            "--controller-ca-file",
            "/ca.pem",
        ]);
        let options = gateway_options(gateway(&args).unwrap()).unwrap();
        let Source::Controller(controller) = options.source else {
            panic!("controller mode");
        };
        assert_eq!(controller.gateway.to_string(), "team-a/gw");
        assert_eq!(controller.pod_name, "gw-7d9f-abcde");
        assert_eq!(
            controller.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(
            controller.url.to_string(),
            "https://tollgate-controller.tollgate-system.svc:8443"
        );

        let mut bare = CONTROLLER.to_vec();
        bare[3] = "gw";
        let options = gateway_options(gateway(&bare).unwrap()).unwrap();
        let Source::Controller(controller) = options.source else {
            panic!("controller mode");
        };
        assert_eq!(controller.gateway.to_string(), "default/gw");
        assert!(!controller.pod_name.is_empty(), "defaults to the hostname");
    }

    #[test]
    fn bad_values_are_named() {
        let mut http = CONTROLLER.to_vec();
        http[1] = "http://controller:8443";
        let error = gateway(&http).err().expect("rejected");
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        assert!(error.to_string().contains("https"), "{error}");
        let mut bad_gateway = CONTROLLER.to_vec();
        bad_gateway[3] = "a/b/c";
        let error = gateway(&bad_gateway).err().expect("rejected");
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn file_mode_keeps_its_options() {
        let args = gateway(&[
            "--config",
            "gw.yaml",
            "--gateway",
            "gw",
            "--reload-debounce-ms",
            "7",
        ]);
        let options = gateway_options(args.unwrap()).unwrap();
        let Source::Files(files) = options.source else {
            panic!("file mode");
        };
        assert_eq!(files.gateway.as_deref(), Some("default/gw"));
        assert_eq!(files.reload_debounce, Duration::from_millis(7));
        assert_eq!(files.paths, [PathBuf::from("gw.yaml")]);
    }

    /// Every listener's default address is in `--help`, and the controller's
    /// metrics port stays off the gateway's 8080 so both run on one host.
    #[test]
    fn help_states_each_listeners_default_address() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let mut help = |sub: &str| {
            let command = cli.find_subcommand_mut(sub).expect(sub);
            command.render_long_help().to_string()
        };
        let gateway = help("gateway");
        for address in ["127.0.0.1:8080", "127.0.0.1:9090", "[default: 127.0.0.1]"] {
            assert!(gateway.contains(address), "gateway --help lacks {address}");
        }
        let controller = help("controller");
        for address in ["[default: 127.0.0.1:9091]", "[default: 0.0.0.0:8443]"] {
            assert!(
                controller.contains(address),
                "controller --help lacks {address}"
            );
        }
        assert!(help("mock").contains("[default: 127.0.0.1:8081]"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_watcher_never_logs_below_info_unless_asked() {
        assert_eq!(log_filter("trace"), "trace,notify=info,inotify=info");
        assert_eq!(log_filter("debug,notify=trace"), "debug,notify=trace");
        for spec in ["trace", "", "tollgate=debug"] {
            assert!(tracing_subscriber::EnvFilter::try_new(log_filter(spec)).is_ok());
        }
    }
}
