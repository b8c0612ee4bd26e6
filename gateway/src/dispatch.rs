//! From HTTP to the bus: publishing commands (and waiting for their outcome when asked),
//! and asking queries. Failures are [`DispatchError`]s, in the bus's terms; only `routes/`
//! turns them into problem+json.

use std::time::Duration;

use contracts::{Envelope, Message, Outcome, QueryReply};
use platform::bus::{Bus, Encoded, Outgoing, PublishError, Reply, ReplyError};
use serde_json::Value;
use uuid::Uuid;

use crate::breaker::{Breakers, Ended};
use crate::context::RequestContext;
use crate::operation_id::{Fingerprint, OperationIds};

/// Why a command or query got no answer to give the client (a business refusal is
/// `Rejected`; the rest are the bus's and the services' failures).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The message could not be encoded.
    #[error("cannot encode {0}")]
    Encode(String),
    /// The publish certainly did not reach a queue: retrying is safe.
    #[error("{service}: {error}")]
    NotSent {
        /// The service the message was for.
        service: String,
        /// Why.
        error: PublishError,
    },
    /// The command may have reached the broker although its publish failed (no confirm in
    /// time, or the channel died after sending).
    #[error("command {operation_id} unconfirmed: {error}")]
    OutcomeUnknown {
        /// The public operation id, to poll or retry with the same key.
        operation_id: String,
        /// Why.
        error: PublishError,
    },
    /// The service's breaker is open: it is not asked for a while.
    #[error("{service} is not answering; not asked for {retry_after:?}")]
    CircuitOpen {
        /// The service.
        service: String,
        /// When it is asked again.
        retry_after: Duration,
    },
    /// No answer within the query timeout.
    #[error("no answer from {service} within {after:?}")]
    Timeout {
        /// The service.
        service: String,
        /// The timeout.
        after: Duration,
    },
    /// The service refused (a business rule, not found, forbidden…).
    #[error("{}", .0.detail)]
    Rejected(contracts::Rejection),
    /// The service answered with something that is not a reply.
    #[error("the service answered with something unreadable")]
    Unreadable,
    /// An operation id this gateway did not issue.
    #[error("operation {0} does not exist")]
    UnknownOperation(String),
    /// An `Idempotency-Key` reused for a different request.
    #[error("{KEY_REUSED}")]
    KeyReused {
        /// The operation the key names.
        operation_id: String,
    },
}

/// What a client is told when it reuses an `Idempotency-Key` for another request.
pub const KEY_REUSED: &str =
    "this Idempotency-Key was already used for a different request; use a new key";

/// Namespace for operation ids derived from an `Idempotency-Key`.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_6f0e_9a2b_4c3d_8e7f_a1b2_c3d4_e5f6);

/// A command's operation: its id, the id of the resource it creates (if it creates one),
/// and for a request with an `Idempotency-Key` the fingerprint of the request it was first
/// made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// Operation (and command message) id.
    pub id: Uuid,
    /// Id for a resource the command creates: tied to the operation when the request is
    /// idempotent (a retry creates nothing new), fresh otherwise.
    pub resource_id: Uuid,
    /// Set when the id was derived from an `Idempotency-Key`.
    pub fingerprint: Option<Fingerprint>,
}

impl Operation {
    /// The operation for a write: derived from the `Idempotency-Key` so a retry names the
    /// same operation, or fresh otherwise.
    ///
    /// An authenticated caller's keys are their own (scoped to the actor, method and path);
    /// a reuse with another body is told apart by the `body` fingerprint recorded with
    /// the outcome (422). Anonymous callers share no key space: the fingerprint is part of
    /// their derivation, so the same key with another body is another operation, and
    /// nobody can read another caller's outcome by guessing their key.
    pub fn for_request(context: &RequestContext, body: Fingerprint) -> Self {
        let Some(key) = &context.idempotency_key else {
            return Operation {
                id: Uuid::now_v7(),
                resource_id: Uuid::now_v7(),
                fingerprint: None,
            };
        };
        let RequestContext { method, path, .. } = context;
        let name = match context.actor.as_deref() {
            Some(actor) => format!("{actor}\n{method}\n{path}\n{key}"),
            None => format!("anonymous\n{method}\n{path}\n{key}\n{}", body.hex()),
        };
        let id = Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes());
        Operation {
            id,
            resource_id: Uuid::new_v5(&id, b"resource"),
            fingerprint: Some(body),
        }
    }
}

