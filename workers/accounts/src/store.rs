//! SQL for users.

use contracts::accounts::{Role, User};
use platform::pg::{GenericClient, prepared};
use tokio_postgres::{Error, Row};
use uuid::Uuid;

/// A user with their password hash, for login.
pub struct Credentials {
    /// The user.
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
}

fn user(row: &Row) -> Option<User> {
    Some(User {
        id: row.get(0),
        email: row.get(1),
        display_name: row.get(2),
        role: Role::parse(row.get(3))?,
    })
}

/// Inserts a user; a duplicate e-mail is `Ok(false)`.
pub async fn insert<C: GenericClient + Sync>(
    client: &C,
    user: &User,
    password_hash: &str,
) -> Result<bool, Error> {
    let result = prepared::execute(client, "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, $5)",
            &[&user.id, &user.email, &user.display_name, &password_hash, &user.role.as_str()],
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(error) if platform::pg::is_unique_violation(&error, Some("users_email_key")) => {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// One user by id.
pub async fn get<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<Option<User>, Error> {
    let row = prepared::query_opt(
        client,
        "SELECT id, email, display_name, role FROM users WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(row.as_ref().and_then(user))
}

/// A user and their hash by e-mail (any case).
pub async fn credentials<C: GenericClient + Sync>(
    client: &C,
    email: &str,
) -> Result<Option<Credentials>, Error> {
    let row = prepared::query_opt(client, "SELECT id, email, display_name, role, password_hash FROM users WHERE lower(email) = lower($1)",
            &[&email],
        )
        .await?;
    Ok(row.and_then(|row| {
        Some(Credentials {
            user: user(&row)?,
            password_hash: row.get(4),
        })
    }))
}

/// Deletes a user and remembers the deletion; false when there was none.
pub async fn delete<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<bool, Error> {
    let deleted = prepared::execute(client, "DELETE FROM users WHERE id = $1", &[&id]).await? == 1;
    if deleted {
        prepared::execute(
            client,
            "INSERT INTO deleted_users (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id],
        )
        .await?;
    }
    Ok(deleted)
}

/// Whether `id` belonged to a deleted user.
pub async fn was_deleted<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<bool, Error> {
    Ok(
        prepared::query_opt(client, "SELECT 1 FROM deleted_users WHERE id = $1", &[&id])
            .await?
            .is_some(),
    )
}

/// Users deleted after `since` (and not before `not_before`), oldest first, with the
/// database's clock at the time of the read (the next `since`).
pub async fn deleted_since<C: GenericClient + Sync>(
    client: &C,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<
    (
        Vec<(Uuid, chrono::DateTime<chrono::Utc>)>,
        chrono::DateTime<chrono::Utc>,
    ),
    Error,
> {
    // statement_timestamp() is read in the same statement as the rows, so a deletion
    // committed later is after it; one committed earlier with an older timestamp is
    // covered by the overlap the caller keeps (see the gateway's revocation feed).
    let rows = prepared::query(
        client,
        "SELECT id, deleted_at, statement_timestamp() FROM deleted_users
             WHERE deleted_at > $1 ORDER BY deleted_at LIMIT 10000",
        &[&since],
    )
    .await?;
    let now = match rows.first() {
        Some(row) => row.get(2),
        None => prepared::query_one(client, "SELECT statement_timestamp()", &[])
            .await?
            .get(0),
    };
    Ok((rows.iter().map(|r| (r.get(0), r.get(1))).collect(), now))
}

/// Whether any admin exists.
pub async fn admin_exists<C: GenericClient + Sync>(client: &C) -> Result<bool, Error> {
    Ok(prepared::query_opt(
        client,
        "SELECT 1 FROM users WHERE role = 'admin' LIMIT 1",
        &[],
    )
    .await?
    .is_some())
}
