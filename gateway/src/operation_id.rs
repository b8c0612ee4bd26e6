//! Operation ids that any gateway replica can verify without shared state.
//!
//! A public operation id is `<uuid>.<service>.<tag>`: the command's message id, the
//! service that owns the outcome, and a truncated HMAC-SHA256 over both with the key all
//! replicas share. `GET /v1/operations/{id}` therefore knows, on any replica, that the id
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

    fn mac(&self, uuid: Uuid, service: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(uuid.as_bytes());
        mac.update(b".");
        mac.update(service.as_bytes());
        mac
    }

    /// The public id of operation `uuid` owned by `service`.
    pub fn issue(&self, uuid: Uuid, service: &str) -> String {
        let tag = self.mac(uuid, service).finalize().into_bytes();
        format!("{uuid}.{service}.{}", hex::encode(&tag[..TAG_BYTES]))
    }

    /// The operation and owning service named by a public id we issued, or `None`.
    pub fn verify(&self, public: &str) -> Option<(Uuid, String)> {
        let mut parts = public.splitn(3, '.');
        let uuid = Uuid::parse_str(parts.next()?).ok()?;
        let service = parts.next()?;
        let tag = hex::decode(parts.next()?).ok()?;
        if tag.len() != TAG_BYTES || service.is_empty() {
            return None;
        }
        self.mac(uuid, service).verify_truncated_left(&tag).ok()?;
        Some((uuid, service.to_owned()))
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
        let public = ids(1).issue(uuid, "catalog");
        assert_eq!(ids(1).verify(&public), Some((uuid, "catalog".to_owned())));
    }

    #[test]
    fn forged_or_altered_ids_are_refused() {
        let uuid = Uuid::now_v7();
        let public = ids(1).issue(uuid, "catalog");
        assert_eq!(ids(2).verify(&public), None, "other key");
        let other_service = public.replacen("catalog", "social", 1);
        assert_eq!(ids(1).verify(&other_service), None);
        assert_eq!(ids(1).verify(&uuid.to_string()), None);
        assert_eq!(ids(1).verify("not.an.id"), None);
        assert_eq!(ids(1).verify(""), None);
    }
}
