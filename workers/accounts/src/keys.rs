//! Token signing keys: Ed25519, created on first start, kept in the accounts database.
//! The newest key signs; every key is published in the JWKS so tokens signed before a
//! rotation stay valid until they expire.
//!
//! Each signing key also yields a login key (X25519, derived from the same secret, so
//! nothing more is stored): its public half is published in the JWKS as an `enc` key, the
//! gateway seals every login's credentials to it, and only accounts can open them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use contracts::accounts::{AUDIENCE, Claims, Credentials, ISSUER, Login, Token, User};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::pg::Pool;

use crate::vault::KeyVault;

/// One key pair, and the login key derived from it.
struct Key {
    kid: String,
    encoding: EncodingKey,
    public_x: String,
    login: crypto_box::SecretKey,
}

/// Suffix of a login key's `kid` (after its signing key's).
const LOGIN_KID_SUFFIX: &str = ".login";

/// The X25519 login key of an Ed25519 signing key: a hash of the signing secret under a
/// label of its own, so the two keys are independent for any practical purpose.
fn login_key(der: &[u8]) -> anyhow::Result<crypto_box::SecretKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    use sha2::Digest as _;
    let signing = SigningKey::from_pkcs8_der(der)
        .map_err(|e| anyhow::anyhow!("stored signing key is unreadable: {e}"))?;
    let mut hash = sha2::Sha256::new();
    hash.update(b"switchyard login key v1\n");
    hash.update(signing.to_bytes());
    let bytes: [u8; 32] = hash.finalize().into();
    Ok(crypto_box::SecretKey::from_bytes(bytes))
}

/// The keys, newest first.
pub struct KeyRing {
    keys: Vec<Key>,
}

/// Arbitrary constant naming the key-creation advisory lock.
const KEY_LOCK: i64 = 0x4b45_5953; // "KEYS"

impl KeyRing {
    /// Loads the keys, creating the first one if there is none. Replicas starting at once
    /// serialise on an advisory lock, so exactly one key is created.
    /// Private keys are stored sealed by `vault`; any not sealed under its current key
    /// (in the clear, or under the previous key of a rotation) are sealed again here.
    pub async fn load_or_create(pool: &Pool, vault: &KeyVault) -> anyhow::Result<Self> {
        let mut client = pool.get().await.context("cannot connect to PostgreSQL")?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])
            .await?;
        let count: i64 = tx
            .query_one("SELECT count(*) FROM signing_keys", &[])
            .await?
            .get(0);
        if count == 0 {
            let seed: [u8; 32] = rand::random();
            let signing = SigningKey::from_bytes(&seed);
            let der = signing
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("cannot encode key: {e}"))?;
            let public_x = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
            let kid = uuid::Uuid::now_v7().simple().to_string();
            tx.execute(
                "INSERT INTO signing_keys (kid, private_der, public_x) VALUES ($1, $2, $3)",
                &[&kid, &vault.seal(der.as_bytes())?, &public_x],
            )
            .await?;
            tracing::info!(%kid, "created the first token signing key");
        }
        let rows = tx
            .query(
                "SELECT kid, private_der, public_x FROM signing_keys ORDER BY created_at DESC",
                &[],
            )
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let kid: String = row.get(0);
            let stored: Vec<u8> = row.get(1);
            let opened = vault.open(&stored)?;
            if opened.needs_reseal {
                tx.execute(
                    "UPDATE signing_keys SET private_der = $2 WHERE kid = $1",
                    &[&kid, &vault.seal(&opened.plain)?],
                )
                .await?;
                tracing::info!(%kid, "signing key sealed under the current key-encryption key");
            }
            keys.push(Key {
                encoding: EncodingKey::from_ed_der(&opened.plain),
                public_x: row.get(2),
                login: login_key(&opened.plain)?,
                kid,
            });
        }
        tx.commit().await?;
        Ok(Self { keys })
    }

    /// Signs an access token for `user`.
    pub fn issue(&self, user: &User, ttl: Duration) -> Result<Token, String> {
        let key = self.keys.first().ok_or("no signing key")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let claims = Claims {
            sub: user.id.to_string(),
            name: user.display_name.clone(),
            role: user.role,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let access_token =
            jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| e.to_string())?;
        Ok(Token {
            access_token,
            token_type: "Bearer".into(),
            expires_in: ttl.as_secs(),
        })
    }

    /// The public keys as a JWK Set (RFC 7517, OKP keys per RFC 8037): each signing key
    /// (`use: sig`) and, after them, its login key (`use: enc`, X25519), newest first.
    pub fn jwks(&self) -> serde_json::Value {
        let signing = self.keys.iter().map(|k| {
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": k.public_x, "kid": k.kid,
                "alg": "EdDSA", "use": "sig",
            })
        });
        let login = self.keys.iter().map(|k| {
            serde_json::json!({
                "kty": "OKP", "crv": "X25519",
                "x": URL_SAFE_NO_PAD.encode(k.login.public_key().as_bytes()),
                "kid": format!("{}{LOGIN_KID_SUFFIX}", k.kid), "use": "enc",
            })
        });
        let keys: Vec<serde_json::Value> = signing.chain(login).collect();
        serde_json::json!({ "keys": keys })
    }

    /// Opens a sealed login; `None` if it names no login key of ours or does not open.
    pub fn open_login(&self, login: &Login) -> Option<Credentials> {
        let kid = login.kid.strip_suffix(LOGIN_KID_SUFFIX)?;
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        let sealed = URL_SAFE_NO_PAD.decode(&login.sealed).ok()?;
        let opened = key.login.unseal(&sealed).ok()?;
        serde_json::from_slice(&opened).ok()
    }
}
