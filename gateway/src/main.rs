//! Runs the gateway until SIGTERM.

use std::process::ExitCode;

use gateway::{Application, GatewayConfig};

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let default = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
        return platform::health::healthcheck(
            "HTTP_ADDR",
            default,
            std::time::Duration::from_secs(3),
        )
        .await;
    }
    let _telemetry = platform::telemetry::init("gateway");
    let config = match GatewayConfig::from_source(&platform::config::Environment) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gateway: {error}");
            return ExitCode::from(2);
        }
    };
    let shutdown = platform::shutdown::on_signal();
    let app = match Application::build(config, shutdown).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "gateway failed to start");
            eprintln!("gateway: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    app.run_until_stopped().await;
    ExitCode::SUCCESS
}
