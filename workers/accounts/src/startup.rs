//! Building and running the accounts worker.

use std::sync::Arc;

use contracts::accounts::{AccountsCommand, AccountsQuery};
use platform::cli::Service;
use platform::config::{ConfigError, Source};
use platform::password;
use platform::pg::Pool;
use platform::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::config::{AccountsConfig, HEALTH_PORT};
use platform::pg::handle::Batched;

use crate::handlers::commands::CommandHandler;
use crate::handlers::queries::QueryHandler;
use crate::keys::KeyRing;
use crate::metrics::AccountsMetrics;

/// A built accounts worker: migrated, keyed, declared, not yet consuming.
pub struct Application {
    worker: Worker,
    pool: Pool,
}

impl Application {
    /// Where `/livez` and `/readyz` answer.
    pub fn health_addr(&self) -> std::net::SocketAddr {
        self.worker.health_addr()
    }

    /// The database pool (for tests and one-off commands).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Service for Application {
    const NAME: &'static str = "accounts";
    const HEALTH_PORT: u16 = HEALTH_PORT;
    type Config = AccountsConfig;

    fn config(source: &dyn Source) -> Result<AccountsConfig, ConfigError> {
        AccountsConfig::from_source(source)
    }

    /// Migrates the database, loads (or creates) the signing key, declares the queues and
    /// starts the health endpoint.
    async fn build(config: AccountsConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::pg::open(&config.pg, &crate::MIGRATIONS).await?;
        let keys = Arc::new(KeyRing::load_or_create(&pool, &config.vault).await?);
        let params = config.hash;
        let decoy = tokio::task::spawn_blocking(move || {
            password::hash("decoy password for timing", params)
        })
        .await?
        .map_err(anyhow::Error::msg)?;
        let mut worker = Worker::start::<AccountsCommand, AccountsQuery>(
            &config.worker,
            &[],
            |health| health.with_postgres(pool.clone()),
            shutdown,
        )
        .await?;
        let metrics = AccountsMetrics::register(worker.bus().metrics());
        let relay = worker.relay(&pool, config.worker.relay_interval);
        worker.commands(Batched::commands(
            pool.clone(),
            relay.clone(),
            CommandHandler::new(config.worker.actor_key.clone(), metrics.clone()),
        ));
        worker.queries(QueryHandler::new(
            pool.clone(),
            keys,
            config.token_ttl,
            decoy,
            metrics,
        ));
        Ok(Self { worker, pool })
    }

    /// Consumes until shutdown, then drains.
    async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.worker.run_until_stopped().await
    }
}
