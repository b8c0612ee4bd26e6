//! Runs the social worker until SIGTERM.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::cli::run::<social::Application>().await
}
