//! Building and running the social worker.

use std::net::SocketAddr;

use anyhow::Context as _;
use contracts::social::SERVICE;
use platform::bus::Bus;
use platform::healthz::Health;
use platform::pg::outbox::Relay;
use platform::pg::{Pool, migrate};
use platform::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::config::SocialConfig;
use crate::handlers::commands::CommandHandler;
use crate::handlers::events::{EventHandler, SUBSCRIPTIONS};
use crate::handlers::queries::QueryHandler;

/// A built social worker: migrated, declared, not yet consuming.
pub struct Application {
    worker: Worker,
    health_addr: SocketAddr,
    pool: Pool,
}

impl Application {
    /// Migrates the database, declares the queues and starts the health endpoint.
    pub async fn build(config: SocialConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::pg::pool(&config.pg)?;
        migrate::run(&pool, &crate::MIGRATIONS).await?;
        let bus = Bus::connect(&config.bus, SERVICE, false).await?;
        declare(&bus).await?;
        let health = Health::new(config.health)
            .with_broker(&bus)
            .with_postgres(pool.clone())
            .with_outbox(bus.metrics.clone());
        let (health_addr, _health) =
            platform::health::serve(config.health_addr, bus.clone(), health, shutdown.clone())
                .await
                .context("cannot bind the health endpoint")?;
        let relay = Relay::new(pool.clone(), bus.clone());
        let mut worker = Worker::new(bus, SERVICE, config.grace, shutdown);
        worker.commands(CommandHandler::new(
            pool.clone(),
            relay.clone(),
            config.actor_key.clone(),
        ));
        worker.events(EventHandler::new(pool.clone(), relay.clone()));
        worker.queries(QueryHandler::new(pool.clone()));
        let interval = config.relay_interval;
        worker.spawn(move |stop| relay.run(interval, stop));
        tracing::info!(%health_addr, prefix = %config.bus.prefix, "social ready");
        Ok(Self {
            worker,
            health_addr,
            pool,
        })
    }

    /// Where `/livez` and `/readyz` answer.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The database pool (for tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Consumes until shutdown, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.worker.run_until_stopped().await;
        tracing::info!("social stopped");
        result
    }
}

/// Declares the social queues.
pub async fn declare(bus: &Bus) -> anyhow::Result<()> {
    bus.declare_messages::<contracts::social::SocialCommand, contracts::social::SocialQuery>(
        &SUBSCRIPTIONS,
    )
    .await
}

impl platform::cli::Service for Application {
    const NAME: &'static str = "social";
    const HEALTH_VARIABLE: &'static str = "HEALTH_ADDR";
    const HEALTH_DEFAULT: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9103);
    type Config = SocialConfig;

    fn config(
        source: &dyn platform::config::Source,
    ) -> Result<Self::Config, platform::config::ConfigError> {
        SocialConfig::from_source(source)
    }

    async fn build(config: Self::Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Application::build(config, shutdown).await
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        Application::run_until_stopped(self).await
    }
}
