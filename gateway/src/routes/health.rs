//! `/livez` (the process runs) and `/readyz` (it can reach the broker).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Shared, json};

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let livez =
        warp::path!("livez").map(|| json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let readyz = warp::path!("readyz").map(move || {
        if state.dispatcher.bus().is_healthy() {
            json(
                StatusCode::OK,
                &serde_json::json!({"status": "ready", "checks": {"rabbitmq": "up"}}),
            )
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "not ready", "checks": {"rabbitmq": "down"}}),
            )
        }
    });
    warp::get().and(livez.or(readyz).unify()).boxed()
}
