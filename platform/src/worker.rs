//! The runtime of a worker service: its consumers and background tasks, run together
//! until shutdown, then drained.
//!
//! A service starts one with [`Worker::start`] — which connects to the broker, declares the
//! service's queues from its message types and serves its health endpoint, all from the
//! [`WorkerSettings`] every worker's configuration embeds — registers its handlers and
//! calls [`Worker::run_until_stopped`]. Consumers ride out broker outages themselves (they
//! resubscribe once the bus has reconnected); should one fail outright all the others
//! are stopped too and the error is returned: a half-alive worker is worse than a restart
//! by the supervisor.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::actor::ActorKey;
use crate::bus::consumer::BatchHandler;
use crate::bus::consumer::{self, ConsumerOptions};
use crate::bus::{Answer, Bus, Queries};
use crate::config::{BusConfig, ConfigError, Source, millis_or, parse_or};
use crate::healthz::{Health, HealthConfig};

/// The settings every worker has, whatever it stores: embedded in each service's
/// configuration so that the variables mean the same everywhere.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Broker settings.
    pub bus: BusConfig,
    /// Verifies the actor the gateway signed into every command.
    pub actor_key: ActorKey,
    /// Where `/livez`, `/readyz`, `/healthz` and `/metrics` listen (`HEALTH_ADDR`).
    pub health_addr: SocketAddr,
    /// Bounds and thresholds of `/healthz`.
    pub health: HealthConfig,
    /// How long in-flight messages may finish after SIGTERM (`GRACE_MS`).
    pub grace: Duration,
    /// Outbox relay sweep interval (`RELAY_INTERVAL_MS`; the relay is also woken after
    /// every commit).
    pub relay_interval: Duration,
    /// Most messages a batching handler takes in one transaction (`BATCH_MAX`).
    pub batch_max: usize,
    /// How long a batch waits to fill once it has a message (`BATCH_WINDOW_MS`).
    pub batch_window: Duration,
}

impl WorkerSettings {
    /// Reads `HEALTH_ADDR` (default `127.0.0.1:<health_port>`), `GRACE_MS`,
    /// `RELAY_INTERVAL_MS`, `BATCH_MAX`, `BATCH_WINDOW_MS`, the health thresholds, the actor
    /// key and the bus variables.
    pub fn from_source(source: &dyn Source, health_port: u16) -> Result<Self, ConfigError> {
        let batch_max: usize = parse_or(source, "BATCH_MAX", 32)?;
        if !(1..=1_000).contains(&batch_max) {
            return Err(ConfigError::new(
                "BATCH_MAX",
                &batch_max.to_string(),
                "must be 1 to 1000",
            ));
        }
        Ok(Self {
            batch_max,
            batch_window: millis_or(
                source,
                "BATCH_WINDOW_MS",
                Duration::from_millis(2),
                0..=1_000,
            )?,
            bus: BusConfig::from_source(source)?,
            actor_key: ActorKey::from_source(source)?,
            health_addr: parse_or(
                source,
                "HEALTH_ADDR",
                SocketAddr::from(([127, 0, 0, 1], health_port)),
            )?,
            health: HealthConfig::from_source(source)?,
            grace: millis_or(source, "GRACE_MS", Duration::from_secs(10), 0..=300_000)?,
            relay_interval: millis_or(
                source,
                "RELAY_INTERVAL_MS",
                Duration::from_secs(1),
                10..=60_000,
            )?,
        })
    }
}

/// Consumers and tasks of one service.
pub struct Worker {
    bus: Bus,
    service: &'static str,
    grace: Duration,
    batch_max: usize,
    batch_window: Duration,
    health_addr: SocketAddr,
    work: CancellationToken,
    background_stop: CancellationToken,
    shutdown: CancellationToken,
    consumers: JoinSet<anyhow::Result<()>>,
    background: JoinSet<()>,
}

