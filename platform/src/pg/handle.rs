//! Exactly-once handling for PostgreSQL services: inbox claim, outcome record and the
//! transaction around a service's business rules, a batch of messages at a time.
//!
//! A service implements [`Apply`] (check a message, apply it inside a transaction) and
//! consumes with [`Batched::commands`] or [`Batched::events`]. A batch is one transaction:
//! outcomes already recorded are read with one query, the rest claimed in the inbox with
//! one statement, each message applied in its own savepoint (a rejection rolls back only
//! its own writes), the outcomes written with one statement, one commit, then the acks.
//! If the transaction fails anywhere, nothing of it is kept and its messages are handled
//! again one transaction each, so a transient failure or refused data stays with the
//! message that caused it and retrying it doubles nothing.

use std::collections::{HashMap, HashSet};

use contracts::{Envelope, Outcome, OutcomeStatus};
use serde_json::Value;
use tracing::Instrument as _;
use uuid::Uuid;

use super::outbox::Relay;
use super::{GenericClient, Pool, Transaction, prepared};
use crate::bus::consumer::BatchHandler;
use crate::bus::{DeadLetter, Disposition, Incoming};

/// What a handler did inside its transaction; on [`Effect::Rejected`] the transaction's
/// writes (if any) are rolled back.
pub use crate::effect::Effect;

pub use super::transient::Transient;

/// The start of every outcome query; a macro so each query is one constant string.
macro_rules! select_outcomes {
    () => {
        "SELECT id, status, rejection, resource, completed_at, request_fingerprint FROM operations"
    };
}

fn outcome_of(row: &tokio_postgres::Row) -> Outcome {
    let status: String = row.get(1);
    let rejection: Option<Value> = row.get(2);
    Outcome {
        operation_id: row.get(0),
        status: if status == "succeeded" {
            OutcomeStatus::Succeeded
        } else {
            OutcomeStatus::Rejected
        },
        rejection: rejection.and_then(|r| serde_json::from_value(r).ok()),
        resource: row.get(3),
        completed_at: row.get(4),
        request_fingerprint: row.get(5),
    }
}

/// The recorded outcome of an operation.
pub async fn find_outcome<C: GenericClient + Sync>(
    client: &C,
    operation_id: Uuid,
) -> Result<Option<Outcome>, tokio_postgres::Error> {
    let row = prepared::query_opt(
        client,
        concat!(select_outcomes!(), " WHERE id = $1"),
        &[&operation_id],
    )
    .await?;
    Ok(row.as_ref().map(outcome_of))
}

/// The recorded outcomes of those of `operation_ids` that have one.
async fn find_outcomes<C: GenericClient + Sync>(
    client: &C,
    operation_ids: &[Uuid],
) -> Result<HashMap<Uuid, Outcome>, tokio_postgres::Error> {
    let rows = prepared::query(
        client,
        concat!(select_outcomes!(), " WHERE id = ANY($1)"),
        &[&operation_ids],
    )
    .await?;
    Ok(rows
        .iter()
        .map(outcome_of)
        .map(|o| (o.operation_id, o))
        .collect())
}

/// Claims every id in the inbox with one statement; returns those claimed now (the others
/// were handled before, or by a concurrent transaction that has committed meanwhile: an
/// insert that conflicts with an uncommitted claim waits for it).
async fn claim_all<C: GenericClient + Sync>(
    client: &C,
    message_ids: &[Uuid],
) -> Result<HashSet<Uuid>, tokio_postgres::Error> {
    let rows = prepared::query(
        client,
        "INSERT INTO inbox (message_id) SELECT unnest($1::uuid[])
         ON CONFLICT DO NOTHING RETURNING message_id",
        &[&message_ids],
    )
    .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Records outcomes with one statement.
async fn record_outcomes<C: GenericClient + Sync>(
    client: &C,
    outcomes: &[Outcome],
) -> Result<(), tokio_postgres::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut rejections = Vec::with_capacity(outcomes.len());
    let mut resources = Vec::with_capacity(outcomes.len());
    let mut completed = Vec::with_capacity(outcomes.len());
    let mut fingerprints = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        ids.push(outcome.operation_id);
        statuses.push(match outcome.status {
            OutcomeStatus::Succeeded => "succeeded",
            OutcomeStatus::Rejected => "rejected",
        });
        rejections.push(
            outcome
                .rejection
                .as_ref()
                .and_then(|r| serde_json::to_value(r).ok()),
        );
        resources.push(outcome.resource.clone());
        completed.push(outcome.completed_at);
        fingerprints.push(outcome.request_fingerprint.clone());
    }
    prepared::execute(
        client,
        "INSERT INTO operations (id, status, rejection, resource, completed_at, request_fingerprint)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[], $6::text[])",
        &[&ids, &statuses, &rejections, &resources, &completed, &fingerprints],
    )
    .await?;
    Ok(())
}

