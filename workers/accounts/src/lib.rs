//! The accounts worker: registration, login (EdDSA-signed JWTs), users and the public keys
//! (JWKS) that let the gateway verify tokens without calling us.

pub mod admin;
pub mod config;
pub mod handlers;
pub mod keys;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod vault;

pub use config::AccountsConfig;
pub use startup::Application;

/// The accounts schema, after the shared messaging tables.
pub const MIGRATIONS: [platform::pg::migrate::Migration; 3] = [
    platform::pg::migrate::Migration {
        version: 100,
        name: "accounts",
        sql: include_str!("../migrations/0100_accounts.sql"),
    },
    platform::pg::migrate::Migration {
        version: 101,
        name: "deleted users",
        sql: include_str!("../migrations/0101_deleted_users.sql"),
    },
    platform::pg::migrate::Migration {
        version: 102,
        name: "sealed signing keys",
        sql: include_str!("../migrations/0102_sealed_signing_keys.sql"),
    },
];
