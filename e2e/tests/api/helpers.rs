//! The stack builder and the test kit, under the names the tests use.

pub use e2e::*;
