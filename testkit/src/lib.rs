//! What every Switchyard test needs besides the code under test: where the test
//! dependencies run ([`env`]), resources of its own that are removed when the test ends
//! however it ends ([`Scratch`]), the broker's management API ([`broker`]), waiting for
//! a condition ([`eventually`]) and a client for the gateway's API ([`api`]).
//!
//! It depends on none of the workspace's crates, so any of them can dev-depend on it.

// A test kit fails loudly: a panic here is the test failing, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod broker;
pub mod env;
pub mod pg;
mod scratch;

pub use scratch::Scratch;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it yields a value, and panics with `what` (and the
/// last state `check` reported) when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A name no other test uses: a letter and 12 hex digits (valid as a queue prefix, a
/// MongoDB database and part of a PostgreSQL database name).
pub fn unique_name() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
