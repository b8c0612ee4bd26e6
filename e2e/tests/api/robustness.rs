//! Idempotency, redelivery, broker failures, bad input and dead letters.

use std::time::Duration;

use contracts::catalog::{CatalogCommand, CreateCourse, commands};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{Workers, assert_problem, spawn_app, spawn_configured, spawn_custom, spawn_with};

#[tokio::test]
async fn the_same_idempotency_key_twice_is_one_operation_and_one_course() {
    let app = spawn_app().await;
    let send = || {
        app.client
            .post(app.url("/v1/courses"))
            .header("idempotency-key", "key-123")
            .header("prefer", "wait=10")
            .json(&json!({"code": "IDEM", "title": "Once"}))
            .send()
    };
    let first = send().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(
        second.status(),
        StatusCode::CREATED,
        "a retry sees the same success, not a conflict"
    );
    assert_eq!(
        first.headers()["operation-id"],
        second.headers()["operation-id"]
    );
    let (a, b): (Value, Value) = (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(a["id"], b["id"]);
    let page: Value = app.get("/v1/courses").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_command_delivered_twice_by_the_broker_has_one_effect() {
    let app = spawn_app().await;
    let operation = uuid::Uuid::now_v7();
    let command = CatalogCommand::CreateCourse(CreateCourse {
        course_id: uuid::Uuid::now_v7(),
        code: "TWICE".into(),
        title: "Delivered twice".into(),
        description: String::new(),
    });
    let mut envelope = contracts::Envelope::new(commands::COURSE_CREATE, 1, operation);
    envelope.message_id = operation;
    let me: Value = app.get("/v1/users/me").await.json().await.unwrap();
    e2e::sign_actor(&mut envelope, me["id"].as_str().unwrap(), "admin", &command);
    let properties = platform::bus::envelope::to_properties(&envelope);
    let body = serde_json::to_vec(&command).unwrap();
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let exchange = format!("{}.commands", app.prefix);
    for _ in 0..2 {
        channel
            .basic_publish(
                exchange.as_str().into(),
                commands::COURSE_CREATE.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await
            .unwrap();
    }
    // A third, later command proves the first two were consumed before we count.
    app.create_course("AFTER").await;
    let courses = app
        .mongo()
        .await
        .collection::<mongodb::bson::Document>("courses");
    let twice = courses
        .count_documents(mongodb::bson::doc! {"code": "TWICE"})
        .await
        .unwrap();
    assert_eq!(twice, 1);
    let operations = app
        .mongo()
        .await
        .collection::<mongodb::bson::Document>("operations");
    let recorded = operations
        .count_documents(mongodb::bson::doc! {"_id": operation.to_string()})
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    app.teardown().await;
}

#[tokio::test]
async fn a_command_nobody_consumes_is_503_not_a_silent_drop() {
    let app = spawn_with(Workers::Absent).await;
    let response = app
        .post(
            "/v1/courses",
            &json!({"code": "LOST", "title": "Nowhere"}),
            None,
        )
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_service_whose_command_queue_is_full_gets_fast_503s_and_loses_nothing() {
    // Nobody consumes the catalog's commands and its queue holds 3: the writes past the
    // bound are refused at once with Retry-After and counted, and every 202 stays queued.
    let app = spawn_configured(Workers::Declared, &[], &[("COMMAND_QUEUE_MAX_LENGTH", "3")]).await;
    let mut accepted = 0;
    let refused = loop {
        let response = app
            .post(
                "/v1/courses",
                &json!({"code": format!("FULL{accepted}"), "title": "Backpressure"}),
                None,
            )
            .await;
        if response.status() == StatusCode::ACCEPTED {
            accepted += 1;
            // A quorum queue may take a message or two past its bound before it refuses.
            assert!(accepted <= 5, "{accepted} accepted by a queue bounded at 3");
            continue;
        }
        break response;
    };
    assert!(accepted >= 3, "only {accepted} accepted before the bound");
    assert_eq!(refused.headers()["retry-after"], "2");
    let problem = assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("catalog service is overloaded"),
        "{problem}"
    );
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"switchyard_gateway_refusals_total{upstream="catalog",reason="queue_full"} 1"#
        ),
        "{metrics}"
    );
    let connection = app.amqp().await;
    let queue = format!("{}.catalog.commands", app.prefix);
    assert_eq!(
        testkit::broker::message_count(&connection, &queue).await,
        accepted,
        "every accepted command is queued"
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_query_nobody_answers_in_time_is_504() {
    let app = spawn_with(Workers::Declared).await;
    assert_problem(app.get("/v1/courses").await, StatusCode::GATEWAY_TIMEOUT).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_service_that_stops_answering_trips_its_breaker_and_its_reads_fail_fast() {
    // Nobody consumes the catalog's queries: each read waits the whole query timeout, until
    // the breaker opens after two; then reads are refused at once, one probe goes through
    // after the open period, and times out again, which opens it again.
    let app = spawn_custom(
        Workers::Declared,
        &[
            ("QUERY_TIMEOUT_MS", "1000"),
            ("BREAKER_FAILURES", "2"),
            ("BREAKER_OPEN_MS", "2000"),
        ],
    )
    .await;
    for _ in 0..2 {
        assert_problem(app.get("/v1/courses").await, StatusCode::GATEWAY_TIMEOUT).await;
    }
    let refused_fast = |response: reqwest::Response, started: std::time::Instant| async move {
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "an open breaker answered only after {:?}",
            started.elapsed()
        );
        let retry_after: u32 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("catalog is not answering"),
            "{problem}"
        );
    };
    let started = std::time::Instant::now();
    refused_fast(app.get("/v1/courses").await, started).await;
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"switchyard_circuit_breaker_state{upstream="catalog"} 1"#),
        "{metrics}"
    );
    // Other services are not affected: accounts still answers.
    let (_, token) = app.user("Probe", "student").await;
    let me = app
        .client
        .get(app.url("/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_problem(app.get("/v1/courses").await, StatusCode::GATEWAY_TIMEOUT).await;
    let started = std::time::Instant::now();
    refused_fast(app.get("/v1/courses").await, started).await;
    let metrics = app.get_text("/metrics").await;
    for to in ["open", "half_open"] {
        let line = format!(
            r#"switchyard_circuit_breaker_transitions_total{{upstream="catalog",to="{to}"}}"#
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    app.teardown().await;
}

#[tokio::test]
async fn healthz_reports_each_dependency_of_the_gateway_and_of_a_worker() {
    // A loaded test machine can make a check slower than the default 250 ms (degraded).
    let slow = [("HEALTH_SLOW_MS", "5000")];
    let app = spawn_configured(Workers::Running, &slow, &slow).await;
    // The gateway: broker, token keys, the deleted-users list (fetched within seconds).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let gateway = loop {
        let response = app.get("/healthz").await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if body["status"] == "up" {
            assert_eq!(status, StatusCode::OK);
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway not up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for check in ["rabbitmq", "token_keys", "revocations"] {
        assert_eq!(gateway["checks"][check]["status"], "up", "{gateway}");
        assert!(
            gateway["checks"][check]["latency_ms"].is_number(),
            "{gateway}"
        );
        assert!(gateway["checks"][check]["since"].is_string(), "{gateway}");
    }
    // A worker: broker, its database, its outbox; many requests at once are one check each.
    let url = format!("http://{}/healthz", app.social_health);
    let answers = futures::future::join_all((0..20).map(|_| app.anonymous.get(&url).send())).await;
    let mut checked_at = std::collections::HashSet::new();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "up", "{body}");
        for check in ["rabbitmq", "postgres", "outbox"] {
            assert_eq!(body["checks"][check]["status"], "up", "{body}");
        }
        checked_at.insert(body["checks"]["postgres"]["checked_at"].to_string());
    }
    assert!(
        checked_at.len() <= 2,
        "checks were not shared: {checked_at:?}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn malformed_input_is_a_4xx_problem() {
    let app = spawn_app().await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/courses"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(
        raw("{not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown = raw(
        r#"{"code":"A","title":"B","color":"red"}"#,
        "application/json",
    )
    .await
    .unwrap();
    let problem = assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(problem["detail"].as_str().unwrap().contains("color"));
    assert_problem(
        raw(r#"{"code":1}"#, "application/json").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        raw("code=A", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let huge = format!(r#"{{"code":"A","title":"{}"}}"#, "x".repeat(100_000));
    let response = app
        .client
        .post(app.url("/v1/courses"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_problem(app.get("/v1/nothing-here").await, StatusCode::NOT_FOUND).await;
    let bad_key = app
        .client
        .post(app.url("/v1/courses"))
        .header("idempotency-key", "")
        .json(&json!({"code": "K", "title": "t"}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_key, StatusCode::BAD_REQUEST).await;
    app.teardown().await;
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/livez"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app
        .client
        .get(app.url("/livez"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok());
    app.teardown().await;
}

#[tokio::test]
async fn readiness_reflects_the_broker_connection() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/livez").await.status(), StatusCode::OK);
    app.teardown().await;
}

#[tokio::test]
async fn a_forged_operation_id_is_404() {
    let app = spawn_app().await;
    let forged = format!("{}.catalog.0011223344556677", uuid::Uuid::now_v7());
    assert_problem(
        app.get(&format!("/v1/operations/{forged}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.get("/v1/operations/whatever").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.teardown().await;
}

/// Binds a fresh queue to the test's events exchange and consumes it.
async fn listen_to_events(app: &e2e::TestApp) -> (lapin::Connection, lapin::Consumer) {
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}.test-events", app.prefix);
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{}.events", app.prefix).into(),
            "catalog.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, consumer)
}

#[tokio::test]
async fn a_created_course_is_announced_on_the_events_exchange() {
    let app = spawn_app().await;
    let (_connection, mut consumer) = listen_to_events(&app).await;
    let response = app
        .post(
            "/v1/courses",
            &json!({"code": "EVT", "title": "Evented"}),
            Some(10),
        )
        .await;
    let operation_id = response.headers()["operation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.routing_key.as_str(), "catalog.course.created");
    let envelope = platform::bus::envelope::from_properties(&delivery.properties).unwrap();
    assert!(operation_id.starts_with(&envelope.correlation_id.to_string()));
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["code"], "EVT");
    // Delivery is at-least-once: any repeat must carry the same message id, so
    // subscribers' inboxes can drop it.
    while let Ok(Some(Ok(again))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let repeat = platform::bus::envelope::from_properties(&again.properties).unwrap();
        assert_eq!(
            repeat.message_id, envelope.message_id,
            "a second, different event"
        );
    }
    let courses = app
        .mongo()
        .await
        .collection::<mongodb::bson::Document>("courses");
    let pending = courses
        .count_documents(mongodb::bson::doc! {"pending_events": {"$gt": 0}})
        .await
        .unwrap();
    assert_eq!(pending, 0, "the outbox was cleared after publishing");
    app.teardown().await;
}

#[tokio::test]
async fn an_event_left_in_an_outbox_is_published_by_the_relay() {
    let app = spawn_app().await;
    let (_connection, mut consumer) = listen_to_events(&app).await;
    // A course whose handler crashed after committing, before publishing its event.
    let course_id = uuid::Uuid::now_v7();
    let cause = contracts::Envelope::new(commands::COURSE_CREATE, 1, uuid::Uuid::now_v7());
    let event = contracts::catalog::CatalogEvent::CourseCreated(contracts::catalog::Course {
        id: course_id,
        code: "LEFT".into(),
        title: "Left behind".into(),
        description: String::new(),
    });
    let entry = catalog::store::outbox::OutboxEntry::new(&cause, &event);
    let stale = catalog::store::outbox::now_ms() - 60_000;
    let courses = app
        .mongo()
        .await
        .collection::<mongodb::bson::Document>("courses");
    courses
        .insert_one(mongodb::bson::doc! {
            "_id": course_id.to_string(), "code": "LEFT", "title": "Left behind", "description": "",
            "version": 1_i64, "applied": [cause.message_id.to_string()],
            "outbox": [entry.to_document().unwrap()], "pending_events": 1, "changed_ms": stale,
        })
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let envelope = platform::bus::envelope::from_properties(&delivery.properties).unwrap();
    assert_eq!(envelope.message_id.to_string(), entry.id);
    assert_eq!(envelope.causation_id, Some(cause.message_id));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while courses
        .count_documents(mongodb::bson::doc! {"pending_events": {"$gt": 0}})
        .await
        .unwrap()
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "outbox never cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_with_a_reason_and_the_worker_goes_on() {
    let app = spawn_app().await;
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let exchange = format!("{}.commands", app.prefix);
    let envelope = contracts::Envelope::new(commands::COURSE_CREATE, 1, uuid::Uuid::now_v7());
    let properties = platform::bus::envelope::to_properties(&envelope);
    channel
        .basic_publish(
            exchange.as_str().into(),
            commands::COURSE_CREATE.into(),
            BasicPublishOptions::default(),
            b"{definitely not json",
            properties,
        )
        .await
        .unwrap();
    app.create_course("STILL-OK").await;
    let dlq = format!("{}.catalog.commands.dlq", app.prefix);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let message = loop {
        if let Some(message) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(message.delivery.data, b"{definitely not json");
    let reason = platform::bus::envelope::header_text(
        &message.delivery.properties,
        contracts::headers::DEATH_REASON,
    )
    .unwrap();
    assert!(reason.contains("undecodable"), "{reason}");
    app.teardown().await;
}

#[tokio::test]
async fn the_gateway_and_the_workers_expose_openmetrics_with_what_happened() {
    let app = spawn_app().await;
    app.create_course("MET1").await;
    let gateway = app.get("/metrics").await;
    assert!(
        gateway.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let gateway = gateway.text().await.unwrap();
    for expected in [
        r#"switchyard_http_requests_total{route="/v1/courses",method="POST",status_class="2xx"} 1"#,
        r#"switchyard_messages_published_total{exchange="commands",routing_key="catalog.course.create",outcome="confirmed"} 1"#,
        "switchyard_broker_connected 1",
    ] {
        assert!(
            gateway.contains(expected),
            "gateway /metrics lacks {expected}:\n{gateway}"
        );
    }
    // The worker counts the ack after sending it, which can be just after the answer the
    // test waited on: poll until the counters show up (or the deadline says they never will).
    let expected = [
        r#"switchyard_messages_consumed_total{queue="catalog.commands",outcome="ack"} 1"#,
        "switchyard_courses_created_total 1",
        r#"switchyard_end_to_end_latency_seconds_count{message_type="catalog.course.create"} 1"#,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let catalog = app
            .anonymous
            .get(format!("http://{}/metrics", app.catalog_health.unwrap()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<_> = expected.iter().filter(|e| !catalog.contains(*e)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "catalog /metrics lacks {missing:?}:\n{catalog}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn text_with_a_nul_character_is_refused_at_the_door() {
    // Found by the fuzzer: PostgreSQL cannot store NUL in text, so such a command used to
    // fail in the worker on every retry until it was dead-lettered.
    let app = spawn_app().await;
    let post = app
        .post("/v1/posts", &json!({"body": "before\u{0}after"}), None)
        .await;
    assert_problem(post, StatusCode::UNPROCESSABLE_ENTITY).await;
    let login = app
        .anonymous
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "a\u{0}@example.org", "password": "long enough password"}))
        .send()
        .await
        .unwrap();
    assert_problem(login, StatusCode::UNPROCESSABLE_ENTITY).await;
    let course = app
        .post(
            "/v1/courses",
            &json!({"code": "NUL", "title": "t", "description": "\u{0}"}),
            None,
        )
        .await;
    assert_problem(course, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.teardown().await;
}
