//! Faults: the broker going away (connections dropped by the broker, or cut by a proxy),
//! poison messages, a database outage, retries running out, and the dead-letter replay
//! tool bringing messages back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::Envelope;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use platform::bus::consumer::reasons;
use platform::bus::envelope::to_properties;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use e2e::{
    Workers, amqp_url, assert_problem, connections_of, database_url, drop_connections, spawn_app,
    spawn_configured, spawn_custom,
};

/// A TCP proxy in front of RabbitMQ that a test can cut (every connection through it
/// dies, new ones are refused) and restore, without touching the broker other tests use.
struct BrokerProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl BrokerProxy {
    async fn start() -> Self {
        let url = amqp_url();
        let target = url
            .split_once('@')
            .map_or(url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or("127.0.0.1:5672")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (cut_flag, live_list) = (cut.clone(), live.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
                live_list.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            cut,
            live,
            accept,
        }
    }

    fn url(&self) -> String {
        let url = amqp_url();
        let (credentials, rest) = url.split_once('@').unwrap_or(("amqp://guest:guest", &url));
        let vhost = rest.split_once('/').map_or("%2f", |(_, v)| v);
        format!("{credentials}@{}/{vhost}", self.addr)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Polls `probe` every 50 ms until it holds, or panics after `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(addr: &str, line_start: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_gateway_answers_503_while_the_broker_is_away_and_recovers_by_itself() {
    let proxy = BrokerProxy::start().await;
    let app = spawn_custom(Workers::Running, &[("AMQP_URL", &proxy.url())]).await;
    app.create_course("BEFORE").await;

    proxy.cut();
    until(Duration::from_secs(5), "readyz turning 503", || async {
        app.get("/readyz").await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // /healthz says which dependency is down, and since when.
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "down", "{health}");
    assert_eq!(health["checks"]["rabbitmq"]["status"], "down", "{health}");
    assert!(
        health["checks"]["rabbitmq"]["since"].is_string(),
        "{health}"
    );
    let started = Instant::now();
    let refused = app
        .post(
            "/v1/courses",
            &json!({"code": "DURING", "title": "t"}),
            None,
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        elapsed < Duration::from_secs(2),
        "refusing took {elapsed:?}"
    );
    assert_problem(
        app.get("/v1/courses").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;

    proxy.restore();
    until(Duration::from_secs(20), "readyz turning 200", || async {
        app.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
    let course = app.create_course("AFTER").await;
    assert_eq!(course["code"], "AFTER");
    let reconnects = metric(
        &app.address.to_string(),
        "switchyard_broker_reconnects_total",
    )
    .await;
    assert!(reconnects >= 1.0, "reconnects {reconnects}");
    app.teardown().await;
}

#[tokio::test]
async fn every_service_reconnects_and_resumes_after_the_broker_drops_its_connections() {
    let app = spawn_app().await;
    let (uid, token) = app.user("Resilient", "student").await;
    until(
        Duration::from_secs(10),
        "the broker listing 4 connections",
        || async { connections_of(&app.prefix).await.len() >= 4 },
    )
    .await;
    let closed = drop_connections(&app.prefix).await;
    assert!(closed >= 4, "closed {closed} connections");
    let catalog = app.catalog_health.unwrap().to_string();
    let social = app.social_health.to_string();
    until(
        Duration::from_secs(20),
        "every service reconnecting",
        || async {
            metric(&catalog, "switchyard_broker_reconnects_total").await >= 1.0
                && metric(&social, "switchyard_broker_reconnects_total").await >= 1.0
                && app.get("/readyz").await.status() == StatusCode::OK
        },
    )
    .await;
    // Catalog consumes again and the gateway gets its replies.
    let course = app.create_course("RECONNECTED").await;
    assert_eq!(course["code"], "RECONNECTED");
    // Accounts answers logins, social applies posts, and the course's event reached it.
    app.login("resilient@example.org", "long enough password")
        .await;
    let post = app
        .client
        .post(app.url("/v1/posts"))
        .bearer_auth(&token)
        .header("prefer", "wait=10")
        .json(&json!({"body": "still here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::CREATED);
    app.eventually(&format!("/v1/users/{uid}/posts"), |page| {
        page["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    app.eventually("/v1/timeline", |page| {
        page["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|p| p["body"].as_str().unwrap_or("").contains("RECONNECTED"))
        })
    })
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn a_consumer_whose_queue_vanishes_declares_it_again_and_resumes() {
    let app = spawn_app().await;
    app.create_course("FIRST").await;
    // Deleting the queue under the catalog's consumer makes the broker cancel it: the
    // consumer must declare its topology again and resubscribe, on the same connection.
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            format!("{}.catalog.commands", app.prefix).as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    let catalog = app.catalog_health.unwrap().to_string();
    until(
        Duration::from_secs(15),
        "the course created again",
        || async {
            let response = app
                .post(
                    "/v1/courses",
                    &json!({"code": "SECOND", "title": "t"}),
                    Some(5),
                )
                .await;
            response.status() == StatusCode::CREATED
        },
    )
    .await;
    assert_eq!(
        metric(&catalog, "switchyard_broker_reconnects_total").await,
        0.0,
        "the connection itself never dropped"
    );
    let _ = connection.close(200, "done".into()).await;
    app.teardown().await;
}

async fn publish_raw(channel: &Channel, queue: &str, body: &[u8], properties: BasicProperties) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn queue_length(connection: &lapin::Connection, queue: &str) -> u32 {
    platform::bus::topology::message_count(connection, queue)
        .await
        .unwrap()
        .expect("the queue exists")
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_at_once_with_their_reason_and_the_worker_goes_on() {
    let app = spawn_app().await;
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = format!("{}.catalog.commands", app.prefix);
    let valid = |kind: &str, version: u32| {
        to_properties(&Envelope::new(kind, version, uuid::Uuid::now_v7()))
    };
    let create = contracts::catalog::commands::COURSE_CREATE;
    let body = br#"{"type":"catalog.course.create","course_id":"0195f0c4-0000-7000-8000-000000000001","code":"X","title":"x"}"#;
    let oversized = vec![b' '; platform::bus::consumer::MAX_BODY_BYTES + 1];
    let cases: Vec<(&str, Vec<u8>, BasicProperties)> = vec![
        (
            reasons::UNDECODABLE,
            b"{not json".to_vec(),
            valid(create, 1),
        ),
        (
            reasons::UNKNOWN_TYPE,
            br#"{"type":"catalog.course.explode"}"#.to_vec(),
            valid("catalog.course.explode", 1),
        ),
        (
            reasons::UNSUPPORTED_VERSION,
            body.to_vec(),
            valid(create, 99),
        ),
        (
            reasons::BAD_HEADER,
            body.to_vec(),
            valid(create, 1).with_message_id("not-a-uuid".into()),
        ),
        (reasons::OVERSIZED, oversized, valid(create, 1)),
        (
            reasons::BAD_CONTENT_TYPE,
            body.to_vec(),
            valid(create, 1).with_content_type("text/plain".into()),
        ),
        (
            reasons::TYPE_MISMATCH,
            body.to_vec(),
            valid(contracts::catalog::commands::COURSE_DELETE, 1),
        ),
    ];
    let mut expected = std::collections::HashMap::new();
    for (reason, body, properties) in cases {
        let id = properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap();
        expected.insert(id, reason);
        publish_raw(&channel, &queue, &body, properties).await;
    }
    let dlq = format!("{queue}.dlq");
    until(
        Duration::from_secs(10),
        "every poison message dead-lettered",
        || async { queue_length(&connection, &dlq).await as usize == expected.len() },
    )
    .await;
    // The worker never stopped: a valid command right after is applied.
    let course = app.create_course("ALIVE").await;
    assert_eq!(course["code"], "ALIVE");

    let letters = dlq::DeadLetters::connect(&amqp_url(), &app.prefix)
        .await
        .unwrap();
    let read = letters.peek(&dlq, 100).await.unwrap();
    assert_eq!(read.len(), expected.len());
    for letter in &read {
        assert_eq!(
            expected.get(&letter.message_id).copied(),
            Some(letter.reason.as_str()),
            "{letter:?}"
        );
        assert!(!letter.error.is_empty());
        assert_eq!(letter.attempts, 1);
        assert!(letter.died_at.is_some());
        assert_eq!(letter.home, queue);
        // The original headers are still there.
        assert!(
            letter
                .headers
                .get(contracts::headers::SCHEMA_VERSION)
                .is_some()
        );
    }
    // Peeking removed nothing (the broker requeues what the closed channel held), and
    // nothing looped back into the work queue.
    until(
        Duration::from_secs(5),
        "peeked letters back in the queue",
        || async { queue_length(&connection, &dlq).await as usize == expected.len() },
    )
    .await;
    assert_eq!(queue_length(&connection, &queue).await, 0);
    letters.close().await;
    app.teardown().await;
}

/// Makes the test's social database refuse connections and closes the open ones: to the
/// worker it looks like PostgreSQL went down.
async fn social_database(app: &e2e::TestApp, up: bool) {
    let db = format!("{}_social", app.prefix);
    let (client, connection) =
        tokio_postgres::connect(&database_url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS {up}"))
        .await
        .unwrap();
    if !up {
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .await
            .unwrap();
    }
    drop(client);
    let _ = task.await;
}

async fn post_as(app: &e2e::TestApp, token: &str, body: &str) -> Value {
    let response = app
        .client
        .post(app.url("/v1/posts"))
        .bearer_auth(token)
        .json(&json!({ "body": body }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

async fn bodies_on_timeline(app: &e2e::TestApp, uid: &str) -> Vec<String> {
    let page: Value = app
        .get(&format!("/v1/users/{uid}/posts?limit=100"))
        .await
        .json()
        .await
        .unwrap_or(Value::Null);
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_database_outage_delays_commands_through_retries_and_loses_none() {
    let fast_retries = [
        ("RETRY_BASE_MS", "100"),
        ("RETRY_MAX_DELAY_MS", "400"),
        ("RETRY_MAX_ATTEMPTS", "100"),
    ];
    let app = spawn_configured(Workers::Running, &[], &fast_retries).await;
    let (uid, token) = app.user("Patient", "student").await;
    social_database(&app, false).await;
    let bodies: Vec<String> = (0..5)
        .map(|i| format!("written during the outage {i}"))
        .collect();
    for body in &bodies {
        post_as(&app, &token, body).await;
    }
    let social = app.social_health.to_string();
    until(Duration::from_secs(10), "social retrying", || async {
        metric(
            &social,
            "switchyard_messages_consumed_total{queue=\"social.commands\",outcome=\"retry\"}",
        )
        .await
            >= 5.0
    })
    .await;
    social_database(&app, true).await;
    until(Duration::from_secs(20), "every post applied", || async {
        bodies_on_timeline(&app, &uid).await.len() >= bodies.len()
    })
    .await;
    let mut seen = bodies_on_timeline(&app, &uid).await;
    seen.sort();
    assert_eq!(seen, bodies, "each post exactly once");
    let dead = metric(&social, "switchyard_messages_dead_lettered_total").await;
    assert_eq!(dead, 0.0);
    app.teardown().await;
}

#[tokio::test]
async fn exhausted_retries_are_dead_lettered_and_the_replay_tool_brings_them_back_once() {
    let few_retries = [
        ("RETRY_BASE_MS", "50"),
        ("RETRY_MAX_DELAY_MS", "100"),
        ("RETRY_MAX_ATTEMPTS", "3"),
    ];
    let app = spawn_configured(Workers::Running, &[], &few_retries).await;
    let (uid, token) = app.user("Replayed", "student").await;
    social_database(&app, false).await;
    let accepted = post_as(&app, &token, "kept in the dead-letter queue").await;
    let operation = accepted["operation_id"].as_str().unwrap().to_owned();

    let letters = dlq::DeadLetters::connect(&amqp_url(), &app.prefix)
        .await
        .unwrap();
    let dlq_name = letters.resolve("social.commands");
    until(
        Duration::from_secs(10),
        "the post dead-lettered",
        || async { letters.count(&dlq_name).await.unwrap() == Some(1) },
    )
    .await;
    let letter = letters.peek(&dlq_name, 10).await.unwrap().remove(0);
    assert_eq!(letter.reason, reasons::RETRIES_EXHAUSTED);
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.error.contains("3 attempts failed"),
        "{}",
        letter.error
    );
    assert!(operation.starts_with(&letter.message_id), "{operation}");
    assert_eq!(
        letter.message_type,
        contracts::social::commands::POST_CREATE
    );

    social_database(&app, true).await;
    let nothing = dlq::Selection::Ids(["someone-else".to_owned()].into_iter().collect());
    let skipped = letters.replay(&dlq_name, &nothing).await.unwrap();
    assert_eq!((skipped.moved, skipped.skipped), (0, 1));
    let replayed = letters
        .replay(&dlq_name, &dlq::Selection::All)
        .await
        .unwrap();
    assert_eq!((replayed.moved, replayed.failed), (1, 0));
    until(
        Duration::from_secs(10),
        "the replayed post applied",
        || async { bodies_on_timeline(&app, &uid).await.len() == 1 },
    )
    .await;
    assert_eq!(letters.count(&dlq_name).await.unwrap(), Some(0));
    // Replaying again finds nothing: the message is not doubled.
    let again = letters
        .replay(&dlq_name, &dlq::Selection::All)
        .await
        .unwrap();
    assert_eq!(again, dlq::Replayed::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies_on_timeline(&app, &uid).await.len(), 1);
    letters.close().await;
    app.teardown().await;
}

/// Asks an accounts query over `bus` as another client would, and returns the reply.
async fn ask(
    bus: &platform::bus::Bus,
    exchange: &str,
    query: &contracts::accounts::AccountsQuery,
) -> Value {
    let envelope = Envelope::new(query.routing_key(), 1, uuid::Uuid::now_v7());
    let body = serde_json::to_vec(query).unwrap();
    let reply = bus
        .publisher()
        .request(
            platform::bus::Outgoing {
                exchange,
                routing_key: query.routing_key(),
                envelope: &envelope,
                body: &body,
                mandatory: true,
                expiration: Some(Duration::from_secs(5)),
                extra_headers: None,
            },
            Duration::from_secs(5),
        )
        .await
        .expect("an answer, not a timeout");
    serde_json::from_slice(&reply.body).unwrap()
}

#[tokio::test]
async fn a_query_postgresql_refuses_is_answered_as_invalid_at_once() {
    // The gateway refuses NUL characters; another client of the bus might not. Accounts
    // must answer such a login at once rather than requeue it until the caller gives up.
    let app = spawn_app().await;
    let settings: std::collections::HashMap<String, String> = [
        ("AMQP_URL".to_owned(), amqp_url()),
        ("PREFIX".to_owned(), app.prefix.clone()),
    ]
    .into_iter()
    .collect();
    let config = platform::config::BusConfig::from_source(&settings).unwrap();
    let bus = platform::bus::Bus::connect(&config, "test-client", true)
        .await
        .unwrap();
    let exchange = bus.topology().commands_exchange();
    // Seal the credentials as the gateway would: to accounts' login key from its JWKS.
    let jwks = ask(
        &bus,
        &exchange,
        &contracts::accounts::AccountsQuery::Jwks(contracts::accounts::Empty {}),
    )
    .await;
    let login_key = jwks["body"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["crv"] == "X25519")
        .unwrap()
        .clone();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let public: [u8; 32] = b64
        .decode(login_key["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let credentials = contracts::accounts::Credentials {
        email: "nul\u{0}@example.org".into(),
        password: "long enough password".into(),
    };
    let sealed = crypto_box::PublicKey::from_bytes(public)
        .seal(
            &mut crypto_box::aead::OsRng,
            &serde_json::to_vec(&credentials).unwrap(),
        )
        .unwrap();
    let query = contracts::accounts::AccountsQuery::Login(contracts::accounts::Login {
        kid: login_key["kid"].as_str().unwrap().to_owned(),
        sealed: b64.encode(sealed),
    });
    let started = Instant::now();
    let answer = ask(&bus, &exchange, &query).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(answer["status"], "rejected", "{answer}");
    assert_eq!(answer["rejection"]["kind"], "invalid", "{answer}");
    assert!(
        answer["rejection"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(22")),
        "a PostgreSQL data exception: {answer}"
    );
    bus.close().await;
    app.teardown().await;
}
