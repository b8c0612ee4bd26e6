//! What every service binary does before it serves: answer the subcommands container
//! platforms and operators run (`healthcheck`, `check-config`), read its configuration
//! once from the environment (secrets from `_FILE`s included), and install telemetry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::config::{ConfigError, Recording, Source};
use crate::telemetry::{TelemetryGuard, TraceConfig};

/// A service's configuration loader, as `check-config` runs it.
pub type Check = fn(&dyn Source) -> Result<(), ConfigError>;

/// How a binary goes on after [`start`].
pub enum Start {
    /// Serve (or run the service's own subcommand) with this configuration.
    Run {
        /// Every `SWITCHYARD_*` value, files resolved.
        source: HashMap<String, String>,
        /// Flushes traces when dropped; keep it until the end of `main`.
        telemetry: TelemetryGuard,
    },
    /// A built-in subcommand ran, or the configuration is unusable: exit with this.
    Exit(ExitCode),
}

/// Answers `healthcheck` (asks `/readyz` at `SWITCHYARD_<health_variable>`, default
/// `health_default`) and `check-config`, or reads the environment and installs telemetry.
/// Other arguments are left to the binary.
pub async fn start(
    service: &'static str,
    health_variable: &str,
    health_default: SocketAddr,
    check: Check,
) -> Start {
    match std::env::args().nth(1).as_deref() {
        Some("healthcheck") => {
            let timeout = std::time::Duration::from_secs(3);
            return Start::Exit(
                crate::health::healthcheck(health_variable, health_default, timeout).await,
            );
        }
        Some("check-config") => return Start::Exit(check_config(service, check)),
        _ => {}
    }
    let source = match crate::config::environment() {
        Ok(source) => source,
        Err(error) => {
            eprintln!("{service}: {error}");
            return Start::Exit(ExitCode::from(2));
        }
    };
    let trace = match TraceConfig::from_source(&source) {
        Ok(trace) => trace,
        Err(error) => {
            eprintln!("{service}: {error}");
            return Start::Exit(ExitCode::from(2));
        }
    };
    let telemetry = crate::telemetry::init_with(service, &trace);
    Start::Run { source, telemetry }
}

/// `<binary> check-config`: loads the configuration exactly as a start would, without
/// connecting to anything, and prints one JSON line — the error if any, every variable the
/// service read, and every `SWITCHYARD_*` variable set that it does not read (a typo or a
/// setting of another service) — so a deployment's environment can be checked against the
/// code. Exits 0 when the configuration is usable and nothing set is unknown, 2 when not.
fn check_config(service: &str, check: Check) -> ExitCode {
    let (result, read, unknown) = match crate::config::environment() {
        Err(error) => (Err(error), Vec::new(), Vec::new()),
        Ok(source) => {
            let recording = Recording::new(&source);
            let result = TraceConfig::from_source(&recording)
                .map(drop)
                .and_then(|()| check(&recording));
            let read = recording.asked();
            let mut unknown: Vec<String> = source
                .keys()
                .filter(|name| !read.contains(name))
                .cloned()
                .collect();
            unknown.sort();
            (result, read, unknown)
        }
    };
    let prefixed = |names: Vec<String>| -> Vec<String> {
        names.iter().map(|n| format!("SWITCHYARD_{n}")).collect()
    };
    let ok = result.is_ok() && unknown.is_empty();
    let report = serde_json::json!({
        "service": service,
        "ok": ok,
        "error": result.as_ref().err().map(ToString::to_string),
        "read": prefixed(read),
        "unknown": prefixed(unknown),
    });
    println!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