/// A PostgreSQL service's business rules for one queue: what [`Batched`] runs inside its
/// transactions.
pub trait Apply: Send + Sync + 'static {
    /// The decoded message.
    type Message: Send + Sync + 'static;

    /// Checks a message before any transaction (decoding, the actor's signature): an
    /// error dead-letters this message alone.
    fn accept(&self, incoming: &Incoming) -> Result<Self::Message, DeadLetter>;

    /// Applies `message` inside its savepoint of the batch's transaction. A rejection
    /// rolls back what it wrote; an error rolls back the whole batch, whose messages are
    /// then handled one transaction each.
    fn apply<'t>(
        &'t self,
        tx: &'t Transaction<'t>,
        envelope: &'t Envelope,
        message: &'t Self::Message,
    ) -> TxFuture<'t>;

    /// Called once the effect of `message` is committed (for counting what was applied:
    /// counted any earlier, a batch rolled back and handled again would count twice).
    fn committed(&self, _message: &Self::Message, _effect: &Effect) {}
}

/// Whether a queue's messages are commands (whose outcome is recorded and replied) or
/// events (facts: a rejection is logged and the event acknowledged, there is nobody to
/// refuse it to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Commands,
    Events,
}

/// Consumes a queue in batches, each handled exactly once in effect in one transaction.
pub struct Batched<A> {
    pool: Pool,
    relay: Relay,
    rules: A,
    queue: Queue,
}

impl<A: Apply> Batched<A> {
    /// Handles commands with `rules` on `pool`, waking `relay` after each commit.
    pub fn commands(pool: Pool, relay: Relay, rules: A) -> Self {
        Self {
            pool,
            relay,
            rules,
            queue: Queue::Commands,
        }
    }

    /// Handles events with `rules` on `pool`, waking `relay` after each commit.
    pub fn events(pool: Pool, relay: Relay, rules: A) -> Self {
        Self {
            pool,
            relay,
            rules,
            queue: Queue::Events,
        }
    }
}

/// One accepted message of a batch.
struct Job<M> {
    envelope: Envelope,
    message: M,
    span: tracing::Span,
}

/// What one message of a committed batch came to.
enum Handled {
    /// Applied or rejected now; the effect as it was committed.
    Fresh(Outcome, Effect),
    /// Handled before (redelivered, or twice in one batch): the recorded outcome, if it
    /// is a command.
    Duplicate(Option<Outcome>),
    /// Claimed by a concurrent transaction that has not recorded an outcome yet.
    Pending,
}

impl<A: Apply> BatchHandler for Batched<A> {
    fn batched(&self) -> bool {
        true
    }

    async fn handle_batch(&self, messages: Vec<Incoming>) -> Vec<Disposition> {
        let mut dispositions: Vec<Option<Disposition>> = Vec::with_capacity(messages.len());
        let mut jobs = Vec::with_capacity(messages.len());
        let mut slots = Vec::with_capacity(messages.len());
        for incoming in messages {
            match self.rules.accept(&incoming) {
                Ok(message) => {
                    slots.push(dispositions.len());
                    dispositions.push(None);
                    jobs.push(Job {
                        envelope: incoming.envelope,
                        message,
                        span: incoming.span,
                    });
                }
                Err(dead) => {
                    let _entered = incoming.span.enter();
                    tracing::warn!(reason = dead.reason, error = %dead.error, "message refused before its transaction");
                    dispositions.push(Some(Disposition::Dead(dead)));
                }
            }
        }
        if !jobs.is_empty() {
            for (slot, disposition) in slots.into_iter().zip(self.transact(&jobs).await) {
                dispositions[slot] = Some(disposition);
            }
        }
        dispositions
            .into_iter()
            .map(|d| d.unwrap_or_else(|| Disposition::Retry("not handled".to_owned())))
            .collect()
    }
}

