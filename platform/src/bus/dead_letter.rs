//! Why a message was dead-lettered: a reason from a fixed set, and the error text. Its
//! own module because both the envelope decoding (which finds most reasons) and the
//! consumer (which moves the message) need it.

/// Why a message was dead-lettered: a short machine-readable reason (one of [`reasons`])
/// and the error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What went wrong, for the operator.
    pub error: String,
}

impl DeadLetter {
    /// A dead letter for `reason`.
    pub fn new(reason: &'static str, error: impl Into<String>) -> Self {
        Self {
            reason,
            error: error.into(),
        }
    }

    /// A handler's permanent refusal.
    pub fn rejected(error: impl Into<String>) -> Self {
        Self::new(reasons::REJECTED, error)
    }
}

/// The reasons a message is dead-lettered for (header `x-switchyard-death-reason`).
pub mod reasons {
    /// The body exceeds [`crate::bus::consumer::MAX_BODY_BYTES`].
    pub const OVERSIZED: &str = "oversized";
    /// The content type is missing or not JSON.
    pub const BAD_CONTENT_TYPE: &str = "bad-content-type";
    /// A required property or header is missing or malformed.
    pub const BAD_HEADER: &str = "bad-header";
    /// The body is not JSON, or not the shape its type requires.
    pub const UNDECODABLE: &str = "undecodable";
    /// The type is not one this queue's consumer knows.
    pub const UNKNOWN_TYPE: &str = "unknown-type";
    /// The schema version is not one the consumer reads.
    pub const UNSUPPORTED_VERSION: &str = "unsupported-version";
    /// The type header and the body's type disagree.
    pub const TYPE_MISMATCH: &str = "type-mismatch";
    /// The handler refused it for good.
    pub const REJECTED: &str = "rejected";
    /// A command names an actor the gateway did not vouch for (see `platform::actor`).
    pub const FORGED_ACTOR: &str = "forged-actor";
    /// Transient failures went on for every allowed attempt.
    pub const RETRIES_EXHAUSTED: &str = "retries-exhausted";
}
