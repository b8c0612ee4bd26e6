//! Social configuration.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{BusConfig, ConfigError, Source, millis_or, parse_or};
use platform::pg::PgConfig;

/// Everything the social worker needs to start.
#[derive(Debug, Clone)]
pub struct SocialConfig {
    /// Broker settings.
    pub bus: BusConfig,
    /// Signs (gateway) or verifies (workers) the actor of every command.
    pub actor_key: platform::actor::ActorKey,
    /// Database settings.
    pub pg: PgConfig,
    /// Where `/livez` and `/readyz` listen.
    pub health_addr: SocketAddr,
    /// Bounds and thresholds of `/healthz`.
    pub health: platform::healthz::HealthConfig,
    /// How long in-flight messages may finish after SIGTERM.
    pub grace: Duration,
    /// Outbox relay tick (it is also woken after every commit).
    pub relay_interval: Duration,
}

impl SocialConfig {
    /// Reads `HEALTH_ADDR`, `GRACE_MS`, `RELAY_INTERVAL_MS`, the PostgreSQL and the bus
    /// variables.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            bus: BusConfig::from_source(source)?,
            actor_key: platform::actor::ActorKey::from_source(source)?,
            pg: PgConfig::from_source(source, "social")?,
            health_addr: parse_or(
                source,
                "HEALTH_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 9103)),
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
