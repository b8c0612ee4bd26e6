//! The AMQP bus: one connection per process, re-established (with its topology) whenever
//! it drops, a confirmed publisher on a few shared channels, a consumer loop with retries
//! through delay queues, and request-reply.
//!
//! Layers: [`envelope`] maps contract metadata onto AMQP properties; [`topology`] names and
//! declares exchanges and queues; [`publisher`] sends with confirms (and, for the gateway,
//! receives direct replies); [`consumer`] runs handlers with manual acks; [`typed`] puts
//! contract messages on all of that, travelling as their kind decides.

pub mod consumer;
pub mod dead_letter;
pub mod envelope;
pub mod publisher;
pub mod queries;
pub mod topology;
pub mod typed;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::BusConfig;
pub use consumer::{ConsumerOptions, DeadLetter, Disposition, Handler, Incoming};
pub use publisher::{
    BlockState, Outgoing, PublishError, Publisher, Reply, ReplyError, ReplyWaiter,
};
pub use queries::{Answer, Queries, QueryFailure};
pub use topology::Topology;
pub use typed::{Encoded, decode};

/// How often the supervisor looks at the connection and the publishing channels.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait for one connection attempt (TCP, TLS and AMQP handshake).
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause between reconnection attempts.
const RECONNECT_BASE: Duration = Duration::from_millis(100);

/// A bus that survives the broker: the current connection, the names, and a publisher.
///
/// A supervisor task watches the connection. When it (or a publishing channel) drops, the
/// bus reports itself unhealthy (`/readyz` 503), publishes fail at once with
/// [`PublishError::Unavailable`] (the gateway answers 503 with `Retry-After` instead of
/// hanging or buffering), and the supervisor reconnects with jittered exponential backoff,
/// re-declares the exchanges and every queue declared through [`Bus::declare_service`],
/// and reopens the publishing channels; consumers resubscribe by themselves once
/// [`Bus::connected`] hands them the new connection.
#[derive(Clone)]
pub struct Bus {
    link: Arc<Link>,
    topology: Topology,
    publisher: Publisher,
    config: BusConfig,
    metrics: Arc<crate::metrics::Metrics>,
}

/// The connection as it stands, and what must be re-declared on a new one.
struct Link {
    name: String,
    current: RwLock<Option<Arc<Connection>>>,
    /// Bumped on every (re)connection; `connected` is false while the broker is away.
    state: watch::Sender<LinkState>,
    services: Mutex<Vec<ServiceQueues>>,
    closing: CancellationToken,
    /// Set while the broker blocks this connection's publishers (a resource alarm).
    blocked: Arc<BlockState>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    generation: u64,
    connected: bool,
}

/// The broker connection as a readiness check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    /// Connected; publishing works.
    Up,
    /// Connected, but the broker blocks publishing (`connection.blocked`), with its reason.
    Blocked(String),
    /// Not connected (a reconnection is under way).
    Down,
}

impl BrokerState {
    /// What `/readyz` shows for it.
    pub fn describe(&self) -> String {
        match self {
            Self::Up => "up".to_owned(),
            Self::Blocked(reason) => format!("blocked: {reason}"),
            Self::Down => "down".to_owned(),
        }
    }
}

/// True for the broker's 406 PRECONDITION_FAILED: a queue redeclared with arguments other
/// than those it has.
fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

/// Follows one connection's `connection.blocked` / `unblocked` notifications until the
/// connection's event stream ends or the bus closes. While blocked, publishes fail at once
/// (the broker would hold them for as long as the alarm lasts).
async fn watch_blocking(
    events: impl futures::Stream<Item = lapin::Event> + Send + 'static,
    blocked: Arc<BlockState>,
    metrics: Arc<crate::metrics::Metrics>,
    closing: CancellationToken,
) {
    use futures::StreamExt as _;
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            () = closing.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(lapin::Event::ConnectionBlocked(reason)) => {
                tracing::warn!(%reason, "the broker blocks publishing; publishes fail until it unblocks");
                blocked.block(reason);
                metrics.broker_blocked.set(1);
            }
            Some(lapin::Event::ConnectionUnblocked) => {
                tracing::info!("the broker unblocked publishing");
                blocked.unblock();
                metrics.broker_blocked.set(0);
            }
            Some(_) => {}
        }
    }
}

