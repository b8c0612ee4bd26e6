//! Calls into `xtask/host.sh`, the host provisioning script: packages, the dependencies
//! run as their own users, broker users and database roles, the Docker engine.

use crate::Paths;
use crate::process::{check, output};
use anyhow::Result;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn script(paths: &Paths) -> Command {
    let mut c = Command::new("bash");
    c.arg(paths.root.join("xtask/host.sh")).stdin(Stdio::null());
    c
}

/// Runs a host.sh command for its effect.
pub fn run(paths: &Paths, args: &[&str]) -> Result<()> {
    check(script(paths).args(args))
}

/// Runs a host.sh command for the one value it prints.
pub fn value(paths: &Paths, args: &[&str]) -> Result<String> {
    output(script(paths).args(args))
}

/// Installs and starts RabbitMQ, the MongoDB stand-in and PostgreSQL.
pub fn deps(paths: &Paths) -> Result<()> {
    run(paths, &["deps"])
}

/// `rabbitmqctl` as the broker's user.
pub fn rabbitmqctl(paths: &Paths, args: &[String]) -> Result<()> {
    let mut c = script(paths);
    c.arg("rabbitmqctl").args(args).stdin(Stdio::inherit());
    check(&mut c)
}

/// Installs the missing ones of these Debian packages.
pub fn apt(paths: &Paths, packages: &[&str]) -> Result<()> {
    let mut args = vec!["apt"];
    args.extend_from_slice(packages);
    run(paths, &args)
}

/// The venv `name` (mongo, lint, fuzz) with its pinned packages installed.
pub fn venv(paths: &Paths, name: &str) -> Result<PathBuf> {
    value(paths, &["venv", name]).map(PathBuf::from)
}

/// The PostgreSQL superuser's password (host.sh generated it for initdb).
pub fn postgres_password(paths: &Paths) -> Result<String> {
    crate::services::read_secret(&paths.dev.join("postgres.key"))
}