/// A submitted command.
#[derive(Debug)]
pub enum Submitted {
    /// Published and confirmed; outcome not known (yet).
    Accepted {
        /// Public operation id.
        operation_id: String,
    },
    /// The outcome arrived within the client's wait.
    Completed {
        /// Public operation id.
        operation_id: String,
        /// What the worker reported.
        outcome: Outcome,
    },
}

impl DispatchError {
    /// For a request refused at once without reaching the service: the service and why
    /// (`queue_full`, `broker_blocked`, `no_consumer`, `broker_unavailable`,
    /// `circuit_open`). Timeouts, rejections and unknown outcomes are not refusals.
    pub fn refusal(&self) -> Option<(&str, &'static str)> {
        match self {
            Self::NotSent { service, error } => Some((
                service,
                match error {
                    PublishError::Nacked => "queue_full",
                    PublishError::Blocked(_) => "broker_blocked",
                    PublishError::Unroutable(_) => "no_consumer",
                    _ => "broker_unavailable",
                },
            )),
            Self::CircuitOpen { service, .. } => Some((service, "circuit_open")),
            _ => None,
        }
    }
}

/// Publishes commands and asks queries on behalf of HTTP handlers.
#[derive(Clone)]
pub struct Dispatcher {
    bus: Bus,
    ids: OperationIds,
    query_timeout: Duration,
    actors: platform::actor::ActorKey,
    breakers: Breakers,
}

impl Dispatcher {
    /// A dispatcher on `bus` that vouches for each command's actor with `actors` and
    /// stops asking a service whose queries keep timing out (`breakers`).
    pub fn new(
        bus: Bus,
        ids: OperationIds,
        query_timeout: Duration,
        actors: platform::actor::ActorKey,
        breakers: Breakers,
    ) -> Self {
        Self {
            bus,
            ids,
            query_timeout,
            actors,
            breakers,
        }
    }

    /// The bus, for readiness.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publishes a command to the service that owns it and, if the client asked to wait,
    /// waits for its outcome. A publish that is not confirmed is a 503: the client must
    /// retry.
    pub async fn submit<C: Message>(
        &self,
        command: &C,
        operation: Operation,
        context: &RequestContext,
    ) -> Result<Submitted, DispatchError> {
        let result = self.send_command(command, operation, context).await;
        self.counted(result)
    }

    /// Asks a query of the service that owns it and returns the answer's body; a
    /// rejection is [`DispatchError::Rejected`].
    pub async fn query<Q: Message>(
        &self,
        query: &Q,
        context: &RequestContext,
    ) -> Result<Value, DispatchError> {
        let result = self.ask(query, context).await;
        self.counted(result)
    }

    /// The state of an operation: the owning service's recorded outcome, or `accepted` for
    /// an id we issued that has no outcome yet.
    pub async fn operation(
        &self,
        public_id: &str,
        context: &RequestContext,
    ) -> Result<Value, DispatchError> {
        let result = self.operation_state(public_id, context).await;
        self.counted(result)
    }

    /// Counts a request refused at once (backpressure, an open breaker, the broker) by
    /// service and reason, so a dashboard tells overload from failure.
    fn counted<T>(&self, result: Result<T, DispatchError>) -> Result<T, DispatchError> {
        if let Err(error) = &result
            && let Some((upstream, reason)) = error.refusal()
        {
            let labels = platform::metrics::RefusalLabels {
                upstream: upstream.to_owned(),
                reason: reason.to_owned(),
            };
            self.bus
                .metrics()
                .gateway_refusals
                .get_or_create(&labels)
                .inc();
        }
        result
    }

