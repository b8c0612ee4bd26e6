//! SQL for users.

use contracts::accounts::{Role, User};
use platform::pg::GenericClient;
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
    let result = client
        .execute(
            "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, $5)",
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
    let row = client
        .query_opt(
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
    let row = client
        .query_opt(
            "SELECT id, email, display_name, role, password_hash FROM users WHERE lower(email) = lower($1)",
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

/// Deletes a user; false when there was none.
pub async fn delete<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<bool, Error> {
    Ok(client
        .execute("DELETE FROM users WHERE id = $1", &[&id])
        .await?
        == 1)
}

/// Whether any admin exists.
pub async fn admin_exists<C: GenericClient + Sync>(client: &C) -> Result<bool, Error> {
    Ok(client
        .query_opt("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1", &[])
        .await?
        .is_some())
}
