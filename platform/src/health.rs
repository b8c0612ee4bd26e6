//! `/livez` and `/readyz` for workers, on their own small HTTP port (the gateway serves
//! the same paths on its API port).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;

/// Something that can say whether the service is ready for traffic.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Binds `addr` (port 0 picks one) and serves health until `cancel` fires. Returns the
/// bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    ready: ReadyCheck,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let livez =
        warp::path!("livez").map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    let readyz = warp::path!("readyz").map(move || {
        let (status, code) = if ready() {
            ("ready", StatusCode::OK)
        } else {
            ("not ready", StatusCode::SERVICE_UNAVAILABLE)
        };
        warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"status": status})),
            code,
        )
    });
    let routes = warp::get().and(livez.or(readyz));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let routes = routes.recover(|_| async {
        Ok::<_, std::convert::Infallible>(warp::reply::with_status(
            "not found",
            StatusCode::NOT_FOUND,
        ))
    });
    let handle = crate::http::serve(listener, routes, cancel);
    Ok((bound, handle))
}
