//! The social worker: posts (≤ 280 characters), reposts, timelines, and reactions to
//! other services' events (authors from accounts, course announcements from the catalog).

pub mod config;
pub mod handlers;
pub mod metrics;
pub mod startup;
pub mod store;

pub use config::SocialConfig;
pub use startup::Application;

/// The social schema, after the shared messaging tables.
pub const MIGRATIONS: [platform::pg::migrate::Migration; 3] = [
    platform::pg::migrate::Migration {
        version: 100,
        name: "social",
        sql: include_str!("../migrations/0100_social.sql"),
    },
    platform::pg::migrate::Migration {
        version: 101,
        name: "timeline order",
        sql: include_str!("../migrations/0101_timeline_order.sql"),
    },
    platform::pg::migrate::Migration {
        version: 102,
        name: "deleted users",
        sql: include_str!("../migrations/0102_deleted_users.sql"),
    },
];
