//! Runs the gateway until SIGTERM.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::cli::run::<gateway::Application>().await
}
