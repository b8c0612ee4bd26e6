//! Logging: JSON lines on stdout with the service name, filtered by `SWITCHYARD_LOG`
//! (`RUST_LOG` syntax, default `info`). Traces and metrics join this module later.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber. Call once, at startup. A second call (tests
/// building several apps in one process) is ignored.
pub fn init(service: &'static str) {
    let filter = std::env::var("SWITCHYARD_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let result = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .try_init();
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
}

/// For tests: logs only when `TEST_LOG` is set, so passing runs stay quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("test");
    }
}
