//! Runs the gateway until SIGTERM.

use std::process::ExitCode;

use gateway::{Application, GatewayConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    let check: platform::cli::Check = |source| GatewayConfig::from_source(source).map(drop);
    let (source, _telemetry) =
        match platform::cli::start("gateway", "HTTP_ADDR", default, check).await {
            platform::cli::Start::Run { source, telemetry } => (source, telemetry),
            platform::cli::Start::Exit(code) => return code,
        };
    let config = match GatewayConfig::from_source(&source) {
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
