//! Bearer tokens: verified locally with the accounts service's public keys (its JWKS),
//! fetched at startup and refreshed in the background, never one call per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use contracts::accounts::{
    AUDIENCE, AccountsQuery, Claims, Credentials, Empty, ISSUER, Login, Revocations,
    RevocationsSince,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::context::RequestContext;
use crate::dispatch::Dispatcher;

pub use crate::context::Principal;

/// Why a token was refused; each maps to a 401 with its own detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this route needs a bearer token")]
    Missing,
    /// Not a JWT, or not signed by a key we know.
    #[error("the bearer token is malformed or its signature is invalid")]
    Invalid,
    /// Past its `exp`.
    #[error("the bearer token has expired")]
    Expired,
    /// No keys loaded yet (accounts unreachable since startup).
    #[error("token verification is not available yet")]
    Unavailable,
    /// The token's user was deleted.
    #[error("the bearer token's user was deleted")]
    Revoked,
}

/// One JWK as published by accounts (OKP: Ed25519 to verify tokens, X25519 to seal
/// logins).
#[derive(Debug, Deserialize)]
struct Jwk {
    kid: String,
    kty: String,
    crv: String,
    x: String,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// The verification keys and their refresher, and the users whose tokens are revoked.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
    /// Accounts' newest login key: every login's credentials are sealed to it.
    login_key: Arc<RwLock<Option<(String, crypto_box::PublicKey)>>>,
    refresh: Arc<Notify>,
    validation: Arc<Validation>,
    revoked: Arc<RwLock<Revoked>>,
}

/// Deleted users whose tokens may still be unexpired, fed by accounts.
#[derive(Debug, Default)]
struct Revoked {
    users: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
    /// Where the next fetch starts; `None` until the first complete one.
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// When the list was last brought up to date.
    fresh_at: Option<std::time::Instant>,
}

/// How far back each incremental fetch reaches before the last one's end: a deletion
/// committed just after a fetch may carry a slightly earlier timestamp.
const REVOCATION_OVERLAP_SECS: i64 = 30;

impl Default for Verifier {
    fn default() -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Clocks on one deployment agree closely; a short leeway keeps expiry meaningful.
        validation.leeway = 5;
        Self {
            keys: Arc::default(),
            login_key: Arc::default(),
            refresh: Arc::new(Notify::new()),
            validation: Arc::new(validation),
            revoked: Arc::default(),
        }
    }
}

impl Verifier {
    /// Whether any key is loaded.
    pub fn has_keys(&self) -> bool {
        self.keys.read().is_ok_and(|keys| !keys.is_empty())
    }

