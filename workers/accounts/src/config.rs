//! Accounts configuration.

use std::time::Duration;

use platform::config::{ConfigError, Source, parse_or};
use platform::password::HashParams;
use platform::pg::PgConfig;
use platform::worker::WorkerSettings;

/// Where the accounts worker's health endpoint listens unless `HEALTH_ADDR` says otherwise.
pub const HEALTH_PORT: u16 = 9102;

/// Everything the accounts worker needs to start.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// What every worker has: broker, actor key, health endpoint, grace, relay interval.
    pub worker: WorkerSettings,
    /// Database settings.
    pub pg: PgConfig,
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    /// argon2id cost, used for the timing decoy and `create-admin`.
    pub hash: HashParams,
    /// Encrypts the token signing keys at rest.
    pub vault: crate::vault::KeyVault,
}

impl AccountsConfig {
    /// Reads the worker settings, `TOKEN_TTL_SECS`, `ARGON2_*`, the key vault's and the
    /// PostgreSQL variables.
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
            worker: WorkerSettings::from_source(source, HEALTH_PORT)?,
            vault: crate::vault::KeyVault::from_source(source)?,
            pg: PgConfig::from_source(source, "accounts")?,
            token_ttl: Duration::from_secs(ttl),
            hash: HashParams::from_source(source)?,
        })
    }
}