    async fn send_command<C: Message>(
        &self,
        command: &C,
        operation: Operation,
        context: &RequestContext,
    ) -> Result<Submitted, DispatchError> {
        let service = C::SERVICE;
        let fingerprint = operation.fingerprint;
        let operation_id = self.ids.issue(operation.id, service, fingerprint);
        // A retry with an Idempotency-Key: if the operation already has an outcome, that
        // is the answer (or a 422 when the key was first used for another request), and
        // nothing is published again.
        if fingerprint.is_some()
            && let Some(outcome) = self.recorded(service, operation.id, context).await
        {
            check_fingerprint(&operation_id, fingerprint, &outcome)?;
            return Ok(Submitted::Completed {
                operation_id,
                outcome,
            });
        }
        let operation = operation.id;
        let mut message = Encoded::new(command, operation)
            .map_err(|e| DispatchError::Encode(format!("command: {e}")))?;
        let envelope = &mut message.envelope;
        // One command per operation: its message id is the operation id, so a retried
        // request (same Idempotency-Key) is recognised by the worker's inbox.
        envelope.message_id = operation;
        envelope.request_fingerprint = fingerprint.map(|f| f.hex());
        if let Some(principal) = &context.principal {
            self.actors.sign(
                envelope,
                principal.user_id,
                principal.role.as_str(),
                &message.body,
            );
        }
        envelope.request_id = Some(context.request_id.clone());
        envelope.traceparent = context.traceparent.clone();
        let wait = context.wait.filter(|w| !w.is_zero());
        let command_error = |error: PublishError| {
            if error.may_have_arrived() {
                DispatchError::OutcomeUnknown {
                    operation_id: operation_id.clone(),
                    error,
                }
            } else {
                DispatchError::NotSent {
                    service: service.to_owned(),
                    error,
                }
            }
        };
        let Some(wait) = wait else {
            self.bus
                .publish_command(&message)
                .await
                .map_err(command_error)?;
            return Ok(Submitted::Accepted { operation_id });
        };
        let waiter = self
            .bus
            .publish_command_awaiting_outcome(&message)
            .await
            .map_err(command_error)?;
        let Some(reply) = waiter.wait(wait).await else {
            return Ok(Submitted::Accepted { operation_id });
        };
        match serde_json::from_slice::<Outcome>(&reply.body) {
            Ok(outcome) => {
                // A duplicate of an earlier command is answered with that command's outcome.
                check_fingerprint(&operation_id, fingerprint, &outcome)?;
                Ok(Submitted::Completed {
                    operation_id,
                    outcome,
                })
            }
            Err(error) => {
                tracing::warn!(%error, "malformed outcome reply; answering 202");
                Ok(Submitted::Accepted { operation_id })
            }
        }
    }

    async fn ask<Q: Message>(
        &self,
        query: &Q,
        context: &RequestContext,
    ) -> Result<Value, DispatchError> {
        let mut message = Encoded::new(query, Uuid::now_v7())
            .map_err(|e| DispatchError::Encode(format!("query: {e}")))?;
        stamp(&mut message.envelope, context);
        let attempt = self.attempt(Q::SERVICE)?;
        let reply = self.bus.query(&message, self.query_timeout).await;
        answer(Q::SERVICE, attempt, reply)
    }

    /// Asks `service` for the outcome of an operation. Every service answers
    /// `<service>.operation.get` with the same body, so this one query is built by name
    /// rather than through each service's query type: a new service needs no arm here.
    async fn ask_operation(
        &self,
        service: &str,
        operation: Uuid,
        context: &RequestContext,
    ) -> Result<Value, DispatchError> {
        let routing_key = format!("{service}.{}", contracts::common::OPERATION_GET);
        let body = serde_json::to_vec(&serde_json::json!({
            "type": routing_key, "operation_id": operation,
        }))
        .map_err(|e| DispatchError::Encode(format!("query: {e}")))?;
        let mut envelope = Envelope::new(
            &routing_key,
            contracts::common::OPERATION_GET_VERSION,
            Uuid::now_v7(),
        );
        stamp(&mut envelope, context);
        let attempt = self.attempt(service)?;
        let exchange = self.bus.topology().commands_exchange();
        let message = Outgoing {
            exchange: &exchange,
            routing_key: &routing_key,
            envelope: &envelope,
            body: &body,
            mandatory: true,
            expiration: Some(self.query_timeout),
            extra_headers: None,
        };
        let reply = self
            .bus
            .publisher()
            .request(message, self.query_timeout)
            .await;
        answer(service, attempt, reply)
    }

    /// Permission from `service`'s breaker to ask it something.
    fn attempt(&self, service: &str) -> Result<crate::breaker::Attempt, DispatchError> {
        self.breakers
            .attempt(service)
            .map_err(|retry_after| DispatchError::CircuitOpen {
                service: service.to_owned(),
                retry_after,
            })
    }

