//! `./dev bench`: the benchmark (`tools/bench`) on the running stack, against a gateway of
//! its own with the rate limits out of the way, pausing the social worker for the
//! gateway-alone runs and accounting for the CPU of the gateway, the social worker,
//! RabbitMQ and PostgreSQL.

use crate::Paths;
use crate::process::{check, signal};
use crate::services::{self, Credentials};
use anyhow::{Context, Result};
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The benchmark's gateway, apart from `./dev up`'s and the fuzzer's.
const PORT: u16 = 8088;

/// Runs the benchmark; `short` proves it works in seconds (./dev test), figures aside.
pub fn run(paths: &Paths, short: bool) -> Result<()> {
    services::up(paths)?;
    services::build_release(paths)?;
    let dir = paths
        .dev
        .join("bench")
        .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    fs::create_dir_all(&dir)?;
    let social = stack::service("social").context("no social in the service table")?;
    let social_pid = services::tracked(paths, social)
        .running()
        .context("social is not running")?;
    let credentials = Credentials::load(paths)?;
    let gateway = services::second_gateway(paths, &credentials, &dir, PORT, &[])?;
    let gateway_pid = gateway
        .running()
        .context("the benchmark's gateway exited")?;
    let mut command = Command::new(paths.release().join("bench"));
    command
        .arg("--gateway")
        .arg(format!("http://127.0.0.1:{PORT}"))
        .arg("--admin-password-file")
        .arg(paths.dev.join("admin.password"))
        .args(["--admin-email", services::ADMIN_EMAIL])
        .arg("--social-metrics")
        .arg(format!("{}/metrics", social.url()))
        .args(["--pause", &social_pid.to_string()])
        .args(["--watch", &format!("gateway={gateway_pid}")])
        .args(["--watch", &format!("social={social_pid}")])
        .args(["--watch", "rabbitmq=comm:beam.smp"])
        .args(["--watch", "postgres=comm:postgres"])
        .arg("--json")
        .arg(dir.join("bench.json"))
        .current_dir(&paths.root)
        .stdin(Stdio::null());
    if short {
        command.arg("--short");
    }
    let outcome = check(&mut command);
    // Whatever happened to the benchmark, the social worker must not stay paused.
    signal(social_pid, "CONT");
    gateway.stop(Duration::from_secs(30));
    outcome?;
    say!("bench: report in {}", paths.show(&dir.join("bench.json")));
    Ok(())
}
