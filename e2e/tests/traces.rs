//! Traces across the queues: one course request yields one trace, gateway → publish →
//! catalog → event publish → social, exported by OTLP to a receiver inside the test.
//!
//! Its own test binary, because the trace exporter is process-wide.

// Test code: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warp::Filter;

/// A span as the OTLP/JSON export shows it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i64,
    attributes: Value,
}

/// Starts an OTLP/HTTP receiver on port 0 that keeps every exported span.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let route = warp::post()
        .and(warp::path!("v1" / "traces"))
        .and(warp::body::json())
        .map(move |body: Value| {
            let mut found = Vec::new();
            for resource in body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                for scope in resource["scopeSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    for span in scope["spans"].as_array().cloned().unwrap_or_default() {
                        let kind = match &span["kind"] {
                            Value::Number(n) => n.as_i64().unwrap_or(0),
                            Value::String(s) => match s.as_str() {
                                "SPAN_KIND_SERVER" => 2,
                                "SPAN_KIND_PRODUCER" => 4,
                                "SPAN_KIND_CONSUMER" => 5,
                                _ => 0,
                            },
                            _ => 0,
                        };
                        found.push(Span {
                            trace_id: span["traceId"].as_str().unwrap_or_default().to_owned(),
                            span_id: span["spanId"].as_str().unwrap_or_default().to_owned(),
                            parent: span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                            name: span["name"].as_str().unwrap_or_default().to_owned(),
                            kind,
                            attributes: span["attributes"].clone(),
                        });
                    }
                }
            }
            sink.lock().unwrap().extend(found);
            warp::reply::json(&json!({}))
        });
    let routes = route.recover(|_| async {
        Ok::<_, std::convert::Infallible>(warp::reply::with_status(
            "bad",
            warp::http::StatusCode::BAD_REQUEST,
        ))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let routes = routes.map(warp::Reply::into_response);
    platform::http::serve(
        listener,
        routes,
        tokio_util::sync::CancellationToken::new(),
        None,
        platform::http::HttpLimits::default(),
    );
    (format!("http://{address}/v1/traces"), spans)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| {
            let value = &a["value"];
            value["stringValue"].as_str().map(str::to_owned)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_course_is_one_trace_from_the_gateway_through_catalog_to_social() {
    let (endpoint, spans) = receiver().await;
    let config = platform::telemetry::TraceConfig {
        otlp_endpoint: Some(endpoint),
        sample_ratio: 1.0,
        log: None,
    };
    let telemetry = platform::telemetry::init_with("switchyard-test", &config);
    let app = e2e::spawn_app().await;
    let (teacher_id, token) = app.user("Tracy", "teacher").await;

    let response = app
        .anonymous
        .post(app.url("/v1/courses"))
        .bearer_auth(&token)
        .header("prefer", "wait=10")
        .header("x-request-id", "otel-req-1")
        .json(&json!({"code": "OTEL1", "title": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    app.eventually(&format!("/v1/users/{teacher_id}/posts"), |p| {
        p["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;

    // The announcement's consumer span is the last hop; wait until it has been exported.
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        tokio::task::block_in_place(|| telemetry.flush());
        let all = spans.lock().unwrap().clone();
        let server = all
            .iter()
            .find(|s| s.kind == 2 && s.name == "POST /v1/courses");
        if let Some(server) = server {
            let trace: Vec<Span> = all
                .iter()
                .filter(|s| s.trace_id == server.trace_id)
                .cloned()
                .collect();
            if trace
                .iter()
                .any(|s| s.kind == 5 && s.name == "social.events process")
            {
                break trace;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the trace never reached social; spans: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let by_id = |id: &str| trace.iter().find(|s| s.span_id == id);
    let find = |kind: i64, name: &str| {
        trace
            .iter()
            .find(|s| s.kind == kind && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {trace:#?}"))
    };
    let server = find(2, "POST /v1/courses");
    let command_publish = find(4, "commands publish");
    let catalog = find(5, "catalog.commands process");
    let event_publish = trace
        .iter()
        .find(|s| {
            s.kind == 4
                && s.name == "events publish"
                && attribute(s, "messaging.rabbitmq.destination.routing_key").as_deref()
                    == Some("catalog.course.created")
        })
        .expect("catalog.course.created publish span");
    let social = find(5, "social.events process");

    // Parent links: server → publish → catalog process; … → event publish → social process.
    assert_eq!(
        command_publish.parent, server.span_id,
        "the command publish is a child of the request"
    );
    assert_eq!(
        catalog.parent, command_publish.span_id,
        "the consumer is a child of the producer"
    );
    assert_eq!(
        social.parent, event_publish.span_id,
        "the event consumer is a child of the event producer"
    );
    // The event producer descends from the catalog consumer (through handler spans).
    let mut cursor = by_id(&event_publish.parent);
    let mut reached_catalog = false;
    while let Some(span) = cursor {
        if span.span_id == catalog.span_id {
            reached_catalog = true;
            break;
        }
        cursor = by_id(&span.parent);
    }
    assert!(
        reached_catalog,
        "the event's publish descends from the catalog's processing"
    );

    // Store calls are client spans inside the handling.
    for (name, system) in [
        ("mongodb operations", "mongodb"),
        ("postgres transaction", "postgresql"),
    ] {
        let store = trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"));
        assert_eq!(store.kind, 3, "{name} is a client span");
        assert_eq!(attribute(store, "db.system").as_deref(), Some(system));
    }

    // Messaging attributes, and no message bodies.
    assert_eq!(
        attribute(catalog, "messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        attribute(
            command_publish,
            "messaging.rabbitmq.destination.routing_key"
        )
        .as_deref(),
        Some("catalog.course.create")
    );
    assert!(attribute(catalog, "messaging.message.id").is_some());
    let everything = serde_json::to_string(
        &trace
            .iter()
            .map(|s| s.attributes.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        !everything.contains("Traced"),
        "a message body leaked into span attributes"
    );
    app.teardown().await;
}
