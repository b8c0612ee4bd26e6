//! Register and delete users, exactly once, with their events in the outbox.

use contracts::accounts::{AccountsCommand, AccountsEvent, Register, Role, User, UserRef, events};
use contracts::{Envelope, Rejection};
use platform::bus::{DeadLetter, Incoming};
use platform::pg::Transaction;
use platform::pg::handle::{Apply, Effect, Transient, TxFuture};
use platform::pg::outbox;
use uuid::Uuid;

use crate::metrics::AccountsMetrics;
use crate::store;
use platform::password;

/// The accounts command queue's rules, run by [`platform::pg::handle::Batched`].
pub struct CommandHandler {
    actors: platform::actor::ActorKey,
    metrics: AccountsMetrics,
}

impl CommandHandler {
    /// Rules that accept only actors vouched for with `actors` (their role is then read
    /// from this service's own users) and count registrations in `metrics`.
    pub fn new(actors: platform::actor::ActorKey, metrics: AccountsMetrics) -> Self {
        Self { actors, metrics }
    }
}

impl Apply for CommandHandler {
    type Message = AccountsCommand;

    fn accept(&self, incoming: &Incoming) -> Result<AccountsCommand, DeadLetter> {
        self.actors.decode(incoming)
    }

    fn apply<'t>(
        &'t self,
        tx: &'t Transaction<'t>,
        envelope: &'t Envelope,
        command: &'t AccountsCommand,
    ) -> TxFuture<'t> {
        Box::pin(async move {
            match command {
                AccountsCommand::Register(register) => register_user(tx, envelope, register).await,
                AccountsCommand::Delete(user) => delete_user(tx, envelope, user).await,
            }
        })
    }

    fn committed(&self, command: &AccountsCommand, effect: &Effect) {
        if matches!(command, AccountsCommand::Register(_)) && effect.is_applied() {
            self.metrics.registrations.inc();
        }
    }
}

/// Puts an event caused by `cause` into the outbox.
pub(crate) async fn emit(
    tx: &Transaction<'_>,
    cause: &Envelope,
    event: &AccountsEvent,
) -> Result<(), Transient> {
    outbox::emit(tx, cause, event).await
}

async fn actor_role(
    tx: &Transaction<'_>,
    envelope: &Envelope,
) -> Result<Option<(Uuid, Role)>, Transient> {
    let Some(actor) = envelope
        .actor
        .as_deref()
        .and_then(|a| Uuid::parse_str(a).ok())
    else {
        return Ok(None);
    };
    Ok(store::get(tx, actor)
        .await?
        .map(|user| (user.id, user.role)))
}

async fn register_user(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    register: &Register,
) -> Result<Effect, Transient> {
    if let Err(detail) = contracts::catalog::validate_email(&register.email).and_then(|()| {
        contracts::catalog::validate_text("display_name", &register.display_name, 100)
    }) {
        return Ok(Effect::Rejected(Rejection::invalid(detail)));
    }
    if !password::is_argon2id(&register.password_hash) {
        return Ok(Effect::Rejected(Rejection::invalid(
            "password hash is not argon2id",
        )));
    }
    // The gateway only lets admins grant roles; checked again here because a role is
    // a privilege and this service owns it.
    if register.role != Role::Student
        && !matches!(actor_role(tx, envelope).await?, Some((_, Role::Admin)))
    {
        return Ok(Effect::Rejected(Rejection::forbidden(
            "only an admin may grant the teacher or admin role",
        )));
    }
    if store::was_deleted(tx, register.user_id).await? {
        return Ok(Effect::Rejected(Rejection::conflict(format!(
            "user {} was deleted; register again without the same Idempotency-Key",
            register.user_id
        ))));
    }
    let user = User {
        id: register.user_id,
        email: register.email.to_lowercase(),
        display_name: register.display_name.clone(),
        role: register.role,
    };
    if !store::insert(tx, &user, &register.password_hash).await? {
        // A sign-up form has to say the address is taken (there is no e-mail
        // verification to hide it behind); it is not echoed, and the auth rate limit
        // bounds how fast anyone can probe. Login never tells (docs/architecture.md, Security).
        return Ok(Effect::Rejected(Rejection::conflict(
            "this e-mail address is already registered",
        )));
    }
    emit(tx, envelope, &AccountsEvent::UserRegistered(user.clone())).await?;
    tracing::info!(user_id = %user.id, role = user.role.as_str(), "user registered");
    Ok(Effect::applied(&user))
}

async fn delete_user(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    target: &UserRef,
) -> Result<Effect, Transient> {
    let allowed = match actor_role(tx, envelope).await? {
        Some((actor, role)) => actor == target.user_id || role == Role::Admin,
        None => false,
    };
    if !allowed {
        return Ok(Effect::Rejected(Rejection::forbidden(
            "only the user themself or an admin may delete a user",
        )));
    }
    if !store::delete(tx, target.user_id).await? {
        return Ok(Effect::Rejected(Rejection::not_found(format!(
            "user {} does not exist",
            target.user_id
        ))));
    }
    emit(tx, envelope, &AccountsEvent::UserDeleted(target.clone())).await?;
    tracing::info!(user_id = %target.user_id, event = events::USER_DELETED, "user deleted");
    Ok(Effect::Applied(None))
}
