//! `/livez` (the process runs), `/readyz` (it can reach the broker and verify tokens),
//! `/metrics` and `/openapi.json` (the API's description, compiled in from
//! `gateway/openapi.json`).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{Shared, json};

/// The OpenAPI 3.1 document of every route (a test checks it against the router).
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let state_for_metrics = state.clone();
    let livez =
        warp::path!("livez").map(|| json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
    let readyz = warp::path!("readyz").map(move || {
        let broker_state = state.dispatcher.bus().broker_state();
        let broker = broker_state == platform::bus::BrokerState::Up;
        // Without the accounts' keys no authenticated request can be served.
        let keys = state.verifier.has_keys();
        // Informational: a stale list still refuses every user it knows to be deleted.
        let revocations = match state.verifier.revocations_age() {
            Some(age) => format!("updated {} ms ago", age.as_millis()),
            None => "not fetched yet".to_owned(),
        };
        let checks = serde_json::json!({
            "revocations": revocations,
            "rabbitmq": broker_state.describe(),
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
    let health = state_for_metrics.health.clone();
    let healthz = warp::path!("healthz").then(move || {
        let health = health.clone();
        async move {
            let (code, report) = health.report().await;
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            json(code, &report)
        }
    });
    let metrics_state = state_for_metrics;
    let metrics = warp::path!("metrics").map(move || {
        let mut response = Response::new(metrics_state.dispatcher.bus().render_metrics().into());
        if let Ok(value) = warp::http::HeaderValue::from_str(platform::metrics::CONTENT_TYPE) {
            response.headers_mut().insert("content-type", value);
        }
        response
    });
    let openapi = warp::path!("openapi.json").map(|| {
        let mut response = Response::new(OPENAPI.into());
        response.headers_mut().insert(
            "content-type",
            warp::http::HeaderValue::from_static("application/json"),
        );
        response
    });
    warp::get()
        .and(
            livez
                .or(readyz)
                .unify()
                .or(healthz)
                .unify()
                .or(metrics)
                .unify()
                .or(openapi)
                .unify(),
        )
        .boxed()
}