impl<A: Apply> Batched<A> {
    /// Handles `jobs` in one transaction, or one transaction each if that fails.
    async fn transact(&self, jobs: &[Job<A::Message>]) -> Vec<Disposition> {
        let metrics = self.relay.metrics().clone();
        let operation = match self.queue {
            Queue::Commands => "command_transaction",
            Queue::Events => "event_transaction",
        };
        let started = std::time::Instant::now();
        let result = self.run(jobs).await;
        metrics.observe_db(operation, started.elapsed());
        match result {
            Ok(handled) => jobs
                .iter()
                .zip(handled)
                .map(|(job, handled)| self.finish(job, handled))
                .collect(),
            Err(failure) if jobs.len() == 1 => vec![failure.into_disposition()],
            Err(failure) => {
                tracing::warn!(size = jobs.len(), error = %failure, "batch transaction failed, handling its messages one by one");
                let mut dispositions = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let started = std::time::Instant::now();
                    let result = self.run(std::slice::from_ref(job)).await;
                    metrics.observe_db(operation, started.elapsed());
                    dispositions.push(match result {
                        Ok(mut handled) => match handled.pop() {
                            Some(handled) => self.finish(job, handled),
                            None => Disposition::Retry("nothing came of it".to_owned()),
                        },
                        Err(failure) => {
                            let _entered = job.span.enter();
                            tracing::warn!(error = %failure, "handling failed");
                            failure.into_disposition()
                        }
                    });
                }
                dispositions
            }
        }
    }

    /// The disposition of one message of a committed transaction.
    fn finish(&self, job: &Job<A::Message>, handled: Handled) -> Disposition {
        let _entered = job.span.enter();
        let metrics = self.relay.metrics();
        match handled {
            Handled::Fresh(outcome, effect) => {
                self.relay.wake();
                self.rules.committed(&job.message, &effect);
                tracing::info!(status = ?outcome.status, "{} handled", self.noun());
                self.reply(&outcome)
            }
            Handled::Duplicate(outcome) => {
                metrics.inbox_duplicates.inc();
                tracing::info!(message_id = %job.envelope.message_id, "duplicate {} answered from the record", self.noun());
                match outcome {
                    Some(outcome) => self.reply(&outcome),
                    None => Disposition::Done { reply: None },
                }
            }
            Handled::Pending => Disposition::Retry("claimed but no outcome yet".to_owned()),
        }
    }

    fn noun(&self) -> &'static str {
        match self.queue {
            Queue::Commands => "command",
            Queue::Events => "event",
        }
    }

    fn reply(&self, outcome: &Outcome) -> Disposition {
        Disposition::Done {
            reply: match self.queue {
                Queue::Commands => serde_json::to_vec(outcome).ok(),
                Queue::Events => None,
            },
        }
    }

    /// One transaction over `jobs`; what each came to once it committed.
    async fn run(&self, jobs: &[Job<A::Message>]) -> Result<Vec<Handled>, Transient> {
        // A trace per message, a transaction per batch: the transaction belongs to the
        // first message's trace and links to the others', so every message's trace still
        // shows where its effect was committed.
        let parent = jobs.first().map(|j| j.span.id());
        let span = tracing::info_span!(
            parent: parent.flatten(),
            "postgres transaction",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation.name = match self.queue {
                Queue::Commands => "command transaction",
                Queue::Events => "event transaction",
            },
            messages = jobs.len(),
        );
        for job in jobs.iter().skip(1) {
            span.follows_from(&job.span);
        }
        self.run_in(jobs).instrument(span).await
    }

    async fn run_in(&self, jobs: &[Job<A::Message>]) -> Result<Vec<Handled>, Transient> {
        let commands = self.queue == Queue::Commands;
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.envelope.message_id).collect();
        let mut client = self.pool.get().await?;
        let mut known = if commands {
            find_outcomes(&client, &ids).await?
        } else {
            HashMap::new()
        };
        let mut tx = client.transaction().await?;
        let unknown: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !known.contains_key(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let claimed = if unknown.is_empty() {
            HashSet::new()
        } else {
            claim_all(&tx, &unknown).await?
        };
        let mut handled = Vec::with_capacity(jobs.len());
        let mut applied_here = HashSet::new();
        let mut waiting = Vec::new();
        let mut outcomes = Vec::new();
        for (index, job) in jobs.iter().enumerate() {
            let id = job.envelope.message_id;
            if let Some(outcome) = known.get(&id) {
                handled.push(Handled::Duplicate(Some(outcome.clone())));
                continue;
            }
            if !claimed.contains(&id) || !applied_here.insert(id) {
                // Someone else's, or the second copy of one in this batch: its outcome is
                // read once this transaction is over.
                handled.push(Handled::Pending);
                waiting.push(index);
                continue;
            }
            let savepoint = tx.savepoint("effect").await?;
            let effect = self
                .rules
                .apply(&savepoint, &job.envelope, &job.message)
                .instrument(job.span.clone())
                .await?;
            let (status, rejection, resource) = match &effect {
                Effect::Applied(resource) => {
                    savepoint.commit().await?;
                    (OutcomeStatus::Succeeded, None, resource.clone())
                }
                Effect::Rejected(rejection) => {
                    if !commands {
                        let _entered = job.span.enter();
                        tracing::info!(detail = %rejection.detail, "event ignored");
                    }
                    savepoint.rollback().await?;
                    (OutcomeStatus::Rejected, Some(rejection.clone()), None)
                }
            };
            let outcome = Outcome {
                operation_id: id,
                status,
                rejection,
                resource,
                completed_at: chrono::Utc::now(),
                request_fingerprint: job.envelope.request_fingerprint.clone(),
            };
            if commands {
                outcomes.push(outcome.clone());
            }
            handled.push(Handled::Fresh(outcome, effect));
        }
        record_outcomes(&tx, &outcomes).await?;
        tx.commit().await?;
        if commands && !waiting.is_empty() {
            let ids: Vec<Uuid> = waiting
                .iter()
                .map(|&i| jobs[i].envelope.message_id)
                .collect();
            known = find_outcomes(&client, &ids).await?;
        }
        for index in waiting {
            let id = jobs[index].envelope.message_id;
            handled[index] = if commands {
                match known.get(&id) {
                    Some(outcome) => Handled::Duplicate(Some(outcome.clone())),
                    None => Handled::Pending,
                }
            } else {
                Handled::Duplicate(None)
            };
        }
        Ok(handled)
    }
}

/// The boxed future a transactional handler returns; boxing lets closures borrow the
/// transaction for any lifetime, which unboxed closures cannot express.
pub type TxFuture<'t> = futures::future::BoxFuture<'t, Result<Effect, Transient>>;
