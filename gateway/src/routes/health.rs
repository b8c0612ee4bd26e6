//! `/livez` (the process runs) and `/readyz` (it can reach the broker and verify tokens).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Shared, json};

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let livez =
        warp::path!("livez").map(|| json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let readyz = warp::path!("readyz").map(move || {
        let broker = state.dispatcher.bus().is_healthy();
        // Without the accounts' keys no authenticated request can be served.
        let keys = state.verifier.has_keys();
        let checks = serde_json::json!({
            "rabbitmq": if broker { "up" } else { "down" },
            "token_keys": if keys { "loaded" } else { "missing" },
        });
        let (status, code) = if broker && keys {
            ("ready", StatusCode::OK)
        } else {
            ("not ready", StatusCode::SERVICE_UNAVAILABLE)
        };
        json(
            code,
            &serde_json::json!({"status": status, "checks": checks}),
        )
    });
    warp::get().and(livez.or(readyz).unify()).boxed()
}
