//! The consumer loop: manual acks, a prefetch bound, retries through delay queues, dead
//! letters with a reason, resubscription after the broker comes back, and a drain on
//! shutdown.
//!
//! A message is acknowledged only after its handler returned [`Disposition::Done`], which
//! handlers return only once their effect is committed. Deliveries are handled concurrently
//! up to the prefetch count; on cancellation the consumer is cancelled at the broker, the
//! in-flight handlers get a grace period to finish, and whatever is still unacked is
//! requeued by the broker when the channel closes.
//!
//! Failures are classified. A message that can never be handled (undecodable, unknown
//! type or version, a missing header, too big, the wrong content type, or a handler's
//! permanent rejection) is dead-lettered at once with a [`DeadLetter`] reason. A transient
//! failure (a store or the broker unavailable, a timeout) sends the message to the delay
//! queue of its attempt's backoff — jittered exponential, see [`crate::backoff`] — from
//! which the broker returns it to its queue when the delay is over; after
//! `retry_max_attempts` attempts it is dead-lettered as `retries-exhausted`. Every step is
//! a confirmed publish before the ack, so a crash anywhere leaves the message in one of
//! the queues, never in none.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use contracts::Envelope;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::Bus;
pub use super::dead_letter::{DeadLetter, reasons};
use super::envelope::{from_properties, header_int};
use super::topology::DELAY_HEADER;
use crate::backoff::{Backoff, jitter};

/// Largest body a consumer accepts; anything bigger is dead-lettered unread.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A decoded delivery handed to a handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Metadata.
    pub envelope: Envelope,
    /// Routing key it arrived with.
    pub routing_key: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// Where the sender wants an answer, if anywhere.
    pub reply_to: Option<String>,
    /// The broker has delivered it before (a previous attempt may have had effects).
    pub redelivered: bool,
    /// Its `process` span (continuing the sender's trace): a batch handler runs each
    /// message's work in it, so one trace still follows one message.
    pub span: tracing::Span,
}

/// What to do with a message once its handler returns.
#[derive(Debug)]
pub enum Disposition {
    /// Handled (effect committed, or nothing to do): send `reply` if asked, then ack.
    Done {
        /// Body of the reply to `reply_to`.
        reply: Option<Vec<u8>>,
    },
    /// A transient failure (a store or the broker unavailable): try again later.
    Retry(String),
    /// The message can never be handled: dead-letter it.
    Dead(DeadLetter),
}

impl From<DeadLetter> for Disposition {
    fn from(dead: DeadLetter) -> Self {
        Self::Dead(dead)
    }
}

/// Headers a dead letter gains (its original headers stay).
pub mod death_headers {
    /// Why, one of [`super::reasons`] (the contracts' `DEATH_REASON`).
    pub const REASON: &str = contracts::headers::DEATH_REASON;
    /// The error text.
    pub const ERROR: &str = "x-switchyard-death-error";
    /// Handling attempts made.
    pub const ATTEMPTS: &str = "x-switchyard-attempts";
    /// When (RFC 3339).
    pub const DIED_AT: &str = "x-switchyard-died-at";
    /// The queue it died in: where a replay sends it back.
    pub const QUEUE: &str = "x-switchyard-death-queue";
    /// The routing key it arrived with.
    pub const ROUTING_KEY: &str = "x-switchyard-original-routing-key";
    /// The exchange it arrived through.
    pub const EXCHANGE: &str = "x-switchyard-original-exchange";
}

/// Handles one kind of queue.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. Must not return [`Disposition::Done`] before the effect is
    /// committed.
    fn handle(&self, message: Incoming) -> impl Future<Output = Disposition> + Send;
}

/// Handles deliveries a batch at a time (see [`ConsumerOptions::batch_max`]): what lets a
/// store commit many messages in one transaction. A [`Handler`] is a batch handler that
/// takes one message at a time.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles `messages`, returning one disposition per message, in their order. Must not
    /// return [`Disposition::Done`] for any message before its effect is committed.
    fn handle_batch(
        &self,
        messages: Vec<Incoming>,
    ) -> impl Future<Output = Vec<Disposition>> + Send;

    /// Whether it wants more than one message at a time.
    fn batched(&self) -> bool {
        false
    }
}

