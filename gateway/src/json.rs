//! Strict JSON for request bodies: what `serde_json::Value` lets through silently and a
//! client should hear about. A duplicate key is refused (the last one would win, and two
//! readers of the same bytes could disagree on what was sent); so is a NUL character,
//! which PostgreSQL cannot store and no field has a use for.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, PartialEq, Eq)]
pub enum StrictError {
    /// Not JSON at all (400).
    Malformed(String),
    /// JSON, but with something refused (422).
    Refused(String),
}

/// Parses `bytes` as one JSON value, refusing duplicate keys and NUL characters.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = deserializer
        .deserialize_any(StrictVisitor)
        .map_err(classify)?;
    deserializer.end().map_err(classify)?;
    Ok(value)
}

/// The value's JSON with every object's keys in sorted order and no spacing, so two
/// requests that mean the same thing have the same bytes (fingerprints compare these).
pub fn canonical(value: &Value) -> Vec<u8> {
    fn write(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(key).unwrap_or_default());
                    out.push(b':');
                    if let Some(field) = fields.get(key) {
                        write(field, out);
                    }
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => out.extend(serde_json::to_vec(scalar).unwrap_or_default()),
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

/// Refusals are raised as custom errors with this prefix, so they can be told apart from
/// syntax errors.
const REFUSED: &str = "refused: ";

fn classify(error: serde_json::Error) -> StrictError {
    let text = error.to_string();
    match text.strip_prefix(REFUSED) {
        Some(rest) => StrictError::Refused(rest.to_owned()),
        None => StrictError::Malformed(text),
    }
}

struct StrictVisitor;

impl<'de> DeserializeSeed<'de> for StrictVisitor {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn refuse_nul<E: serde::de::Error>(text: &str) -> Result<(), E> {
    if text.contains('\0') {
        return Err(E::custom(format!(
            "{REFUSED}text must not contain NUL (\\u0000) characters"
        )));
    }
    Ok(())
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        refuse_nul(v)?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        refuse_nul(&v)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictVisitor)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            refuse_nul(&key)?;
            if fields.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(A::Error::custom(format!(
                    "{REFUSED}duplicate key {shown:?} in a JSON object"
                )));
            }
            let value = map.next_value_seed(StrictVisitor)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json_parses_as_serde_json_would() {
        let text = r#"{"a":[1,-2,3.5,true,null,"x"],"b":{"c":"d"}}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text.as_bytes()).unwrap(), expected);
    }

    #[test]
    fn the_canonical_form_ignores_key_order_and_spacing() {
        let a = parse(br#"{"b": [1, {"y": 2, "x": "s"}], "a": null}"#).unwrap();
        let b = parse(br#"{"a":null,"b":[1,{"x":"s","y":2}]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(
            canonical(&b),
            br#"{"a":null,"b":[1,{"x":"s","y":2}]}"#.to_vec()
        );
        let c = parse(br#"{"a":null,"b":[{"x":"s","y":2},1]}"#).unwrap();
        assert_ne!(canonical(&a), canonical(&c), "array order matters");
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"b":1,"b":1}}"#,
            r#"[{"k":1,"k":2}]"#,
        ] {
            assert!(
                matches!(parse(text.as_bytes()), Err(StrictError::Refused(ref m)) if m.contains("duplicate key")),
                "{text}"
            );
        }
    }

    #[test]
    fn nul_characters_are_refused_in_keys_and_values() {
        for text in [r#"{"a":"x\u0000y"}"#, r#"{"a\u0000":1}"#] {
            assert!(
                matches!(parse(text.as_bytes()), Err(StrictError::Refused(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_malformed() {
        for text in ["{", r#"{"a":1} x"#, "", "nul"] {
            assert!(
                matches!(parse(text.as_bytes()), Err(StrictError::Malformed(_))),
                "{text}"
            );
        }
    }
}
