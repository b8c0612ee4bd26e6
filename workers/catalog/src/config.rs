//! Catalog configuration: the bus settings plus MongoDB and the health port.

use platform::config::{ConfigError, Source};
use platform::worker::WorkerSettings;
use secrecy::SecretString;

/// Where the catalog's health endpoint listens unless `HEALTH_ADDR` says otherwise.
pub const HEALTH_PORT: u16 = 9101;

/// Everything the catalog worker needs to start.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// What every worker has: broker, actor key, health endpoint, grace, relay interval.
    pub worker: WorkerSettings,
    /// MongoDB connection string (may carry credentials).
    pub mongo_url: SecretString,
    /// Database name.
    pub mongo_db: String,
}

impl CatalogConfig {
    /// Reads `MONGO_URL`, `MONGO_DB` and the worker settings.
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
            worker: WorkerSettings::from_source(source, HEALTH_PORT)?,
            mongo_url: SecretString::from(mongo_url),
            mongo_db,
        })
    }
}
