//! Building and running the catalog worker: connect, declare, consume, relay, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use contracts::catalog::{SERVICE, commands, queries};
use platform::bus::Bus;
use platform::bus::consumer::{self, ConsumerOptions};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::CatalogConfig;
use crate::handlers::commands::CommandHandler;
use crate::handlers::queries::QueryHandler;
use crate::store::{Store, outbox};

/// A built catalog worker, connected and declared, not yet consuming.
pub struct Application {
    config: CatalogConfig,
    bus: Bus,
    store: Store,
    health_addr: SocketAddr,
    health: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
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
        let ready_bus = bus.clone();
        let ready = Arc::new(move || ready_bus.is_healthy());
        let (health_addr, health) =
            platform::health::serve(config.health_addr, ready, shutdown.clone())
                .await
                .context("cannot bind the health endpoint")?;
        tracing::info!(%health_addr, prefix = %config.bus.prefix, "catalog ready");
        Ok(Self {
            config,
            bus,
            store,
            health_addr,
            health,
            shutdown,
        })
    }

    /// Where `/livez` and `/readyz` answer.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// Consumes commands and queries and relays events until shutdown; then drains
    /// in-flight messages within the grace period and flushes the outbox once more.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let topology = &self.bus.topology;
        let work = self.shutdown.child_token();
        let options = |queue: String, dead_letters: bool| ConsumerOptions {
            queue,
            dead_letters,
            grace: self.config.grace,
            retry_pause: std::time::Duration::from_millis(500),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(consumer::run(
            self.bus.clone(),
            options(topology.command_queue(SERVICE), true),
            Arc::new(CommandHandler::new(self.store.clone(), self.bus.clone())),
            work.clone(),
        ));
        tasks.spawn(consumer::run(
            self.bus.clone(),
            options(topology.query_queue(SERVICE), false),
            Arc::new(QueryHandler::new(self.store.clone())),
            work.clone(),
        ));
        let relay = tokio::spawn(outbox::run_relay(
            self.bus.clone(),
            self.store.clone(),
            self.config.relay_interval,
            work.clone(),
        ));
        let mut result = Ok(());
        while let Some(finished) = tasks.join_next().await {
            let outcome = finished.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(error) = outcome {
                // One consumer failing (the broker went away) stops the rest: a half-alive
                // worker is worse than a restart by the supervisor.
                if result.is_ok() {
                    result = Err(error);
                }
                work.cancel();
            }
        }
        work.cancel();
        let _ = relay.await;
        self.shutdown.cancel();
        let _ = self.health.await;
        self.bus.close().await;
        tracing::info!("catalog stopped");
        result
    }
}

/// Declares the catalog's command queue (with its dead-letter queue) and query queue.
pub async fn declare(bus: &Bus) -> anyhow::Result<()> {
    let channel = bus.connection().create_channel().await?;
    let topology = &bus.topology;
    topology
        .declare_work_queue(
            &channel,
            &topology.command_queue(SERVICE),
            &topology.commands_exchange(),
            &commands::ALL,
        )
        .await
        .context("cannot declare the command queue")?;
    topology
        .declare_query_queue(&channel, SERVICE, &queries::ALL)
        .await
        .context("cannot declare the query queue")?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}
