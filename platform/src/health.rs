//! `/livez`, `/readyz`, `/healthz` and `/metrics` for workers, on their own small HTTP port
//! (the gateway serves the same paths on its API port), and the `healthcheck` command every
//! binary answers, for container engines that probe by running a command inside an image
//! that has no curl.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;

use crate::bus::Bus;

/// `127.0.0.1:<port>`: where a service listens by default, so that nothing is exposed
/// beyond the host unless its configuration says so.
pub const fn local(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// `<binary> healthcheck`: asks the service's own `/readyz` (at `SWITCHYARD_<variable>`, or
/// `default`; an unspecified address means this host) and exits 0 when it answers 200, 1
/// with one line otherwise. Bounded by `timeout`.
pub async fn healthcheck(
    variable: &str,
    default: SocketAddr,
    timeout: std::time::Duration,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut addr = match crate::config::parse_or(&crate::config::Environment, variable, default) {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("healthcheck: {error}");
            return ExitCode::from(2);
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match tokio::time::timeout(timeout, ready_status(addr)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("healthcheck: http://{addr}/readyz answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("healthcheck: http://{addr}/readyz: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("healthcheck: http://{addr}/readyz: no answer within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

/// The status code of `GET /readyz` at `addr` (one HTTP/1.1 request, read until the
/// status line).
async fn ready_status(addr: SocketAddr) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Binds `addr` (port 0 picks one) and serves until `cancel` fires. Ready means connected
/// to the broker; `/healthz` reports `health`'s dependencies. Returns the bound address and
/// the server task.
pub async fn serve(
    addr: SocketAddr,
    bus: Bus,
    health: crate::healthz::Health,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let livez =
        warp::path!("livez").map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    let ready_bus = bus.clone();
    let readyz = warp::path!("readyz").map(move || {
        let broker = ready_bus.broker_state();
        let (status, code) = if broker == crate::bus::BrokerState::Up {
            ("ready", StatusCode::OK)
        } else {
            ("not ready", StatusCode::SERVICE_UNAVAILABLE)
        };
        let checks = serde_json::json!({"rabbitmq": broker.describe()});
        warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"status": status, "checks": checks})),
            code,
        )
    });
    let healthz = warp::path!("healthz").then(move || {
        let health = health.clone();
        async move {
            let (code, report) = health.report().await;
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            warp::reply::with_status(warp::reply::json(&report), code)
        }
    });
    let metrics = warp::path!("metrics").map(move || {
        warp::reply::with_header(
            bus.render_metrics(),
            "content-type",
            crate::metrics::CONTENT_TYPE,
        )
    });
    let routes = warp::get().and(
        livez
            .map(|r| Box::new(r) as Box<dyn warp::Reply>)
            .or(readyz.map(|r| Box::new(r) as Box<dyn warp::Reply>))
            .unify()
            .or(healthz.map(|r| Box::new(r) as Box<dyn warp::Reply>))
            .unify()
            .or(metrics.map(|r| Box::new(r) as Box<dyn warp::Reply>))
            .unify(),
    );
    let routes = routes.recover(|_| async {
        Ok::<_, std::convert::Infallible>(Box::new(warp::reply::with_status(
            "not found",
            StatusCode::NOT_FOUND,
        )) as Box<dyn warp::Reply>)
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = crate::http::serve(
        listener,
        routes.unify(),
        cancel,
        None,
        crate::http::HttpLimits::default(),
    );
    Ok((bound, handle))
}