impl Worker {
    /// Starts the worker of the service that owns commands `C` and queries `Q` and
    /// subscribes to `events`: connects to the broker, declares its queues (before any
    /// consumer runs, so nothing published meanwhile is unroutable) and serves its health
    /// endpoint with the broker and outbox probes plus those `probes` adds (its database).
    /// `shutdown` stops it; in-flight messages get `settings.grace` to finish.
    pub async fn start<C: contracts::Message, Q: contracts::Message>(
        settings: &WorkerSettings,
        events: &[&str],
        probes: impl FnOnce(Health) -> Health,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let service = C::SERVICE;
        let bus = Bus::connect(&settings.bus, service, false).await?;
        bus.declare_messages::<C, Q>(events).await?;
        let health = probes(
            Health::new(settings.health)
                .with_broker(&bus)
                .with_outbox(bus.metrics().clone()),
        );
        let (health_addr, _health) =
            crate::health::serve(settings.health_addr, bus.clone(), health, shutdown.clone())
                .await
                .context("cannot bind the health endpoint")?;
        tracing::info!(%health_addr, prefix = %settings.bus.prefix, "{service} ready");
        Ok(Self {
            bus,
            service,
            grace: settings.grace,
            batch_max: settings.batch_max,
            batch_window: settings.batch_window,
            health_addr,
            work: shutdown.child_token(),
            background_stop: CancellationToken::new(),
            shutdown,
            consumers: JoinSet::new(),
            background: JoinSet::new(),
        })
    }

    /// The broker connection, for handlers that publish.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Where the health endpoint answers.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// Consumes the service's command queue with `handler` (a [`crate::bus::Handler`], or
    /// a batching one such as [`crate::pg::handle::Batched`]); what cannot be handled is
    /// dead-lettered.
    pub fn commands<H: BatchHandler>(&mut self, handler: H) {
        let queue = self.bus.topology().command_queue(self.service);
        self.consume(queue, true, handler);
    }

    /// Consumes the service's event queue (the events it subscribed to when it declared
    /// its queues) with `handler`; what cannot be handled is dead-lettered.
    pub fn events<H: BatchHandler>(&mut self, handler: H) {
        let queue = self.bus.topology().event_queue(self.service);
        self.consume(queue, true, handler);
    }

    /// Answers the service's query queue with `answers` (decoding, replying and retrying
    /// done by [`Queries`]). Queries have no dead-letter queue: a query that cannot be
    /// answered is answered with a rejection, and one nobody took in time expires.
    pub fn queries<A: Answer>(&mut self, answers: A) {
        let queue = self.bus.topology().query_queue(self.service);
        self.consume(queue, false, Queries(answers));
    }

    /// Consumes `queue` with `handler`. `dead_letters` says whether the queue has a DLQ.
    fn consume<H: BatchHandler>(&mut self, queue: String, dead_letters: bool, handler: H) {
        let options = ConsumerOptions {
            queue,
            dead_letters,
            grace: self.grace,
            retry_pause: Duration::from_millis(500),
            batch_max: self.batch_max,
            batch_window: self.batch_window,
        };
        self.consumers.spawn(consumer::run(
            self.bus.clone(),
            options,
            Arc::new(handler),
            self.work.clone(),
        ));
    }

    /// Runs the outbox relay of `pool` on this worker's bus (a pass every `interval`, and
    /// whenever a handler wakes it) until shutdown; returns it for the handlers.
    #[cfg(feature = "pg")]
    pub fn relay(
        &mut self,
        pool: &crate::pg::Pool,
        interval: Duration,
    ) -> crate::pg::outbox::Relay {
        let relay = crate::pg::outbox::Relay::new(pool.clone(), self.bus.clone());
        let running = relay.clone();
        self.spawn(move |stop| running.run(interval, stop));
        relay
    }

    /// Runs a background task (an outbox relay) that must stop when `token` is cancelled;
    /// it is cancelled only after the consumers have drained.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task(self.background_stop.clone()));
    }

    /// Runs until shutdown or a consumer failure, then drains and closes the connection.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(finished) = self.consumers.join_next().await {
            let outcome = finished.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(error) = outcome {
                if result.is_ok() {
                    result = Err(error);
                }
                self.work.cancel();
            }
        }
        self.work.cancel();
        // Only now, so events committed by the last drained messages still go out.
        self.background_stop.cancel();
        while self.background.join_next().await.is_some() {}
        self.shutdown.cancel();
        self.bus.close().await;
        tracing::info!("{} stopped", self.service);
        result
    }
}
