//! Typed messages on the bus: encode a contract message with its envelope, publish it the
//! way its kind travels, and decode it on the way in.
//!
//! How a message travels follows from its [`Kind`], so no caller chooses an exchange,
//! `mandatory` or an expiry by hand: a command goes to the commands exchange, mandatory
//! and persistent, confirmed; a query the same way but expiring when its caller stops
//! waiting; an event is written to the outbox and relayed to the events exchange. Asking
//! the wrong kind (a query published as a command) does not compile.

use std::marker::PhantomData;
use std::time::Duration;

use contracts::{Envelope, Kind, Message};
use uuid::Uuid;

use super::consumer::reasons;
use super::{Bus, DeadLetter, Incoming, Outgoing, PublishError, Reply, ReplyError, ReplyWaiter};

/// A message with its envelope and encoded body, ready to publish. The envelope may still
/// be changed (actor, proof over the body, request id) before it is sent.
#[derive(Debug, Clone)]
pub struct Encoded<M> {
    /// The metadata that travels as AMQP properties and headers.
    pub envelope: Envelope,
    /// The JSON body.
    pub body: Vec<u8>,
    message: PhantomData<fn() -> M>,
}

impl<M: Message> Encoded<M> {
    /// Encodes `message` for operation `operation_id` (its correlation id) with a fresh
    /// message id.
    pub fn new(message: &M, operation_id: Uuid) -> Result<Self, serde_json::Error> {
        let envelope = Envelope::new(message.routing_key(), M::SCHEMA_VERSION, operation_id);
        Self::with_envelope(message, envelope)
    }

    /// Encodes `message` as caused by the message `cause` (same operation and actor).
    pub fn caused_by(message: &M, cause: &Envelope) -> Result<Self, serde_json::Error> {
        let envelope = cause.caused(Uuid::now_v7(), message.routing_key(), M::SCHEMA_VERSION);
        Self::with_envelope(message, envelope)
    }

    fn with_envelope(message: &M, envelope: Envelope) -> Result<Self, serde_json::Error> {
        Ok(Self {
            envelope,
            body: serde_json::to_vec(message)?,
            message: PhantomData,
        })
    }

    /// The routing key it travels under.
    pub fn routing_key(&self) -> &str {
        &self.envelope.message_type
    }
}

impl Bus {
    /// Publishes a command and waits for the broker's confirm.
    pub async fn publish_command<M: Message>(
        &self,
        command: &Encoded<M>,
    ) -> Result<(), PublishError> {
        const { assert!(matches!(M::KIND, Kind::Command), "not a command") };
        let exchange = self.topology.commands_exchange();
        self.publisher
            .publish(outgoing(&exchange, command, None))
            .await
    }

    /// Publishes a command whose outcome the caller wants to hear about: the waiter
    /// (registered before the publish, so a fast outcome cannot slip past) receives it.
    pub async fn publish_command_awaiting_outcome<M: Message>(
        &self,
        command: &Encoded<M>,
    ) -> Result<ReplyWaiter, PublishError> {
        const { assert!(matches!(M::KIND, Kind::Command), "not a command") };
        let waiter = self
            .publisher
            .expect_reply(&command.envelope.correlation_id.to_string());
        let exchange = self.topology.commands_exchange();
        self.publisher
            .publish_expecting_reply(outgoing(&exchange, command, None))
            .await?;
        Ok(waiter)
    }

    /// Asks a query and waits up to `timeout` for the answer. The broker drops a query
    /// nobody picked up by then instead of having it answered to a caller who left.
    pub async fn query<M: Message>(
        &self,
        query: &Encoded<M>,
        timeout: Duration,
    ) -> Result<Reply, ReplyError> {
        const { assert!(matches!(M::KIND, Kind::Query), "not a query") };
        let exchange = self.topology.commands_exchange();
        self.publisher
            .request(outgoing(&exchange, query, Some(timeout)), timeout)
            .await
    }
}

fn outgoing<'a, M>(
    exchange: &'a str,
    message: &'a Encoded<M>,
    expiration: Option<Duration>,
) -> Outgoing<'a> {
    Outgoing {
        exchange,
        routing_key: &message.envelope.message_type,
        envelope: &message.envelope,
        body: &message.body,
        // Commands and queries name one service: a message no queue takes must come back
        // as an error (503 at the gateway), never vanish.
        mandatory: true,
        expiration,
        extra_headers: None,
    }
}

/// Decodes an incoming message as `M` and checks it against its envelope: the schema
/// version must be `M`'s and the type header the body's tag. An error is a reason to
/// dead-letter: the message can never be handled.
pub fn decode<M: Message>(incoming: &Incoming) -> Result<M, DeadLetter> {
    if incoming.envelope.schema_version != M::SCHEMA_VERSION {
        return Err(DeadLetter::new(
            reasons::UNSUPPORTED_VERSION,
            format!(
                "schema version {} of {} is not {}",
                incoming.envelope.schema_version,
                incoming.envelope.message_type,
                M::SCHEMA_VERSION
            ),
        ));
    }
    // One pass for the common case; only a body that fails is parsed again to tell an
    // unknown type from a malformed one.
    let message: M =
        serde_json::from_slice(&incoming.body).map_err(|e| undecodable(incoming, &e))?;
    if message.routing_key() != incoming.envelope.message_type {
        return Err(DeadLetter::new(
            reasons::TYPE_MISMATCH,
            format!(
                "type header {} does not match body type {}",
                incoming.envelope.message_type,
                message.routing_key()
            ),
        ));
    }
    Ok(message)
}

fn undecodable(incoming: &Incoming, error: &serde_json::Error) -> DeadLetter {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&incoming.body) else {
        return DeadLetter::new(reasons::UNDECODABLE, format!("body is not JSON: {error}"));
    };
    // serde's tagged enums name the unknown tag; any other unknown variant (inside a
    // field) is a malformed body.
    let unknown_tag = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|tag| {
            error
                .to_string()
                .contains(&format!("unknown variant `{tag}`"))
        });
    let reason = if unknown_tag {
        reasons::UNKNOWN_TYPE
    } else {
        reasons::UNDECODABLE
    };
    DeadLetter::new(
        reason,
        format!("undecodable {}: {error}", incoming.envelope.message_type),
    )
}
