//! Runs the catalog worker until SIGTERM.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::cli::run::<catalog::Application>().await
}
