//! `spawn_app()`: the gateway and every worker on port 0, under a fresh prefix, `MongoDB`
//! database and PostgreSQL databases, plus the clients a test needs to look behind the API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use platform::cli::Service as _;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Where the test dependencies run (`./dev deps` starts them).
pub fn amqp_url() -> String {
    std::env::var("SWITCHYARD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// PostgreSQL server for tests (databases are created per test).
pub fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// RabbitMQ's management API (queue listings, closing connections).
pub fn management_url() -> String {
    std::env::var("SWITCHYARD_TEST_RABBITMQ_API")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672/api".to_owned())
}

/// GETs a management API path (the default vhost is `%2f`).
pub async fn management_get(path: &str) -> Value {
    Client::new()
        .get(format!("{}{path}", management_url()))
        .send()
        .await
        .expect("management API reachable")
        .json()
        .await
        .expect("management API answers JSON")
}

/// Deletes every queue and exchange under `prefix`, whatever declared them (work, dead
/// letter, delay and query queues, tap queues of a test), so the broker collects nothing.
pub async fn delete_broker_objects(prefix: &str) {
    let client = Client::new();
    let base = management_url();
    let start = format!("{prefix}.");
    for kind in ["queues", "exchanges"] {
        let listing = management_get(&format!("/{kind}/%2f?columns=name")).await;
        let names = listing.as_array().cloned().unwrap_or_default();
        for name in names.iter().filter_map(|q| q["name"].as_str()) {
            if name.starts_with(&start) {
                let _ = client
                    .delete(format!("{base}/{kind}/%2f/{name}"))
                    .send()
                    .await;
            }
        }
    }
}

/// The broker's names of the connections of the stack under `prefix` (the management
/// API lists a new connection a moment after it opened).
pub async fn connections_of(prefix: &str) -> Vec<String> {
    let listing = management_get("/connections?columns=name,client_properties").await;
    listing
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| {
            c["client_properties"]["connection_name"]
                .as_str()
                .is_some_and(|label| label.starts_with(&format!("{prefix}:")))
        })
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Closes (from the broker's side) every connection of the stack under `prefix`, as a
/// broker restart or a network cut would. Returns how many it closed.
pub async fn drop_connections(prefix: &str) -> usize {
    let client = Client::new();
    let base = management_url();
    let mut closed = 0;
    for name in connections_of(prefix).await {
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let response = client
            .delete(format!("{base}/connections/{encoded}"))
            .send()
            .await
            .expect("management API reachable");
        if response.status().is_success() {
            closed += 1;
        }
    }
    closed
}

/// MongoDB (stand-in) for tests.
pub fn mongo_url() -> String {
    std::env::var("SWITCHYARD_TEST_MONGO_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// How to run the catalog worker (accounts and social always run, so tokens work).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Every worker runs.
    Running,
    /// The catalog's queues exist but nobody consumes them.
    Declared,
    /// No catalog at all: its routing keys lead nowhere.
    Absent,
}

/// The admin every test stack starts with.
pub const ADMIN_EMAIL: &str = "admin@example.org";
/// Their password.
pub const ADMIN_PASSWORD: &str = "admin password 1";

/// A running stack for one test.
pub struct TestApp {
    pub address: SocketAddr,
    /// Sends the admin's token with every request (unless the request sets its own).
    pub client: Client,
    /// Sends no token.
    pub anonymous: Client,
    /// The admin's bearer token.
    pub admin_token: String,
    pub prefix: String,
    /// Where the catalog worker's `/metrics` answers, when it runs.
    pub catalog_health: Option<SocketAddr>,
    /// Where the social worker's `/metrics` answers.
    pub social_health: SocketAddr,
    pub shutdown: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The actor key every test stack shares (tests sign hand-published commands with it).
pub fn actor_key_hex() -> String {
    "5a".repeat(32)
}

/// The key that seals the test stacks' token signing keys.
pub fn key_encryption_key_hex() -> String {
    "6b".repeat(32)
}

/// Vouches for `actor` with `role` on a hand-published command with `body`, as the
/// gateway would.
pub fn sign_actor<T: serde::Serialize>(
    envelope: &mut contracts::Envelope,
    actor: &str,
    role: &str,
    body: &T,
) {
    let key = platform::actor::ActorKey::new(&secrecy::SecretSlice::from(
        hex::decode(actor_key_hex()).expect("hex"),
    ))
    .expect("key");
    let body = serde_json::to_vec(body).expect("body");
    key.sign(
        envelope,
        uuid::Uuid::parse_str(actor).expect("uuid"),
        role,
        &body,
    );
}

fn settings(prefix: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let key = hex_key();
    let mut settings: HashMap<String, String> = [
        ("AMQP_URL", amqp_url()),
        ("MONGO_URL", mongo_url()),
        ("MONGO_DB", prefix.to_owned()),
        ("PREFIX", prefix.to_owned()),
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("HEALTH_ADDR", "127.0.0.1:0".to_owned()),
        ("OPERATION_KEY", key),
        ("ACTOR_KEY", actor_key_hex()),
        ("KEY_ENCRYPTION_KEY", key_encryption_key_hex()),
        ("QUERY_TIMEOUT_MS", "2000".to_owned()),
        ("RELAY_INTERVAL_MS", "200".to_owned()),
        ("GRACE_MS", "2000".to_owned()),
        // Cheap hashes: the tests are about behaviour, not password cost.
        ("ARGON2_MEMORY_KIB", "256".to_owned()),
        ("ARGON2_ITERATIONS", "1".to_owned()),
        ("RATE_LIMIT_AUTH_RATE", "6000".to_owned()),
        ("RATE_LIMIT_AUTH_BURST", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        settings.insert((*k).to_owned(), (*v).to_owned());
    }
    settings
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let base = postgres_url();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => base,
    }
}

async fn postgres_admin(sql: &str) {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("postgres reachable");
    let task = tokio::spawn(connection);
    // One statement at a time: CREATE/DROP DATABASE refuse to run in a multi-statement batch.
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        client.batch_execute(statement).await.expect(statement);
    }
    drop(client);
    let _ = task.await;
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
    spawn_custom(workers, &[]).await
}

/// Starts the stack with extra settings for the gateway (rate limits, timeouts…).
pub async fn spawn_custom(workers: Workers, gateway_settings: &[(&str, &str)]) -> TestApp {
    spawn_configured(workers, gateway_settings, &[]).await
}

/// Starts the stack with extra settings for the gateway and for every worker (retry
/// delays…).
pub async fn spawn_configured(
    workers: Workers,
    gateway_settings: &[(&str, &str)],
    worker_settings: &[(&str, &str)],
) -> TestApp {
    platform::telemetry::init_for_tests();
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let settings = settings(&prefix, worker_settings);
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    let mut catalog_health = None;

    postgres_admin(&format!(
        "CREATE DATABASE {prefix}_accounts; CREATE DATABASE {prefix}_social;"
    ))
    .await;
    let with_db = |db: &str| {
        let mut s = settings.clone();
        s.insert("POSTGRES_URL".into(), database_url(db));
        s.insert("POSTGRES_POOL".into(), "4".into());
        s
    };
    let accounts_config =
        accounts::AccountsConfig::from_source(&with_db(&format!("{prefix}_accounts")))
            .expect("accounts config");
    let hash = accounts_config.hash;
    let accounts_app = accounts::Application::build(accounts_config, shutdown.clone())
        .await
        .expect("accounts starts");
    accounts::admin::create_admin(
        accounts_app.pool(),
        ADMIN_EMAIL,
        "Admin",
        ADMIN_PASSWORD,
        hash,
    )
    .await
    .expect("admin created");
    handles.push(tokio::spawn(accounts_app.run_until_stopped()));
    let social_config = social::SocialConfig::from_source(&with_db(&format!("{prefix}_social")))
        .expect("social config");
    let social_app = social::Application::build(social_config, shutdown.clone())
        .await
        .expect("social starts");
    let social_health = social_app.health_addr();
    handles.push(tokio::spawn(social_app.run_until_stopped()));

    match workers {
        Workers::Running => {
            let config = catalog::CatalogConfig::from_source(&settings).expect("catalog config");
            let worker = catalog::Application::build(config, shutdown.clone())
                .await
                .expect("catalog starts");
            catalog_health = Some(worker.health_addr());
            handles.push(tokio::spawn(worker.run_until_stopped()));
        }
        Workers::Declared => {
            let config = platform::config::BusConfig::from_source(&settings).expect("bus config");
            let bus = platform::bus::Bus::connect(&config, "test-declare", false)
                .await
                .expect("bus");
            bus.declare_messages::<contracts::catalog::CatalogCommand, contracts::catalog::CatalogQuery>(
                &catalog::handlers::events::SUBSCRIPTIONS,
            ).await.expect("declare");
            bus.close().await;
        }
        Workers::Absent => {}
    }
    let mut gateway_settings_map = settings.clone();
    for (k, v) in gateway_settings {
        gateway_settings_map.insert((*k).to_owned(), (*v).to_owned());
    }
    let config =
        gateway::GatewayConfig::from_source(&gateway_settings_map).expect("gateway config");
    let app = gateway::Application::build(config, shutdown.clone())
        .await
        .expect("gateway starts");
    let address = app.addr();
    tokio::spawn(app.run_until_stopped());

    let anonymous = Client::new();
    let ready = format!("http://{address}/readyz");
    let deadline = Instant::now() + Duration::from_secs(20);
    while anonymous.get(&ready).send().await.map(|r| r.status()).ok() != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "gateway never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin_token = login(&anonymous, address, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {admin_token}")).expect("header"),
    );
    let client = Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        anonymous,
        admin_token,
        prefix,
        catalog_health,
        social_health,
        shutdown,
        workers: handles,
    }
}

