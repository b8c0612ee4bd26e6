//! `/livez`, `/readyz` and `/metrics` for workers, on their own small HTTP port (the
//! gateway serves the same paths on its API port).

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;

use crate::bus::Bus;

/// Binds `addr` (port 0 picks one) and serves until `cancel` fires. Ready means connected
/// to the broker. Returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    bus: Bus,
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
