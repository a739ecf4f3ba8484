//! Runs the mock standalone: `cargo run -p tollgate-mock --example mock_server -- --listen 127.0.0.1:0`.
//! (`tollgate mock` is the supported entry point; this is for hacking on the crate.)

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: tollgate_mock::MockArgs,
}

#[tokio::main]
async fn main() -> Result<(), tollgate_mock::MockError> {
    tollgate_mock::run(Cli::parse().args).await
}
