//! JSON Schema export of every message, so other languages and reviewers can read the
//! contracts without Rust. `cargo run -p contracts --bin export-schemas` writes them to
//! `contracts/schemas/`; a test fails when the checked-in files drift from the types.

use schemars::{JsonSchema, schema_for};
use serde_json::Value;

use crate::accounts::{AccountsCommand, AccountsEvent, AccountsQuery, Claims, Token, User};
use crate::catalog::{CatalogCommand, CatalogEvent, CatalogQuery, Course, Teacher};
use crate::common::Page;
use crate::message::Query;
use crate::social::{Post, SocialCommand, SocialEvent, SocialQuery};
use crate::{Envelope, Outcome, QueryReply};

/// Every exported schema as (file stem, schema): each message enum, the types clients
/// see, and the answer to every query key (`<key>.reply`).
pub fn all() -> Vec<(String, Value)> {
    fn one<T: JsonSchema>(name: &'static str) -> (String, Value) {
        (name.to_owned(), schema_for!(T).to_value())
    }
    fn replies<Q: Query>() -> impl Iterator<Item = (String, Value)> {
        Q::reply_schemas()
            .into_iter()
            .map(|(key, schema)| (format!("{key}.reply"), schema.to_value()))
    }
    let mut all = vec![
        one::<Envelope>("envelope"),
        one::<Outcome>("outcome"),
        one::<QueryReply>("query-reply"),
        one::<CatalogCommand>("catalog.commands"),
        one::<CatalogEvent>("catalog.events"),
        one::<CatalogQuery>("catalog.queries"),
        one::<Course>("catalog.course"),
        one::<Teacher>("catalog.teacher"),
        one::<Page<Course>>("catalog.course-page"),
        one::<Page<Teacher>>("catalog.teacher-page"),
        one::<AccountsCommand>("accounts.commands"),
        one::<AccountsEvent>("accounts.events"),
        one::<AccountsQuery>("accounts.queries"),
        one::<User>("accounts.user"),
        one::<Token>("accounts.token"),
        one::<Claims>("accounts.claims"),
        one::<SocialCommand>("social.commands"),
        one::<SocialEvent>("social.events"),
        one::<SocialQuery>("social.queries"),
        one::<Post>("social.post"),
        one::<Page<Post>>("social.post-page"),
    ];
    all.extend(replies::<AccountsQuery>());
    all.extend(replies::<CatalogQuery>());
    all.extend(replies::<SocialQuery>());
    all
}

/// The text written for one schema: pretty JSON with keys sorted and a trailing newline.
/// Sorting makes the output independent of whether another crate in the build turned on
/// serde_json's `preserve_order`.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(schema)).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn checked_in_schemas_match_the_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let mut drifted = Vec::new();
        for (name, schema) in all() {
            let path = dir.join(format!("{name}.json"));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if on_disk != render(&schema) {
                drifted.push(name);
            }
        }
        assert!(
            drifted.is_empty(),
            "schemas out of date: {drifted:?}; run `cargo run -p contracts --bin export-schemas`"
        );
    }

    #[test]
    fn no_stray_schema_files_are_left_behind() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let known: Vec<String> = all()
            .into_iter()
            .map(|(n, _)| format!("{n}.json"))
            .collect();
        let entries = std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>());
        for entry in entries.unwrap_or_default() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                known.contains(&name),
                "{name} is not produced by export-schemas"
            );
        }
    }
}
