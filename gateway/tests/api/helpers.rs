//! `spawn_app()`: a gateway and a catalog worker on port 0, under a fresh prefix and
//! database, plus the clients a test needs to look behind the API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Where the test dependencies run (`./dev deps` starts them).
pub fn amqp_url() -> String {
    std::env::var("SWITCHYARD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// MongoDB (stand-in) for tests.
pub fn mongo_url() -> String {
    std::env::var("SWITCHYARD_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// What to start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Gateway and catalog worker.
    Running,
    /// Gateway only, with the catalog's queues declared but nobody consuming them.
    Declared,
    /// Gateway only, no queues at all.
    Absent,
}

/// A running stack for one test.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: Client,
    pub prefix: String,
    pub shutdown: CancellationToken,
    workers: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn settings(prefix: &str) -> HashMap<String, String> {
    let key = hex_key();
    [
        ("AMQP_URL", amqp_url()),
        ("MONGO_URL", mongo_url()),
        ("MONGO_DB", prefix.to_owned()),
        ("PREFIX", prefix.to_owned()),
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("HEALTH_ADDR", "127.0.0.1:0".to_owned()),
        ("OPERATION_KEY", key),
        ("QUERY_TIMEOUT_MS", "2000".to_owned()),
        ("RELAY_INTERVAL_MS", "200".to_owned()),
        ("GRACE_MS", "2000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn hex_key() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// Starts a gateway and (by default) a catalog worker under a fresh prefix.
pub async fn spawn_app() -> TestApp {
    spawn_with(Workers::Running).await
}

/// Starts the stack with the given workers.
pub async fn spawn_with(workers: Workers) -> TestApp {
    platform::telemetry::init_for_tests();
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let settings = settings(&prefix);
    let shutdown = CancellationToken::new();
    let mut handle = None;
    match workers {
        Workers::Running => {
            let config = catalog::CatalogConfig::from_source(&settings).expect("catalog config");
            let worker = catalog::Application::build(config, shutdown.clone())
                .await
                .expect("catalog starts");
            handle = Some(tokio::spawn(worker.run_until_stopped()));
        }
        Workers::Declared => {
            let config = platform::config::BusConfig::from_source(&settings).expect("bus config");
            let bus = platform::bus::Bus::connect(&config, "test-declare", false)
                .await
                .expect("bus");
            catalog::startup::declare(&bus).await.expect("declare");
            bus.close().await;
        }
        Workers::Absent => {}
    }
    let config = gateway::GatewayConfig::from_source(&settings).expect("gateway config");
    let app = gateway::Application::build(config, shutdown.clone())
        .await
        .expect("gateway starts");
    let address = app.addr();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: Client::new(),
        prefix,
        shutdown,
        workers: handle,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// POSTs JSON, waiting up to `wait` seconds for the outcome.
    pub async fn post(&self, path: &str, body: &Value, wait: Option<u64>) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(seconds) = wait {
            request = request.header("prefer", format!("wait={seconds}"));
        }
        request.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a course and returns its JSON, asserting success.
    pub async fn create_course(&self, code: &str) -> Value {
        let response = self
            .post(
                "/v1/courses",
                &json!({"code": code, "title": format!("Course {code}")}),
                Some(10),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "creating {code}");
        response.json().await.expect("course json")
    }

    /// Creates a teacher and returns its JSON, asserting success.
    pub async fn create_teacher(&self, name: &str) -> Value {
        let email = format!("{}@example.org", name.to_lowercase());
        let response = self
            .post(
                "/v1/teachers",
                &json!({"name": name, "email": email}),
                Some(10),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "creating {name}");
        response.json().await.expect("teacher json")
    }

    /// Polls an operation until it leaves `accepted`, or panics after 10 s.
    pub async fn wait_for_operation(&self, location: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body: Value = self
                .get(location)
                .await
                .json()
                .await
                .expect("operation json");
            if body["status"] != "accepted" {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "operation {location} still accepted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A raw AMQP connection to the test broker.
    pub async fn amqp(&self) -> lapin::Connection {
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("amqp connection")
    }

    /// The catalog database.
    pub async fn mongo(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(mongo_url())
            .await
            .expect("mongo client")
            .database(&self.prefix)
    }

    /// Stops everything and removes the test's queues, exchanges and database.
    pub async fn teardown(mut self) {
        self.shutdown.cancel();
        if let Some(worker) = self.workers.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        let connection = self.amqp().await;
        if let Ok(channel) = connection.create_channel().await {
            let topology = platform::bus::Topology::new(&self.prefix);
            let commands = topology.command_queue("catalog");
            for queue in [
                topology.dead_letter_queue(&commands),
                commands,
                topology.query_queue("catalog"),
            ] {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in [
                topology.commands_exchange(),
                topology.events_exchange(),
                topology.dead_letter_exchange(),
            ] {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let _ = connection.close(200, "done".into()).await;
        let _ = self.mongo().await.drop().await;
    }
}

/// Asserts a problem+json response with `status` and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "problem has a detail: {body}"
    );
    body
}