/// The queues one service declared, replayed after a reconnection (a broker restarted
/// from scratch has none of them).
#[derive(Debug, Clone)]
struct ServiceQueues {
    service: String,
    commands: Vec<String>,
    events: Vec<String>,
    queries: Vec<String>,
}

impl Bus {
    /// Exchange and queue names.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The shared confirmed publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The settings it was built with.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The service's metrics (the bus is the one thing every service has).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Connects (retrying for up to `config.connect_timeout`), declares the exchanges,
    /// opens the publishing channels and starts the supervisor that reconnects whenever
    /// the connection drops. `with_replies` makes the publishing channels also receive
    /// direct replies (the gateway needs that; workers only send replies).
    pub async fn connect(
        config: &BusConfig,
        connection_name: &str,
        with_replies: bool,
    ) -> anyhow::Result<Self> {
        let metrics = crate::metrics::Metrics::new();
        let blocked = Arc::new(BlockState::default());
        let publisher = Publisher::new(
            config.publish_channels,
            config.confirm_timeout,
            with_replies,
            metrics.clone(),
            &config.prefix,
            blocked.clone(),
        );
        let (state, _) = watch::channel(LinkState::default());
        let bus = Self {
            link: Arc::new(Link {
                name: format!("{}:{connection_name}", config.prefix),
                current: RwLock::new(None),
                state,
                services: Mutex::new(Vec::new()),
                closing: CancellationToken::new(),
                blocked,
            }),
            topology: Topology::new(&config.prefix),
            publisher,
            config: config.clone(),
            metrics,
        };
        let deadline = Instant::now() + config.connect_timeout;
        let mut backoff = Backoff::new(RECONNECT_BASE, config.reconnect_max_delay);
        loop {
            match bus.establish().await {
                Ok(connection) => {
                    bus.install(connection);
                    break;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    if Instant::now() + delay > deadline {
                        return Err(error);
                    }
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot reach the broker yet"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
        tokio::spawn(bus.clone().supervise());
        Ok(bus)
    }

    /// Opens a connection and restores everything on it: exchanges, declared queues,
    /// publishing channels.
    async fn establish(&self) -> anyhow::Result<Arc<Connection>> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.link.name.clone().into());
        // A broker that is still starting may accept the TCP connection and then say
        // nothing; without a bound the reconnection would wait on it forever.
        let connection = tokio::time::timeout(
            CONNECT_ATTEMPT_TIMEOUT,
            Connection::connect(self.config.amqp_url.expose_secret(), properties),
        )
        .await
        .context("no answer from RabbitMQ")?
        .context("cannot connect to RabbitMQ")?;
        let connection = Arc::new(connection);
        let restore = async {
            self.declare_all(&connection).await?;
            self.publisher
                .reopen(&connection)
                .await
                .context("cannot open publishing channels")
        };
        tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, restore)
            .await
            .context("RabbitMQ stopped answering while the topology was declared")??;
        Ok(connection)
    }

