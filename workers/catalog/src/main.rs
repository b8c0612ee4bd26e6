//! Runs the catalog worker until SIGTERM.

use std::process::ExitCode;

use catalog::{Application, CatalogConfig};

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9101));
        return platform::health::healthcheck(
            "HEALTH_ADDR",
            default,
            std::time::Duration::from_secs(3),
        )
        .await;
    }
    let _telemetry = platform::telemetry::init("catalog");
    let config = match CatalogConfig::from_source(&platform::config::Environment) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("catalog: {error}");
            return ExitCode::from(2);
        }
    };
    let shutdown = platform::shutdown::on_signal();
    let app = match Application::build(config, shutdown).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "catalog failed to start");
            eprintln!("catalog: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "catalog stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}
