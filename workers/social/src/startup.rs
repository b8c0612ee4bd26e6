//! Building and running the social worker.

use contracts::social::{SocialCommand, SocialQuery};
use platform::cli::Service;
use platform::config::{ConfigError, Source};
use platform::pg::Pool;
use platform::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::config::{HEALTH_PORT, SocialConfig};
use platform::pg::handle::Batched;

use crate::handlers::commands::CommandHandler;
use crate::handlers::events::{EventHandler, SUBSCRIPTIONS};
use crate::handlers::queries::QueryHandler;
use crate::metrics::SocialMetrics;

/// A built social worker: migrated, declared, not yet consuming.
pub struct Application {
    worker: Worker,
    pool: Pool,
}

impl Application {
    /// Where `/livez` and `/readyz` answer.
    pub fn health_addr(&self) -> std::net::SocketAddr {
        self.worker.health_addr()
    }

    /// The database pool (for tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Service for Application {
    const NAME: &'static str = "social";
    const HEALTH_PORT: u16 = HEALTH_PORT;
    type Config = SocialConfig;

    fn config(source: &dyn Source) -> Result<SocialConfig, ConfigError> {
        SocialConfig::from_source(source)
    }

    /// Migrates the database, declares the queues and starts the health endpoint.
    async fn build(config: SocialConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::pg::open(&config.pg, &crate::MIGRATIONS).await?;
        let mut worker = Worker::start::<SocialCommand, SocialQuery>(
            &config.worker,
            &SUBSCRIPTIONS,
            |health| health.with_postgres(pool.clone()),
            shutdown,
        )
        .await?;
        let metrics = SocialMetrics::register(worker.bus().metrics());
        let relay = worker.relay(&pool, config.worker.relay_interval);
        worker.commands(Batched::commands(
            pool.clone(),
            relay.clone(),
            CommandHandler::new(config.worker.actor_key.clone(), metrics),
        ));
        worker.events(Batched::events(pool.clone(), relay.clone(), EventHandler));
        worker.queries(QueryHandler::new(pool.clone()));
        Ok(Self { worker, pool })
    }

    /// Consumes until shutdown, then drains.
    async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.worker.run_until_stopped().await
    }
}