    /// Declares the exchanges and every service's queues on `connection`.
    async fn declare_all(&self, connection: &Connection) -> anyhow::Result<()> {
        let mut channel = connection
            .create_channel()
            .await
            .context("cannot open a channel")?;
        self.topology
            .declare_exchanges(&channel)
            .await
            .context("cannot declare exchanges")?;
        let services = self
            .link
            .services
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for service in &services {
            self.declare_queues(connection, &mut channel, service)
                .await?;
        }
        // The declaring channel is not reused for traffic; closing it keeps the channel
        // count equal to what the publisher and consumers need.
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    fn install(&self, connection: Arc<Connection>) {
        // A new connection starts unblocked; the broker says so again if the alarm holds.
        self.link.blocked.unblock();
        tokio::spawn(watch_blocking(
            connection.events_listener(),
            self.link.blocked.clone(),
            self.metrics.clone(),
            self.link.closing.clone(),
        ));
        if let Ok(mut current) = self.link.current.write() {
            *current = Some(connection);
        }
        self.link.state.send_modify(|state| {
            state.generation += 1;
            state.connected = true;
        });
    }

    fn mark_down(&self) {
        self.link.state.send_modify(|state| state.connected = false);
    }

    fn current(&self) -> Option<Arc<Connection>> {
        self.link.current.read().ok().and_then(|c| c.clone())
    }

    /// Watches the connection; on loss, reconnects with backoff until it succeeds or the
    /// bus is closed. A publishing channel that dropped on a live connection is reopened.
    async fn supervise(self) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.link.closing.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some(connection) = self.current()
                && connection.status().connected()
            {
                if !self.publisher.is_healthy()
                    && let Err(error) = self.publisher.repair(&connection).await
                {
                    tracing::warn!(%error, "cannot reopen a publishing channel");
                }
                continue;
            }
            self.mark_down();
            let lost_at = Instant::now();
            tracing::warn!("lost the broker connection, reconnecting");
            let mut backoff = Backoff::new(RECONNECT_BASE, self.config.reconnect_max_delay);
            loop {
                match self.establish().await {
                    Ok(connection) => {
                        self.install(connection);
                        self.metrics.broker_reconnects.inc();
                        tracing::info!(
                            down_ms = lost_at.elapsed().as_millis() as u64,
                            "reconnected to the broker"
                        );
                        break;
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            error = format!("{error:#}"),
                            retry_in_ms = delay.as_millis() as u64,
                            "reconnection failed"
                        );
                        tokio::select! {
                            () = self.link.closing.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        }
    }

    /// The connection, waiting while the broker is away. `None` once `cancel` fires or
    /// the bus is closed.
    pub async fn connected(&self, cancel: &CancellationToken) -> Option<Arc<Connection>> {
        let mut state = self.link.state.subscribe();
        loop {
            if state.borrow_and_update().connected
                && let Some(connection) = self.current()
                && connection.status().connected()
            {
                return Some(connection);
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = self.link.closing.cancelled() => return None,
                changed = state.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                // The supervisor notices a dead connection within its interval; looking
                // again after it covers a connection that died without a state change yet.
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    /// True while the connection and every publishing channel are usable and the broker
    /// does not block publishing.
    pub fn is_healthy(&self) -> bool {
        self.broker_state() == BrokerState::Up
    }

    /// The connection as readiness reports it.
    pub fn broker_state(&self) -> BrokerState {
        let connected = self.link.state.borrow().connected
            && self.current().is_some_and(|c| c.status().connected())
            && self.publisher.is_healthy();
        if !connected {
            return BrokerState::Down;
        }
        match self.link.blocked.reason() {
            Some(reason) => BrokerState::Blocked(reason),
            None => BrokerState::Up,
        }
    }

    /// The metrics exposition, with the connection gauges brought up to date.
    pub fn render_metrics(&self) -> String {
        let state = self.broker_state();
        self.metrics
            .broker_connected
            .set(i64::from(state != BrokerState::Down));
        self.metrics
            .broker_blocked
            .set(i64::from(matches!(state, BrokerState::Blocked(_))));
        self.metrics.encode()
    }

    /// The delays of the retry levels this bus's settings produce.
    pub fn retry_delays(&self) -> Vec<Duration> {
        Backoff::new(self.config.retry_base, self.config.retry_max_delay).levels()
    }

    /// Declares a service's queues: its command queue (with DLQ) bound to `commands`, its
    /// event queue (with DLQ) bound to `events` if it subscribes to any, its query queue
    /// bound to `queries`, and the delay queues its retries go through. Idempotent; the
    /// declaration is remembered and repeated after every reconnection.
    pub async fn declare_service(
        &self,
        service: &str,
        commands: &[&str],
        events: &[&str],
        queries: &[&str],
    ) -> anyhow::Result<()> {
        let owned = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect();
        let queues = ServiceQueues {
            service: service.to_owned(),
            commands: owned(commands),
            events: owned(events),
            queries: owned(queries),
        };
        let connection = self.current().context("the broker connection is down")?;
        let mut channel = connection.create_channel().await?;
        self.declare_queues(&connection, &mut channel, &queues)
            .await?;
        let _ = channel.close(200, "declared".into()).await;
        if let Ok(mut services) = self.link.services.lock()
            && !services.iter().any(|s| s.service == service)
        {
            services.push(queues);
        }
        Ok(())
    }

    /// Declares the queues of the service that owns commands `C` and queries `Q`: bound to
    /// every key of each, its event queue to `events` (the events it subscribes to).
    pub async fn declare_messages<C: contracts::Message, Q: contracts::Message>(
        &self,
        events: &[&str],
    ) -> anyhow::Result<()> {
        const {
            assert!(
                matches!(C::KIND, contracts::Kind::Command),
                "C is not a command"
            );
            assert!(
                matches!(Q::KIND, contracts::Kind::Query),
                "Q is not a query"
            );
        };
        anyhow::ensure!(
            C::SERVICE == Q::SERVICE,
            "commands of {} and queries of {} are not one service",
            C::SERVICE,
            Q::SERVICE
        );
        self.declare_service(C::SERVICE, C::KEYS, events, Q::KEYS)
            .await
    }

    /// Declares the queues of every service again (after a queue was deleted under a
    /// running consumer, say). Idempotent.
    pub async fn redeclare(&self) -> anyhow::Result<()> {
        let connection = self.current().context("the broker connection is down")?;
        self.declare_all(&connection).await
    }

    async fn declare_queues(
        &self,
        connection: &Connection,
        channel: &mut lapin::Channel,
        queues: &ServiceQueues,
    ) -> anyhow::Result<()> {
        let topology = &self.topology;
        fn keys(keys: &[String]) -> Vec<&str> {
            keys.iter().map(String::as_str).collect()
        }
        topology
            .declare_delays(channel, &self.retry_delays())
            .await
            .context("cannot declare the delay queues")?;
        let queue = topology.command_queue(&queues.service);
        let exchange = topology.commands_exchange();
        let commands = keys(&queues.commands);
        let bound = self.config.command_queue_max_length;
        match topology
            .declare_work_queue(channel, &queue, &exchange, &commands, Some(bound))
            .await
        {
            Ok(()) => {}
            // The queue exists with other arguments (declared before the bound, or with
            // another one): the broker closed the channel. Keep the queue and its messages,
            // bind it on a new channel, and say how to apply the bound.
            Err(error) if is_precondition_failed(&error) => {
                tracing::warn!(
                    queue,
                    bound,
                    %error,
                    "command queue declared without its bound (or with another): it is used as it is; apply the bound with a policy (observability/runbooks.md#serviceoverloaded)"
                );
                *channel = connection
                    .create_channel()
                    .await
                    .context("cannot open a channel")?;
                topology
                    .bind_work_queue(channel, &queue, &exchange, &commands)
                    .await
                    .context("cannot bind the command queue")?;
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context("cannot declare the command queue"));
            }
        }
        if !queues.events.is_empty() {
            topology
                .declare_work_queue(
                    channel,
                    &topology.event_queue(&queues.service),
                    &topology.events_exchange(),
                    &keys(&queues.events),
                    None,
                )
                .await
                .context("cannot declare the event queue")?;
        }
        topology
            .declare_query_queue(channel, &queues.service, &keys(&queues.queries))
            .await
            .context("cannot declare the query queue")?;
        Ok(())
    }

    /// Stops the supervisor and closes the connection politely, so the broker requeues
    /// nothing it need not.
    pub async fn close(&self) {
        self.link.closing.cancel();
        self.mark_down();
        if let Some(connection) = self.current() {
            let _ = connection.close(200, "shutting down".into()).await;
        }
    }
}
