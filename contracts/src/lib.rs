//! Message contracts shared by every Switchyard service.
//!
//! Only serde (and schemars) types live here: the envelope metadata, each service's
//! commands, events and queries, the outcome a worker reports for a command, and the
//! routing keys, spelled out as strings rather than derived from type names so that a
//! rename in Rust never silently re-routes traffic on the broker. Each routing key is
//! written once, in a [`messages!`] line, which makes its constant, serde tag and
//! [`Message::routing_key`] arm.

pub mod accounts;
pub mod catalog;
pub mod common;
pub mod envelope;
pub mod message;
pub mod outcome;
pub mod schema;
pub mod social;
pub mod text;

pub use envelope::{Envelope, headers};
pub use message::{Kind, Message, Query};
pub use outcome::{Outcome, OutcomeStatus, QueryReply, Rejection, RejectionKind};
