//! The consumer loop: manual acks, a prefetch bound, dead letters with a reason, and a
//! drain on shutdown.
//!
//! A message is acknowledged only after its handler returned [`Disposition::Done`], which
//! handlers return only once their effect is committed. Deliveries are handled concurrently
//! up to the prefetch count; on cancellation the consumer is cancelled at the broker, the
//! in-flight handlers get a grace period to finish, and whatever is still unacked is
//! requeued by the broker when the channel closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use contracts::{Envelope, headers};
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
use super::envelope::from_properties;

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
}

/// What to do with a message once its handler returns.
#[derive(Debug)]
pub enum Disposition {
    /// Handled (effect committed, or nothing to do): send `reply` if asked, then ack.
    Done {
        /// Body of the reply to `reply_to`.
        reply: Option<Vec<u8>>,
    },
    /// A transient failure (a store or the broker unavailable): requeue and try again.
    Retry(String),
    /// The message can never be handled: dead-letter it with this reason.
    Dead(String),
}

/// Handles one kind of queue.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. Must not return [`Disposition::Done`] before the effect is
    /// committed.
    fn handle(&self, message: Incoming) -> impl Future<Output = Disposition> + Send;
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
    /// Pause before requeueing a transiently failed message, so a down store is not
    /// hammered in a tight loop.
    pub retry_pause: Duration,
}

/// Consumes until `cancel` fires (returns `Ok`) or the channel fails (returns `Err`).
pub async fn run<H: Handler>(
    bus: Bus,
    options: ConsumerOptions,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let channel = bus
        .connection()
        .create_channel()
        .await
        .context("cannot open channel")?;
    channel
        .basic_qos(bus.config.prefetch, BasicQosOptions::default())
        .await
        .context("cannot set prefetch")?;
    let tag = format!("{}-{}", options.queue, uuid::Uuid::now_v7());
    let mut consumer = channel
        .basic_consume(
            options.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot consume {}", options.queue))?;
    tracing::info!(queue = %options.queue, prefetch = bus.config.prefetch, "consuming");

    let options = Arc::new(options);
    let mut in_flight = JoinSet::new();
    let result = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                break Ok(());
            }
            Some(finished) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Err(error) = finished {
                    tracing::error!(%error, "message task failed");
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    in_flight.spawn(process(bus.clone(), options.clone(), handler.clone(), delivery));
                }
                Some(Err(error)) => break Err(anyhow::Error::new(error).context("consumer failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer on {}", options.queue)),
            }
        }
    };

    let drained = tokio::time::timeout(options.grace, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(queue = %options.queue, left = in_flight.len(), "grace period over, unacked messages go back to the queue");
        in_flight.abort_all();
    }
    let _ = channel.close(200, "consumer stopped".into()).await;
    tracing::info!(queue = %options.queue, "consumer stopped");
    result
}

async fn process<H: Handler>(
    bus: Bus,
    options: Arc<ConsumerOptions>,
    handler: Arc<H>,
    delivery: Delivery,
) {
    let started = std::time::Instant::now();
    let mut sent_at = None;
    let disposition = match decode(&delivery) {
        Ok(incoming) => {
            sent_at = Some((
                incoming.envelope.timestamp,
                incoming.envelope.message_type.clone(),
            ));
            let reply_to = incoming.reply_to.clone();
            let correlation_id = incoming.envelope.correlation_id.to_string();
            let span = tracing::info_span!(
                "process",
                otel.name = %format!("{} process", crate::metrics::unprefixed(bus.topology.prefix(), &options.queue)),
                otel.kind = "consumer",
                messaging.system = "rabbitmq",
                messaging.operation.type = "process",
                messaging.destination.name = %options.queue,
                messaging.rabbitmq.destination.routing_key = %incoming.routing_key,
                messaging.message.id = %incoming.envelope.message_id,
                messaging.message.conversation_id = %correlation_id,
                request_id = incoming.envelope.request_id.as_deref().unwrap_or(""),
                operation_id = %correlation_id,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            crate::telemetry::continue_trace(&span, incoming.envelope.traceparent.as_deref());
            crate::telemetry::record_ids(&span, incoming.envelope.traceparent.as_deref());
            let disposition = handler.handle(incoming).instrument(span).await;
            if let (Disposition::Done { reply: Some(body) }, Some(reply_to)) =
                (&disposition, reply_to)
                && let Err(error) = bus.publisher.reply(&reply_to, &correlation_id, body).await
            {
                // The effect is committed; a lost reply only means the caller polls instead.
                tracing::warn!(%error, "could not send reply");
            }
            disposition
        }
        Err(reason) => Disposition::Dead(reason),
    };
    record(&bus, &options.queue, &disposition, started, sent_at);
    let settled = match disposition {
        Disposition::Done { .. } => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Disposition::Retry(reason) => {
            tracing::warn!(queue = %options.queue, %reason, "transient failure, will retry");
            tokio::time::sleep(options.retry_pause).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
        Disposition::Dead(reason) => dead_letter(&bus, &options, &delivery, &reason).await,
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

fn decode(delivery: &Delivery) -> Result<Incoming, String> {
    if delivery.data.len() > MAX_BODY_BYTES {
        return Err(format!(
            "body of {} bytes exceeds {MAX_BODY_BYTES}",
            delivery.data.len()
        ));
    }
    let envelope = from_properties(&delivery.properties)?;
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
    })
}

/// Republishes the message to the dead-letter exchange with the reason in its headers,
/// then acks it; if the republish is not confirmed, the message is requeued instead, so it
/// is never lost on the way.
async fn dead_letter(
    bus: &Bus,
    options: &ConsumerOptions,
    delivery: &Delivery,
    reason: &str,
) -> lapin::Result<()> {
    tracing::warn!(queue = %options.queue, %reason, "dead-lettering message");
    if !options.dead_letters {
        return delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(|_| ());
    }
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    let text = |v: &str| AMQPValue::LongString(LongString::from(v.to_owned()));
    table.insert(headers::DEATH_REASON.into(), text(reason));
    table.insert("x-switchyard-death-queue".into(), text(&options.queue));
    table.insert(
        "x-switchyard-original-routing-key".into(),
        text(delivery.routing_key.as_str()),
    );
    table.insert(
        "x-switchyard-died-at".into(),
        text(&chrono::Utc::now().to_rfc3339()),
    );
    let properties = delivery.properties.clone().with_headers(table);
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
            tokio::time::sleep(options.retry_pause).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
    }
}

/// Decodes a message body of type `T` and checks it against its envelope: the type header
/// must be the body's routing key and the schema version one we read. An error is a reason
/// to dead-letter: the message can never be handled.
pub fn decode_body<T: serde::de::DeserializeOwned>(
    incoming: &Incoming,
    schema_version: u32,
    routing_key: impl Fn(&T) -> &'static str,
) -> Result<T, String> {
    let body: T =
        serde_json::from_slice(&incoming.body).map_err(|e| format!("undecodable body: {e}"))?;
    if routing_key(&body) != incoming.envelope.message_type {
        return Err(format!(
            "type header {} does not match body type {}",
            incoming.envelope.message_type,
            routing_key(&body)
        ));
    }
    if incoming.envelope.schema_version != schema_version {
        return Err(format!(
            "unsupported schema version {}",
            incoming.envelope.schema_version
        ));
    }
    Ok(body)
}