    async fn operation_state(
        &self,
        public_id: &str,
        context: &RequestContext,
    ) -> Result<Value, DispatchError> {
        let Some((uuid, service, fingerprint)) = self.ids.verify(public_id) else {
            return Err(DispatchError::UnknownOperation(public_id.to_owned()));
        };
        match self.outcome(&service, uuid, context).await? {
            Some(outcome) => match check_fingerprint(public_id, fingerprint, &outcome) {
                Ok(()) => Ok(operation_view(public_id, &outcome)),
                // This request lost to another one with the same key: it was not applied.
                Err(error) => Ok(serde_json::json!({
                    "operation_id": public_id,
                    "status": "rejected",
                    "rejection": {"kind": "invalid", "detail": error.to_string()},
                })),
            },
            None => Ok(serde_json::json!({"operation_id": public_id, "status": "accepted"})),
        }
    }

    /// The outcome `service` recorded for operation `uuid`, `None` if it has none yet.
    async fn outcome(
        &self,
        service: &str,
        uuid: Uuid,
        context: &RequestContext,
    ) -> Result<Option<Outcome>, DispatchError> {
        match self.ask_operation(service, uuid, context).await {
            Ok(outcome) => serde_json::from_value(outcome)
                .map(Some)
                .map_err(|_| DispatchError::Unreadable),
            Err(DispatchError::Rejected(r)) if r.kind == contracts::RejectionKind::NotFound => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The recorded outcome of an idempotent retry, if the service can tell now; any
    /// failure to ask means "publish it", which the worker's inbox makes safe.
    async fn recorded(
        &self,
        service: &str,
        uuid: Uuid,
        context: &RequestContext,
    ) -> Option<Outcome> {
        self.outcome(service, uuid, context).await.ok().flatten()
    }
}

/// Fills in what every query carries of its request: correlation (the query's own id, so
/// its reply finds the waiter), actor, request id and trace.
fn stamp(envelope: &mut Envelope, context: &RequestContext) {
    envelope.correlation_id = envelope.message_id;
    envelope.actor = context.actor.clone();
    envelope.request_id = Some(context.request_id.clone());
    envelope.traceparent = context.traceparent.clone();
}

/// A query's reply (or why there is none) as the answer's body or an error, telling the
/// breaker how the attempt ended.
fn answer(
    service: &str,
    attempt: crate::breaker::Attempt,
    reply: Result<Reply, ReplyError>,
) -> Result<Value, DispatchError> {
    let reply = match reply {
        Ok(reply) => {
            attempt.finish(Ended::Answered);
            reply
        }
        Err(ReplyError::Publish(error)) => {
            attempt.finish(Ended::Abandoned);
            return Err(DispatchError::NotSent {
                service: service.to_owned(),
                error,
            });
        }
        Err(ReplyError::Timeout(after)) => {
            attempt.finish(Ended::TimedOut);
            return Err(DispatchError::Timeout {
                service: service.to_owned(),
                after,
            });
        }
    };
    match serde_json::from_slice::<QueryReply>(&reply.body) {
        Ok(QueryReply::Ok { body }) => Ok(body),
        Ok(QueryReply::Rejected { rejection }) => Err(DispatchError::Rejected(rejection)),
        Err(error) => {
            tracing::warn!(%error, "malformed query reply");
            Err(DispatchError::Unreadable)
        }
    }
}

/// 422 when an outcome belongs to a request with another fingerprint than this one (an
/// `Idempotency-Key` reused for a different request, as the IETF draft asks).
fn check_fingerprint(
    operation_id: &str,
    fingerprint: Option<Fingerprint>,
    outcome: &Outcome,
) -> Result<(), DispatchError> {
    let (Some(mine), Some(recorded)) = (fingerprint, outcome.request_fingerprint.as_deref()) else {
        return Ok(());
    };
    if mine.hex() == recorded {
        return Ok(());
    }
    Err(DispatchError::KeyReused {
        operation_id: operation_id.to_owned(),
    })
}

/// The JSON clients see for an operation with an outcome.
pub fn operation_view(public_id: &str, outcome: &Outcome) -> Value {
    let mut view = serde_json::json!({
        "operation_id": public_id,
        "status": outcome.status,
        "completed_at": outcome.completed_at,
    });
    if let Some(rejection) = &outcome.rejection {
        view["rejection"] = serde_json::json!(rejection);
    }
    if let Some(resource) = &outcome.resource {
        view["resource"] = resource.clone();
    }
    view
}
