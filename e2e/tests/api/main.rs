//! End-to-end tests: the gateway and the catalog worker against real RabbitMQ and the
//! MongoDB stand-in, each test under its own queue prefix and database.

// Test helpers outside #[test] functions may fail loudly: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alarm;
mod auth;
mod courses;
mod deletion;
mod helpers;
mod idempotency;
mod limits;
mod openapi;
mod resilience;
mod robustness;
mod social;
mod teachers;
