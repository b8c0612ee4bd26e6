//! Types every service's messages share: paging and naming an operation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest page a list query returns.
pub const MAX_PAGE: u32 = 100;

/// Cursor paging: items after `cursor`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: u32,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Page<T> {
    /// The items, oldest first.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Names one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationRef {
    /// The operation.
    pub operation_id: Uuid,
}

/// What follows `<service>.` in the routing key of the query every service answers the
/// same way: the outcome of one of its operations ([`OperationRef`] in, an
/// [`Outcome`](crate::Outcome) out). The gateway asks it by name for any service.
pub const OPERATION_GET: &str = "operation.get";

/// Schema version the gateway writes that query with.
pub const OPERATION_GET_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use crate::{accounts, catalog, social};

    #[test]
    fn every_service_answers_the_operation_query_by_its_common_name() {
        for (service, version, keys) in [
            (
                accounts::SERVICE,
                accounts::AccountsQuery::SCHEMA_VERSION,
                accounts::AccountsQuery::KEYS,
            ),
            (
                catalog::SERVICE,
                catalog::CatalogQuery::SCHEMA_VERSION,
                catalog::CatalogQuery::KEYS,
            ),
            (
                social::SERVICE,
                social::SocialQuery::SCHEMA_VERSION,
                social::SocialQuery::KEYS,
            ),
        ] {
            let key = format!("{service}.{OPERATION_GET}");
            assert!(keys.contains(&key.as_str()), "{service} lacks {key}");
            assert_eq!(
                version, OPERATION_GET_VERSION,
                "{service}'s queries moved on"
            );
        }
    }
}
