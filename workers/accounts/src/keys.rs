//! Token signing keys: Ed25519, created on first start, kept in the accounts database.
//! The newest key signs; every key is published in the JWKS so tokens signed before a
//! rotation stay valid until they expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use contracts::accounts::{AUDIENCE, Claims, ISSUER, Token, User};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::pg::Pool;

/// One key pair.
struct Key {
    kid: String,
    encoding: EncodingKey,
    public_x: String,
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
    pub async fn load_or_create(pool: &Pool) -> anyhow::Result<Self> {
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
                &[&kid, &der.as_bytes(), &public_x],
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
        tx.commit().await?;
        let keys = rows
            .iter()
            .map(|row| {
                let der: Vec<u8> = row.get(1);
                Key {
                    kid: row.get(0),
                    encoding: EncodingKey::from_ed_der(&der),
                    public_x: row.get(2),
                }
            })
            .collect();
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

    /// The public keys as a JWK Set (RFC 7517, OKP keys per RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "x": k.public_x, "kid": k.kid,
                    "alg": "EdDSA", "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}
