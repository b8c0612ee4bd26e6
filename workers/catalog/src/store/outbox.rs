//! Events waiting in a document's `outbox`, and the relay that publishes them.
//!
//! The relay publishes each pending event with confirms, then clears the outbox only if
//! the document's version is unchanged (no new event was appended meanwhile). A crash
//! between confirm and clear republishes the same event with the same message id, which
//! subscribers' inboxes recognise; nothing committed is ever left unpublished.

use std::time::Duration;

use contracts::Envelope;
use contracts::catalog::{CatalogEvent, SCHEMA_VERSION};
use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use platform::bus::{Bus, Outgoing, PublishError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Store, StoreError, version};

/// One event stored next to the change that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Message id of the event (stable across republishing).
    pub id: String,
    /// Routing key.
    pub routing_key: String,
    /// JSON body.
    pub body: String,
    /// Operation id.
    pub correlation_id: String,
    /// The command that caused it.
    pub causation_id: String,
    /// Who asked.
    pub actor: Option<String>,
    /// HTTP request id.
    pub request_id: Option<String>,
    /// Trace context of the command.
    pub traceparent: Option<String>,
}

impl OutboxEntry {
    /// An event caused by the command with envelope `cause`.
    pub fn new(cause: &Envelope, event: &CatalogEvent) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            routing_key: event.routing_key().to_owned(),
            body: serde_json::to_string(event).unwrap_or_default(),
            correlation_id: cause.correlation_id.to_string(),
            causation_id: cause.message_id.to_string(),
            actor: cause.actor.clone(),
            request_id: cause.request_id.clone(),
            // The handler's span, so the event's consumers join the same trace.
            traceparent: platform::telemetry::traceparent().or_else(|| cause.traceparent.clone()),
        }
    }

    /// As a BSON document for `$push`.
    pub fn to_document(&self) -> Result<Document, StoreError> {
        Ok(mongodb::bson::to_document(self)?)
    }

    fn envelope(&self) -> Option<Envelope> {
        let message_id = Uuid::parse_str(&self.id).ok()?;
        let correlation_id = Uuid::parse_str(&self.correlation_id).ok()?;
        let causation_id = Uuid::parse_str(&self.causation_id).ok();
        Some(Envelope {
            message_id,
            correlation_id,
            causation_id,
            message_type: self.routing_key.clone(),
            schema_version: SCHEMA_VERSION,
            timestamp: chrono::Utc::now(),
            actor: self.actor.clone(),
            actor_role: None,
            actor_proof: None,
            request_fingerprint: None,
            request_id: self.request_id.clone(),
            traceparent: self.traceparent.clone(),
        })
    }
}

/// Publishes the outbox of one document and clears it if nothing was added meanwhile.
pub async fn flush_document(
    bus: &Bus,
    collection: &Collection<Document>,
    document: &Document,
) -> Result<usize, RelayError> {
    let entries: Vec<OutboxEntry> = match document.get_array("outbox") {
        Ok(items) => items
            .iter()
            .filter_map(|b| b.as_document())
            .filter_map(|d| mongodb::bson::from_document(d.clone()).ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    let exchange = bus.topology().events_exchange();
    for entry in &entries {
        let Some(envelope) = entry.envelope() else {
            tracing::error!(event_id = %entry.id, "outbox entry with malformed ids skipped");
            continue;
        };
        // The event continues the trace of the change that committed it.
        let span = tracing::info_span!("outbox relay", otel.kind = "internal");
        platform::telemetry::continue_trace(&span, envelope.traceparent.as_deref());
        bus.publisher()
            .publish(Outgoing {
                exchange: &exchange,
                routing_key: &entry.routing_key,
                envelope: &envelope,
                body: entry.body.as_bytes(),
                // Events may have no subscriber yet; that is not an error.
                mandatory: false,
                expiration: None,
                extra_headers: None,
            })
            .instrument(span)
            .await?;
    }
    let Some(id) = document.get_str("_id").ok() else {
        return Ok(0);
    };
    collection
        .update_one(
            doc! {"_id": id, "version": version(document)},
            doc! {"$set": {"outbox": [], "pending_events": 0}},
        )
        .await
        .map_err(StoreError::from)?;
    Ok(entries.len())
}

/// A relay failure: the events stay in the outbox for the next sweep.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Reading or clearing the outbox failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long the relay leaves a fresh outbox to the handler that wrote it, which publishes
/// it straight away; the relay is for the events a crash or a broker hiccup left behind.
/// Without this pause the two would race and publish most events twice.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Milliseconds since the epoch, stamped on a document whenever its outbox grows.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Publishes every pending event in the catalog that has settled.
pub async fn sweep(bus: &Bus, store: &Store) -> Result<usize, RelayError> {
    let mut published = 0;
    let settled = now_ms() - SETTLE.as_millis() as i64;
    for collection in [store.courses.collection(), store.teachers.collection()] {
        let mut cursor = collection
            .find(doc! {"pending_events": {"$gt": 0}, "changed_ms": {"$lt": settled}})
            .await
            .map_err(StoreError::from)?;
        while let Some(document) = cursor.try_next().await.map_err(StoreError::from)? {
            published += flush_document(bus, collection, &document).await?;
        }
    }
    Ok(published)
}

/// Sets the backlog gauges: documents with unpublished events, and the age of the oldest.
async fn measure_backlog(bus: &Bus, store: &Store) -> Result<(), StoreError> {
    let mut pending = 0;
    let mut oldest: Option<i64> = None;
    for collection in [store.courses.collection(), store.teachers.collection()] {
        let filter = doc! {"pending_events": {"$gt": 0}};
        pending += collection.count_documents(filter.clone()).await?;
        let first = collection
            .find_one(filter)
            .sort(doc! {"changed_ms": 1})
            .await?;
        if let Some(changed) = first.and_then(|d| d.get_i64("changed_ms").ok()) {
            oldest = Some(oldest.map_or(changed, |o| o.min(changed)));
        }
    }
    bus.metrics()
        .outbox_backlog
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
    let age = oldest.map_or(0.0, |changed| (now_ms() - changed).max(0) as f64 / 1000.0);
    bus.metrics().outbox_oldest_age.set(age);
    Ok(())
}

/// Sweeps every `interval` until cancelled, then once more so events committed by the
/// last handled messages leave before exit.
pub async fn run_relay(bus: Bus, store: Store, interval: Duration, cancel: CancellationToken) {
    loop {
        let stop = tokio::select! {
            () = cancel.cancelled() => true,
            () = tokio::time::sleep(interval) => false,
        };
        if let Err(error) = measure_backlog(&bus, &store).await {
            tracing::debug!(%error, "cannot measure the outbox backlog");
        }
        match sweep(&bus, &store).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "outbox relay published pending events"),
            Err(error) => tracing::warn!(%error, "outbox relay sweep failed, will retry"),
        }
        if stop {
            break;
        }
    }
}