    /// Verifies an `Authorization` header value.
    pub fn verify(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Invalid)?;
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .ok_or(AuthError::Invalid)?;
        let keys = self.keys.read().map_err(|_| AuthError::Unavailable)?;
        if keys.is_empty() {
            return Err(AuthError::Unavailable);
        }
        let Some(key) = keys.get(&kid) else {
            // Perhaps accounts rotated its key: look again soon.
            self.refresh.notify_one();
            return Err(AuthError::Invalid);
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|error| {
                match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                    _ => AuthError::Invalid,
                }
            })?;
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| AuthError::Invalid)?;
        if self
            .revoked
            .read()
            .is_ok_and(|r| r.users.contains_key(&user_id))
        {
            return Err(AuthError::Revoked);
        }
        Ok(Principal {
            user_id,
            name: data.claims.name,
            role: data.claims.role,
        })
    }

    /// Revokes a user's tokens at once (this replica saw the deletion itself).
    pub fn revoke(&self, user_id: Uuid) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.users.insert(user_id, chrono::Utc::now());
        }
    }

    /// Seconds since the revocation list was last brought up to date, if ever.
    pub fn revocations_age(&self) -> Option<Duration> {
        self.revoked
            .read()
            .ok()
            .and_then(|r| r.fresh_at)
            .map(|t| t.elapsed())
    }

    fn install_revocations(&self, answer: Revocations) {
        let Ok(mut revoked) = self.revoked.write() else {
            return;
        };
        for user in answer.users {
            revoked.users.insert(user.user_id, user.deleted_at);
        }
        let ttl = i64::try_from(answer.token_ttl_secs).unwrap_or(i64::MAX / 2);
        // An entry older than the token lifetime (plus the verifier's leeway) can no
        // longer match an unexpired token.
        let horizon = answer.as_of - chrono::Duration::seconds(ttl.saturating_add(120));
        revoked.users.retain(|_, deleted_at| *deleted_at > horizon);
        revoked.as_of = Some(answer.as_of);
        revoked.fresh_at = Some(std::time::Instant::now());
    }

    /// Keeps the revocation list current: asks accounts for users deleted since the last
    /// answer every `interval` (a deleted user's token stops working within about that
    /// long on every replica), more often while the first fetch has not succeeded.
    pub async fn run_revocations(
        self,
        dispatcher: Dispatcher,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        let context = RequestContext {
            request_id: "revocations-refresh".into(),
            ..Default::default()
        };
        let mut failures = 0u32;
        loop {
            let since = self
                .revoked
                .read()
                .ok()
                .and_then(|r| r.as_of)
                .map(|t| t - chrono::Duration::seconds(REVOCATION_OVERLAP_SECS));
            let query = AccountsQuery::Revocations(RevocationsSince { since });
            let next = match dispatcher
                .query(&query, &context)
                .await
                .map(serde_json::from_value::<Revocations>)
            {
                Ok(Ok(answer)) => {
                    self.install_revocations(answer);
                    failures = 0;
                    interval
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "accounts answered an unreadable revocation list");
                    interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(%error, "cannot fetch token revocations from accounts");
                    }
                    interval.min(Duration::from_millis(500))
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Seals a login's credentials to accounts' login key, so the password never crosses
    /// the broker in clear text. Unavailable until the keys are loaded.
    pub fn seal_login(&self, email: &str, password: &str) -> Result<Login, AuthError> {
        use base64::Engine as _;
        let (kid, key) = self
            .login_key
            .read()
            .ok()
            .and_then(|k| k.clone())
            .ok_or(AuthError::Unavailable)?;
        let credentials = Credentials {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        let plain = serde_json::to_vec(&credentials).map_err(|_| AuthError::Unavailable)?;
        let sealed = key
            .seal(&mut crypto_box::aead::OsRng, &plain)
            .map_err(|_| AuthError::Unavailable)?;
        Ok(Login {
            kid,
            sealed: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
        })
    }

    fn install(&self, set: JwkSet) -> usize {
        use base64::Engine as _;
        // Newest first: the first login key is the one to seal to.
        let login = set
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "X25519")
            .find_map(|k| {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&k.x)
                    .ok()?;
                let bytes: [u8; 32] = bytes.try_into().ok()?;
                Some((k.kid.clone(), crypto_box::PublicKey::from_bytes(bytes)))
            });
        if login.is_some()
            && let Ok(mut current) = self.login_key.write()
        {
            *current = login;
        }
        let parsed: HashMap<String, DecodingKey> = set
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| Some((k.kid, DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect();
        let count = parsed.len();
        if count > 0
            && let Ok(mut keys) = self.keys.write()
        {
            *keys = parsed;
        }
        count
    }

    /// Keeps the keys fresh: fetches at once, then every `interval`, and soon after a
    /// token names an unknown key; retries quickly while none are loaded.
    pub async fn run_refresher(
        self,
        dispatcher: Dispatcher,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        let context = RequestContext {
            request_id: "jwks-refresh".into(),
            ..Default::default()
        };
        let query = AccountsQuery::Jwks(Empty {});
        let mut failures = 0u32;
        loop {
            let next = match dispatcher.query(&query, &context).await {
                Ok(body) => match serde_json::from_value::<JwkSet>(body) {
                    Ok(set) => {
                        let count = self.install(set);
                        tracing::debug!(count, "token keys refreshed");
                        failures = 0;
                        interval
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accounts answered an unreadable JWKS");
                        Duration::from_secs(5)
                    }
                },
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(%error, "cannot fetch token keys from accounts");
                    }
                    Duration::from_millis(if self.has_keys() { 5_000 } else { 500 })
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(next) => {}
                // Debounced: an unknown kid triggers at most one fetch per second.
                () = self.refresh.notified() => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}
