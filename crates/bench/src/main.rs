use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tollgate_bench::runner::{self, Plan};
use tollgate_bench::targets::MockSource;
use tollgate_bench::{BenchError, Result};

/// Benchmarks tollgate against nginx and the mock provider on loopback.
/// Exits 0 whenever the report was produced, whatever the verdicts.
#[derive(Parser, Debug)]
#[command(name = "tollgate-bench", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// tollgate binary (provides `gateway`, and `mock` unless --mock is set).
    #[arg(long, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    /// nginx binary used as the reverse-proxy baseline.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// redis-server for the budget-in-Redis pair (skipped if it cannot start).
    #[arg(long, default_value = "redis-server")]
    redis: PathBuf,
    /// Binary providing the `mock` subcommand (defaults to --tollgate).
    #[arg(long)]
    mock: Option<PathBuf>,
    /// Use the built-in stub instead of `tollgate mock` (harness testing only).
    #[arg(long)]
    stub_mock: bool,
    /// Duration of each open-loop and closed-loop phase [default: 10, quick: 2].
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Warm-up per target [default: 2, quick: 0.5].
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Open-loop rates in req/s, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "500,2000")]
    rates: Vec<f64>,
    /// Keep-alive connections for open-loop phases.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Workers for the closed-loop phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Streaming first-byte requests [default: 500, quick: 100].
    #[arg(long)]
    stream_requests: Option<u64>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Load-generator runtime threads (the rest of the machine is for the
    /// processes under test).
    #[arg(long, default_value_t = 1)]
    loadgen_threads: usize,
    /// Short smoke run (~20 s total).
    #[arg(long)]
    quick: bool,
    /// Which parts to run: the chat-completion targets (`http`), the MCP
    /// section (`mcp`: tools/call direct vs /mcp/{path} vs /mcp, aggregated
    /// tools/list over 10 backends), or both.
    #[arg(long, value_enum, default_value_t = Sections::All)]
    sections: Sections,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench-results/bench.json")]
    out: PathBuf,
    /// Keep the temp dir (generated configs, target logs) for inspection.
    #[arg(long)]
    keep_temp: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Sections {
    All,
    Http,
    Mcp,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Internal: serve the stub mock and print its `listening` line.
    #[command(name = "__stub-mock", hide = true)]
    StubMock {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

fn plan(cli: &Cli) -> Result<Plan> {
    let (phase, warmup, stream) = if cli.quick {
        (2.0, 0.5, 100)
    } else {
        (10.0, 2.0, 500)
    };
    let secs = |v: f64, what: &str| -> Result<Duration> {
        if v.is_finite() && v > 0.0 && v <= 600.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(BenchError::Parse {
                what: what.into(),
                detail: format!("{v} (want 0 < s <= 600)"),
            })
        }
    };
    if cli.rates.is_empty()
        || cli
            .rates
            .iter()
            .any(|r| !(r.is_finite() && *r > 0.0 && *r <= 100_000.0))
    {
        return Err(BenchError::Parse {
            what: "--rates".into(),
            detail: format!("{:?} (want 0 < rate <= 100000)", cli.rates),
        });
    }
    let phase = secs(cli.duration_secs.unwrap_or(phase), "--duration-secs")?;
    Ok(Plan {
        quick: cli.quick,
        phase,
        warmup: secs(cli.warmup_secs.unwrap_or(warmup), "--warmup-secs")?,
        rates: cli.rates.clone(),
        connections: cli.connections.clamp(1, 1024),
        concurrency: cli.concurrency.clamp(1, 1024),
        stream_requests: cli.stream_requests.unwrap_or(stream).clamp(1, 100_000),
        timeout: Duration::from_millis(cli.timeout_ms.clamp(10, 60_000)),
        loadgen_threads: cli.loadgen_threads.clamp(1, 64),
        tollgate_bin: cli.tollgate.clone(),
        nginx_bin: cli.nginx.clone(),
        redis_bin: cli.redis.clone(),
        mock: if cli.stub_mock {
            MockSource::Stub
        } else {
            MockSource::Binary(cli.mock.clone().unwrap_or_else(|| cli.tollgate.clone()))
        },
        grace: if cli.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        },
        stream_cap: if cli.quick {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(30)
        },
        http: cli.sections != Sections::Mcp,
        mcp: cli.sections != Sections::Http,
    })
}

fn stub_mock(listen: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout();
        writeln!(out, "listening data=http://{addr}")?;
        out.flush()?;
        tollgate_bench::stub::serve(listener).await;
        Ok(())
    })
}

fn bench(cli: &Cli) -> Result<()> {
    let plan = plan(cli)?;
    let tmp = tempfile::Builder::new()
        .prefix("tollgate-bench-")
        .tempdir()?;
    let report = runner::run(&plan, tmp.path())?;
    print!("{}", report.render());
    if let Some(dir) = cli.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.out, serde_json::to_vec_pretty(&report)?)?;
    println!("\nJSON results: {}", cli.out.display());
    if cli.keep_temp {
        println!("temp dir kept: {}", tmp.keep().display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Some(Cmd::StubMock { listen }) => stub_mock(*listen),
        None => bench(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench: {e}");
            ExitCode::from(2)
        }
    }
}
