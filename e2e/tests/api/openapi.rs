//! The OpenAPI document against the real router: every documented operation is served,
//! and on every documented path every undocumented method is not.
//!
//! The router is a tree of warp filters with no route table to read, so the test asks it:
//! a route it does not serve answers the recovery's "no such route" 404 or a 405, and
//! anything else (a 2xx, a 4xx from a handler, a 503) means a handler ran. A route added
//! on a new path without documenting it is not caught here (nothing names it); the fuzzer
//! only explores documented paths, so document new routes first.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use e2e::spawn_app;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Whether the router has no handler for the request (as opposed to a handler refusing it).
async fn route_missing(response: reqwest::Response) -> bool {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && body["detail"] == "no such route")
}

/// Whether `path` is an instance of `template` (`{name}` matches any one segment).
fn matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

#[tokio::test]
async fn the_document_is_served_and_matches_the_routes() {
    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    let file: Value = serde_json::from_str(include_str!("../../../gateway/openapi.json")).unwrap();
    assert_eq!(served, file);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1."));

    let paths = served["paths"].as_object().unwrap();
    let mut checked = 0;
    for template in paths.keys() {
        let path = template
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{course_id}", &uuid::Uuid::now_v7().to_string());
        for method in METHODS {
            // `/v1/users/me` is also `/v1/users/{id}` to the router: any template that
            // matches the concrete path may document the method.
            let documented = paths.iter().any(|(other, operations)| {
                matches(other, &path) && operations.get(method.to_lowercase()).is_some()
            });
            let request = app.client.request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&path),
            );
            let request = if matches!(method, "POST" | "PUT" | "PATCH") {
                request.json(&json!({}))
            } else {
                request
            };
            let missing = route_missing(request.send().await.unwrap()).await;
            assert_eq!(
                missing,
                !documented,
                "{method} {template}: documented {documented}, but the router {} it",
                if missing { "does not serve" } else { "serves" }
            );
            checked += 1;
        }
    }
    assert!(checked >= 5 * 20, "checked {checked}");
    app.teardown().await;
}
