//! The first admin: created by an explicit one-off command (`accounts create-admin`), never
//! by a default password.

use anyhow::Context as _;
use contracts::accounts::{AccountsEvent, Role, User};
use platform::bus::Encoded;
use platform::pg::Pool;
use platform::pg::outbox;
use uuid::Uuid;

use crate::store;
use platform::password::{self, HashParams};

/// The email asked for is taken already (a re-run of a deployment's one-shot admin step
/// checks for it).
#[derive(Debug, thiserror::Error)]
#[error("{0} is already registered")]
pub struct AlreadyRegistered(pub String);

/// Creates an admin with `password` and announces it like any registration.
pub async fn create_admin(
    pool: &Pool,
    email: &str,
    display_name: &str,
    password: &str,
    params: HashParams,
) -> anyhow::Result<User> {
    contracts::accounts::validate_registration(email, display_name, password)
        .map_err(anyhow::Error::msg)?;
    let secret = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash(&secret, params))
        .await?
        .map_err(anyhow::Error::msg)?;
    let user = User {
        id: Uuid::now_v7(),
        email: email.to_lowercase(),
        display_name: display_name.to_owned(),
        role: Role::Admin,
    };
    let mut client = pool.get().await.context("cannot connect to PostgreSQL")?;
    let tx = client.transaction().await?;
    if !store::insert(&tx, &user, &hash).await? {
        return Err(AlreadyRegistered(user.email).into());
    }
    let mut event = Encoded::new(&AccountsEvent::UserRegistered(user.clone()), Uuid::now_v7())?;
    event.envelope.actor = Some(user.id.to_string());
    outbox::enqueue_event(&tx, &event).await?;
    tx.commit().await?;
    Ok(user)
}
