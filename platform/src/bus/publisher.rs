//! Confirmed publishing on a few shared channels, and direct replies for request-reply.
//!
//! Many publishes are in flight on each channel at once: `basic_publish` only queues the
//! frame, and each caller awaits its own confirm, so callers never wait behind one
//! another's round trip (the broker confirms an order of magnitude more per second that
//! way than one at a time).
//!
//! With replies enabled, each channel also consumes `amq.rabbitmq.reply-to` (RabbitMQ's
//! direct reply-to): a request published on that channel names it as `reply_to`, and the
//! answer comes straight back without a queue. Waiters are keyed by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use contracts::Envelope;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::oneshot;

use super::envelope::to_properties;
use crate::metrics::{Metrics, PublishLabels, unprefixed};
use tracing::Instrument as _;

/// RabbitMQ's pseudo-queue for direct replies.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Why a publish did not reach a queue.
///
/// Each variant says whether the message may still have been stored
/// ([`PublishError::may_have_arrived`]): a caller that answers a client must not call a
/// publish "failed" when the broker may yet deliver it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No queue is bound for the routing key (the broker returned a mandatory message).
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
    /// The broker refused to take responsibility for the message: its queue is at its
    /// bound (`x-max-length` with `reject-publish`), or the broker could not store it.
    #[error("the broker nacked the message")]
    Nacked,
    /// The publish was sent but neither confirmed nor refused in time: the message may or
    /// may not have been stored.
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    /// The broker connection is down (a reconnection is under way): nothing was sent.
    #[error("the broker connection is down")]
    Unavailable,
    /// The broker has blocked publishing (a memory or disk alarm): nothing was sent.
    #[error("the broker is blocking publishers: {0}")]
    Blocked(String),
    /// The channel failed before the message was handed to it: nothing was sent.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The channel or connection failed after the message was handed to it: it may or
    /// may not have been stored.
    #[error("the channel failed while awaiting the confirm: {0}")]
    Lost(lapin::Error),
}

impl PublishError {
    /// True when the broker may have stored the message despite the error (no confirm in
    /// time, or the channel died after the send), so the effect may still happen.
    pub fn may_have_arrived(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Lost(_))
    }
}

/// Whether the broker has blocked this connection's publishers (`connection.blocked`),
/// and why. Shared by the bus, which learns it from the connection's events, and the
/// publisher, which refuses to send while it is set.
#[derive(Debug, Default)]
pub struct BlockState {
    reason: RwLock<Option<String>>,
}

impl BlockState {
    /// Records the broker's reason for blocking.
    pub fn block(&self, reason: String) {
        if let Ok(mut current) = self.reason.write() {
            *current = Some(reason);
        }
    }

    /// Publishing is allowed again.
    pub fn unblock(&self) {
        if let Ok(mut current) = self.reason.write() {
            *current = None;
        }
    }

    /// The broker's reason while blocked.
    pub fn reason(&self) -> Option<String> {
        self.reason.read().ok().and_then(|r| r.clone())
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The request could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Nobody answered in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// One message to publish.
pub struct Outgoing<'a> {
    /// Target exchange.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Metadata.
    pub envelope: &'a Envelope,
    /// JSON body.
    pub body: &'a [u8],
    /// Return the message as an error when no queue is bound. True for commands and
    /// queries (someone must handle them); false for events, which may have no subscriber.
    pub mandatory: bool,
    /// Per-message TTL, for requests whose answer is useless after the caller's timeout.
    /// Such requests are also sent transient (never written to disk).
    pub expiration: Option<Duration>,
    /// Extra headers (merged over the envelope's).
    pub extra_headers: Option<FieldTable>,
}

/// A reply received for a request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Properties the replier set.
    pub properties: BasicProperties,
    /// The reply's body.
    pub body: Vec<u8>,
}

type Waiters = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Reply>>>>>;

/// A reply waiter; dropping it forgets the registration.
pub struct ReplyWaiter {
    key: String,
    receiver: oneshot::Receiver<Reply>,
    waiters: Waiters,
}

impl ReplyWaiter {
    /// Waits up to `timeout` for the reply.
    pub async fn wait(mut self, timeout: Duration) -> Option<Reply> {
        tokio::time::timeout(timeout, &mut self.receiver)
            .await
            .ok()?
            .ok()
    }
}

