//! Runs the catalog worker until SIGTERM.

use std::process::ExitCode;

use catalog::{Application, CatalogConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9101));
    let check: platform::cli::Check = |source| CatalogConfig::from_source(source).map(drop);
    let (source, _telemetry) =
        match platform::cli::start("catalog", "HEALTH_ADDR", default, check).await {
            platform::cli::Start::Run { source, telemetry } => (source, telemetry),
            platform::cli::Start::Exit(code) => return code,
        };
    let config = match CatalogConfig::from_source(&source) {
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
