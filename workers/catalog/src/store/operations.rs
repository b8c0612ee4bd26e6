//! Outcomes of handled operations: the worker's inbox and the source of
//! `GET /v1/operations/{id}`.

use contracts::{Outcome, OutcomeStatus};
use mongodb::bson::{Bson, Document, doc};
use uuid::Uuid;

use super::{Effect, Store, StoreError};

/// The recorded outcome of `operation_id`, if it was handled.
pub async fn get(store: &Store, operation_id: Uuid) -> Result<Option<Outcome>, StoreError> {
    let Some(document) = store
        .operations
        .find_one(doc! {"_id": operation_id.to_string()})
        .await?
    else {
        return Ok(None);
    };
    decode(&document).map(Some)
}

fn decode(document: &Document) -> Result<Outcome, StoreError> {
    let mut document = document.clone();
    let id = document.remove("_id").unwrap_or(Bson::Null);
    document.insert("operation_id", id);
    // The outcome is stored as JSON-shaped BSON; go through serde_json to get it back.
    let value: serde_json::Value = Bson::Document(document).into_relaxed_extjson();
    serde_json::from_value(value)
        .map_err(|e| StoreError::Contention(format!("malformed outcome: {e}")))
}

/// Records the outcome of an operation. The first record wins: a redelivery that raced
/// with the original cannot overwrite it. Returns the outcome that is now on record.
pub async fn record(
    store: &Store,
    operation_id: Uuid,
    effect: Effect,
) -> Result<Outcome, StoreError> {
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
    };
    let mut fields = match mongodb::bson::to_bson(&outcome)? {
        Bson::Document(fields) => fields,
        _ => Document::new(),
    };
    fields.remove("operation_id");
    let written = store
        .operations
        .update_one(
            doc! {"_id": operation_id.to_string()},
            doc! {"$setOnInsert": fields},
        )
        .upsert(true)
        .await?;
    if written.upserted_id.is_some() {
        return Ok(outcome);
    }
    // Another delivery of the same operation recorded first; answer with its outcome.
    Ok(get(store, operation_id).await?.unwrap_or(outcome))
}
