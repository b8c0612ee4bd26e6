//! The envelope: metadata every message carries next to its body.
//!
//! The platform maps these fields onto AMQP properties (message id, correlation id, type,
//! timestamp, content type) and headers (the rest); the body is the JSON of the command,
//! event or query itself.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Header names used on the wire, in one place so producers and consumers agree.
pub mod headers {
    /// Id of the message that caused this one (absent for messages caused by a client).
    pub const CAUSATION_ID: &str = "x-causation-id";
    /// Schema version of the body, an integer.
    pub const SCHEMA_VERSION: &str = "x-schema-version";
    /// The user on whose behalf the message was sent.
    pub const ACTOR: &str = "x-actor";
    /// The actor's role, as the gateway verified it from their token.
    pub const ACTOR_ROLE: &str = "x-actor-role";
    /// The gateway's proof (an HMAC over message id, actor and role) that it vouches for
    /// the actor: workers refuse an actor without it.
    pub const ACTOR_PROOF: &str = "x-actor-proof";
    /// The `X-Request-Id` of the HTTP request that started the flow.
    pub const REQUEST_ID: &str = "x-request-id";
    /// W3C trace context, carried now so tracing can join the hops later.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state companion of `traceparent`.
    pub const TRACESTATE: &str = "tracestate";
    /// Fingerprint of the HTTP request behind a command sent with an `Idempotency-Key`;
    /// recorded with the outcome so a reused key with another body is recognised.
    pub const REQUEST_FINGERPRINT: &str = "x-request-fingerprint";
    /// Why a message was dead-lettered by a consumer.
    pub const DEATH_REASON: &str = "x-switchyard-death-reason";
}

/// Content type of every body we publish.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Metadata carried by every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Unique id of this message (UUID v7). For commands it equals the operation id, so the
    /// worker's inbox recognises a republished command as the same one.
    pub message_id: Uuid,
    /// The operation this message belongs to.
    pub correlation_id: Uuid,
    /// The message that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// Message type: the routing key it was defined with, e.g. `catalog.course.create`.
    pub message_type: String,
    /// Version of the body's schema.
    pub schema_version: u32,
    /// When the message was created.
    pub timestamp: DateTime<Utc>,
    /// User id on whose behalf the message was sent.
    pub actor: Option<String>,
    /// The actor's role (`admin`, `teacher`, `student`), vouched for by `actor_proof`.
    pub actor_role: Option<String>,
    /// The gateway's HMAC over message id, actor, role and body (commands only).
    pub actor_proof: Option<String>,
    /// Fingerprint of the request behind an idempotent command.
    pub request_fingerprint: Option<String>,
    /// HTTP request id that started the flow.
    pub request_id: Option<String>,
    /// W3C `traceparent` of the sending span, if any.
    pub traceparent: Option<String>,
}

impl Envelope {
    /// A fresh envelope for a message that starts an operation.
    pub fn new(message_type: &str, schema_version: u32, operation_id: Uuid) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            correlation_id: operation_id,
            causation_id: None,
            message_type: message_type.to_owned(),
            schema_version,
            timestamp: Utc::now(),
            actor: None,
            actor_role: None,
            actor_proof: None,
            request_fingerprint: None,
            request_id: None,
            traceparent: None,
        }
    }

    /// An envelope for a message caused by `self` (an event emitted while handling a command).
    pub fn caused(&self, message_id: Uuid, message_type: &str, schema_version: u32) -> Self {
        Self {
            message_id,
            correlation_id: self.correlation_id,
            causation_id: Some(self.message_id),
            message_type: message_type.to_owned(),
            schema_version,
            timestamp: Utc::now(),
            actor: self.actor.clone(),
            // The role travels on as information; the proof belongs to the command only.
            actor_role: self.actor_role.clone(),
            actor_proof: None,
            request_fingerprint: None,
            request_id: self.request_id.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}
