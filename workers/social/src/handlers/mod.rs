//! Message handlers: commands (posting), events (reactions to other services), queries.

pub mod commands;
pub mod events;
pub mod queries;

use contracts::Envelope;
use contracts::social::{SCHEMA_VERSION, SocialEvent};
use platform::pg::Transaction;
use platform::pg::handle::Transient;
use platform::pg::outbox;
use uuid::Uuid;

/// Puts an event caused by `cause` into the outbox.
pub(crate) async fn emit(
    tx: &Transaction<'_>,
    cause: &Envelope,
    event: &SocialEvent,
) -> Result<(), Transient> {
    let mut envelope = cause.caused(Uuid::now_v7(), event.routing_key(), SCHEMA_VERSION);
    envelope.traceparent = platform::telemetry::traceparent().or(envelope.traceparent);
    let body = serde_json::to_vec(event).map_err(|e| Transient(e.to_string()))?;
    outbox::enqueue(tx, &envelope, &body).await?;
    Ok(())
}

/// The acting user of a message, if it names one.
pub(crate) fn actor(envelope: &Envelope) -> Option<Uuid> {
    envelope
        .actor
        .as_deref()
        .and_then(|a| Uuid::parse_str(a).ok())
}
