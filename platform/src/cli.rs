//! What every service binary does: answer the subcommands container platforms and
//! operators run (`healthcheck`, `check-config`), read its configuration once from the
//! environment (secrets from `_FILE`s included), install telemetry, then build and run the
//! service until SIGTERM — with the same exit codes everywhere: 2 for a configuration that
//! cannot work (one line on standard error), 1 for a start or a stop that failed, 0 for a
//! clean stop. A binary's `main` is one call to [`run`] (or [`run_with`] when it has
//! subcommands of its own).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Recording, Source};
use crate::telemetry::{TelemetryGuard, TraceConfig};

/// A service as its binary runs it.
pub trait Service: Sized {
    /// Name in logs, traces and error lines.
    const NAME: &'static str;
    /// The variable (without `SWITCHYARD_`) holding the address `healthcheck` asks.
    const HEALTH_VARIABLE: &'static str = "HEALTH_ADDR";
    /// The port of that address on 127.0.0.1 when the variable is not set.
    const HEALTH_PORT: u16;
    /// Its configuration.
    type Config;

    /// Reads and checks the configuration; an error is exit 2.
    fn config(source: &dyn Source) -> Result<Self::Config, ConfigError>;

    /// Connects and starts everything; stops early when `shutdown` is cancelled.
    fn build(
        config: Self::Config,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Self>>;

    /// Serves until shutdown and drains.
    fn run_until_stopped(self) -> impl Future<Output = anyhow::Result<()>>;
}

/// The whole life of a service binary without subcommands of its own.
pub async fn run<S: Service>() -> ExitCode {
    run_with::<S, _, _>(|_config, args| async move {
        eprintln!(
            "{}: unknown command {:?}; usage: {} [healthcheck | check-config]",
            S::NAME,
            args.first().map(String::as_str).unwrap_or_default(),
            S::NAME
        );
        ExitCode::from(2)
    })
    .await
}

/// The whole life of a service binary: with no arguments it serves; with arguments other
/// than the built-in ones it calls `command` with the configuration and the arguments.
pub async fn run_with<S, F, Fut>(command: F) -> ExitCode
where
    S: Service,
    F: FnOnce(S::Config, Vec<String>) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    let check: fn(&dyn Source) -> Result<(), ConfigError> = |source| S::config(source).map(drop);
    let (source, _telemetry) = match start(
        S::NAME,
        S::HEALTH_VARIABLE,
        crate::health::local(S::HEALTH_PORT),
        check,
    )
    .await
    {
        Start::Run { source, telemetry } => (source, telemetry),
        Start::Exit(code) => return code,
    };
    let config = match S::config(&source) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}: {error}", S::NAME);
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return command(config, args).await;
    }
    let shutdown = crate::shutdown::on_signal();
    let service = match S::build(config, shutdown).await {
        Ok(service) => service,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{} failed to start", S::NAME);
            eprintln!("{}: cannot start: {error:#}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    match service.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "{} stopped with an error",
                S::NAME
            );
            eprintln!("{}: stopped with an error: {error:#}", S::NAME);
            ExitCode::FAILURE
        }
    }
}

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
