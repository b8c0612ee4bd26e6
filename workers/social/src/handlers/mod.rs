//! Message handlers: commands (posting), events (reactions to other services), queries.

pub mod commands;
pub mod events;
pub mod queries;

use contracts::Envelope;
use contracts::social::SocialEvent;
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
    outbox::emit(tx, cause, event).await
}

/// The acting user of a message, if it names one.
pub(crate) fn actor(envelope: &Envelope) -> Option<Uuid> {
    envelope
        .actor
        .as_deref()
        .and_then(|a| Uuid::parse_str(a).ok())
}