async fn login(client: &Client, address: SocketAddr, email: &str, password: &str) -> String {
    let response = client
        .post(format!("http://{address}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login sent");
    assert_eq!(response.status(), StatusCode::OK, "login of {email}");
    let body: Value = response.json().await.expect("token json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
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

    /// GETs `path` and returns the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
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
        for worker in std::mem::take(&mut self.workers) {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        delete_broker_objects(&self.prefix).await;
        let _ = self.mongo().await.drop().await;
        let prefix = &self.prefix;
        postgres_admin(&format!(
            "DROP DATABASE IF EXISTS {prefix}_accounts WITH (FORCE); DROP DATABASE IF EXISTS {prefix}_social WITH (FORCE);"
        ))
        .await;
    }

    /// Logs in and returns the bearer token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        login(&self.anonymous, self.address, email, password).await
    }

    /// Registers a user (as admin, so any role) and returns (id, token).
    pub async fn user(&self, name: &str, role: &str) -> (String, String) {
        let email = format!("{}@example.org", name.to_lowercase());
        let body = json!({"email": email, "display_name": name, "password": "long enough password", "role": role});
        let response = self.post("/v1/auth/register", &body, Some(10)).await;
        assert_eq!(response.status(), StatusCode::CREATED, "registering {name}");
        let user: Value = response.json().await.expect("user json");
        let token = self.login(&email, "long enough password").await;
        (user["id"].as_str().expect("id").to_owned(), token)
    }

    /// Polls `path` until `done` holds for its JSON, or panics after 10 s.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body: Value = self.get(path).await.json().await.unwrap_or(Value::Null);
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never satisfied the condition; last: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
