//! Envelope ↔ AMQP properties. Standard properties carry what AMQP has a slot for
//! (message id, correlation id, type, timestamp, content type, persistence); headers carry
//! the rest under the names in [`contracts::headers`].

use chrono::{DateTime, TimeZone, Utc};
use contracts::envelope::CONTENT_TYPE_JSON;
use contracts::{Envelope, headers};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use uuid::Uuid;

use super::dead_letter::{DeadLetter, reasons};

/// Header with the envelope's timestamp in milliseconds.
const TIMESTAMP_MS: &str = "x-timestamp-ms";

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Builds properties for publishing `envelope`.
pub fn to_properties(envelope: &Envelope) -> BasicProperties {
    let mut table = FieldTable::default();
    let mut put = |key: &str, value: String| {
        table.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    };
    if let Some(causation) = envelope.causation_id {
        put(headers::CAUSATION_ID, causation.to_string());
    }
    if let Some(actor) = &envelope.actor {
        put(headers::ACTOR, actor.clone());
    }
    if let Some(role) = &envelope.actor_role {
        put(headers::ACTOR_ROLE, role.clone());
    }
    if let Some(proof) = &envelope.actor_proof {
        put(headers::ACTOR_PROOF, proof.clone());
    }
    if let Some(fingerprint) = &envelope.request_fingerprint {
        put(headers::REQUEST_FINGERPRINT, fingerprint.clone());
    }
    if let Some(request_id) = &envelope.request_id {
        put(headers::REQUEST_ID, request_id.clone());
    }
    if let Some(traceparent) = &envelope.traceparent {
        put(headers::TRACEPARENT, traceparent.clone());
    }
    // AMQP's timestamp property has whole seconds; latency metrics need milliseconds.
    table.insert(
        TIMESTAMP_MS.into(),
        AMQPValue::LongLongInt(envelope.timestamp.timestamp_millis()),
    );
    table.insert(
        headers::SCHEMA_VERSION.into(),
        AMQPValue::LongLongInt(i64::from(envelope.schema_version)),
    );
    BasicProperties::default()
        .with_message_id(envelope.message_id.to_string().into())
        .with_correlation_id(envelope.correlation_id.to_string().into())
        .with_type(envelope.message_type.clone().into())
        .with_timestamp(envelope.timestamp.timestamp().max(0) as u64)
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_delivery_mode(PERSISTENT)
        .with_headers(table)
}

/// Reads a header as text, whichever string type the sender used.
pub fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    let table = properties.headers().as_ref()?;
    match table.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header, whatever integer type the sender used.
pub fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    let table = properties.headers().as_ref()?;
    match table.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

fn uuid_property(value: &Option<lapin::types::ShortString>, what: &str) -> Result<Uuid, String> {
    let text = value.as_ref().ok_or_else(|| format!("missing {what}"))?;
    Uuid::parse_str(text.as_str()).map_err(|_| format!("{what} is not a UUID"))
}

/// Reads the envelope of a delivery; an error names the missing or malformed field, and
/// means the message can never be handled (it is dead-lettered, not retried).
pub fn from_properties(properties: &BasicProperties) -> Result<Envelope, DeadLetter> {
    match properties.content_type().as_ref().map(|c| c.as_str()) {
        Some(CONTENT_TYPE_JSON) => {}
        Some(other) => {
            return Err(DeadLetter::new(
                reasons::BAD_CONTENT_TYPE,
                format!("content type {other} is not {CONTENT_TYPE_JSON}"),
            ));
        }
        None => {
            return Err(DeadLetter::new(
                reasons::BAD_CONTENT_TYPE,
                "missing content type",
            ));
        }
    }
    read_headers(properties).map_err(|error| DeadLetter::new(reasons::BAD_HEADER, error))
}

fn read_headers(properties: &BasicProperties) -> Result<Envelope, String> {
    let message_id = uuid_property(properties.message_id(), "message id")?;
    let correlation_id = uuid_property(properties.correlation_id(), "correlation id")?;
    let message_type = properties
        .kind()
        .as_ref()
        .map(|t| t.as_str().to_owned())
        .ok_or("missing type")?;
    let schema_version = header_int(properties, headers::SCHEMA_VERSION)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or("missing or bad schema version header")?;
    let causation_id = match header_text(properties, headers::CAUSATION_ID) {
        Some(text) => Some(Uuid::parse_str(&text).map_err(|_| "causation id is not a UUID")?),
        None => None,
    };
    let timestamp: DateTime<Utc> = header_int(properties, TIMESTAMP_MS)
        .and_then(DateTime::from_timestamp_millis)
        .or_else(|| {
            properties
                .timestamp()
                .and_then(|secs| Utc.timestamp_opt(i64::try_from(secs).ok()?, 0).single())
        })
        .unwrap_or_else(Utc::now);
    Ok(Envelope {
        message_id,
        correlation_id,
        causation_id,
        message_type,
        schema_version,
        timestamp,
        actor: header_text(properties, headers::ACTOR),
        actor_role: header_text(properties, headers::ACTOR_ROLE),
        actor_proof: header_text(properties, headers::ACTOR_PROOF),
        request_fingerprint: header_text(properties, headers::REQUEST_FINGERPRINT),
        request_id: header_text(properties, headers::REQUEST_ID),
        traceparent: header_text(properties, headers::TRACEPARENT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_round_trip_through_properties() {
        let mut envelope = Envelope::new("catalog.course.create", 1, Uuid::now_v7());
        envelope.causation_id = Some(Uuid::now_v7());
        envelope.actor = Some("user-1".into());
        envelope.request_id = Some("req-1".into());
        envelope.traceparent =
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        // AMQP timestamps have whole seconds.
        envelope.timestamp = Utc
            .timestamp_opt(envelope.timestamp.timestamp(), 0)
            .unwrap();
        let back = from_properties(&to_properties(&envelope)).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn a_message_without_an_id_or_with_a_foreign_content_type_is_refused() {
        let envelope = Envelope::new("t", 1, Uuid::now_v7());
        let properties = to_properties(&envelope);
        let no_id = properties.clone().with_message_id("not-a-uuid".into());
        let refused = from_properties(&no_id).unwrap_err();
        assert_eq!(refused.reason, reasons::BAD_HEADER);
        assert!(refused.error.contains("message id"), "{refused:?}");
        let xml = properties.with_content_type("text/xml".into());
        let refused = from_properties(&xml).unwrap_err();
        assert_eq!(refused.reason, reasons::BAD_CONTENT_TYPE);
        assert!(refused.error.contains("text/xml"), "{refused:?}");
    }
}
