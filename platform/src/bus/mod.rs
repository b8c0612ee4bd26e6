//! The AMQP bus: one connection per process, topology declared once at startup, a
//! confirmed publisher on a few shared channels, a consumer loop and request-reply.
//!
//! Layers: [`envelope`] maps contract metadata onto AMQP properties; [`topology`] names and
//! declares exchanges and queues; [`publisher`] sends with confirms (and, for the gateway,
//! receives direct replies); [`consumer`] runs handlers with manual acks.

pub mod consumer;
pub mod envelope;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::config::BusConfig;
pub use consumer::{ConsumerOptions, Disposition, Handler, Incoming};
pub use publisher::{Outgoing, PublishError, Publisher, Reply, ReplyError};
pub use topology::Topology;

/// A connected bus: the connection, the names, and a publisher.
#[derive(Clone)]
pub struct Bus {
    connection: std::sync::Arc<Connection>,
    /// Exchange and queue names.
    pub topology: Topology,
    /// Shared confirmed publisher.
    pub publisher: Publisher,
    /// The settings it was built with.
    pub config: BusConfig,
    /// The service's metrics (the bus is the one thing every service has).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Bus {
    /// Connects, declares the exchanges, and opens the publishing channels. `with_replies`
    /// makes those channels also receive direct replies (the gateway needs that; workers
    /// only send replies).
    pub async fn connect(
        config: &BusConfig,
        connection_name: &str,
        with_replies: bool,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let properties =
            ConnectionProperties::default().with_connection_name(connection_name.to_owned().into());
        let connection = Connection::connect(config.amqp_url.expose_secret(), properties)
            .await
            .context("cannot connect to RabbitMQ")?;
        let topology = Topology::new(&config.prefix);
        let channel = connection
            .create_channel()
            .await
            .context("cannot open a channel")?;
        topology
            .declare_exchanges(&channel)
            .await
            .context("cannot declare exchanges")?;
        // The declaring channel is not reused for traffic; closing it keeps the channel
        // count equal to what the publisher and consumers need.
        let _ = channel.close(200, "topology declared".into()).await;
        let metrics = crate::metrics::Metrics::new();
        let publisher = Publisher::open(
            &connection,
            config.publish_channels,
            config.confirm_timeout,
            with_replies,
            metrics.clone(),
            &config.prefix,
        )
        .await
        .context("cannot open publishing channels")?;
        Ok(Self {
            connection: std::sync::Arc::new(connection),
            topology,
            publisher,
            config: config.clone(),
            metrics,
        })
    }

    /// The underlying connection, to open consumer channels.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// True while the connection and every publishing channel are usable.
    pub fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.publisher.is_healthy()
    }

    /// The metrics exposition, with the connection gauge brought up to date.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .broker_connected
            .set(i64::from(self.is_healthy()));
        self.metrics.encode()
    }

    /// Declares a service's queues: its command queue (with DLQ) bound to `commands`, its
    /// event queue (with DLQ) bound to `events` if it subscribes to any, and its query
    /// queue bound to `queries`. Idempotent; called once at startup.
    pub async fn declare_service(
        &self,
        service: &str,
        commands: &[&str],
        events: &[&str],
        queries: &[&str],
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let channel = self.connection.create_channel().await?;
        let topology = &self.topology;
        topology
            .declare_work_queue(
                &channel,
                &topology.command_queue(service),
                &topology.commands_exchange(),
                commands,
            )
            .await
            .context("cannot declare the command queue")?;
        if !events.is_empty() {
            topology
                .declare_work_queue(
                    &channel,
                    &topology.event_queue(service),
                    &topology.events_exchange(),
                    events,
                )
                .await
                .context("cannot declare the event queue")?;
        }
        topology
            .declare_query_queue(&channel, service, queries)
            .await
            .context("cannot declare the query queue")?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Closes the connection politely so the broker requeues nothing it need not.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "shutting down".into()).await;
    }
}
