//! PostgreSQL for the services that use it: pool, migrations, and the inbox / outbox /
//! operations tables that make handling exactly-once in effect.
//!
//! The pattern, for every message: open a transaction, claim the message id in the inbox
//! (a duplicate stops here), apply the change, write the outcome and any events to the
//! outbox, commit, and only then acknowledge. The relay publishes the outbox with confirms.

pub mod handle;
pub mod migrate;
pub mod outbox;
pub mod prepared;
pub mod transient;

use std::str::FromStr;

pub use deadpool_postgres::{GenericClient, Pool, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, Source, parse_or};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user:pass@host:port/db`; secret because it may hold a password.
    pub url: SecretString,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl PgConfig {
    /// Reads `POSTGRES_URL` (default: the local server, database `default_db`) and
    /// `POSTGRES_POOL`.
    pub fn from_source(source: &dyn Source, default_db: &str) -> Result<Self, ConfigError> {
        let url = source
            .get("POSTGRES_URL")
            .unwrap_or_else(|| format!("postgres://postgres@127.0.0.1:5432/{default_db}"));
        if tokio_postgres::Config::from_str(&url).is_err() {
            return Err(ConfigError::new(
                "POSTGRES_URL",
                "<hidden>",
                "not a PostgreSQL URL",
            ));
        }
        let pool_size: usize = parse_or(source, "POSTGRES_POOL", 16)?;
        if !(1..=256).contains(&pool_size) {
            return Err(ConfigError::new(
                "POSTGRES_POOL",
                &pool_size.to_string(),
                "must be 1 to 256",
            ));
        }
        Ok(Self {
            url: SecretString::from(url),
            pool_size,
        })
    }
}

/// Builds a pool; connections open lazily.
pub fn pool(config: &PgConfig) -> anyhow::Result<Pool> {
    let pg = tokio_postgres::Config::from_str(config.url.expose_secret())?;
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        // Fast recycling skips a round trip per checkout; a broken connection surfaces as
        // an error on use and is then dropped by the pool.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(config.pool_size).build()?)
}

/// A service's database, ready for work: the pool, with every migration applied.
pub async fn open(config: &PgConfig, migrations: &[migrate::Migration]) -> anyhow::Result<Pool> {
    let pool = pool(config)?;
    migrate::run(&pool, migrations).await?;
    Ok(pool)
}

/// The whole story of a database error: `Display` of `tokio_postgres::Error` says only
/// "db error", which helps nobody reading a log.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Whether `error` is a unique violation, optionally of the named constraint.
pub fn is_unique_violation(error: &tokio_postgres::Error, constraint: Option<&str>) -> bool {
    error.as_db_error().is_some_and(|db| {
        db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && constraint.is_none_or(|name| db.constraint() == Some(name))
    })
}
