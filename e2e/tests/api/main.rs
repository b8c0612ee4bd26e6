//! End-to-end tests through the HTTP API: the gateway and every worker (the stack builder
//! in `e2e`'s library) against real RabbitMQ, PostgreSQL and the MongoDB stand-in, each test
//! under its own queue prefix and databases.

// Test helpers outside #[test] functions may fail loudly: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alarm;
mod auth;
mod courses;
mod deletion;
mod idempotency;
mod limits;
mod openapi;
mod resilience;
mod robustness;
mod social;
mod teachers;
