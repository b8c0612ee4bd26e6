//! Actor assertions: the second line behind the gateway's token check.
//!
//! The gateway verifies a caller's token, then vouches for the caller on every command it
//! publishes: `x-actor` (the user id), `x-actor-role`, and `x-actor-proof`, an HMAC-SHA256
//! over the message id, actor, role and body with a key only the gateway and the workers hold
//! (`SWITCHYARD_ACTOR_KEY`). A worker accepts an actor only with a valid proof, then checks
//! the role its command needs itself. Someone who can publish to the broker but does not
//! hold the key cannot act as another user or claim a role: such a message is
//! dead-lettered (`forged-actor`). The proof is bound to the message id and body, so it
//! cannot be moved onto another message or another command; replaying the same message is
//! absorbed by the inbox.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use uuid::Uuid;

use contracts::Envelope;

use crate::bus::consumer::{DeadLetter, reasons};
use crate::config::{ConfigError, Source};

/// The shared key that signs and verifies actor assertions.
#[derive(Clone)]
pub struct ActorKey {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for ActorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActorKey(<hidden>)")
    }
}

/// A verified actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// User id.
    pub id: Uuid,
    /// Role name (`admin`, `teacher`, `student`).
    pub role: String,
}

impl ActorKey {
    /// A key from raw bytes (at least 32).
    pub fn new(key: &SecretSlice<u8>) -> Option<Self> {
        if key.expose_secret().len() < 32 {
            return None;
        }
        Some(Self {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).ok()?,
        })
    }

    /// Reads `ACTOR_KEY` (hex, at least 32 bytes; required: a service that cannot tell a
    /// vouched-for actor from a forged one must not start).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let Some(hex_key) = source.get("ACTOR_KEY") else {
            return Err(ConfigError::new(
                "ACTOR_KEY",
                "",
                "required: 64+ hex characters shared by the gateway and every worker (e.g. `openssl rand -hex 32`)",
            ));
        };
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| ConfigError::new("ACTOR_KEY", "<hidden>", "must be hex"))?;
        Self::new(&SecretSlice::from(bytes))
            .ok_or_else(|| ConfigError::new("ACTOR_KEY", "<hidden>", "must be at least 32 bytes"))
    }

    fn mac(&self, message_id: Uuid, actor: &str, role: &str, body: &[u8]) -> Hmac<Sha256> {
        use sha2::Digest as _;
        let mut mac = self.keyed.clone();
        mac.update(b"switchyard actor v1\n");
        mac.update(message_id.as_bytes());
        mac.update(b"\n");
        mac.update(actor.as_bytes());
        mac.update(b"\n");
        mac.update(role.as_bytes());
        mac.update(b"\n");
        mac.update(&Sha256::digest(body));
        mac
    }

    /// Sets actor, role and proof on the envelope of a command with `body` (its message id
    /// must be final).
    pub fn sign(&self, envelope: &mut Envelope, actor: Uuid, role: &str, body: &[u8]) {
        let actor = actor.to_string();
        let proof = self
            .mac(envelope.message_id, &actor, role, body)
            .finalize()
            .into_bytes();
        envelope.actor = Some(actor);
        envelope.actor_role = Some(role.to_owned());
        envelope.actor_proof = Some(hex::encode(proof));
    }

    /// Decodes a command as `M` ([`crate::bus::decode`]) whose actor, if it names one,
    /// carries a proof made with this key: what every command consumer accepts.
    pub fn decode<M: contracts::Message>(
        &self,
        incoming: &crate::bus::Incoming,
    ) -> Result<M, DeadLetter> {
        let command = crate::bus::decode::<M>(incoming)?;
        self.verify(&incoming.envelope, &incoming.body)?;
        Ok(command)
    }

    /// The command's actor, if it names one and the proof holds. An actor without a valid
    /// proof is a dead letter: nobody we trust sent it.
    pub fn verify(&self, envelope: &Envelope, body: &[u8]) -> Result<Option<Actor>, DeadLetter> {
        let Some(actor) = envelope.actor.as_deref() else {
            return Ok(None);
        };
        let forged = |why: &str| DeadLetter::new(reasons::FORGED_ACTOR, why.to_owned());
        let role = envelope
            .actor_role
            .as_deref()
            .ok_or_else(|| forged("the actor has no role header"))?;
        let proof = envelope
            .actor_proof
            .as_deref()
            .and_then(|p| hex::decode(p).ok())
            .ok_or_else(|| forged("the actor is not vouched for (no or malformed proof)"))?;
        self.mac(envelope.message_id, actor, role, body)
            .verify_slice(&proof)
            .map_err(|_| forged("the actor's proof does not match"))?;
        let id = Uuid::parse_str(actor).map_err(|_| forged("the actor is not a user id"))?;
        Ok(Some(Actor {
            id,
            role: role.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(byte: u8) -> ActorKey {
        ActorKey::new(&SecretSlice::from(vec![byte; 32])).unwrap()
    }

    #[test]
    fn a_signed_actor_verifies_and_any_change_is_refused() {
        let user = Uuid::now_v7();
        let mut envelope = Envelope::new("catalog.course.create", 1, Uuid::now_v7());
        key(1).sign(&mut envelope, user, "teacher", b"{}");
        assert_eq!(
            key(1).verify(&envelope, b"{}").unwrap(),
            Some(Actor {
                id: user,
                role: "teacher".into()
            })
        );
        assert!(key(2).verify(&envelope, b"{}").is_err(), "another key");
        let mut promoted = envelope.clone();
        promoted.actor_role = Some("admin".into());
        assert!(key(1).verify(&promoted, b"{}").is_err(), "a changed role");
        assert!(
            key(1).verify(&envelope, b"{\"x\":1}").is_err(),
            "another body"
        );
        let mut other = envelope.clone();
        other.actor = Some(Uuid::now_v7().to_string());
        assert!(key(1).verify(&other, b"{}").is_err(), "another user");
        let mut moved = envelope.clone();
        moved.message_id = Uuid::now_v7();
        assert!(key(1).verify(&moved, b"{}").is_err(), "another message");
        let mut bare = envelope;
        bare.actor_proof = None;
        assert!(key(1).verify(&bare, b"{}").is_err(), "no proof");
    }

    #[test]
    fn a_command_without_an_actor_has_none_and_short_keys_are_refused() {
        let envelope = Envelope::new("accounts.user.register", 1, Uuid::now_v7());
        assert_eq!(key(1).verify(&envelope, b"{}").unwrap(), None);
        assert!(ActorKey::new(&SecretSlice::from(vec![1u8; 16])).is_none());
    }
}
