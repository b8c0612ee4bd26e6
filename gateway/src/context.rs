//! Who is asking and how: what a request brings besides its body, shared by the edge
//! (authentication, limits) and the dispatcher (the envelope of every message).

use std::time::Duration;

use contracts::accounts::Role;
use uuid::Uuid;

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: Uuid,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// What a request brings besides its body.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `X-Request-Id` (always present: the edge generates one).
    pub request_id: String,
    /// The verified caller, if the request carried a valid token.
    pub principal: Option<Principal>,
    /// The caller's user id, carried in every message as the actor.
    pub actor: Option<String>,
    /// How long the client prefers to wait for the outcome (`Prefer: wait=N`).
    pub wait: Option<Duration>,
    /// `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
    /// W3C trace context for the messages this request sends: the client's `traceparent`
    /// if valid, else a new trace. Carried now so tracing can join the hops later.
    pub traceparent: Option<String>,
    /// The request's method, which scopes its `Idempotency-Key`.
    pub method: String,
    /// The request's path (UUIDs in it lower-cased), which scopes its `Idempotency-Key`.
    pub path: String,
}

/// A `traceparent` continuing the client's trace (if it sent a valid one) or starting one.
pub fn traceparent(incoming: Option<&str>) -> String {
    let span: u64 = rand_u64();
    let trace = incoming
        .and_then(|value| {
            let parts: Vec<&str> = value.trim().split('-').collect();
            let valid = parts.len() == 4
                && parts[0] == "00"
                && parts[1].len() == 32
                && parts[2].len() == 16
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
                && parts[1] != "00000000000000000000000000000000";
            valid.then(|| parts[1].to_ascii_lowercase())
        })
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    format!("00-{trace}-{span:016x}-01")
}

fn rand_u64() -> u64 {
    let bytes = *Uuid::new_v4().as_bytes();
    u64::from_be_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
    .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_anything_else_starts_a_trace() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let next = traceparent(Some(incoming));
        assert!(next.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert_ne!(next, incoming, "a new span id");
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "",
        ] {
            let fresh = traceparent(Some(bad));
            assert_eq!(fresh.len(), 55);
            assert!(!fresh.contains("0af7651916cd43dd"));
        }
    }
}
