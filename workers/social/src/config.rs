//! Social configuration.

use platform::config::{ConfigError, Source};
use platform::pg::PgConfig;
use platform::worker::WorkerSettings;

/// Where the social worker's health endpoint listens unless `HEALTH_ADDR` says otherwise.
pub const HEALTH_PORT: u16 = 9103;

/// Everything the social worker needs to start.
#[derive(Debug, Clone)]
pub struct SocialConfig {
    /// What every worker has: broker, actor key, health endpoint, grace, relay interval.
    pub worker: WorkerSettings,
    /// Database settings.
    pub pg: PgConfig,
}

impl SocialConfig {
    /// Reads the worker settings and the PostgreSQL variables.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            worker: WorkerSettings::from_source(source, HEALTH_PORT)?,
            pg: PgConfig::from_source(source, "social")?,
        })
    }
}
