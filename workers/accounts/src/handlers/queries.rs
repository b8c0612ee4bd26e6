//! Login, user lookup, JWKS and operation outcomes.

use std::sync::Arc;
use std::time::Duration;

use contracts::accounts::{AccountsQuery, Login, Revocations, RevokedUser};
use contracts::{QueryReply, Rejection};
use platform::bus::Answer;
use platform::pg::Pool;
use platform::pg::handle::{Transient, find_outcome};
use serde::Serialize;

use crate::keys::KeyRing;
use crate::metrics::AccountsMetrics;
use crate::store;
use platform::password;

/// Handles the accounts query queue.
pub struct QueryHandler {
    pool: Pool,
    keys: Arc<KeyRing>,
    token_ttl: Duration,
    /// A hash checked when the e-mail is unknown, so a failed login takes as long
    /// whether or not the address exists.
    decoy_hash: Arc<String>,
    metrics: AccountsMetrics,
}

impl QueryHandler {
    /// A handler on `pool` signing with `keys`.
    pub fn new(
        pool: Pool,
        keys: Arc<KeyRing>,
        token_ttl: Duration,
        decoy_hash: String,
        metrics: AccountsMetrics,
    ) -> Self {
        Self {
            pool,
            keys,
            token_ttl,
            decoy_hash: Arc::new(decoy_hash),
            metrics,
        }
    }

    fn count_login(&self, outcome: &'static str) {
        self.metrics.login(outcome);
    }

    async fn login(&self, login: Login) -> Result<QueryReply, Transient> {
        let Some(login) = self.keys.open_login(&login) else {
            // Sealed to a key we do not have (or tampered with): the gateway's copy of the
            // keys is stale; it refreshes them on the next unknown key.
            return Ok(rejected(Rejection::invalid(
                "the credentials are sealed to an unknown login key; try again",
            )));
        };
        let client = self.pool.get().await?;
        let found = store::credentials(&client, &login.email).await?;
        drop(client);
        let (hash, user) = match found {
            Some(credentials) => (credentials.password_hash, Some(credentials.user)),
            None => ((*self.decoy_hash).clone(), None),
        };
        let password = login.password;
        let verified = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
            .await
            .map_err(|e| Transient::new(e.to_string()))?;
        let (true, Some(user)) = (verified, user) else {
            tracing::info!(outcome = "failure", "login");
            self.count_login("failure");
            return Ok(rejected(Rejection::unauthorized(
                "invalid email or password",
            )));
        };
        tracing::info!(outcome = "success", user_id = %user.id, "login");
        self.count_login("success");
        match self.keys.issue(&user, self.token_ttl) {
            Ok(token) => Ok(ok(&token)),
            Err(error) => Err(Transient::new(format!("cannot sign token: {error}"))),
        }
    }
}

fn ok<T: Serialize>(body: &T) -> QueryReply {
    QueryReply::Ok {
        body: serde_json::to_value(body).unwrap_or_default(),
    }
}

fn rejected(rejection: Rejection) -> QueryReply {
    QueryReply::Rejected { rejection }
}

impl Answer for QueryHandler {
    type Query = AccountsQuery;
    type Error = Transient;

    async fn answer(&self, query: AccountsQuery) -> Result<QueryReply, Transient> {
        Ok(match query {
            AccountsQuery::Login(login) => self.login(login).await?,
            AccountsQuery::GetUser(user) => {
                let client = self.pool.get().await?;
                match store::get(&client, user.user_id).await? {
                    Some(user) => ok(&user),
                    None => rejected(Rejection::not_found(format!(
                        "user {} does not exist",
                        user.user_id
                    ))),
                }
            }
            AccountsQuery::Jwks(_) => QueryReply::Ok {
                body: self.keys.jwks(),
            },
            AccountsQuery::Revocations(request) => {
                let ttl = chrono::Duration::from_std(self.token_ttl)
                    .unwrap_or_else(|_| chrono::Duration::hours(1));
                // Tokens issued before a deletion live at most the token lifetime.
                let oldest = chrono::Utc::now() - ttl - chrono::Duration::minutes(1);
                let since = request.since.map_or(oldest, |s| s.max(oldest));
                let client = self.pool.get().await?;
                let (rows, as_of) = store::deleted_since(&client, since).await?;
                ok(&Revocations {
                    users: rows
                        .into_iter()
                        .map(|(user_id, deleted_at)| RevokedUser {
                            user_id,
                            deleted_at,
                        })
                        .collect(),
                    as_of,
                    token_ttl_secs: self.token_ttl.as_secs(),
                })
            }
            AccountsQuery::GetOperation(op) => {
                let client = self.pool.get().await?;
                match find_outcome(&client, op.operation_id).await? {
                    Some(outcome) => ok(&outcome),
                    None => rejected(Rejection::not_found("no outcome yet")),
                }
            }
        })
    }
}
