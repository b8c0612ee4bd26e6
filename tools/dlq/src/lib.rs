//! Dead letters: list them per queue, show one, move them back to the queue they died in,
//! or discard the ones that must never run.
//!
//! A replay publishes each selected message (with confirms) to the default exchange under
//! the name of the queue it died in, and removes it from the dead-letter queue only once
//! the broker has confirmed the copy; a message whose copy is not confirmed stays in the
//! dead-letter queue. So the tool itself never loses a message, and doubles one only if the
//! broker stored a copy but its confirm was lost — which the handlers' inbox absorbs.
//!
//! Going back through the default exchange (not the original exchange and routing key)
//! matters for events: the original route would hand the event again to every
//! subscriber, not only to the one that failed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use platform::bus::Topology;
use platform::bus::consumer::death_headers;
use platform::bus::envelope::{header_int, header_text};

/// Services whose queues have dead-letter queues.
pub const SERVICES: [&str; 3] = [
    contracts::catalog::SERVICE,
    contracts::accounts::SERVICE,
    contracts::social::SERVICE,
];

/// How long to wait for the next message before deciding the queue has no more for us.
const IDLE: Duration = Duration::from_secs(2);

/// The next delivery, or `None` when none comes within [`IDLE`].
async fn next(consumer: &mut lapin::Consumer) -> anyhow::Result<Option<Delivery>> {
    use futures::StreamExt as _;
    match tokio::time::timeout(IDLE, consumer.next()).await {
        Ok(Some(delivery)) => Ok(Some(delivery?)),
        Ok(None) | Err(_) => Ok(None),
    }
}

/// How long a replayed copy may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Header a replayed message gains (RFC 3339 time of the replay).
pub const REPLAYED_AT: &str = "x-switchyard-replayed-at";

/// One dead letter, as read from its headers.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The message id (an operation's id for commands).
    pub message_id: String,
    /// Its type (routing key of the contract).
    pub message_type: String,
    /// Why it died (see `platform::bus::consumer::reasons`).
    pub reason: String,
    /// The error text.
    pub error: String,
    /// Handling attempts made.
    pub attempts: i64,
    /// When it died.
    pub died_at: Option<DateTime<Utc>>,
    /// The queue it died in, where a replay sends it.
    pub home: String,
    /// The body, as sent.
    pub body: Vec<u8>,
    /// Every header, rendered as JSON for `show`.
    pub headers: serde_json::Value,
}

impl Letter {
    fn read(dlq: &str, properties: &BasicProperties, body: &[u8]) -> Self {
        let text = |name| header_text(properties, name).unwrap_or_default();
        Self {
            message_id: properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            message_type: properties
                .kind()
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
            reason: header_text(properties, death_headers::REASON)
                .unwrap_or_else(|| "unknown".to_owned()),
            error: text(death_headers::ERROR),
            attempts: header_int(properties, death_headers::ATTEMPTS).unwrap_or(0),
            died_at: header_text(properties, death_headers::DIED_AT)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
            home: header_text(properties, death_headers::QUEUE)
                .unwrap_or_else(|| dlq.strip_suffix(".dlq").unwrap_or(dlq).to_owned()),
            body: body.to_vec(),
            headers: properties
                .headers()
                .as_ref()
                .map(table_json)
                .unwrap_or(serde_json::Value::Null),
        }
    }

    /// How long ago it died.
    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.died_at.and_then(|t| (now - t).to_std().ok())
    }
}

/// Dead letters of one queue grouped by type and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Message type.
    pub message_type: String,
    /// Reason.
    pub reason: String,
    /// Letters in the group.
    pub count: usize,
    /// When the oldest one died.
    pub oldest: Option<DateTime<Utc>>,
}

