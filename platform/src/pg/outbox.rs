//! The transactional outbox and its relay.
//!
//! Events are inserted in the transaction that makes the change. The relay takes a batch
//! with `FOR UPDATE SKIP LOCKED` (so several replicas share the work without taking the
//! same rows), publishes every message with confirms, deletes the confirmed rows and
//! commits. If it dies before that commit, the rows come back and are published again with
//! the same message ids, which subscribers' inboxes recognise: nothing committed is lost,
//! nothing is applied twice.

use std::sync::Arc;
use std::time::Duration;

use contracts::{Envelope, Kind, Message};
use futures::future::join_all;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::transient::Transient;
use super::{GenericClient, Pool};
use crate::bus::{Bus, Encoded, Outgoing, PublishError};

/// Puts `event`, caused by the message `cause` (same operation and actor; the current
/// span's trace), into the outbox inside the caller's transaction.
pub async fn emit<C: GenericClient + Sync, E: Message>(
    client: &C,
    cause: &Envelope,
    event: &E,
) -> Result<(), Transient> {
    let mut encoded =
        Encoded::caused_by(event, cause).map_err(|e| Transient::new(e.to_string()))?;
    encoded.envelope.traceparent =
        crate::telemetry::traceparent().or(encoded.envelope.traceparent.take());
    enqueue_event(client, &encoded).await?;
    Ok(())
}

/// Puts an encoded event into the outbox inside the caller's transaction.
pub async fn enqueue_event<C: GenericClient + Sync, E: Message>(
    client: &C,
    event: &Encoded<E>,
) -> Result<(), tokio_postgres::Error> {
    const {
        assert!(
            matches!(E::KIND, Kind::Event),
            "only events go through the outbox"
        )
    };
    enqueue(client, &event.envelope, &event.body).await
}

/// Adds a message to the outbox inside the caller's transaction, as it is.
pub async fn enqueue<C: GenericClient + Sync>(
    client: &C,
    envelope: &Envelope,
    body: &[u8],
) -> Result<(), tokio_postgres::Error> {
    let envelope_json = serde_json::to_value(envelope).unwrap_or_default();
    let body = String::from_utf8_lossy(body).into_owned();
    super::prepared::execute(
        client,
        "INSERT INTO outbox (message_id, routing_key, envelope, body) VALUES ($1, $2, $3, $4)",
        &[
            &envelope.message_id,
            &envelope.message_type,
            &envelope_json,
            &body,
        ],
    )
    .await?;
    Ok(())
}

/// Why a relay pass stopped early; what was not published stays for the next pass.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed.
    #[error("postgres: {0}")]
    Database(String),
    /// A publish was not confirmed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Database(super::describe(&error))
    }
}

impl From<deadpool_postgres::PoolError> for RelayError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Database(error.to_string())
    }
}

/// Publishes the outbox.
#[derive(Clone)]
pub struct Relay {
    pool: Pool,
    bus: Bus,
    wake: Arc<Notify>,
    batch: i64,
}

impl Relay {
    /// A relay over `pool`'s outbox.
    pub fn new(pool: Pool, bus: Bus) -> Self {
        Self {
            pool,
            bus,
            wake: Arc::new(Notify::new()),
            batch: 256,
        }
    }

    /// Call after committing events so they leave now instead of at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.bus.metrics()
    }

    /// Updates the backlog gauges: events waiting, and the age of the oldest.
    async fn measure_backlog(&self) -> Result<(), RelayError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM outbox",
                &[],
            )
            .await?;
        let (count, age): (i64, f64) = (row.get(0), row.get(1));
        self.bus.metrics().outbox_backlog.set(count);
        self.bus.metrics().outbox_oldest_age.set(age);
        Ok(())
    }

    /// One pass: publishes up to a batch and deletes what was confirmed. Returns how many
    /// messages were published.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT seq, routing_key, envelope, body FROM outbox ORDER BY seq LIMIT $1
                 FOR UPDATE SKIP LOCKED",
                &[&self.batch],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let exchange = self.bus.topology().events_exchange();
        let publishes = rows.iter().map(|row| {
            let seq: i64 = row.get(0);
            let routing_key: String = row.get(1);
            let envelope: serde_json::Value = row.get(2);
            let body: String = row.get(3);
            let exchange = exchange.clone();
            async move {
                let Ok(envelope) = serde_json::from_value::<Envelope>(envelope) else {
                    // Unreadable rows cannot become readable; drop them loudly rather
                    // than block the outbox forever.
                    tracing::error!(seq, "outbox row with a malformed envelope deleted");
                    return (seq, Ok(()));
                };
                // The event continues the trace of the change that committed it.
                let span = tracing::info_span!("outbox relay", otel.kind = "internal");
                crate::telemetry::continue_trace(&span, envelope.traceparent.as_deref());
                let result = self
                    .bus
                    .publisher()
                    .publish(Outgoing {
                        exchange: &exchange,
                        routing_key: &routing_key,
                        envelope: &envelope,
                        body: body.as_bytes(),
                        // Events may have no subscriber yet; that is not an error.
                        mandatory: false,
                        expiration: None,
                        extra_headers: None,
                    })
                    .instrument(span)
                    .await;
                (seq, result)
            }
        });
        let results = join_all(publishes).await;
        let mut confirmed = Vec::with_capacity(results.len());
        let mut failure = None;
        for (seq, result) in results {
            match result {
                Ok(()) => confirmed.push(seq),
                Err(error) => failure = Some(error),
            }
        }
        tx.execute("DELETE FROM outbox WHERE seq = ANY($1)", &[&confirmed])
            .await?;
        tx.commit().await?;
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(confirmed.len()),
        }
    }

    /// Publishes whenever woken or every `interval`, until cancelled; then drains once more.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                () = cancel.cancelled() => true,
                () = self.wake.notified() => false,
                () = tokio::time::sleep(interval) => false,
            };
            loop {
                match self.publish_batch().await {
                    Ok(n) if n as i64 == self.batch => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay pass failed, will retry");
                        break;
                    }
                }
            }
            if let Err(error) = self.measure_backlog().await {
                tracing::debug!(%error, "cannot measure the outbox backlog");
            }
            if stop {
                break;
            }
        }
    }
}
