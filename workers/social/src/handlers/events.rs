//! Reactions to other services' events: authors come and go with accounts, and every new
//! course is announced on the global timeline.

use contracts::accounts::{self, AccountsEvent, Role, User, UserRef};
use contracts::catalog::{self, CatalogEvent, Course};
use contracts::social::{MAX_POST_LEN, SYSTEM_AUTHOR, SocialEvent};
use contracts::{Envelope, Rejection};
use platform::bus::consumer::{DeadLetter, reasons};
use platform::bus::{Incoming, decode};
use platform::pg::Transaction;
use platform::pg::handle::{Apply, Effect, Transient, TxFuture};
use uuid::Uuid;

use super::{actor, emit};
use crate::store;

/// The events social subscribes to.
pub const SUBSCRIPTIONS: [&str; 3] = [
    accounts::events::USER_REGISTERED,
    accounts::events::USER_DELETED,
    catalog::events::COURSE_CREATED,
];

/// The social event queue's rules, run by [`platform::pg::handle::Batched`].
pub struct EventHandler;

/// An event social subscribes to, decoded.
pub enum Subscribed {
    /// From accounts.
    Accounts(AccountsEvent),
    /// From the catalog.
    Catalog(CatalogEvent),
}

fn subscribed(incoming: &Incoming) -> Result<Subscribed, DeadLetter> {
    match incoming.envelope.message_type.split('.').next() {
        Some(accounts::SERVICE) => decode::<AccountsEvent>(incoming).map(Subscribed::Accounts),
        Some(catalog::SERVICE) => decode::<CatalogEvent>(incoming).map(Subscribed::Catalog),
        _ => Err(DeadLetter::new(
            reasons::UNKNOWN_TYPE,
            format!(
                "social does not subscribe to {}",
                incoming.envelope.message_type
            ),
        )),
    }
}

impl Apply for EventHandler {
    type Message = Subscribed;

    fn accept(&self, incoming: &Incoming) -> Result<Subscribed, DeadLetter> {
        subscribed(incoming)
    }

    fn apply<'t>(
        &'t self,
        tx: &'t Transaction<'t>,
        envelope: &'t Envelope,
        event: &'t Subscribed,
    ) -> TxFuture<'t> {
        Box::pin(async move {
            match event {
                Subscribed::Accounts(AccountsEvent::UserRegistered(user)) => {
                    registered(tx, user).await
                }
                Subscribed::Accounts(AccountsEvent::UserDeleted(user)) => deleted(tx, user).await,
                Subscribed::Catalog(CatalogEvent::CourseCreated(course)) => {
                    announce(tx, envelope, course).await
                }
                Subscribed::Catalog(other) => Ok(Effect::Rejected(Rejection::invalid(format!(
                    "{} is not handled",
                    other.routing_key()
                )))),
            }
        })
    }
}

/// A registration delivered after the same user's deletion (events of two transactions
/// may arrive in any order) must not bring the author back.
async fn registered(tx: &Transaction<'_>, user: &User) -> Result<Effect, Transient> {
    store::upsert_author(tx, user.id, &user.display_name, Some(user.role.as_str())).await?;
    if store::is_deleted(tx, user.id).await? {
        tracing::info!(user_id = %user.id, "registration of a deleted user ignored");
        return Ok(Effect::Rejected(Rejection::conflict(format!(
            "user {} was deleted",
            user.id
        ))));
    }
    tracing::info!(user_id = %user.id, "author known");
    Ok(Effect::Applied(None))
}

async fn deleted(tx: &Transaction<'_>, user: &UserRef) -> Result<Effect, Transient> {
    store::tombstone(tx, user.user_id).await?;
    let removed = store::delete_author(tx, user.user_id).await?;
    tracing::info!(user_id = %user.user_id, removed, "author and their posts removed");
    Ok(Effect::Applied(None))
}

/// Posts "New course …" as the teacher who created it, or as the system author when the
/// course was created by someone who is not (known as) a teacher.
async fn announce(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    course: &Course,
) -> Result<Effect, Transient> {
    let author = match actor(envelope) {
        Some(id)
            if store::author_role(tx, id).await?.flatten().as_deref()
                == Some(Role::Teacher.as_str()) =>
        {
            id
        }
        _ => SYSTEM_AUTHOR,
    };
    let mut body = format!("New course {}: {}", course.code, course.title);
    if body.chars().count() > MAX_POST_LEN {
        body = body.chars().take(MAX_POST_LEN - 1).collect::<String>() + "…";
    }
    // Derived from the event, so a redelivered event cannot announce twice even if the
    // inbox were bypassed.
    let post_id = Uuid::new_v5(&envelope.message_id, b"announcement");
    store::insert_post(tx, post_id, author, &body, None).await?;
    if let Some(post) = store::get(tx, post_id).await? {
        emit(tx, envelope, &SocialEvent::PostCreated(post)).await?;
    }
    tracing::info!(course_id = %course.id, author = %author, "course announced");
    Ok(Effect::Applied(None))
}