impl<H: Handler> BatchHandler for H {
    async fn handle_batch(&self, messages: Vec<Incoming>) -> Vec<Disposition> {
        let mut dispositions = Vec::with_capacity(messages.len());
        for message in messages {
            let span = message.span.clone();
            dispositions.push(self.handle(message).instrument(span).await);
        }
        dispositions
    }
}

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Queue to consume.
    pub queue: String,
    /// Whether the queue has a dead-letter queue (query queues do not).
    pub dead_letters: bool,
    /// How long in-flight handlers may run after cancellation.
    pub grace: Duration,
    /// Pause before requeueing a message that could not be moved on (the broker refused
    /// the retry or dead-letter publish), so nothing spins in a tight loop.
    pub retry_pause: Duration,
    /// Most deliveries handed to a [`BatchHandler::batched`] handler at once.
    pub batch_max: usize,
    /// How long a batch waits for more deliveries once it has one. Under load the
    /// prefetched deliveries are already there and batches fill without waiting.
    pub batch_window: Duration,
}

/// Consumes until `cancel` fires, resubscribing whenever the channel or the connection
/// drops (the bus reconnects meanwhile). Returns once the in-flight messages are drained.
pub async fn run<H: BatchHandler>(
    bus: Bus,
    options: ConsumerOptions,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let options = Arc::new(options);
    let mut in_flight = JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while let Some(connection) = bus.connected(&cancel).await {
        let (channel, tag, mut consumer) = match subscribe(&bus, &connection, &options).await {
            Ok(subscription) => subscription,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(queue = %options.queue, error = format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "cannot consume, retrying");
                // The queue itself may be gone (deleted by hand, or a broker that lost its
                // state): declaring again is idempotent and brings it back.
                let _ = bus.redeclare().await;
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff.reset();
        tracing::info!(queue = %options.queue, prefetch = bus.config.prefetch, "consuming");
        let interrupted = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break None,
                Some(finished) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(error) = finished {
                        tracing::error!(%error, "message task failed");
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let limit = if handler.batched() { options.batch_max.max(1) } else { 1 };
                        let (deliveries, broken) = fill(&mut consumer, delivery, limit, options.batch_window).await;
                        in_flight.spawn(process(bus.clone(), options.clone(), handler.clone(), deliveries));
                        if let Some(reason) = broken {
                            break Some(reason);
                        }
                    }
                    Some(Err(error)) => break Some(error.to_string()),
                    None => break Some(CANCELLED_BY_BROKER.to_owned()),
                }
            }
        };
        match interrupted {
            None => {
                let _ = channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
                drain(&mut in_flight, &options).await;
                let _ = channel.close(200, "consumer stopped".into()).await;
                tracing::info!(queue = %options.queue, "consumer stopped");
                return Ok(());
            }
            Some(reason) => {
                // Messages in flight on the lost channel cannot be acked any more; the
                // broker redelivers them and the handlers' inbox makes that harmless.
                tracing::warn!(queue = %options.queue, %reason, "consumer interrupted, resubscribing");
                let _ = channel.close(200, "resubscribing".into()).await;
            }
        }
    }
    drain(&mut in_flight, &options).await;
    tracing::info!(queue = %options.queue, "consumer stopped");
    Ok(())
}

const CANCELLED_BY_BROKER: &str = "the broker cancelled the consumer";

/// A batch that starts with `first`: whatever else arrives within `window`, up to `limit`.
/// Also returns why the subscription broke, if it did meanwhile (the batch taken so far
/// is still handled: its acks fail and the broker redelivers, which the inbox absorbs).
async fn fill(
    consumer: &mut lapin::Consumer,
    first: Delivery,
    limit: usize,
    window: Duration,
) -> (Vec<Delivery>, Option<String>) {
    let mut deliveries = vec![first];
    let deadline = tokio::time::Instant::now() + window;
    while deliveries.len() < limit {
        // A timeout polls its future before its deadline, so a zero window still takes
        // every delivery that is already here.
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(delivery))) => deliveries.push(delivery),
            Ok(Some(Err(error))) => return (deliveries, Some(error.to_string())),
            Ok(None) => return (deliveries, Some(CANCELLED_BY_BROKER.to_owned())),
            Err(_) => break,
        }
    }
    (deliveries, None)
}

