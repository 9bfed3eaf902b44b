use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = synap::cli::Cli::parse();
    std::process::exit(synap::cli::run(cli).await);
}
