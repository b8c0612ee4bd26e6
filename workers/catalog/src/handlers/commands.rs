//! The command handler: decode, deduplicate, validate, apply, record the outcome, reply.

use contracts::catalog::CatalogCommand;
use contracts::{Outcome, Rejection};
use mongodb::bson::doc;
use platform::bus::consumer::{DeadLetter, reasons};
use platform::bus::decode;
use platform::bus::{Bus, Disposition, Handler, Incoming};
use tracing::Instrument as _;

use crate::metrics::CatalogMetrics;
use crate::store::operations::Claim;
use platform::effect::Effect;

use super::{courses, teachers};
use crate::store::{Store, StoreError, operations, outbox};

/// Handles the catalog command queue.
pub struct CommandHandler {
    store: Store,
    bus: Bus,
    actors: platform::actor::ActorKey,
    metrics: CatalogMetrics,
}

/// Roles that may change the catalog (the gateway checks the same; this is the second
/// line, for commands that reach the queue some other way).
const CATALOG_ROLES: [&str; 2] = ["admin", "teacher"];

impl CommandHandler {
    /// A handler over `store` that publishes events on `bus`, accepts only actors vouched
    /// for with `actors` and counts what it applies in `metrics`.
    pub fn new(
        store: Store,
        bus: Bus,
        actors: platform::actor::ActorKey,
        metrics: CatalogMetrics,
    ) -> Self {
        Self {
            store,
            bus,
            actors,
            metrics,
        }
    }

    async fn apply(
        &self,
        incoming: &Incoming,
        command: &CatalogCommand,
    ) -> Result<Effect, StoreError> {
        if let Err(detail) = command.validate() {
            return Ok(Effect::Rejected(Rejection::invalid(detail)));
        }
        let envelope = &incoming.envelope;
        match command {
            CatalogCommand::CreateCourse(c) => courses::create(&self.store, envelope, c).await,
            CatalogCommand::UpdateCourse(c) => courses::update(&self.store, envelope, c).await,
            CatalogCommand::DeleteCourse(c) => courses::delete(&self.store, envelope, c).await,
            CatalogCommand::CreateTeacher(c) => teachers::create(&self.store, envelope, c).await,
            CatalogCommand::DeleteTeacher(c) => teachers::delete(&self.store, envelope, c).await,
            CatalogCommand::AssignCourse(c) => teachers::assign(&self.store, envelope, c).await,
            CatalogCommand::UnassignCourse(c) => teachers::unassign(&self.store, envelope, c).await,
        }
    }

    /// Publishes the touched document's events now rather than at the next sweep; a
    /// failure here is harmless, the relay retries.
    async fn flush(&self, command: &CatalogCommand) {
        let (collection, id) = match command {
            CatalogCommand::CreateCourse(c) => (self.store.courses.collection(), c.course_id),
            CatalogCommand::UpdateCourse(c) => (self.store.courses.collection(), c.course_id),
            CatalogCommand::DeleteCourse(c) => (self.store.courses.collection(), c.course_id),
            CatalogCommand::CreateTeacher(c) => (self.store.teachers.collection(), c.teacher_id),
            CatalogCommand::DeleteTeacher(c) => (self.store.teachers.collection(), c.teacher_id),
            CatalogCommand::AssignCourse(c) | CatalogCommand::UnassignCourse(c) => {
                (self.store.teachers.collection(), c.teacher_id)
            }
        };
        let found = collection.find_one(doc! {"_id": id.to_string()}).await;
        if let Ok(Some(document)) = found
            && let Err(error) = outbox::flush_document(&self.bus, collection, &document).await
        {
            tracing::debug!(%error, "immediate event publish failed; the relay will retry");
        }
    }
}

fn reply(outcome: &Outcome) -> Disposition {
    Disposition::Done {
        reply: serde_json::to_vec(outcome).ok(),
    }
}

