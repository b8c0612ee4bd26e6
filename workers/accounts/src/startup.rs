//! Building and running the accounts worker.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use contracts::accounts::SERVICE;
use platform::bus::Bus;
use platform::healthz::Health;
use platform::pg::outbox::Relay;
use platform::pg::{Pool, migrate};
use platform::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::config::AccountsConfig;
use crate::handlers::commands::CommandHandler;
use crate::handlers::queries::QueryHandler;
use crate::keys::KeyRing;
use platform::password;

/// A built accounts worker: migrated, keyed, declared, not yet consuming.
pub struct Application {
    worker: Worker,
    health_addr: SocketAddr,
    pool: Pool,
}

impl Application {
    /// Migrates the database, loads (or creates) the signing key, declares the queues and
    /// starts the health endpoint.
    pub async fn build(
        config: AccountsConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = platform::pg::pool(&config.pg)?;
        migrate::run(&pool, &crate::MIGRATIONS).await?;
        let keys = Arc::new(KeyRing::load_or_create(&pool, &config.vault).await?);
        let params = config.hash;
        let decoy = tokio::task::spawn_blocking(move || {
            password::hash("decoy password for timing", params)
        })
        .await?
        .map_err(anyhow::Error::msg)?;
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
        worker.queries(QueryHandler::new(
            pool.clone(),
            keys,
            config.token_ttl,
            decoy,
            relay.metrics().clone(),
        ));
        let interval = config.relay_interval;
        worker.spawn(move |stop| relay.run(interval, stop));
        tracing::info!(%health_addr, prefix = %config.bus.prefix, "accounts ready");
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

    /// The database pool (for tests and one-off commands).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Consumes until shutdown, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.worker.run_until_stopped().await;
        tracing::info!("accounts stopped");
        result
    }
}

/// Declares the accounts queues.
pub async fn declare(bus: &Bus) -> anyhow::Result<()> {
    bus.declare_messages::<contracts::accounts::AccountsCommand, contracts::accounts::AccountsQuery>(&[])
        .await
}

impl platform::cli::Service for Application {
    const NAME: &'static str = "accounts";
    const HEALTH_VARIABLE: &'static str = "HEALTH_ADDR";
    const HEALTH_DEFAULT: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9102);
    type Config = AccountsConfig;

    fn config(
        source: &dyn platform::config::Source,
    ) -> Result<Self::Config, platform::config::ConfigError> {
        AccountsConfig::from_source(source)
    }

    async fn build(config: Self::Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Application::build(config, shutdown).await
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        Application::run_until_stopped(self).await
    }
}
