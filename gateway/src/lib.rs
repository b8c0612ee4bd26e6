//! The Switchyard gateway: a thin warp HTTP edge. Writes become commands published with
//! confirms (202 Accepted, or the outcome with `Prefer: wait`); reads become request-reply
//! over RabbitMQ; every error is `application/problem+json`.

pub mod auth;
pub mod breaker;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod json;
pub mod operation_id;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod startup;

pub use config::GatewayConfig;
pub use startup::Application;
