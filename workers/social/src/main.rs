//! Runs the social worker until SIGTERM.

use std::process::ExitCode;

use social::{Application, SocialConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9103));
    let check: platform::cli::Check = |source| SocialConfig::from_source(source).map(drop);
    let (source, _telemetry) =
        match platform::cli::start("social", "HEALTH_ADDR", default, check).await {
            platform::cli::Start::Run { source, telemetry } => (source, telemetry),
            platform::cli::Start::Exit(code) => return code,
        };
    let config = match SocialConfig::from_source(&source) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("social: {error}");
            return ExitCode::from(2);
        }
    };
    let shutdown = platform::shutdown::on_signal();
    let app = match Application::build(config, shutdown).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "social failed to start");
            eprintln!("social: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "social stopped with an error");
            ExitCode::FAILURE
        }
    }
}
