//! Accounts service: users, credentials, roles and the keys that sign their tokens.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::OperationRef;

/// Name of the service, used for queue names.
pub const SERVICE: &str = "accounts";

/// Current schema version of every accounts message.
pub const SCHEMA_VERSION: u32 = 1;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest password accepted (argon2 cost grows with it).
pub const MAX_PASSWORD_LEN: usize = 256;
/// Longest display name.
pub const MAX_DISPLAY_NAME_LEN: usize = 100;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including choosing other users' roles.
    Admin,
    /// Manages the catalog.
    Teacher,
    /// Reads, posts and reposts.
    Student,
}

impl Role {
    /// The role's name as stored and put in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Teacher => "teacher",
            Self::Student => "student",
        }
    }

    /// Parses a stored role name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "teacher" => Some(Self::Teacher),
            "student" => Some(Self::Student),
            _ => None,
        }
    }
}

crate::messages! {
    /// Commands the accounts worker accepts.
    pub enum AccountsCommand: Command, keys in commands {
        /// Register a user.
        Register(Register) = USER_REGISTER "accounts.user.register",
        /// Delete a user.
        Delete(UserRef) = USER_DELETE "accounts.user.delete",
    }
}

/// Body of `accounts.user.register`. The password arrives already hashed (argon2id, PHC
/// string): the gateway hashes it so that no clear-text password is ever written to the
/// broker's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Id chosen by the gateway.
    pub user_id: Uuid,
    /// Unique e-mail address (compared case-insensitively).
    pub email: String,
    /// Name shown to others.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Role granted.
    pub role: Role,
}

/// Names one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    /// The user.
    pub user_id: Uuid,
}

crate::messages! {
    /// Queries the accounts worker answers.
    pub enum AccountsQuery: Query, keys in queries {
        /// Exchange credentials for a token.
        Login(Login) -> Token = USER_LOGIN "accounts.user.login",
        /// One user.
        GetUser(UserRef) -> User = USER_GET "accounts.user.get",
        /// The public keys that verify tokens (a JSON Web Key Set, RFC 7517).
        Jwks(Empty) -> serde_json::Value = JWKS_GET "accounts.jwks.get",
        /// The outcome of an operation.
        GetOperation(OperationRef) -> crate::Outcome = OPERATION_GET "accounts.operation.get",
        /// Users deleted since a point in time (their tokens are revoked).
        Revocations(RevocationsSince) -> Revocations = USER_REVOCATIONS "accounts.user.revocations",
    }
}

/// Body of `accounts.user.revocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationsSince {
    /// Only deletions after this instant; `None` for every deletion whose tokens may still
    /// be valid (within the token lifetime).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// Answer to `accounts.user.revocations`: users whose tokens must no longer be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    /// Deleted users, with when they were deleted.
    pub users: Vec<RevokedUser>,
    /// The instant the list is complete up to: the next `since`.
    pub as_of: chrono::DateTime<chrono::Utc>,
    /// Token lifetime: an entry older than this can no longer match a valid token.
    pub token_ttl_secs: u64,
}

/// One deleted user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokedUser {
    /// The user.
    pub user_id: Uuid,
    /// When the account was deleted.
    pub deleted_at: chrono::DateTime<chrono::Utc>,
}

/// A body with nothing in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Body of `accounts.user.login`: the credentials sealed to accounts' login key (a
/// libsodium sealed box: X25519 and XSalsa20-Poly1305), so no clear-text password ever
/// crosses the broker, and only accounts can open it. Also sent transient (never written
/// to the broker's disk) with an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The login key it is sealed to: the `kid` of an `enc` key in accounts' JWKS.
    pub kid: String,
    /// The sealed box of the JSON of [`Credentials`], base64url without padding.
    pub sealed: String,
}

/// What a [`Login`] seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// E-mail address.
    pub email: String,
    /// Clear-text password (only ever inside the sealed box).
    pub password: String,
}

/// Answer to a successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// A signed JWT (EdDSA).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// A user as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// E-mail address.
    pub email: String,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
}

crate::messages! {
    /// Events the accounts service emits.
    pub enum AccountsEvent: Event, keys in events {
        /// A user registered.
        UserRegistered(User) = USER_REGISTERED "accounts.user.registered",
        /// A user was deleted.
        UserDeleted(UserRef) = USER_DELETED "accounts.user.deleted",
    }
}

/// Claims in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Name shown to others (so services need not look it up).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// Issuer of every token.
pub const ISSUER: &str = "switchyard-accounts";
/// Audience of every token.
pub const AUDIENCE: &str = "switchyard";

/// Checks a registration's clear-text fields; the gateway runs it before hashing.
pub fn validate_registration(
    email: &str,
    display_name: &str,
    password: &str,
) -> Result<(), String> {
    crate::catalog::validate_email(email)?;
    crate::catalog::validate_text("display_name", display_name, MAX_DISPLAY_NAME_LEN)?;
    let length = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&length) {
        return Err(format!(
            "password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_serialise_with_their_routing_key_as_type() {
        let id = Uuid::nil();
        let register = AccountsCommand::Register(Register {
            user_id: id,
            email: "a@b.org".into(),
            display_name: "A".into(),
            password_hash: "$argon2id$...".into(),
            role: Role::Student,
        });
        for command in [register, AccountsCommand::Delete(UserRef { user_id: id })] {
            assert_eq!(
                serde_json::to_value(&command).unwrap()["type"],
                command.routing_key()
            );
        }
        let user = User {
            id,
            email: "a@b.org".into(),
            display_name: "A".into(),
            role: Role::Admin,
        };
        for event in [
            AccountsEvent::UserRegistered(user),
            AccountsEvent::UserDeleted(UserRef { user_id: id }),
        ] {
            assert_eq!(
                serde_json::to_value(&event).unwrap()["type"],
                event.routing_key()
            );
        }
        let queries = [
            AccountsQuery::Login(Login {
                kid: "k.login".into(),
                sealed: "AAAA".into(),
            }),
            AccountsQuery::GetUser(UserRef { user_id: id }),
            AccountsQuery::Jwks(Empty {}),
            AccountsQuery::GetOperation(OperationRef { operation_id: id }),
            AccountsQuery::Revocations(RevocationsSince { since: None }),
        ];
        for query in &queries {
            assert_eq!(
                serde_json::to_value(query).unwrap()["type"],
                query.routing_key()
            );
        }
        let keys: Vec<_> = queries.iter().map(AccountsQuery::routing_key).collect();
        assert_eq!(keys, queries::ALL);
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Admin, Role::Teacher, Role::Student] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn registrations_need_a_real_email_a_name_and_a_long_password() {
        assert!(validate_registration("ada@example.org", "Ada", "correct horse").is_ok());
        assert!(validate_registration("ada", "Ada", "correct horse").is_err());
        assert!(validate_registration("ada@example.org", " ", "correct horse").is_err());
        assert!(validate_registration("ada@example.org", "Ada", "short").is_err());
    }
}
