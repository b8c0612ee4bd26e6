//! Operation ids that any gateway replica can verify without shared state.
//!
//! A public operation id is `<uuid>.<service>.<tag>`: the command's message id, the
//! service that owns the outcome, and a truncated HMAC-SHA256 over both with the key all
//! replicas share. A request with an `Idempotency-Key` gets `<uuid>.<service>.<fp>.<tag>`:
//! its body's fingerprint too, so polling it tells whether this request or another one
//! made with the same key owns the outcome. `GET /v1/operations/{id}` therefore knows, on any replica, that the id
//! was issued by us (so "accepted, not yet handled" is a true answer rather than a guess
//! for any well-formed string) and which service to ask for the outcome.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use uuid::Uuid;

/// Bytes of HMAC kept in the id: 64 bits is far beyond guessing over HTTP.
const TAG_BYTES: usize = 8;

/// Issues and verifies operation ids.
#[derive(Clone)]
pub struct OperationIds {
    /// HMAC state keyed once; cloned per use.
    keyed: Hmac<Sha256>,
}

impl OperationIds {
    /// Signs with `key`.
    pub fn new(key: &SecretSlice<u8>) -> Result<Self, hmac::digest::InvalidLength> {
        Ok(Self {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())?,
        })
    }

    fn mac(&self, uuid: Uuid, service: &str, fingerprint: Option<Fingerprint>) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(uuid.as_bytes());
        mac.update(b".");
        mac.update(service.as_bytes());
        if let Some(fingerprint) = fingerprint {
            mac.update(b".");
            mac.update(fingerprint.hex().as_bytes());
        }
        mac
    }

    /// The public id of operation `uuid` owned by `service`, made by a request with
    /// `fingerprint` when it carried an `Idempotency-Key`.
    pub fn issue(&self, uuid: Uuid, service: &str, fingerprint: Option<Fingerprint>) -> String {
        let tag = self.mac(uuid, service, fingerprint).finalize().into_bytes();
        let tag = hex::encode(&tag[..TAG_BYTES]);
        match fingerprint {
            Some(fingerprint) => format!("{uuid}.{service}.{}.{tag}", fingerprint.hex()),
            None => format!("{uuid}.{service}.{tag}"),
        }
    }

    /// The operation, owning service and request fingerprint named by a public id we
    /// issued, or `None`.
    pub fn verify(&self, public: &str) -> Option<(Uuid, String, Option<Fingerprint>)> {
        let parts: Vec<&str> = public.split('.').collect();
        let (uuid, service, fingerprint, tag) = match parts.as_slice() {
            [uuid, service, tag] => (uuid, service, None, tag),
            [uuid, service, fingerprint, tag] => (
                uuid,
                service,
                Some(Fingerprint::from_hex(fingerprint)?),
                tag,
            ),
            _ => return None,
        };
        // Only the canonical spelling: one operation, one id.
        if uuid.len() != 36 {
            return None;
        }
        let uuid = Uuid::parse_str(uuid).ok()?;
        let tag = hex::decode(tag).ok()?;
        if tag.len() != TAG_BYTES || service.is_empty() {
            return None;
        }
        self.mac(uuid, service, fingerprint)
            .verify_truncated_left(&tag)
            .ok()?;
        Some((uuid, (*service).to_owned(), fingerprint))
    }
}

/// A digest of a request body (its JSON re-encoded, so spacing does not matter), kept
/// with an idempotent command's outcome so a key reused with another body is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(bytes);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self(first)
    }

    /// The fingerprint of a request without a body.
    pub fn none() -> Self {
        Self::of(b"")
    }

    /// As hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From hex, as carried in an operation id.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(byte: u8) -> OperationIds {
        OperationIds::new(&SecretSlice::from(vec![byte; 32])).unwrap()
    }

    #[test]
    fn an_issued_id_verifies_on_another_replica_with_the_same_key() {
        let uuid = Uuid::now_v7();
        let public = ids(1).issue(uuid, "catalog", None);
        assert_eq!(
            ids(1).verify(&public),
            Some((uuid, "catalog".to_owned(), None))
        );
        let body = Fingerprint::of(b"{}");
        let fingerprint = Some(body);
        let keyed = ids(1).issue(uuid, "catalog", fingerprint);
        assert_eq!(
            ids(1).verify(&keyed),
            Some((uuid, "catalog".to_owned(), fingerprint))
        );
        let other = Fingerprint::of(b"{\"a\":1}").hex();
        let swapped = keyed.replacen(&body.hex(), &other, 1);
        assert_eq!(ids(1).verify(&swapped), None, "the fingerprint is signed");
    }

    #[test]
    fn forged_or_altered_ids_are_refused() {
        let uuid = Uuid::now_v7();
        let public = ids(1).issue(uuid, "catalog", None);
        assert_eq!(ids(2).verify(&public), None, "other key");
        let other_service = public.replacen("catalog", "social", 1);
        assert_eq!(ids(1).verify(&other_service), None);
        assert_eq!(ids(1).verify(&uuid.to_string()), None);
        assert_eq!(ids(1).verify("not.an.id"), None);
        assert_eq!(ids(1).verify(""), None);
    }
}
