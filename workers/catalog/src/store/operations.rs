//! Outcomes of handled operations: the worker's inbox and the source of
//! `GET /v1/operations/{id}`.
//!
//! A command's message id is claimed (with a digest of its body) before anything is
//! applied, so a second message with the same id but other content is refused instead of
//! applied to another document; the outcome is then recorded on the claim.

use contracts::{Outcome, OutcomeStatus};
use mongodb::bson::{Bson, Document, doc};
use uuid::Uuid;

use platform::effect::Effect;

use super::{Store, StoreError};

/// The recorded outcome of `operation_id`, if it was handled (a claim without an outcome
/// is still in flight, or its worker died before recording).
pub async fn get(store: &Store, operation_id: Uuid) -> Result<Option<Outcome>, StoreError> {
    let Some(document) = store
        .operations
        .find_one(doc! {"_id": operation_id.to_string()})
        .await?
    else {
        return Ok(None);
    };
    if !document.contains_key("status") {
        return Ok(None);
    }
    decode(&document).map(Some)
}

/// What claiming a message id found.
#[derive(Debug)]
pub enum Claim {
    /// Ours to apply: new, or claimed earlier for the same body by a delivery that never
    /// recorded an outcome (applying again is safe: each document remembers what it
    /// applied).
    Fresh,
    /// Handled before: its outcome.
    Recorded(Outcome),
    /// The id was claimed for a different body.
    Mismatch,
    /// The id was claimed by another request made with the same `Idempotency-Key` (its
    /// fingerprint differs): not an error here; the gateway tells that client its key was
    /// reused. Holds the first request's outcome once there is one.
    Reused(Option<Outcome>),
}

/// A digest of a message body, stored with its claim.
pub fn digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(body)[..16])
}

/// Claims `operation_id` for a body with `digest`, made by a request with `fingerprint`
/// (set for requests with an `Idempotency-Key`).
pub async fn claim(
    store: &Store,
    operation_id: Uuid,
    digest: &str,
    fingerprint: Option<&str>,
) -> Result<Claim, StoreError> {
    let id = operation_id.to_string();
    let mut claim =
        doc! {"_id": &id, "claim": digest, "claimed_at": mongodb::bson::DateTime::now()};
    if let Some(fingerprint) = fingerprint {
        claim.insert("claim_fingerprint", fingerprint);
    }
    match store.operations.insert_one(claim).await {
        Ok(_) => return Ok(Claim::Fresh),
        Err(error) if super::is_duplicate_key(&error) => {}
        Err(error) => return Err(error.into()),
    }
    let Some(existing) = store.operations.find_one(doc! {"_id": &id}).await? else {
        // Removed in between (never happens in practice); treat as new.
        return Ok(Claim::Fresh);
    };
    let recorded = existing.contains_key("status");
    // Outcomes recorded before claims existed carry no digest: trust them.
    let same_body = existing.get_str("claim").map_or(recorded, |d| d == digest);
    if same_body {
        return if recorded {
            decode(&existing).map(Claim::Recorded)
        } else {
            Ok(Claim::Fresh)
        };
    }
    let first = existing.get_str("claim_fingerprint").ok();
    if let (Some(first), Some(mine)) = (first, fingerprint)
        && first != mine
    {
        let outcome = if recorded {
            Some(decode(&existing)?)
        } else {
            None
        };
        return Ok(Claim::Reused(outcome));
    }
    Ok(Claim::Mismatch)
}

fn decode(document: &Document) -> Result<Outcome, StoreError> {
    let mut document = document.clone();
    document.remove("claim");
    document.remove("claimed_at");
    document.remove("claim_fingerprint");
    let id = document.remove("_id").unwrap_or(Bson::Null);
    document.insert("operation_id", id);
    // The outcome is stored as JSON-shaped BSON; go through serde_json to get it back.
    let value: serde_json::Value = Bson::Document(document).into_relaxed_extjson();
    serde_json::from_value(value).map_err(|e| StoreError::Malformed(format!("outcome: {e}")))
}

/// Records the outcome of an operation. The first record wins: a redelivery that raced
/// with the original cannot overwrite it. Returns the outcome that is now on record.
pub async fn record(
    store: &Store,
    envelope: &contracts::Envelope,
    effect: Effect,
) -> Result<Outcome, StoreError> {
    let operation_id = envelope.message_id;
    let (status, rejection, resource) = match effect {
        Effect::Applied(resource) => (OutcomeStatus::Succeeded, None, resource),
        Effect::Rejected(rejection) => (OutcomeStatus::Rejected, Some(rejection), None),
    };
    let outcome = Outcome {
        operation_id,
        status,
        rejection,
        resource,
        completed_at: chrono::Utc::now(),
        request_fingerprint: envelope.request_fingerprint.clone(),
    };
    let mut fields = match mongodb::bson::to_bson(&outcome)? {
        Bson::Document(fields) => fields,
        _ => Document::new(),
    };
    fields.remove("operation_id");
    // On the claim, and only if no outcome is there yet: the first record wins.
    let written = store
        .operations
        .update_one(
            doc! {"_id": operation_id.to_string(), "status": {"$exists": false}},
            doc! {"$set": fields},
        )
        .await?;
    if written.modified_count == 1 {
        return Ok(outcome);
    }
    // Another delivery of the same operation recorded first; answer with its outcome.
    Ok(get(store, operation_id).await?.unwrap_or(outcome))
}
