//! Accounts configuration.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{BusConfig, ConfigError, Source, millis_or, parse_or};
use platform::pg::PgConfig;

use platform::password::HashParams;

/// Everything the accounts worker needs to start.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
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
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    /// argon2id cost, used for the timing decoy and `create-admin`.
    pub hash: HashParams,
    /// How long in-flight messages may finish after SIGTERM.
    pub grace: Duration,
    /// Outbox relay tick (it is also woken after every commit).
    pub relay_interval: Duration,
    /// Encrypts the token signing keys at rest.
    pub vault: crate::vault::KeyVault,
}

impl AccountsConfig {
    /// Reads `HEALTH_ADDR`, `TOKEN_TTL_SECS`, `ARGON2_*`, `GRACE_MS`, `RELAY_INTERVAL_MS`,
    /// the PostgreSQL and the bus variables.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let ttl: u64 = parse_or(source, "TOKEN_TTL_SECS", 3600)?;
        if !(60..=86_400).contains(&ttl) {
            return Err(ConfigError::new(
                "TOKEN_TTL_SECS",
                &ttl.to_string(),
                "must be 60 to 86400",
            ));
        }
        Ok(Self {
            bus: BusConfig::from_source(source)?,
            actor_key: platform::actor::ActorKey::from_source(source)?,
            vault: crate::vault::KeyVault::from_source(source)?,
            pg: PgConfig::from_source(source, "accounts")?,
            health_addr: parse_or(
                source,
                "HEALTH_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 9102)),
            )?,
            health: platform::healthz::HealthConfig::from_source(source)?,
            token_ttl: Duration::from_secs(ttl),
            hash: HashParams::from_source(source)?,
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
