//! Reactions to accounts' events: a user registered as a teacher becomes a catalog
//! teacher (same id), and leaves with the user.

use contracts::accounts::{self, AccountsEvent, Role};
use contracts::catalog::{CreateTeacher, TeacherRef};
use platform::bus::decode;
use platform::bus::{Disposition, Handler, Incoming};
use tracing::Instrument as _;

use contracts::Rejection;

use platform::effect::Effect;

use super::teachers;
use crate::store::{Store, StoreError};

/// The events the catalog subscribes to.
pub const SUBSCRIPTIONS: [&str; 2] = [
    accounts::events::USER_REGISTERED,
    accounts::events::USER_DELETED,
];

/// Handles the catalog event queue. Idempotent without an inbox: the teacher's id is the
/// user's, and each change carries the event id as its applied marker.
pub struct EventHandler {
    store: Store,
}

impl EventHandler {
    /// A handler over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Handler for EventHandler {
    async fn handle(&self, incoming: Incoming) -> Disposition {
        let event = match decode::<AccountsEvent>(&incoming) {
            Ok(event) => event,
            Err(reason) => return Disposition::Dead(reason),
        };
        let envelope = &incoming.envelope;
        let span = tracing::info_span!(
            "event",
            message_id = %envelope.message_id,
            message_type = %envelope.message_type,
            request_id = envelope.request_id.as_deref().unwrap_or(""),
        );
        let result: Result<Effect, StoreError> = async {
            match event {
                AccountsEvent::UserRegistered(user) if user.role == Role::Teacher => {
                    // The user's deletion may have been handled first (events of two
                    // transactions arrive in any order): it wins. Checked before and
                    // after creating, since a deletion may run in between.
                    if self.store.is_deleted_user(user.id).await? {
                        return Ok(Effect::Rejected(Rejection::conflict(format!(
                            "user {} was deleted",
                            user.id
                        ))));
                    }
                    let command = CreateTeacher {
                        teacher_id: user.id,
                        name: user.display_name,
                        email: user.email,
                    };
                    let created = teachers::create(&self.store, envelope, &command).await?;
                    if self.store.is_deleted_user(user.id).await? {
                        let teacher = TeacherRef {
                            teacher_id: user.id,
                        };
                        teachers::delete(&self.store, envelope, &teacher).await?;
                    }
                    Ok(created)
                }
                AccountsEvent::UserRegistered(_) => Ok(Effect::Applied(None)),
                AccountsEvent::UserDeleted(user) => {
                    self.store.tombstone_user(user.user_id).await?;
                    teachers::delete(
                        &self.store,
                        envelope,
                        &TeacherRef {
                            teacher_id: user.user_id,
                        },
                    )
                    .await
                }
            }
        }
        .instrument(span)
        .await;
        match result {
            Ok(Effect::Applied(_)) => Disposition::Done { reply: None },
            Ok(Effect::Rejected(rejection)) => {
                // A fact already happened elsewhere; nothing to refuse. Typical: the user
                // was never a teacher here, or a teacher with that e-mail already exists.
                tracing::info!(detail = %rejection.detail, "event needs no change");
                Disposition::Done { reply: None }
            }
            Err(error) => Disposition::Retry(error.to_string()),
        }
    }
}
