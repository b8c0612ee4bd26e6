//! The accounts worker: registration, login (EdDSA-signed JWTs), users and the public keys
//! (JWKS) that let the gateway verify tokens without calling us.

pub mod admin;
pub mod config;
pub mod handlers;
pub mod keys;
pub mod startup;
pub mod store;

pub use config::AccountsConfig;
pub use startup::Application;

/// The accounts schema, after the shared messaging tables.
pub const MIGRATIONS: [platform::pg::migrate::Migration; 2] = [
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
];
