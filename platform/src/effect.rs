//! What handling a command did, whichever store it changed: the one result type of every
//! service's business rules, which the exactly-once machinery (PostgreSQL's transaction
//! in `platform::pg::handle`, the catalog's document protocol) turns into a recorded
//! outcome and a reply.

use contracts::Rejection;
use serde::Serialize;
use serde_json::Value;

/// What a handler did.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Applied; the resource as it now stands, if there is one to show.
    Applied(Option<Value>),
    /// Refused by a business rule; nothing it wrote is kept.
    Rejected(Rejection),
}

impl Effect {
    /// Applied, showing `resource` as it now stands.
    pub fn applied<T: Serialize>(resource: &T) -> Self {
        Self::Applied(serde_json::to_value(resource).ok())
    }

    /// Whether it was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, Self::Applied(_))
    }
}