impl Drop for ReplyWaiter {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.lock()
            && let Some(senders) = map.get_mut(&self.key)
        {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

/// Confirmed publisher over a small pool of channels. The channels are replaced when the
/// bus reconnects; clones share them.
#[derive(Clone)]
pub struct Publisher {
    channels: Arc<RwLock<Vec<Channel>>>,
    count: usize,
    next: Arc<AtomicUsize>,
    confirm_timeout: Duration,
    waiters: Waiters,
    replies: bool,
    metrics: Arc<Metrics>,
    prefix: Arc<str>,
    blocked: Arc<BlockState>,
}

impl Publisher {
    /// A publisher of `count` confirm-mode channels, none open yet (see [`Self::reopen`]).
    /// `confirm_timeout` bounds each publish as a whole: handing the message to the
    /// channel (which stalls while the broker blocks the connection) and the confirm.
    pub fn new(
        count: usize,
        confirm_timeout: Duration,
        replies: bool,
        metrics: Arc<Metrics>,
        prefix: &str,
        blocked: Arc<BlockState>,
    ) -> Self {
        Self {
            channels: Arc::default(),
            count: count.max(1),
            next: Arc::default(),
            confirm_timeout,
            waiters: Arc::default(),
            replies,
            metrics,
            prefix: Arc::from(prefix),
            blocked,
        }
    }

    /// Opens a full set of channels on `connection`, replacing the old ones.
    pub async fn reopen(&self, connection: &Connection) -> lapin::Result<()> {
        let mut fresh = Vec::with_capacity(self.count);
        for _ in 0..self.count {
            fresh.push(self.open_channel(connection).await?);
        }
        if let Ok(mut channels) = self.channels.write() {
            *channels = fresh;
        }
        Ok(())
    }

    /// Replaces the channels that closed while the connection stayed up (the broker closes
    /// a channel on a protocol error, e.g. a publish to a deleted exchange).
    pub async fn repair(&self, connection: &Connection) -> lapin::Result<()> {
        let broken: Vec<usize> = match self.channels.read() {
            Ok(channels) => (0..self.count)
                .filter(|&i| channels.get(i).is_none_or(|c| !c.status().connected()))
                .collect(),
            Err(_) => return Ok(()),
        };
        for index in broken {
            let channel = self.open_channel(connection).await?;
            if let Ok(mut channels) = self.channels.write() {
                if index < channels.len() {
                    channels[index] = channel;
                } else {
                    channels.push(channel);
                }
            }
        }
        Ok(())
    }

    async fn open_channel(&self, connection: &Connection) -> lapin::Result<Channel> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        if self.replies {
            let consumer = channel
                .basic_consume(
                    DIRECT_REPLY_TO.into(),
                    "".into(),
                    // Direct reply-to requires no-ack: replies are not stored anywhere.
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            tokio::spawn(dispatch_replies(consumer, self.waiters.clone()));
        }
        Ok(channel)
    }

    /// Counts a publish by its outcome.
    fn record(&self, exchange: &str, routing_key: &str, result: &Result<(), PublishError>) {
        let outcome = match result {
            Ok(()) => "confirmed",
            Err(PublishError::Unroutable(_)) => "unroutable",
            Err(PublishError::Nacked) => "nacked",
            Err(PublishError::Unavailable) => "unavailable",
            Err(PublishError::Blocked(_)) => "blocked",
            Err(PublishError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        let labels = PublishLabels {
            exchange: unprefixed(&self.prefix, exchange).to_owned(),
            routing_key: routing_key.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.metrics.published.get_or_create(&labels).inc();
    }

    /// True while every channel is open.
    pub fn is_healthy(&self) -> bool {
        self.channels.read().is_ok_and(|channels| {
            channels.len() == self.count && channels.iter().all(|c| c.status().connected())
        })
    }

    /// The next open channel, round robin; none while the broker is away, so a caller
    /// fails at once instead of waiting on a dead socket.
    fn channel(&self) -> Result<Channel, PublishError> {
        if let Some(reason) = self.blocked.reason() {
            return Err(PublishError::Blocked(reason));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let channels = self
            .channels
            .read()
            .map_err(|_| PublishError::Unavailable)?;
        (0..channels.len())
            .map(|i| &channels[(start + i) % channels.len()])
            .find(|c| c.status().connected())
            .cloned()
            .ok_or(PublishError::Unavailable)
    }

    /// Publishes and waits for the broker's confirm. A returned (unroutable) or nacked
    /// message is an error.
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_on(message, None).await
    }

    /// Registers interest in a reply with `correlation_id`. Register before publishing so a
    /// fast answer cannot slip past.
    pub fn expect_reply(&self, correlation_id: &str) -> ReplyWaiter {
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut map) = self.waiters.lock() {
            map.entry(correlation_id.to_owned())
                .or_default()
                .push(sender);
        }
        ReplyWaiter {
            key: correlation_id.to_owned(),
            receiver,
            waiters: self.waiters.clone(),
        }
    }

    /// Publishes a message that asks for a direct reply (correlated by the envelope's
    /// correlation id). Requires a publisher opened with replies.
    pub async fn publish_expecting_reply(&self, message: Outgoing<'_>) -> Result<(), PublishError> {
        debug_assert!(self.replies, "publisher opened without replies");
        self.publish_on(message, Some(DIRECT_REPLY_TO)).await
    }

    /// Sends a request and waits up to `timeout` for its reply.
    pub async fn request(
        &self,
        message: Outgoing<'_>,
        timeout: Duration,
    ) -> Result<Reply, ReplyError> {
        let waiter = self.expect_reply(&message.envelope.correlation_id.to_string());
        self.publish_expecting_reply(message).await?;
        waiter
            .wait(timeout)
            .await
            .ok_or(ReplyError::Timeout(timeout))
    }

    /// Answers a request: publishes `body` to the requester's `reply_to` with the request's
    /// correlation id. Replies go through the default exchange and are not mandatory: a
    /// requester that gave up has no queue left, and that is not our error.
    pub async fn reply(
        &self,
        reply_to: &str,
        correlation_id: &str,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let properties = BasicProperties::default()
            .with_correlation_id(correlation_id.into())
            .with_content_type(contracts::envelope::CONTENT_TYPE_JSON.into());
        let channel = self.channel()?;
        self.bounded(async {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    reply_to.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?;
            Self::await_confirm(confirm, reply_to).await
        })
        .await
    }

    /// Runs one publish (send and confirm) under the confirm timeout. A publish cut off
    /// by the timeout may have been handed to the channel, so it counts as a timeout (the
    /// message may yet arrive), never as "not sent".
    async fn bounded(
        &self,
        publish: impl std::future::Future<Output = Result<(), PublishError>>,
    ) -> Result<(), PublishError> {
        tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .unwrap_or(Err(PublishError::Timeout(self.confirm_timeout)))
    }

    async fn publish_on(
        &self,
        message: Outgoing<'_>,
        reply_to: Option<&str>,
    ) -> Result<(), PublishError> {
        // A producer span per publish; the message carries its context so the consumer's
        // span becomes its child (OpenTelemetry messaging conventions).
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("{} publish", unprefixed(&self.prefix, message.exchange)),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = %message.exchange,
            messaging.rabbitmq.destination.routing_key = %message.routing_key,
            messaging.message.id = %message.envelope.message_id,
            messaging.message.conversation_id = %message.envelope.correlation_id,
        );
        let mut envelope = message.envelope.clone();
        if let Some(traceparent) = span.in_scope(crate::telemetry::traceparent) {
            envelope.traceparent = Some(traceparent);
        }
        let mut properties = to_properties(&envelope);
        if let Some(reply_to) = reply_to {
            properties = properties.with_reply_to(reply_to.into());
        }
        if let Some(ttl) = message.expiration {
            // A request with a deadline is transient (delivery mode 1): its answer is
            // worthless after the deadline, and a login carries a password that must never
            // be written to the broker's disk.
            properties = properties
                .with_expiration(ttl.as_millis().to_string().into())
                .with_delivery_mode(1);
        }
        if let Some(extra) = message.extra_headers {
            let mut headers = properties.headers().clone().unwrap_or_default();
            for (key, value) in extra.inner() {
                headers.insert(key.clone(), value.clone());
            }
            properties = properties.with_headers(headers);
        }
        let options = BasicPublishOptions {
            mandatory: message.mandatory,
            ..Default::default()
        };
        let result = async {
            let channel = self.channel()?;
            self.bounded(async {
                let confirm = channel
                    .basic_publish(
                        message.exchange.into(),
                        message.routing_key.into(),
                        options,
                        message.body,
                        properties,
                    )
                    .await?;
                Self::await_confirm(confirm, message.routing_key).await
            })
            .await
        }
        .instrument(span)
        .await;
        self.record(message.exchange, message.routing_key, &result);
        result
    }

    async fn await_confirm(
        confirm: PublisherConfirm,
        routing_key: &str,
    ) -> Result<(), PublishError> {
        let confirmation = confirm.await.map_err(PublishError::Lost)?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(routing_key.to_owned())),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }
}

async fn dispatch_replies(mut consumer: lapin::Consumer, waiters: Waiters) {
    while let Some(delivery) = consumer.next().await {
        let Ok(delivery) = delivery else { break };
        let Some(key) = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string())
        else {
            continue;
        };
        let senders = waiters.lock().ok().and_then(|mut map| map.remove(&key));
        let Some(senders) = senders else {
            tracing::debug!(correlation_id = %key, "reply for nobody waiting, dropped");
            continue;
        };
        let reply = Reply {
            properties: delivery.properties,
            body: delivery.data,
        };
        for sender in senders {
            let _ = sender.send(reply.clone());
        }
    }
    tracing::warn!("reply consumer ended");
}

impl Publisher {
    /// Publishes a message with properties as given (used to move a delivery to the
    /// dead-letter exchange unchanged but for its headers). Mandatory: a dead letter with
    /// nowhere to go must stay where it is.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let result = async {
            let channel = self.channel()?;
            self.bounded(async {
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        options,
                        body,
                        properties,
                    )
                    .await?;
                Self::await_confirm(confirm, routing_key).await
            })
            .await
        }
        .await;
        self.record(exchange, routing_key, &result);
        result
    }
}
