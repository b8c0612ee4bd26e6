//! The catalog worker: courses, teachers and their assignments, on MongoDB.
//!
//! Commands arrive on the catalog command queue, queries on its query queue; events leave
//! through an outbox kept inside each changed document. See [`store`] for how effects stay
//! exactly-once without multi-document transactions.

pub mod config;
pub mod handlers;
pub mod metrics;
pub mod startup;
pub mod store;

pub use config::CatalogConfig;
pub use startup::Application;
