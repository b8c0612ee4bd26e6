//! The broker's ceiling on this machine: confirmed, persistent, mandatory publishes to a
//! quorum queue of its own with a window of confirms in flight, then consuming it with a
//! large prefetch. Also the depth of a service's queue, for the backlog.

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One ceiling measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rate {
    /// What was measured.
    pub what: String,
    /// Messages.
    pub messages: u64,
    /// Messages per second.
    pub per_second: f64,
}

/// Connects to the broker.
pub async fn connect(url: &str) -> Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .context("cannot connect to RabbitMQ")
}

/// Publish at each window, then consume everything; the queue is deleted after.
pub async fn ceiling(url: &str, messages: u64, windows: &[usize]) -> Result<Vec<Rate>> {
    let connection = connect(url).await?;
    let queue = format!("bench.ceiling.{}", uuid::Uuid::now_v7().simple());
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum".to_owned())),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .context("cannot declare the benchmark queue")?;
    let outcome = measure(&connection, &queue, messages, windows).await;
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "bench done".into()).await;
    outcome
}

async fn measure(
    connection: &Connection,
    queue: &str,
    messages: u64,
    windows: &[usize],
) -> Result<Vec<Rate>> {
    let body = vec![b'x'; 200];
    let mut rates = Vec::new();
    let mut published = 0u64;
    for &window in windows {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let started = Instant::now();
        let mut in_flight = VecDeque::with_capacity(window);
        for _ in 0..messages {
            if in_flight.len() >= window
                && let Some(confirm) = in_flight.pop_front()
            {
                confirmed(confirm).await?;
            }
            let confirm = channel
                .basic_publish("".into(), queue.into(), options, &body, properties.clone())
                .await?;
            in_flight.push_back(confirm);
        }
        for confirm in in_flight {
            confirmed(confirm).await?;
        }
        published += messages;
        rates.push(Rate {
            what: format!("publish, confirmed, {window} in flight"),
            messages,
            per_second: messages as f64 / started.elapsed().as_secs_f64(),
        });
        let _ = channel.close(200, "published".into()).await;
    }
    let channel = connection.create_channel().await?;
    channel.basic_qos(1_000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < published {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .context("the benchmark queue stopped delivering")?
            .context("the consumer ended")??;
        consumed += 1;
        // Acknowledge in batches, as a consumer with a large prefetch would.
        if consumed.is_multiple_of(100) || consumed == published {
            delivery.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    rates.push(Rate {
        what: "consume, prefetch 1000".to_owned(),
        messages: consumed,
        per_second: consumed as f64 / started.elapsed().as_secs_f64(),
    });
    let _ = channel.close(200, "consumed".into()).await;
    Ok(rates)
}

async fn confirmed(confirm: lapin::PublisherConfirm) -> Result<()> {
    match confirm.await? {
        lapin::Confirmation::Ack(None) => Ok(()),
        other => anyhow::bail!("the broker refused a benchmark message: {other:?}"),
    }
}

/// Messages ready in `queue` (0 when it does not exist).
pub async fn depth(connection: &Connection, queue: &str) -> Result<u64> {
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
    Ok(declared.map(|q| u64::from(q.message_count())).unwrap_or(0))
}
