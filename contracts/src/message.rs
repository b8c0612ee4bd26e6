//! What every message type knows about itself, and the one macro that declares a
//! service's messages.
//!
//! A message enum's routing keys used to be spelled three or four times (the constant, the
//! serde tag, the `routing_key()` arm, the `ALL` list); a rename that missed one of them
//! re-routed or dropped traffic with nothing to say so. [`messages!`](crate::messages)
//! takes one line per message and writes all four, so they cannot drift.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a message asks for, which decides how it travels: a command is persistent,
/// mandatory and confirmed on the commands exchange; an event is persistent on the events
/// exchange; a query is transient, mandatory and expires when its caller stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Asks one service to change something; answered by an outcome.
    Command,
    /// Tells whoever listens that something changed.
    Event,
    /// Asks one service a question; answered by a reply.
    Query,
}

impl Kind {
    /// Lower-case name, as used in queue names and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Event => "event",
            Self::Query => "query",
        }
    }
}

/// A message enum: one variant per routing key, tagged with it on the wire.
pub trait Message: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The service that owns the message (accepts the command or query, emits the event).
    const SERVICE: &'static str;
    /// Schema version every variant is written with.
    const SCHEMA_VERSION: u32;
    /// Command, event or query.
    const KIND: Kind;
    /// Every routing key, in declaration order.
    const KEYS: &'static [&'static str];

    /// The routing key this message travels under (also its serde tag).
    fn routing_key(&self) -> &'static str;
}

/// A query enum: each routing key also names the type of its answer.
pub trait Query: Message {
    /// The JSON Schema of the answer to each routing key, in declaration order.
    fn reply_schemas() -> Vec<(&'static str, schemars::Schema)>;
}

/// Declares one service's messages of one kind: a module of routing-key constants (with
/// `ALL`), the enum with each variant tagged by its key, and its [`Message`] impl (and
/// [`Query`] for queries, whose lines name the reply type after `->`). The invoking
/// module must define `SERVICE` and `SCHEMA_VERSION`.
///
/// ```ignore
/// messages! {
///     /// Commands the social worker accepts.
///     pub enum SocialCommand: Command, keys in commands {
///         /// Publish a post.
///         CreatePost(CreatePost) = POST_CREATE "social.post.create",
///     }
/// }
/// ```
#[macro_export]
macro_rules! messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: Query, keys in $keys:ident {
            $( $(#[$vmeta:meta])* $variant:ident($body:ty) -> $reply:ty = $konst:ident $key:literal ),+ $(,)?
        }
    ) => {
        $crate::messages!(@common [$(#[$meta])*] $name Query $keys { $( [$(#[$vmeta])*] $variant($body) = $konst $key ),+ });
        impl $crate::message::Query for $name {
            fn reply_schemas() -> ::std::vec::Vec<(&'static str, ::schemars::Schema)> {
                ::std::vec![$( ($key, ::schemars::schema_for!($reply)) ),+]
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $kind:ident, keys in $keys:ident {
            $( $(#[$vmeta:meta])* $variant:ident($body:ty) = $konst:ident $key:literal ),+ $(,)?
        }
    ) => {
        $crate::messages!(@common [$(#[$meta])*] $name $kind $keys { $( [$(#[$vmeta])*] $variant($body) = $konst $key ),+ });
    };
    (@common [$(#[$meta:meta])*] $name:ident $kind:ident $keys:ident {
        $( [$(#[$vmeta:meta])*] $variant:ident($body:ty) = $konst:ident $key:literal ),+
    }) => {
        #[doc = concat!("Routing keys of [`", stringify!($name), "`].")]
        pub mod $keys {
            $(
                $(#[$vmeta])*
                pub const $konst: &str = $key;
            )+
            /// Every key, in declaration order.
            pub const ALL: &[&str] = &[$($konst),+];
        }

        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema)]
        #[serde(tag = "type")]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $key)]
                $variant($body),
            )+
        }

        impl $crate::message::Message for $name {
            const SERVICE: &'static str = SERVICE;
            const SCHEMA_VERSION: u32 = SCHEMA_VERSION;
            const KIND: $crate::message::Kind = $crate::message::Kind::$kind;
            const KEYS: &'static [&'static str] = $keys::ALL;

            fn routing_key(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $keys::$konst, )+
                }
            }
        }

        impl $name {
            /// The routing key this message travels under (also its serde tag).
            pub fn routing_key(&self) -> &'static str {
                <Self as $crate::message::Message>::routing_key(self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message enum's keys: unique across the system, prefixed with their service,
    /// and each one the serde tag it is declared with (checked by the per-service tests).
    fn all_keys() -> Vec<(&'static str, &'static [&'static str])> {
        use crate::{accounts, catalog, social};
        vec![
            (accounts::SERVICE, accounts::AccountsCommand::KEYS),
            (accounts::SERVICE, accounts::AccountsEvent::KEYS),
            (accounts::SERVICE, accounts::AccountsQuery::KEYS),
            (catalog::SERVICE, catalog::CatalogCommand::KEYS),
            (catalog::SERVICE, catalog::CatalogEvent::KEYS),
            (catalog::SERVICE, catalog::CatalogQuery::KEYS),
            (social::SERVICE, social::SocialCommand::KEYS),
            (social::SERVICE, social::SocialEvent::KEYS),
            (social::SERVICE, social::SocialQuery::KEYS),
        ]
    }

    #[test]
    fn routing_keys_are_unique_and_start_with_their_service() {
        let mut seen = std::collections::HashSet::new();
        for (service, keys) in all_keys() {
            for key in keys {
                assert!(
                    key.starts_with(&format!("{service}.")),
                    "{key} is not {service}'s"
                );
                assert!(seen.insert(*key), "{key} is declared twice");
            }
        }
    }

    #[test]
    fn every_query_key_names_its_reply() {
        use crate::{accounts, catalog, social};
        for (keys, replies) in [
            (
                accounts::AccountsQuery::KEYS,
                accounts::AccountsQuery::reply_schemas(),
            ),
            (
                catalog::CatalogQuery::KEYS,
                catalog::CatalogQuery::reply_schemas(),
            ),
            (
                social::SocialQuery::KEYS,
                social::SocialQuery::reply_schemas(),
            ),
        ] {
            let named: Vec<&str> = replies.iter().map(|(key, _)| *key).collect();
            assert_eq!(named, keys);
        }
    }
}