/// Opens a channel with the prefetch bound and starts consuming the queue.
async fn subscribe(
    bus: &Bus,
    connection: &lapin::Connection,
    options: &ConsumerOptions,
) -> anyhow::Result<(lapin::Channel, String, lapin::Consumer)> {
    use anyhow::Context as _;
    let channel = connection
        .create_channel()
        .await
        .context("cannot open channel")?;
    channel
        .basic_qos(bus.config.prefetch, BasicQosOptions::default())
        .await
        .context("cannot set prefetch")?;
    let tag = format!("{}-{}", options.queue, uuid::Uuid::now_v7());
    let consumer = channel
        .basic_consume(
            options.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot consume {}", options.queue))?;
    Ok((channel, tag, consumer))
}

/// Gives in-flight handlers the grace period, then abandons them (their messages go back
/// to the queue when the channel closes).
async fn drain(in_flight: &mut JoinSet<()>, options: &ConsumerOptions) {
    let drained = tokio::time::timeout(options.grace, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(queue = %options.queue, left = in_flight.len(), "grace period over, unacked messages go back to the queue");
        in_flight.abort_all();
    }
}

/// One delivery of a batch on its way through: what settling it needs to know.
struct Pending {
    delivery: Delivery,
    disposition: Option<Disposition>,
    reply_to: Option<String>,
    correlation_id: String,
    sent_at: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

async fn process<H: BatchHandler>(
    bus: Bus,
    options: Arc<ConsumerOptions>,
    handler: Arc<H>,
    deliveries: Vec<Delivery>,
) {
    let started = std::time::Instant::now();
    let mut pending = Vec::with_capacity(deliveries.len());
    let mut batch = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let mut entry = Pending {
            delivery,
            disposition: None,
            reply_to: None,
            correlation_id: String::new(),
            sent_at: None,
        };
        match decode(&entry.delivery, bus.topology.prefix(), &options.queue) {
            Ok(incoming) => {
                entry.sent_at = Some((
                    incoming.envelope.timestamp,
                    incoming.envelope.message_type.clone(),
                ));
                entry.reply_to = incoming.reply_to.clone();
                entry.correlation_id = incoming.envelope.correlation_id.to_string();
                batch.push(incoming);
            }
            Err(dead) => entry.disposition = Some(Disposition::Dead(dead)),
        }
        pending.push(entry);
    }
    let mut dispositions = if batch.is_empty() {
        Vec::new()
    } else {
        handler.handle_batch(batch).await
    }
    .into_iter();
    for entry in pending.iter_mut().filter(|e| e.disposition.is_none()) {
        entry.disposition = Some(dispositions.next().unwrap_or_else(|| {
            Disposition::Retry("the handler returned no disposition for it".to_owned())
        }));
    }
    futures::future::join_all(
        pending
            .into_iter()
            .map(|entry| settle(&bus, &options, entry, started)),
    )
    .await;
}

/// Replies if asked, counts, and acks, retries or dead-letters one delivery.
async fn settle(bus: &Bus, options: &ConsumerOptions, entry: Pending, started: std::time::Instant) {
    let Pending {
        delivery,
        disposition,
        reply_to,
        correlation_id,
        sent_at,
    } = entry;
    let disposition = disposition.unwrap_or_else(|| Disposition::Retry("not handled".to_owned()));
    if let (Disposition::Done { reply: Some(body) }, Some(reply_to)) = (&disposition, reply_to)
        && let Err(error) = bus.publisher.reply(&reply_to, &correlation_id, body).await
    {
        // The effect is committed; a lost reply only means the caller polls instead.
        tracing::warn!(%error, "could not send reply");
    }
    record(bus, &options.queue, &disposition, started, sent_at);
    let attempt = attempts_so_far(&delivery) + 1;
    let settled = match disposition {
        Disposition::Done { .. } => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Disposition::Retry(error) if !options.dead_letters => {
            // Query queues have no delay queue: their messages expire with the caller's
            // deadline, so a short pause and a requeue is all a retry needs.
            tracing::warn!(queue = %options.queue, %error, "transient failure, requeueing");
            requeue(&delivery, options).await
        }
        Disposition::Retry(error) if attempt >= bus.config.retry_max_attempts => {
            let dead = DeadLetter::new(
                reasons::RETRIES_EXHAUSTED,
                format!("{attempt} attempts failed; last: {error}"),
            );
            dead_letter(bus, options, &delivery, &dead, attempt).await
        }
        Disposition::Retry(error) => retry_later(bus, options, &delivery, &error, attempt).await,
        Disposition::Dead(dead) => dead_letter(bus, options, &delivery, &dead, attempt).await,
    };
    if let Err(error) = settled {
        // The channel is gone; the broker redelivers the message, and handlers are
        // idempotent, so nothing is lost or doubled.
        tracing::warn!(%error, "could not settle delivery");
    }
}

/// Counts a handled message, its duration and, for commands, the time since the gateway
/// accepted it.
fn record(
    bus: &Bus,
    queue: &str,
    disposition: &Disposition,
    started: std::time::Instant,
    sent_at: Option<(chrono::DateTime<chrono::Utc>, String)>,
) {
    use crate::metrics::{ConsumeLabels, QueueLabel, TypeLabel, unprefixed};
    let queue = unprefixed(bus.topology.prefix(), queue).to_owned();
    let outcome = match disposition {
        Disposition::Done { .. } => "ack",
        Disposition::Retry(_) => "retry",
        Disposition::Dead(_) => "dead",
    };
    let metrics = &bus.metrics;
    metrics
        .consumed
        .get_or_create(&ConsumeLabels {
            queue: queue.clone(),
            outcome: outcome.to_owned(),
        })
        .inc();
    metrics
        .handling
        .get_or_create(&QueueLabel {
            queue: queue.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    if let (Disposition::Done { .. }, Some((sent, message_type))) = (disposition, sent_at)
        && queue.ends_with(".commands")
    {
        let age = (chrono::Utc::now() - sent).to_std().unwrap_or_default();
        metrics
            .end_to_end
            .get_or_create(&TypeLabel { message_type })
            .observe(age.as_secs_f64());
    }
}

/// Reads a delivery's envelope and opens its `process` span, which continues the sender's
/// trace.
fn decode(delivery: &Delivery, prefix: &str, queue: &str) -> Result<Incoming, DeadLetter> {
    if delivery.data.len() > MAX_BODY_BYTES {
        return Err(DeadLetter::new(
            reasons::OVERSIZED,
            format!(
                "body of {} bytes exceeds {MAX_BODY_BYTES}",
                delivery.data.len()
            ),
        ));
    }
    let envelope = from_properties(&delivery.properties)?;
    let correlation_id = envelope.correlation_id.to_string();
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("{} process", crate::metrics::unprefixed(prefix, queue)),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %queue,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.message.id = %envelope.message_id,
        messaging.message.conversation_id = %correlation_id,
        request_id = envelope.request_id.as_deref().unwrap_or(""),
        operation_id = %correlation_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, envelope.traceparent.as_deref());
    crate::telemetry::record_ids(&span, envelope.traceparent.as_deref());
    Ok(Incoming {
        envelope,
        routing_key: delivery.routing_key.to_string(),
        body: delivery.data.clone(),
        reply_to: delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|r| r.to_string()),
        redelivered: delivery.redelivered,
        span,
    })
}

/// Handling attempts the message has had before this one (0 on first delivery).
fn attempts_so_far(delivery: &Delivery) -> u32 {
    header_int(&delivery.properties, death_headers::ATTEMPTS)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

fn text_value(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}

/// Sends the message to the delay queue of this attempt's backoff, then acks it; the
/// broker puts it back on `options.queue` when the delay is over. If the delay queue does
/// not confirm, the message is requeued instead.
async fn retry_later(
    bus: &Bus,
    options: &ConsumerOptions,
    delivery: &Delivery,
    error: &str,
    attempt: u32,
) -> lapin::Result<()> {
    let backoff = Backoff::new(bus.config.retry_base, bus.config.retry_max_delay);
    let nominal = backoff.nominal(attempt);
    let delay = jitter(nominal);
    tracing::warn!(queue = %options.queue, %error, attempt, retry_in_ms = delay.as_millis() as u64, "transient failure, will retry");
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    table.insert(
        death_headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    table.insert(
        DELAY_HEADER.into(),
        text_value(&nominal.as_millis().to_string()),
    );
    table.insert("x-switchyard-last-error".into(), text_value(error));
    let properties = delivery
        .properties
        .clone()
        .with_headers(table)
        .with_expiration(delay.as_millis().to_string().into());
    match bus
        .publisher
        .publish_raw(
            &bus.topology.retry_exchange(),
            &options.queue,
            &delivery.data,
            properties,
        )
        .await
    {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Err(publish_error) => {
            tracing::warn!(queue = %options.queue, error = %publish_error, "cannot schedule the retry, requeueing");
            requeue(delivery, options).await
        }
    }
}

/// Puts the message back at the head of its queue after a pause.
async fn requeue(delivery: &Delivery, options: &ConsumerOptions) -> lapin::Result<()> {
    tokio::time::sleep(options.retry_pause).await;
    delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// Republishes the message to its dead-letter queue, unchanged but for the death headers,
/// then acks it; if the republish is not confirmed, the message is requeued instead, so it
/// is never lost on the way.
async fn dead_letter(
    bus: &Bus,
    options: &ConsumerOptions,
    delivery: &Delivery,
    dead: &DeadLetter,
    attempts: u32,
) -> lapin::Result<()> {
    tracing::warn!(queue = %options.queue, reason = dead.reason, error = %dead.error, attempts, "dead-lettering message");
    bus.metrics
        .dead_lettered
        .get_or_create(&crate::metrics::DeadLetterLabels {
            queue: crate::metrics::unprefixed(bus.topology.prefix(), &options.queue).to_owned(),
            reason: dead.reason.to_owned(),
        })
        .inc();
    if !options.dead_letters {
        return delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(|_| ());
    }
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    table.insert(death_headers::REASON.into(), text_value(dead.reason));
    table.insert(death_headers::ERROR.into(), text_value(&dead.error));
    table.insert(
        death_headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    table.insert(
        death_headers::DIED_AT.into(),
        text_value(&chrono::Utc::now().to_rfc3339()),
    );
    table.insert(death_headers::QUEUE.into(), text_value(&options.queue));
    // A message back from a delay queue arrives through the default exchange under its
    // queue's name; its first arrival's route is the one worth keeping.
    if !table.contains_key(death_headers::ROUTING_KEY) {
        table.insert(
            death_headers::ROUTING_KEY.into(),
            text_value(delivery.routing_key.as_str()),
        );
        table.insert(
            death_headers::EXCHANGE.into(),
            text_value(delivery.exchange.as_str()),
        );
    }
    // The delay header would route a replayed message into a delay queue's binding.
    let mut kept = FieldTable::default();
    for (key, value) in table.inner() {
        if key.as_str() != DELAY_HEADER {
            kept.insert(key.clone(), value.clone());
        }
    }
    let mut properties = delivery.properties.clone().with_headers(kept);
    if properties.expiration().is_some() {
        properties = properties.with_expiration("".into());
    }
    let dlq = bus.topology.dead_letter_queue(&options.queue);
    match bus
        .publisher
        .publish_raw(
            &bus.topology.dead_letter_exchange(),
            &dlq,
            &delivery.data,
            properties,
        )
        .await
    {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Err(error) => {
            tracing::error!(%error, "could not dead-letter, requeueing instead");
            requeue(delivery, options).await
        }
    }
}
