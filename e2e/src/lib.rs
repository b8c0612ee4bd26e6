//! The one stack builder of the end-to-end tests: the gateway and every worker in this
//! process on port 0, under a fresh queue prefix, `MongoDB` database and PostgreSQL
//! databases (all removed when the [`TestApp`] is torn down or dropped, so a failing
//! test leaks nothing), with an admin logged in.

// A test stack fails loudly: a panic here is the test failing, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use platform::cli::Service as _;
use testkit::Scratch;
use testkit::api::Api;
use testkit::env::mongo_url;
use tokio_util::sync::CancellationToken;

pub use testkit::api::assert_problem;
pub use testkit::broker::{connections_of, drop_connections, management_get};
pub use testkit::env::{self, amqp_url, database_url, postgres_url};

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

/// A running stack for one test; its API client (logged in as the admin) is what it
/// dereferences to.
pub struct TestApp {
    /// The gateway's API as the admin.
    pub api: Api,
    /// The admin's bearer token.
    pub admin_token: String,
    /// The queue prefix (and MongoDB database) of this stack.
    pub prefix: String,
    /// Where the catalog worker's `/metrics` answers, when it runs.
    pub catalog_health: Option<SocketAddr>,
    /// Where the social worker's `/metrics` answers.
    pub social_health: SocketAddr,
    /// Stops every service of the stack.
    pub shutdown: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Last: dropped after the services are told to stop.
    scratch: Option<Scratch>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    /// A test that failed before [`TestApp::teardown`] still stops its services and
    /// removes its queues and databases.
    fn drop(&mut self) {
        self.shutdown.cancel();
        for worker in &self.workers {
            worker.abort();
        }
    }
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
    let mut scratch = Scratch::new();
    scratch.uses_mongo();
    let prefix = scratch.name().to_owned();
    let settings = settings(&prefix, worker_settings);
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    let mut catalog_health = None;
    let accounts_db = scratch.database("accounts").await;
    let social_db = scratch.database("social").await;
    let with_db = |db: &str| {
        let mut s = settings.clone();
        s.insert("POSTGRES_URL".into(), database_url(db));
        s.insert("POSTGRES_POOL".into(), "4".into());
        s
    };
    let accounts_config =
        accounts::AccountsConfig::from_source(&with_db(&accounts_db)).expect("accounts config");
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
    let social_config =
        social::SocialConfig::from_source(&with_db(&social_db)).expect("social config");
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

    let api = Api::ready_as(address, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    TestApp {
        admin_token: api.token.clone(),
        api,
        prefix,
        catalog_health,
        social_health,
        shutdown,
        workers: handles,
        scratch: Some(scratch),
    }
}

impl TestApp {
    /// A raw AMQP connection to the test broker.
    pub async fn amqp(&self) -> lapin::Connection {
        testkit::broker::connect().await
    }

    /// The catalog database.
    pub async fn mongo(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(mongo_url())
            .await
            .expect("mongo client")
            .database(&self.prefix)
    }

    /// Stops every service, lets them drain, then removes the test's queues, exchanges
    /// and databases.
    pub async fn teardown(mut self) {
        self.shutdown.cancel();
        for worker in std::mem::take(&mut self.workers) {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        drop(self.scratch.take());
    }
}
