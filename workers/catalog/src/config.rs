//! Catalog configuration: the bus settings plus MongoDB and the health port.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{BusConfig, ConfigError, Source, millis_or, parse_or};
use secrecy::SecretString;

/// Everything the catalog worker needs to start.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Broker settings.
    pub bus: BusConfig,
    /// Signs (gateway) or verifies (workers) the actor of every command.
    pub actor_key: platform::actor::ActorKey,
    /// MongoDB connection string (may carry credentials).
    pub mongo_url: SecretString,
    /// Database name.
    pub mongo_db: String,
    /// Where `/livez` and `/readyz` listen.
    pub health_addr: SocketAddr,
    /// Bounds and thresholds of `/healthz`.
    pub health: platform::healthz::HealthConfig,
    /// How long in-flight messages may finish after SIGTERM.
    pub grace: Duration,
    /// How often the outbox relay sweeps for events not yet published.
    pub relay_interval: Duration,
}

impl CatalogConfig {
    /// Reads `MONGO_URL`, `MONGO_DB`, `HEALTH_ADDR`, `GRACE_MS`, `RELAY_INTERVAL_MS` and
    /// the bus variables.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let mongo_url = source
            .get("MONGO_URL")
            .unwrap_or_else(|| "mongodb://127.0.0.1:27017".to_owned());
        if !(mongo_url.starts_with("mongodb://") || mongo_url.starts_with("mongodb+srv://")) {
            return Err(ConfigError::new(
                "MONGO_URL",
                "<hidden>",
                "must start with mongodb://",
            ));
        }
        let mongo_db = source
            .get("MONGO_DB")
            .unwrap_or_else(|| "catalog".to_owned());
        let db_ok = !mongo_db.is_empty()
            && mongo_db.len() <= 63
            && mongo_db
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !db_ok {
            return Err(ConfigError::new(
                "MONGO_DB",
                &mongo_db,
                "use 1-63 of [A-Za-z0-9_-]",
            ));
        }
        Ok(Self {
            bus: BusConfig::from_source(source)?,
            actor_key: platform::actor::ActorKey::from_source(source)?,
            mongo_url: SecretString::from(mongo_url),
            mongo_db,
            health_addr: parse_or(
                source,
                "HEALTH_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 9101)),
            )?,
            health: platform::healthz::HealthConfig::from_source(source)?,
            grace: millis_or(source, "GRACE_MS", Duration::from_secs(10), 0..=300_000)?,
            relay_interval: millis_or(
                source,
                "RELAY_INTERVAL_MS",
                Duration::from_secs(1),
                10..=60_000,
            )?,
        })
    }
}
