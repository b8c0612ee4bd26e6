//! Exactly-once handling for PostgreSQL services: inbox claim, outcome record and the
//! transaction around a command or event handler.

use contracts::{Envelope, Outcome, OutcomeStatus};
use serde_json::Value;
use tracing::Instrument as _;
use uuid::Uuid;

use super::outbox::Relay;
use super::{GenericClient, Pool, Transaction};
use crate::bus::Disposition;

/// What a handler did inside its transaction; on [`Effect::Rejected`] the transaction's
/// writes (if any) are rolled back.
pub use crate::effect::Effect;

pub use super::transient::Transient;

/// Claims `message_id` in the inbox; false means it was handled before.
pub async fn claim<C: GenericClient + Sync>(
    client: &C,
    message_id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = client
        .execute(
            "INSERT INTO inbox (message_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&message_id],
        )
        .await?;
    Ok(inserted == 1)
}

/// The recorded outcome of an operation.
pub async fn find_outcome<C: GenericClient + Sync>(
    client: &C,
    operation_id: Uuid,
) -> Result<Option<Outcome>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT status, rejection, resource, completed_at, request_fingerprint
             FROM operations WHERE id = $1",
            &[&operation_id],
        )
        .await?;
    Ok(row.map(|row| {
        let status: String = row.get(0);
        let rejection: Option<Value> = row.get(1);
        Outcome {
            operation_id,
            status: if status == "succeeded" {
                OutcomeStatus::Succeeded
            } else {
                OutcomeStatus::Rejected
            },
            rejection: rejection.and_then(|r| serde_json::from_value(r).ok()),
            resource: row.get(2),
            completed_at: row.get(3),
            request_fingerprint: row.get(4),
        }
    }))
}

async fn record_outcome<C: GenericClient + Sync>(
    client: &C,
    outcome: &Outcome,
) -> Result<(), tokio_postgres::Error> {
    let status = match outcome.status {
        OutcomeStatus::Succeeded => "succeeded",
        OutcomeStatus::Rejected => "rejected",
    };
    let rejection = outcome
        .rejection
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok());
    client
        .execute(
            "INSERT INTO operations (id, status, rejection, resource, completed_at, request_fingerprint)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &outcome.operation_id,
                &status,
                &rejection,
                &outcome.resource,
                &outcome.completed_at,
                &outcome.request_fingerprint,
            ],
        )
        .await?;
    Ok(())
}

/// Runs a command handler exactly once in effect and turns the result into a
/// disposition whose reply is the outcome.
///
/// `apply` runs inside a transaction that has already claimed the message; its writes,
/// the outcome and its outbox events commit together. A rejection rolls back whatever
/// `apply` wrote and commits only the claim and the outcome.
pub async fn command<F>(pool: &Pool, relay: &Relay, envelope: &Envelope, apply: F) -> Disposition
where
    F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t> + Send,
{
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "postgres transaction",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = "command transaction",
    );
    let result = run_command(pool, envelope, apply).instrument(span).await;
    relay
        .metrics()
        .observe_db("command_transaction", started.elapsed());
    match result {
        Ok((outcome, fresh)) => {
            if fresh {
                relay.wake();
                tracing::info!(status = ?outcome.status, "command handled");
            } else {
                relay.metrics().inbox_duplicates.inc();
                tracing::info!("duplicate command, answering with the recorded outcome");
            }
            Disposition::Done {
                reply: serde_json::to_vec(&outcome).ok(),
            }
        }
        Err(failure) => failure.into_disposition(),
    }
}

async fn run_command<F>(
    pool: &Pool,
    envelope: &Envelope,
    apply: F,
) -> Result<(Outcome, bool), Transient>
where
    F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t> + Send,
{
    let operation_id = envelope.message_id;
    let mut client = pool.get().await?;
    if let Some(outcome) = find_outcome(&client, operation_id).await? {
        return Ok((outcome, false));
    }
    let mut tx = client.transaction().await?;
    if !claim(&tx, operation_id).await? {
        // A concurrent delivery of the same command committed first.
        drop(tx);
        let outcome = find_outcome(&client, operation_id).await?;
        return outcome
            .map(|o| (o, false))
            .ok_or_else(|| Transient::new("claimed but no outcome yet"));
    }
    let savepoint = tx.savepoint("effect").await?;
    let effect = apply(&savepoint).await?;
    let (status, rejection, resource) = match effect {
        Effect::Applied(resource) => {
            savepoint.commit().await?;
            (OutcomeStatus::Succeeded, None, resource)
        }
        Effect::Rejected(rejection) => {
            savepoint.rollback().await?;
            (OutcomeStatus::Rejected, Some(rejection), None)
        }
    };
    let outcome = Outcome {
        operation_id,
        status,
        rejection,
        resource,
        completed_at: chrono::Utc::now(),
        request_fingerprint: envelope.request_fingerprint.clone(),
    };
    record_outcome(&tx, &outcome).await?;
    tx.commit().await?;
    Ok((outcome, true))
}

/// Runs an event handler at most once per message id (the inbox), committing its writes
/// and outbox events with the claim. Rejections are logged and the event acknowledged:
/// an event reports a fact that already happened, there is nobody to refuse it to.
pub async fn event<F>(pool: &Pool, relay: &Relay, envelope: &Envelope, apply: F) -> Disposition
where
    F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t> + Send,
{
    let started = std::time::Instant::now();
    let result: Result<bool, Transient> = async {
        let mut client = pool.get().await?;
        let mut tx = client.transaction().await?;
        if !claim(&tx, envelope.message_id).await? {
            return Ok(false);
        }
        let savepoint = tx.savepoint("effect").await?;
        match apply(&savepoint).await? {
            Effect::Applied(_) => savepoint.commit().await?,
            Effect::Rejected(rejection) => {
                tracing::info!(detail = %rejection.detail, "event ignored");
                savepoint.rollback().await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }
    .instrument(tracing::info_span!(
        "postgres transaction",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = "event transaction",
    ))
    .await;
    relay
        .metrics()
        .observe_db("event_transaction", started.elapsed());
    match result {
        Ok(fresh) => {
            if fresh {
                relay.wake();
                tracing::info!("event handled");
            } else {
                relay.metrics().inbox_duplicates.inc();
                tracing::info!(message_id = %envelope.message_id, "duplicate event ignored");
            }
            Disposition::Done { reply: None }
        }
        Err(failure) => failure.into_disposition(),
    }
}

/// The boxed future a transactional handler returns; boxing lets closures borrow the
/// transaction for any lifetime, which unboxed closures cannot express.
pub type TxFuture<'t> = futures::future::BoxFuture<'t, Result<Effect, Transient>>;
