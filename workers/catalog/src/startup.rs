//! Building and running the catalog worker: connect, declare, consume, relay, drain.

use std::net::SocketAddr;

use anyhow::Context as _;
use contracts::catalog::SERVICE;
use platform::bus::Bus;
use platform::healthz::{Health, Probe};
use platform::worker::Worker;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::CatalogConfig;
use crate::handlers::commands::CommandHandler;
use crate::handlers::events::{EventHandler, SUBSCRIPTIONS};
use crate::handlers::queries::QueryHandler;
use crate::store::{Store, outbox};

/// A built catalog worker, connected and declared, not yet consuming.
pub struct Application {
    worker: Worker,
    health_addr: SocketAddr,
}

impl Application {
    /// Connects to MongoDB and RabbitMQ, declares the catalog's queues and starts the
    /// health endpoint. `shutdown` stops everything when cancelled.
    pub async fn build(config: CatalogConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let store = Store::connect(config.mongo_url.expose_secret(), &config.mongo_db)
            .await
            .context("cannot reach MongoDB")?;
        let bus = Bus::connect(&config.bus, SERVICE, false).await?;
        declare(&bus).await?;
        let health = Health::new(config.health)
            .with_broker(&bus)
            .with("mongodb", {
                let store = store.clone();
                move || {
                    let store = store.clone();
                    async move {
                        match store.ping().await {
                            Ok(()) => Probe::up(),
                            Err(error) => Probe::down(error.to_string()),
                        }
                    }
                }
            })
            .with_outbox(bus.metrics.clone());
        let (health_addr, _health) =
            platform::health::serve(config.health_addr, bus.clone(), health, shutdown.clone())
                .await
                .context("cannot bind the health endpoint")?;
        let mut worker = Worker::new(bus.clone(), SERVICE, config.grace, shutdown);
        worker.commands(CommandHandler::new(
            store.clone(),
            bus.clone(),
            config.actor_key.clone(),
        ));
        worker.events(EventHandler::new(store.clone()));
        worker.queries(QueryHandler::new(store.clone()));
        let interval = config.relay_interval;
        worker.spawn(move |stop| outbox::run_relay(bus, store, interval, stop));
        tracing::info!(%health_addr, prefix = %config.bus.prefix, "catalog ready");
        Ok(Self {
            worker,
            health_addr,
        })
    }

    /// Where `/livez` and `/readyz` answer.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// Consumes commands, events and queries and relays events until shutdown; then
    /// drains in-flight messages within the grace period and flushes the outbox once more.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.worker.run_until_stopped().await;
        tracing::info!("catalog stopped");
        result
    }
}

/// Declares the catalog queues.
pub async fn declare(bus: &Bus) -> anyhow::Result<()> {
    bus.declare_messages::<contracts::catalog::CatalogCommand, contracts::catalog::CatalogQuery>(
        &SUBSCRIPTIONS,
    )
    .await
}

impl platform::cli::Service for Application {
    const NAME: &'static str = "catalog";
    const HEALTH_VARIABLE: &'static str = "HEALTH_ADDR";
    const HEALTH_DEFAULT: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9101);
    type Config = CatalogConfig;

    fn config(
        source: &dyn platform::config::Source,
    ) -> Result<Self::Config, platform::config::ConfigError> {
        CatalogConfig::from_source(source)
    }

    async fn build(config: Self::Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Application::build(config, shutdown).await
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        Application::run_until_stopped(self).await
    }
}
