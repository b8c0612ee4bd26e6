//! Exactly-once handling for PostgreSQL services: inbox claim, outcome record and the
//! transaction around a command or event handler.

use contracts::{Envelope, Outcome, OutcomeStatus};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tracing::Instrument as _;
use uuid::Uuid;

use super::outbox::Relay;
use super::{GenericClient, Pool, Transaction};
use crate::bus::Disposition;

/// What a handler did inside its transaction; on [`Effect::Rejected`] the transaction's
/// writes (if any) are rolled back.
pub use crate::effect::Effect;

/// A handler failure that a retry may cure (the database is away, a serialisation
/// conflict…). Rule violations are [`Effect::Rejected`], not errors.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Transient {
    message: String,
    /// PostgreSQL's SQLSTATE, when PostgreSQL itself refused: what decides between retry
    /// and dead letter, never the message text.
    sqlstate: Option<SqlState>,
}

impl Transient {
    /// A failure of our own (not PostgreSQL's) that a retry may cure.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            sqlstate: None,
        }
    }

    /// A failure PostgreSQL reported with `sqlstate`.
    pub fn with_sqlstate(message: impl Into<String>, sqlstate: SqlState) -> Self {
        Self {
            message: message.into(),
            sqlstate: Some(sqlstate),
        }
    }

    /// What went wrong, for logs and the retry reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, for a retry reason.
    pub fn into_message(self) -> String {
        self.message
    }

    /// What the consumer does about it: retry later, unless PostgreSQL refused the data
    /// itself (SQLSTATE class 22, "data exception": a NUL byte in text, a number out of
    /// range…), which no retry can change — that message is dead-lettered at once.
    pub fn into_disposition(self) -> Disposition {
        if self.is_data_exception() {
            Disposition::Dead(crate::bus::DeadLetter::rejected(self.message))
        } else {
            Disposition::Retry(self.message)
        }
    }

    /// Whether PostgreSQL refused the data itself (SQLSTATE class 22).
    pub fn is_data_exception(&self) -> bool {
        self.sqlstate
            .as_ref()
            .is_some_and(|code| code.code().starts_with("22"))
    }
}

impl crate::bus::QueryFailure for Transient {
    /// Data PostgreSQL refuses will be refused on every retry.
    fn is_permanent(&self) -> bool {
        self.is_data_exception()
    }
}

impl From<tokio_postgres::Error> for Transient {
    fn from(error: tokio_postgres::Error) -> Self {
        Self {
            message: super::describe(&error),
            sqlstate: error.code().cloned(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Transient {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        let sqlstate = match &error {
            deadpool_postgres::PoolError::Backend(backend) => backend.code().cloned(),
            _ => None,
        };
        Self {
            message: error.to_string(),
            sqlstate,
        }
    }
}

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

#[cfg(test)]
mod classification {
    use super::*;

    #[test]
    fn data_exceptions_are_dead_lettered_and_everything_else_retried() {
        let nul = Transient::with_sqlstate(
            "ERROR: invalid byte sequence for encoding \"UTF8\": 0x00",
            SqlState::from_code("22021"),
        );
        assert!(matches!(nul.into_disposition(), Disposition::Dead(d) if d.reason == "rejected"));
        let retries = [
            Transient::with_sqlstate(
                "FATAL: terminating connection due to administrator command",
                SqlState::ADMIN_SHUTDOWN,
            ),
            // A message that merely looks like a data exception is not one.
            Transient::new("a text ending in (22021)"),
            Transient::new("claimed but no outcome yet"),
        ];
        for transient in retries {
            let reason = transient.message().to_owned();
            assert!(
                matches!(transient.into_disposition(), Disposition::Retry(_)),
                "{reason}"
            );
        }
    }
}
