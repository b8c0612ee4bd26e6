//! The service table (`stack::SERVICES`) against the services themselves: every row is a
//! workspace crate whose `Service` impl has that name and that default port, and every
//! service crate has a row.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test fails loudly

use platform::cli::Service;

fn row(name: &str) -> &'static stack::Service {
    stack::service(name).unwrap_or_else(|| panic!("no row for {name} in stack::SERVICES"))
}

fn check<S: Service>() {
    let row = row(S::NAME);
    assert_eq!(S::HEALTH_PORT, row.port, "{}: default port", S::NAME);
    assert_eq!(
        format!("SWITCHYARD_{}", S::HEALTH_VARIABLE),
        row.address_variable,
        "{}: address variable",
        S::NAME
    );
}

#[test]
fn every_row_matches_its_service() {
    check::<gateway::Application>();
    check::<accounts::Application>();
    check::<social::Application>();
    check::<catalog::Application>();
}

#[test]
fn every_service_crate_has_a_row() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .expect("workspace Cargo.toml");
    let members = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        if let Some(name) = member.strip_prefix("workers/") {
            row(name);
        }
    }
    row("gateway");
}
