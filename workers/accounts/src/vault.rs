//! Signing keys at rest: each private key is stored encrypted (XSalsa20-Poly1305) under a
//! key-encryption key from a file or secret, never in the clear in the database.
//!
//! Rotation: start accounts with the new key as `KEY_ENCRYPTION_KEY` (or `_FILE`) and the
//! old one as `KEY_ENCRYPTION_KEY_PREVIOUS` (or `_FILE`); on start it opens what the old key
//! sealed and seals it again under the new one, in one transaction. Once every replica has
//! started so, drop the previous key. Keys stored in the clear by an older version are
//! sealed the same way on the first start.

use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use platform::config::{ConfigError, Source};

/// Marks a sealed value (format 1: magic, 24-byte nonce, ciphertext with its tag).
const MAGIC: &[u8; 4] = b"SYK1";
const NONCE_BYTES: usize = 24;

/// The key-encryption keys: the current one, and the previous one during a rotation.
#[derive(Clone)]
pub struct KeyVault {
    current: XSalsa20Poly1305,
    previous: Option<XSalsa20Poly1305>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyVault(<hidden>)")
    }
}

/// A stored key as opened.
pub struct Opened {
    /// The private key.
    pub plain: Vec<u8>,
    /// Not sealed under the current key (in the clear, or under the previous one).
    pub needs_reseal: bool,
}

fn read_key(source: &dyn Source, name: &str) -> Result<Option<XSalsa20Poly1305>, ConfigError> {
    // `_FILE` forms are resolved by `platform::config::environment`.
    let Some(text) = source.get(name) else {
        return Ok(None);
    };
    let bytes = hex::decode(text.trim())
        .map_err(|_| ConfigError::new(name, "<hidden>", "must be 64 hex characters"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ConfigError::new(name, "<hidden>", "must be exactly 32 bytes (64 hex)"))?;
    Ok(Some(XSalsa20Poly1305::new(&Key::from(bytes))))
}

impl KeyVault {
    /// Reads `KEY_ENCRYPTION_KEY` or `KEY_ENCRYPTION_KEY_FILE` (required) and, during a
    /// rotation, `KEY_ENCRYPTION_KEY_PREVIOUS` or `…_PREVIOUS_FILE`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let current = read_key(source, "KEY_ENCRYPTION_KEY")?.ok_or_else(|| {
            ConfigError::new(
                "KEY_ENCRYPTION_KEY",
                "",
                "required (or KEY_ENCRYPTION_KEY_FILE): 64 hex characters that encrypt the token signing keys at rest",
            )
        })?;
        let previous = read_key(source, "KEY_ENCRYPTION_KEY_PREVIOUS")?;
        Ok(Self { current, previous })
    }

    /// Seals `plain` under the current key.
    pub fn seal(&self, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .current
            .encrypt(&nonce, plain)
            .map_err(|_| anyhow::anyhow!("cannot encrypt a signing key"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_BYTES + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a stored key: sealed under the current key, under the previous one, or (from
    /// an older version) in the clear.
    pub fn open(&self, stored: &[u8]) -> anyhow::Result<Opened> {
        let Some(rest) = stored.strip_prefix(MAGIC.as_slice()) else {
            return Ok(Opened {
                plain: stored.to_vec(),
                needs_reseal: true,
            });
        };
        if rest.len() < NONCE_BYTES {
            anyhow::bail!("a stored signing key is truncated");
        }
        let (nonce, sealed) = rest.split_at(NONCE_BYTES);
        let nonce = Nonce::from_slice(nonce);
        if let Ok(plain) = self.current.decrypt(nonce, sealed) {
            return Ok(Opened {
                plain,
                needs_reseal: false,
            });
        }
        if let Some(previous) = &self.previous
            && let Ok(plain) = previous.decrypt(nonce, sealed)
        {
            return Ok(Opened {
                plain,
                needs_reseal: true,
            });
        }
        anyhow::bail!(
            "a stored signing key does not open with SWITCHYARD_KEY_ENCRYPTION_KEY (nor the previous key): wrong key?"
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn vault(current: &str, previous: Option<&str>) -> KeyVault {
        let mut source: HashMap<String, String> = HashMap::new();
        source.insert("KEY_ENCRYPTION_KEY".into(), current.repeat(32));
        if let Some(previous) = previous {
            source.insert("KEY_ENCRYPTION_KEY_PREVIOUS".into(), previous.repeat(32));
        }
        KeyVault::from_source(&source).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_with_its_key_and_the_plaintext_is_not_stored() {
        let sealed = vault("ab", None).seal(b"private key bytes").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        let opened = vault("ab", None).open(&sealed).unwrap();
        assert_eq!(opened.plain, b"private key bytes");
        assert!(!opened.needs_reseal);
        assert!(vault("cd", None).open(&sealed).is_err(), "another key");
    }

    #[test]
    fn rotation_opens_with_the_previous_key_and_asks_for_a_reseal() {
        let sealed = vault("ab", None).seal(b"k").unwrap();
        let rotated = vault("cd", Some("ab"));
        let opened = rotated.open(&sealed).unwrap();
        assert_eq!(opened.plain, b"k");
        assert!(opened.needs_reseal);
        let legacy = rotated.open(b"clear key").unwrap();
        assert!(
            legacy.needs_reseal,
            "keys stored in the clear are sealed on start"
        );
    }

    #[test]
    fn the_key_is_required_and_must_be_32_bytes() {
        let mut source: HashMap<String, String> = HashMap::new();
        assert!(KeyVault::from_source(&source).is_err());
        source.insert("KEY_ENCRYPTION_KEY".into(), "ab".repeat(16));
        assert!(KeyVault::from_source(&source).is_err());
    }
}
