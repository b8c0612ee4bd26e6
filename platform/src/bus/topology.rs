//! Names and declarations of exchanges and queues, declared once at startup.
//!
//! Every name starts with the configured prefix so that tests (and several stacks on one
//! broker) never see each other's traffic.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// Header naming the delay (in milliseconds) a retried message waits out. Not `x-`
/// prefixed: a headers exchange ignores such headers when matching.
pub const DELAY_HEADER: &str = "switchyard-retry-delay-ms";

/// Deliveries after which the broker itself dead-letters a message that keeps failing, so
/// a poison message can never loop forever even if a handler misclassifies it.
const DELIVERY_LIMIT: i64 = 20;

/// Exchange and queue names under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Topic exchange for commands and queries.
    pub fn commands_exchange(&self) -> String {
        format!("{}.commands", self.prefix)
    }

    /// Topic exchange for events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Exchange dead letters go through.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }

    /// Headers exchange that routes a message due for a retry to the delay queue of its
    /// delay (header [`DELAY_HEADER`]); the message's routing key is its home queue.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// The delay queue holding messages for `delay` before they return home.
    pub fn delay_queue(&self, delay: Duration) -> String {
        format!("{}.delay.{}ms", self.prefix, delay.as_millis())
    }

    /// A service's command queue.
    pub fn command_queue(&self, service: &str) -> String {
        format!("{}.{service}.commands", self.prefix)
    }

    /// A service's queue of the events it subscribes to.
    pub fn event_queue(&self, service: &str) -> String {
        format!("{}.{service}.events", self.prefix)
    }

    /// A service's query queue.
    pub fn query_queue(&self, service: &str) -> String {
        format!("{}.{service}.queries", self.prefix)
    }

    /// The dead-letter queue paired with `queue`.
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}.dlq")
    }

    /// Declares the three exchanges. Idempotent: the broker accepts a redeclaration with
    /// the same arguments.
    pub async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for name in [
            self.commands_exchange(),
            self.events_exchange(),
            self.dead_letter_exchange(),
        ] {
            channel
                .exchange_declare(
                    name.into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares the retry exchange and one delay queue per delay in `delays`.
    ///
    /// A delay queue is a quorum queue with a queue TTL of its delay whose dead letters go
    /// to the default exchange under the message's own routing key, which is the name of
    /// the queue it came from: when the time is up the broker puts it back there, with
    /// at-least-once dead-lettering, so a broker restart in between loses nothing. Messages
    /// carry their own, jittered and slightly shorter, expiry; within one queue they differ
    /// by at most a quarter of the delay, so none waits long behind another.
    pub async fn declare_delays(
        &self,
        channel: &Channel,
        delays: &[Duration],
    ) -> lapin::Result<()> {
        let exchange = self.retry_exchange();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for delay in delays {
            let queue = self.delay_queue(*delay);
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), text("quorum"));
            args.insert("x-dead-letter-exchange".into(), text(""));
            args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            args.insert("x-overflow".into(), text("reject-publish"));
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await?;
            let mut binding = FieldTable::default();
            binding.insert("x-match".into(), text("all"));
            binding.insert(DELAY_HEADER.into(), text(&delay.as_millis().to_string()));
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    binding,
                )
                .await?;
        }
        Ok(())
    }

    /// Declares a durable quorum queue bound to `exchange` under `keys`, with its own
    /// dead-letter queue bound to the dead-letter exchange. With `max_length`, the queue
    /// holds at most that many messages and refuses further publishes (the publisher gets a
    /// nack); dead-lettering and retries wait for room rather than drop anything.
    pub async fn declare_work_queue(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        keys: &[&str],
        max_length: Option<u32>,
    ) -> lapin::Result<()> {
        let dlq = self.dead_letter_queue(queue);
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(dlq.as_str().into(), durable, quorum_args(None))
            .await?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                self.dead_letter_exchange().into(),
                dlq.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = quorum_args(Some((&self.dead_letter_exchange(), &dlq)));
        if let Some(bound) = max_length {
            // reject-publish is already set (at-least-once dead-lettering needs it).
            args.insert(
                "x-max-length".into(),
                AMQPValue::LongLongInt(i64::from(bound)),
            );
        }
        channel.queue_declare(queue.into(), durable, args).await?;
        self.bind_work_queue(channel, queue, exchange, keys).await
    }

    /// Binds an existing work queue to `exchange` under `keys`, whatever its arguments: for
    /// a queue declared before its arguments changed (a quorum queue's cannot change).
    pub async fn bind_work_queue(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        keys: &[&str],
    ) -> lapin::Result<()> {
        for key in keys {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares a service's query queue: classic, because queries are short-lived and
    /// carry a per-message expiry (a late answer is worthless once the caller gave up).
    pub async fn declare_query_queue(
        &self,
        channel: &Channel,
        service: &str,
        keys: &[&str],
    ) -> lapin::Result<String> {
        let queue = self.query_queue(service);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("classic"));
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, args)
            .await?;
        for key in keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.commands_exchange().into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(queue)
    }
}

/// Messages ready in `queue`, or `None` if it does not exist. Uses its own channel: a
/// passive declare of a missing queue closes the channel it ran on.
pub async fn message_count(
    connection: &lapin::Connection,
    queue: &str,
) -> lapin::Result<Option<u32>> {
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = channel.close(200, "counted".into()).await;
    Ok(declared.ok().map(|q| q.message_count()))
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}

fn quorum_args(dead_letter: Option<(&str, &str)>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    if let Some((exchange, routing_key)) = dead_letter {
        args.insert("x-dead-letter-exchange".into(), text(exchange));
        // Route dead letters by queue name, not by their original key: an event queue's
        // messages carry another service's keys and must still land in this queue's DLQ.
        args.insert("x-dead-letter-routing-key".into(), text(routing_key));
        // Quorum queues dead-letter at-most-once by default; at-least-once (which needs
        // reject-publish overflow) keeps a message until the DLQ has confirmed it.
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
    }
    args
}
