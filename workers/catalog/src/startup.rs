//! Building and running the catalog worker: connect, declare, consume, relay, drain.

use anyhow::Context as _;
use contracts::catalog::{CatalogCommand, CatalogQuery};
use platform::cli::Service;
use platform::config::{ConfigError, Source};
use platform::healthz::Probe;
use platform::worker::Worker;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{CatalogConfig, HEALTH_PORT};
use crate::handlers::commands::CommandHandler;
use crate::handlers::events::{EventHandler, SUBSCRIPTIONS};
use crate::handlers::queries::QueryHandler;
use crate::metrics::CatalogMetrics;
use crate::store::{Store, outbox};

/// A built catalog worker, connected and declared, not yet consuming.
pub struct Application {
    worker: Worker,
}

impl Application {
    /// Where `/livez` and `/readyz` answer.
    pub fn health_addr(&self) -> std::net::SocketAddr {
        self.worker.health_addr()
    }
}

impl Service for Application {
    const NAME: &'static str = "catalog";
    const HEALTH_PORT: u16 = HEALTH_PORT;
    type Config = CatalogConfig;

    fn config(source: &dyn Source) -> Result<CatalogConfig, ConfigError> {
        CatalogConfig::from_source(source)
    }

    /// Connects to MongoDB and RabbitMQ, declares the catalog's queues and starts the
    /// health endpoint. `shutdown` stops everything when cancelled.
    async fn build(config: CatalogConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let store = Store::connect(config.mongo_url.expose_secret(), &config.mongo_db)
            .await
            .context("cannot reach MongoDB")?;
        let ping = store.clone();
        let mut worker = Worker::start::<CatalogCommand, CatalogQuery>(
            &config.worker,
            &SUBSCRIPTIONS,
            |health| {
                health.with("mongodb", move || {
                    let store = ping.clone();
                    async move {
                        match store.ping().await {
                            Ok(()) => Probe::up(),
                            Err(error) => Probe::down(error.to_string()),
                        }
                    }
                })
            },
            shutdown,
        )
        .await?;
        let bus = worker.bus().clone();
        let metrics = CatalogMetrics::register(bus.metrics());
        worker.commands(CommandHandler::new(
            store.clone(),
            bus.clone(),
            config.worker.actor_key.clone(),
            metrics,
        ));
        worker.events(EventHandler::new(store.clone()));
        worker.queries(QueryHandler::new(store.clone()));
        let interval = config.worker.relay_interval;
        worker.spawn(move |stop| outbox::run_relay(bus, store, interval, stop));
        Ok(Self { worker })
    }

    /// Consumes commands, events and queries and relays events until shutdown; then
    /// drains in-flight messages within the grace period and flushes the outbox once more.
    async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.worker.run_until_stopped().await
    }
}
