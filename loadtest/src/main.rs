use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loadtest::cli::run(loadtest::cli::Cli::parse()).await
}
