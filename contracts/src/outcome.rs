//! What a worker reports back: the outcome of a command, and the reply to a query.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Final state of a command that a worker has handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The effect is committed.
    Succeeded,
    /// A business rule refused the command; nothing changed.
    Rejected,
}

/// Why a command or query was refused; maps onto an HTTP status at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The target does not exist (404).
    NotFound,
    /// The change conflicts with existing state, e.g. a duplicate code (409).
    Conflict,
    /// The command is well-formed but breaks a rule (422).
    Invalid,
    /// Credentials were wrong (401); the detail never says which part.
    Unauthorized,
    /// The actor may not do this (403).
    Forbidden,
}

/// A refusal with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Category of the refusal.
    pub kind: RejectionKind,
    /// One sentence a client can show.
    pub detail: String,
}

impl Rejection {
    /// A `not_found` rejection.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::NotFound,
            detail: detail.into(),
        }
    }
    /// A `conflict` rejection.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Conflict,
            detail: detail.into(),
        }
    }
    /// An `invalid` rejection.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Invalid,
            detail: detail.into(),
        }
    }
    /// An `unauthorized` rejection.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Unauthorized,
            detail: detail.into(),
        }
    }
    /// A `forbidden` rejection.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self {
            kind: RejectionKind::Forbidden,
            detail: detail.into(),
        }
    }
}

/// The outcome of one operation, as recorded by the worker that handled it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The operation (command message id).
    pub operation_id: Uuid,
    /// Succeeded or rejected.
    pub status: OutcomeStatus,
    /// Present when rejected.
    pub rejection: Option<Rejection>,
    /// The resource as it stands after the command, when there is one to show.
    pub resource: Option<Value>,
    /// When the worker committed the outcome.
    pub completed_at: DateTime<Utc>,
    /// Fingerprint of the HTTP request behind an idempotent command (see
    /// [`crate::headers::REQUEST_FINGERPRINT`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
}

/// Reply to a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum QueryReply {
    /// The answer.
    Ok {
        /// The answer's body.
        body: Value,
    },
    /// The query was refused (unknown id, bad cursor…).
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}
