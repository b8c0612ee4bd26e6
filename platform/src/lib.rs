//! The runtime every Switchyard service shares: configuration, telemetry, the AMQP bus
//! (topology, confirmed publisher, consumer loop, request-reply), health endpoints and
//! graceful shutdown. Services hold handlers and storage; everything else is here.

pub mod actor;
pub mod backoff;
pub mod bus;
pub mod cli;
pub mod config;
pub mod effect;
pub mod health;
pub mod healthz;
pub mod http;
pub mod metrics;
#[cfg(feature = "password")]
pub mod password;
#[cfg(feature = "pg")]
pub mod pg;
pub mod shutdown;
pub mod telemetry;
pub mod worker;