impl Handler for CommandHandler {
    async fn handle(&self, incoming: Incoming) -> Disposition {
        let envelope = &incoming.envelope;
        let command: CatalogCommand = match decode::<CatalogCommand>(&incoming) {
            Ok(command) => command,
            Err(dead) => return Disposition::Dead(dead),
        };
        let actor = match self.actors.verify(envelope, &incoming.body) {
            Ok(actor) => actor,
            Err(forged) => return Disposition::Dead(forged),
        };
        let operation_id = envelope.message_id;
        let span = tracing::info_span!(
            "command",
            operation_id = %operation_id,
            message_type = %envelope.message_type,
            request_id = envelope.request_id.as_deref().unwrap_or(""),
        );
        self.decide(incoming, command, actor).instrument(span).await
    }
}

impl CommandHandler {
    async fn decide(
        &self,
        incoming: Incoming,
        command: CatalogCommand,
        actor: Option<platform::actor::Actor>,
    ) -> Disposition {
        let operation_id = incoming.envelope.message_id;
        let digest = operations::digest(&incoming.body);
        let fingerprint = incoming.envelope.request_fingerprint.as_deref();
        match operations::claim(&self.store, operation_id, &digest, fingerprint).await {
            Ok(Claim::Recorded(outcome)) => {
                self.bus.metrics().inbox_duplicates.inc();
                tracing::info!("duplicate command, answering with the recorded outcome");
                return reply(&outcome);
            }
            Ok(Claim::Mismatch) => {
                return Disposition::Dead(DeadLetter::new(
                    reasons::REJECTED,
                    format!("message id {operation_id} was already used for another command"),
                ));
            }
            Ok(Claim::Reused(outcome)) => {
                tracing::info!("an Idempotency-Key reused for another request; not applied");
                return Disposition::Done {
                    reply: outcome.and_then(|o| serde_json::to_vec(&o).ok()),
                };
            }
            Ok(Claim::Fresh) => {}
            Err(error) => return Disposition::Retry(error.to_string()),
        }
        let refusal = match &actor {
            None => Some(Rejection::forbidden(
                "catalog changes need an authenticated admin or teacher",
            )),
            Some(actor) if !CATALOG_ROLES.contains(&actor.role.as_str()) => {
                Some(Rejection::forbidden(format!(
                    "the role {} may not change the catalog",
                    actor.role
                )))
            }
            Some(actor) => match self.store.is_deleted_user(actor.id).await {
                Ok(false) => None,
                Ok(true) => Some(Rejection::forbidden(format!(
                    "user {} was deleted",
                    actor.id
                ))),
                Err(error) => return Disposition::Retry(error.to_string()),
            },
        };
        if let Some(rejection) = refusal {
            return match operations::record(
                &self.store,
                &incoming.envelope,
                Effect::Rejected(rejection),
            )
            .await
            {
                Ok(outcome) => reply(&outcome),
                Err(error) => Disposition::Retry(error.to_string()),
            };
        }
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "mongodb operations",
            otel.kind = "client",
            db.system = "mongodb",
            db.operation.name = %command.routing_key(),
        );
        let effect = self.apply(&incoming, &command).instrument(span).await;
        self.bus
            .metrics()
            .observe_db("command_mongodb", started.elapsed());
        let effect = match effect {
            Ok(effect) => effect,
            Err(error) => return Disposition::Retry(error.to_string()),
        };
        let applied = matches!(effect, Effect::Applied(_));
        let outcome = match operations::record(&self.store, &incoming.envelope, effect).await {
            Ok(outcome) => outcome,
            Err(error) => return Disposition::Retry(error.to_string()),
        };
        if applied {
            match command {
                CatalogCommand::CreateCourse(_) => self.metrics.courses_created.inc(),
                CatalogCommand::AssignCourse(_) => self.metrics.teachers_assigned.inc(),
                _ => 0,
            };
            self.flush(&command).await;
        }
        tracing::info!(status = ?outcome.status, "command handled");
        reply(&outcome)
    }
}
