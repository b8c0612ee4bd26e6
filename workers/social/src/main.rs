//! Runs the social worker until SIGTERM.

use std::process::ExitCode;

use social::{Application, SocialConfig};

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9103));
        return platform::health::healthcheck(
            "HEALTH_ADDR",
            default,
            std::time::Duration::from_secs(3),
        )
        .await;
    }
    let _telemetry = platform::telemetry::init("social");
    let config = match SocialConfig::from_source(&platform::config::Environment) {
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