/// Groups letters by (type, reason), largest group first.
pub fn group(letters: &[Letter]) -> Vec<Group> {
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for letter in letters {
        let key = (letter.message_type.clone(), letter.reason.clone());
        let entry = groups.entry(key).or_insert_with(|| Group {
            message_type: letter.message_type.clone(),
            reason: letter.reason.clone(),
            count: 0,
            oldest: None,
        });
        entry.count += 1;
        entry.oldest = match (entry.oldest, letter.died_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// Which letters a replay moves.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every letter in the queue.
    All,
    /// The letters with these message ids.
    Ids(HashSet<String>),
}

impl Selection {
    fn wants(&self, message_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.contains(message_id),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Moved back (confirmed, then removed from the dead-letter queue).
    pub moved: usize,
    /// Selected but not confirmed by the broker: still in the dead-letter queue.
    pub failed: usize,
    /// Not selected: left where they were.
    pub skipped: usize,
}

/// A connection to the broker and the names under one prefix.
pub struct DeadLetters {
    connection: Connection,
    topology: Topology,
}

impl DeadLetters {
    /// Connects to `amqp_url` for the deployment under `prefix`.
    pub async fn connect(amqp_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let properties =
            ConnectionProperties::default().with_connection_name(format!("{prefix}:dlq").into());
        let connection = Connection::connect(amqp_url, properties)
            .await
            .context("cannot connect to RabbitMQ")?;
        Ok(Self {
            connection,
            topology: Topology::new(prefix),
        })
    }

    /// Every dead-letter queue the services declare (some may not exist).
    pub fn known_queues(&self) -> Vec<String> {
        let mut queues = Vec::new();
        for service in SERVICES {
            for queue in [
                self.topology.command_queue(service),
                self.topology.event_queue(service),
            ] {
                queues.push(self.topology.dead_letter_queue(&queue));
            }
        }
        queues
    }

    /// The dead-letter queue a user means: a full name, or a work queue without the
    /// prefix (`social.commands`).
    pub fn resolve(&self, name: &str) -> String {
        let prefix = format!("{}.", self.topology.prefix());
        let full = if name.starts_with(&prefix) {
            name.to_owned()
        } else {
            format!("{prefix}{name}")
        };
        if full.ends_with(".dlq") {
            full
        } else {
            self.topology.dead_letter_queue(&full)
        }
    }

    /// Messages in `queue`, or `None` if it does not exist.
    pub async fn count(&self, queue: &str) -> anyhow::Result<Option<u32>> {
        Ok(platform::bus::topology::message_count(&self.connection, queue).await?)
    }

    /// Reads up to `limit` letters of `queue` without removing any: they are received
    /// unacknowledged and return to the queue when the channel closes.
    pub async fn peek(&self, queue: &str, limit: usize) -> anyhow::Result<Vec<Letter>> {
        let Some(count) = self.count(queue).await? else {
            return Ok(Vec::new());
        };
        let (channel, mut deliveries) = self.subscribe(queue).await?;
        let mut letters = Vec::new();
        while letters.len() < limit.min(count as usize) {
            let Some(delivery) = next(&mut deliveries).await? else {
                break;
            };
            letters.push(Letter::read(queue, &delivery.properties, &delivery.data));
        }
        let _ = channel.close(200, "peeked".into()).await;
        self.settle(queue, count).await;
        Ok(letters)
    }

    /// Moves the selected letters of `queue` back to the queue each died in. Looks at
    /// most at the messages that were in the queue when it started (so a letter that
    /// dies again while the replay runs is not replayed twice).
    pub async fn replay(&self, queue: &str, selection: &Selection) -> anyhow::Result<Replayed> {
        let Some(count) = self.count(queue).await? else {
            anyhow::bail!("queue {queue} does not exist");
        };
        let mut report = Replayed::default();
        if count == 0 {
            return Ok(report);
        }
        let publisher = self.connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (reader, mut deliveries) = self.subscribe(queue).await?;
        for _ in 0..count {
            let Some(delivery) = next(&mut deliveries).await? else {
                break;
            };
            let letter = Letter::read(queue, &delivery.properties, &delivery.data);
            if !selection.wants(&letter.message_id) {
                // Stays unacked until the reader closes, then goes back to the queue.
                report.skipped += 1;
                continue;
            }
            let properties = replay_properties(&delivery.properties);
            match send(&publisher, &letter.home, &delivery.data, properties).await {
                Ok(()) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    report.moved += 1;
                }
                Err(error) => {
                    eprintln!(
                        "dlq: {} not moved back to {}: {error:#}",
                        letter.message_id, letter.home
                    );
                    // Unacked, it goes back to the dead-letter queue with the reader.
                    report.failed += 1;
                }
            }
        }
        let _ = reader.close(200, "replayed".into()).await;
        let _ = publisher.close(200, "replayed".into()).await;
        self.settle(queue, (report.skipped + report.failed) as u32)
            .await;
        Ok(report)
    }

    /// Removes the letters of `queue` with these message ids for good (poison that must
    /// never run) and returns them, so the caller can leave an audit line for each. Only
    /// by id: emptying a whole queue is a deliberate `rabbitmqctl purge_queue`.
    pub async fn discard(&self, queue: &str, ids: &HashSet<String>) -> anyhow::Result<Vec<Letter>> {
        let Some(count) = self.count(queue).await? else {
            anyhow::bail!("queue {queue} does not exist");
        };
        let mut discarded = Vec::new();
        if count == 0 || ids.is_empty() {
            return Ok(discarded);
        }
        let (reader, mut deliveries) = self.subscribe(queue).await?;
        for _ in 0..count {
            let Some(delivery) = next(&mut deliveries).await? else {
                break;
            };
            let letter = Letter::read(queue, &delivery.properties, &delivery.data);
            if ids.contains(&letter.message_id) {
                delivery.ack(BasicAckOptions::default()).await?;
                discarded.push(letter);
                if discarded.len() == ids.len() {
                    break;
                }
            }
        }
        let _ = reader.close(200, "discarded".into()).await;
        self.settle(queue, count - discarded.len() as u32).await;
        Ok(discarded)
    }

    /// Waits (up to [`IDLE`]) until `queue` holds at least `expected` ready messages again:
    /// letters held unacknowledged go back when their channel closes, but the broker does
    /// that asynchronously, and the next command must find the queue as this one left it.
    async fn settle(&self, queue: &str, expected: u32) {
        let deadline = tokio::time::Instant::now() + IDLE;
        while tokio::time::Instant::now() < deadline {
            match self.count(queue).await {
                Ok(Some(ready)) if ready < expected => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return,
            }
        }
    }

    /// Consumes `queue` with manual acks and no prefetch bound (a quorum queue's
    /// `basic.get` may answer empty while its messages are still being committed; a
    /// consumer is served as soon as they are).
    async fn subscribe(&self, queue: &str) -> anyhow::Result<(Channel, lapin::Consumer)> {
        let channel = self.connection.create_channel().await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot read {queue}"))?;
        Ok((channel, consumer))
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// The letter's properties for its second life: the death headers and the attempt count
/// go (so retries start afresh), the time of the replay is added.
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let dropped = [
        death_headers::REASON,
        death_headers::ERROR,
        death_headers::ATTEMPTS,
        death_headers::DIED_AT,
        death_headers::QUEUE,
    ];
    let mut headers = FieldTable::default();
    if let Some(old) = properties.headers() {
        for (key, value) in old.inner() {
            if !dropped.contains(&key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    headers.insert(
        REPLAYED_AT.into(),
        AMQPValue::LongString(LongString::from(Utc::now().to_rfc3339())),
    );
    properties.clone().with_headers(headers)
}

/// Publishes to `queue` through the default exchange and waits for the confirm; a
/// returned (no such queue) or nacked message is an error.
async fn send(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .context("no confirm in time")??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!("queue {queue} does not exist"),
        Confirmation::Nack(_) => anyhow::bail!("the broker refused the message"),
        Confirmation::NotRequested => anyhow::bail!("the channel is not in confirm mode"),
    }
}

/// Renders AMQP headers as JSON (for humans; binary values as lossy text).
pub fn table_json(table: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_json).collect())
        }
        other => Value::String(format!("{other:?}")),
    }
}

/// `text` cut to at most `limit` bytes (on a character boundary), with a line saying how
/// much was left out; all of it when `limit` is `None`.
pub fn shorten(text: &str, limit: Option<usize>) -> String {
    let Some(limit) = limit.filter(|&l| text.len() > l) else {
        return text.to_owned();
    };
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… {} more bytes (dlq show --full prints everything)",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(message_type: &str, reason: &str, died_at: Option<&str>) -> Letter {
        Letter {
            message_id: "m".into(),
            message_type: message_type.into(),
            reason: reason.into(),
            error: String::new(),
            attempts: 1,
            died_at: died_at.map(|t| t.parse().unwrap()),
            home: "q".into(),
            body: Vec::new(),
            headers: serde_json::Value::Null,
        }
    }

    #[test]
    fn letters_group_by_type_and_reason_with_the_oldest_death() {
        let letters = [
            letter("a", "undecodable", Some("2026-01-02T00:00:00Z")),
            letter("a", "undecodable", Some("2026-01-01T00:00:00Z")),
            letter("a", "rejected", None),
            letter("b", "undecodable", None),
            letter("a", "undecodable", None),
        ];
        let groups = group(&letters);
        assert_eq!(groups[0].count, 3);
        assert_eq!(groups[0].message_type, "a");
        assert_eq!(
            groups[0].oldest,
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(groups.iter().map(|g| g.count).sum::<usize>(), 5);
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn a_replayed_message_loses_its_death_headers_and_keeps_the_rest() {
        let mut headers = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(LongString::from(v.to_owned()));
        headers.insert(death_headers::REASON.into(), text("rejected"));
        headers.insert(death_headers::ATTEMPTS.into(), AMQPValue::LongLongInt(3));
        headers.insert("x-request-id".into(), text("req-1"));
        let properties = BasicProperties::default().with_headers(headers);
        let replayed = replay_properties(&properties);
        let json = table_json(replayed.headers().as_ref().unwrap());
        assert_eq!(json["x-request-id"], "req-1");
        assert!(json.get(death_headers::REASON).is_none());
        assert!(json.get(death_headers::ATTEMPTS).is_none());
        assert!(json.get(REPLAYED_AT).is_some());
    }

    #[test]
    fn selections_pick_by_message_id() {
        let ids = Selection::Ids(["a".to_owned()].into_iter().collect());
        assert!(ids.wants("a"));
        assert!(!ids.wants("b"));
        assert!(Selection::All.wants("b"));
    }

    #[test]
    fn long_bodies_are_cut_with_a_note_unless_asked_for_in_full() {
        let body = "é".repeat(5000);
        let short = shorten(&body, Some(4096));
        assert!(short.len() < 4200, "{}", short.len());
        assert!(short.contains("more bytes"));
        assert_eq!(shorten(&body, None), body);
        assert_eq!(shorten("small", Some(4096)), "small");
    }
}
