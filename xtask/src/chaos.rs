//! `./dev chaos`: load at a steady rate while every fault of [`faults`] happens once, one
//! at a time; then every accepted operation is verified (lost = 0 and duplicated = 0, or
//! it fails).

use crate::process::{Ended, Tracked, alive, signal, wait_for};
use crate::services::{self, ADMIN_EMAIL, Credentials};
use crate::{Paths, host};
use anyhow::{Context, Result, bail};
use stack::{SERVICES, Service};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A dependency chaos restarts.
#[derive(Debug, Clone, Copy)]
pub enum Dependency {
    /// RabbitMQ (a clean stop, then a cold start: quorum queues recover from disk).
    Rabbitmq,
    /// PostgreSQL (`pg_ctl restart -m fast`: open connections are cut).
    Postgres,
    /// The MongoDB stand-in.
    Mongo,
}

impl Dependency {
    fn host_name(self) -> &'static str {
        match self {
            Dependency::Rabbitmq => "rabbitmq",
            Dependency::Postgres => "postgres",
            Dependency::Mongo => "mongo",
        }
    }
}

/// One fault.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// `kill -9` the service, then start it again.
    Kill(&'static Service),
    /// Restart a dependency under the services' feet.
    Restart(Dependency),
    /// SIGTERM the service: it must drain and exit 0 (read from its exit status), then it
    /// is started again.
    Stop(&'static Service),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(s) => write!(f, "kill -9 {}", s.name),
            Fault::Restart(Dependency::Rabbitmq) => write!(f, "restart RabbitMQ"),
            Fault::Restart(Dependency::Postgres) => write!(f, "restart PostgreSQL"),
            Fault::Restart(Dependency::Mongo) => write!(f, "restart MongoDB stand-in"),
            Fault::Stop(s) => write!(f, "SIGTERM {}", s.name),
        }
    }
}

/// The faults of one chaos run, in order: every worker killed, every dependency
/// restarted, the gateway stopped cleanly.
pub fn faults() -> Vec<Fault> {
    let mut faults: Vec<Fault> = stack::workers().map(Fault::Kill).collect();
    faults.extend(
        [
            Dependency::Rabbitmq,
            Dependency::Postgres,
            Dependency::Mongo,
        ]
        .map(Fault::Restart),
    );
    faults.push(Fault::Stop(stack::gateway()));
    faults
}

struct Run<'a> {
    paths: &'a Paths,
    credentials: Credentials,
    dir: PathBuf,
    record: fs::File,
}

impl Run<'_> {
    fn note(&mut self, line: &str) -> Result<()> {
        writeln!(self.record, "{line}").context("faults.txt")
    }

    /// Every service ready again; records how long it took.
    fn wait_ready(&mut self, what: &str, since: Instant) -> Result<()> {
        if !wait_for(Duration::from_secs(120), services::all_ready) {
            bail!("services not ready 120s after: {what} (see .dev/logs/)");
        }
        let secs = since.elapsed().as_secs();
        say!("chaos: {what} — all services ready again after {secs}s");
        self.note(&format!("{what}: ready after {secs}s"))
    }

    /// The service's supervised process and its pid; an error when it is not running.
    fn running(&self, service: &Service) -> Result<(Tracked, u32)> {
        let t = services::tracked(self.paths, service);
        let pid = t
            .running()
            .with_context(|| format!("{} is not running", service.name))?;
        Ok((t, pid))
    }

    fn inject(&mut self, fault: Fault) -> Result<()> {
        match fault {
            Fault::Kill(service) => {
                let (_, pid) = self.running(service)?;
                say!("chaos: kill -9 {} (pid {pid})", service.name);
                signal(pid, "KILL");
                if !wait_for(Duration::from_secs(10), || !alive(pid, service.name)) {
                    bail!("{} survived kill -9", service.name);
                }
                sleep(Duration::from_secs(1));
                let t0 = Instant::now();
                services::start(self.paths, &self.credentials, service)?;
                self.wait_ready(&fault.to_string(), t0)
            }
            Fault::Stop(service) => {
                let (t, pid) = self.running(service)?;
                say!("chaos: SIGTERM {} (pid {pid})", service.name);
                let t0 = Instant::now();
                signal(pid, "TERM");
                if !wait_for(Duration::from_secs(60), || !alive(pid, service.name)) {
                    bail!("{} did not exit within 60s of SIGTERM", service.name);
                }
                clean_exit(&t)?;
                say!(
                    "chaos: {} drained and exited 0 {}s after SIGTERM",
                    service.name,
                    t0.elapsed().as_secs()
                );
                let t1 = Instant::now();
                services::start(self.paths, &self.credentials, service)?;
                self.wait_ready(&fault.to_string(), t1)
            }
            Fault::Restart(dependency) => {
                say!("chaos: {fault}");
                let t0 = Instant::now();
                host::run(self.paths, &["restart", dependency.host_name()])?;
                let down = t0.elapsed().as_secs();
                if let Dependency::Rabbitmq = dependency {
                    let t1 = Instant::now();
                    if !wait_for(Duration::from_secs(120), services::all_ready) {
                        bail!("services not ready 120s after the broker came back");
                    }
                    let ready = t1.elapsed().as_secs();
                    say!(
                        "chaos: broker down for {down}s; services ready {ready}s after it was back"
                    );
                    self.note(&format!(
                        "restart RabbitMQ: down {down}s, services ready {ready}s after the broker was back"
                    ))
                } else {
                    self.wait_ready(&fault.to_string(), t0)
                }
            }
        }
    }
}

/// The service's supervisor recorded exit status 0 (a clean stop, not a crash or a kill).
fn clean_exit(t: &Tracked) -> Result<()> {
    let mut ended = None;
    wait_for(Duration::from_secs(5), || {
        ended = t.ended();
        ended.is_some()
    });
    match ended {
        Some(Ended::Exit(0)) => Ok(()),
        Some(other) => bail!(
            "{} {other} after SIGTERM, not 0 (see .dev/logs/{}.log)",
            t.name,
            t.name
        ),
        None => bail!(
            "no exit status recorded for {} (was it started by ./dev up?)",
            t.name
        ),
    }
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn loadgen(paths: &Paths) -> Command {
    let mut c = Command::new(paths.release().join("loadgen"));
    c.arg("--url")
        .arg(stack::gateway().url())
        .stdin(Stdio::null());
    c
}

fn start_load(paths: &Paths, dir: &Path, rate: u64, seconds: u64) -> Result<Child> {
    let log = fs::File::create(dir.join("load.log"))?;
    let child = loadgen(paths)
        .args([
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{seconds}s"),
            "--quiet",
        ])
        .args(["--admin-email", ADMIN_EMAIL, "--admin-password-file"])
        .arg(paths.dev.join("admin.password"))
        .arg("--record")
        .arg(dir.join("accepted.jsonl"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start loadgen")?;
    // Set-up (users, courses, posts) must be done before the first fault.
    let accepted = dir.join("accepted.jsonl");
    if !wait_for(Duration::from_secs(60), || {
        fs::metadata(&accepted).is_ok_and(|m| m.len() > 0)
    }) {
        bail!(
            "loadgen accepted nothing within 60s (see {}/load.log)",
            paths.show(dir)
        );
    }
    Ok(child)
}

/// Runs chaos; `short` is the CI variant (15 requests/s, faults 3 s apart).
pub fn run(paths: &Paths, short: bool) -> Result<()> {
    let rate = env_number("CHAOS_RATE", if short { 15 } else { 40 })?;
    let settle = env_number("CHAOS_SETTLE", if short { 3 } else { 10 })?;
    let started_here = SERVICES
        .iter()
        .any(|s| services::tracked(paths, s).running().is_none());
    services::up(paths)?;
    if !paths.release().join("loadgen").exists() {
        bail!(
            "no {}/loadgen (cargo build --release --bins)",
            paths.release().display()
        );
    }
    let dir = paths
        .dev
        .join("chaos")
        .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    fs::create_dir_all(&dir)?;
    let faults = faults();
    // Long enough to cover every fault with load before, between and after them.
    let seconds = settle * (faults.len() as u64 + 2) + if short { 60 } else { 90 };
    say!(
        "chaos: {rate} requests/s for {seconds}s, {} faults {settle}s apart; run in {}",
        faults.len(),
        paths.show(&dir)
    );
    let mut load = start_load(paths, &dir, rate, seconds)?;
    let mut run = Run {
        paths,
        credentials: Credentials::load(paths)?,
        record: fs::File::create(dir.join("faults.txt"))?,
        dir: dir.clone(),
    };
    let t0 = Instant::now();
    let mut outcome = Ok(());
    for fault in faults {
        sleep(Duration::from_secs(settle));
        if let Err(e) = run.inject(fault) {
            outcome = Err(e.context(format!("chaos: {fault}")));
            break;
        }
    }
    if outcome.is_err() {
        let _ = load.kill();
        let _ = load.wait();
        return outcome;
    }
    say!(
        "chaos: faults done after {}s; waiting for the load to finish",
        t0.elapsed().as_secs()
    );
    let load_status = load.wait()?;
    say!("chaos: load finished ({load_status}); verifying every accepted operation");
    println!();
    print!(
        "{}",
        fs::read_to_string(dir.join("load.log")).unwrap_or_default()
    );
    let verify = loadgen(paths)
        .arg("--verify-only")
        .arg(dir.join("accepted.jsonl"))
        .args(["--verify-timeout", "300s"])
        .output()
        .context("cannot run loadgen --verify-only")?;
    let report = [verify.stdout.as_slice(), verify.stderr.as_slice()].concat();
    fs::write(run.dir.join("verify.log"), &report)?;
    print!("{}", String::from_utf8_lossy(&report));
    println!();
    say!("chaos: faults injected (one at a time, {settle}s apart, under {rate} requests/s):");
    for line in fs::read_to_string(dir.join("faults.txt"))?.lines() {
        println!("  {line}");
    }
    if started_here && short {
        services::stop_services(paths, Duration::from_secs(40));
    }
    if !load_status.success() {
        bail!(
            "chaos: the load generator failed ({load_status}, see {}/load.log)",
            paths.show(&dir)
        );
    }
    if !verify.status.success() {
        bail!(
            "chaos: verification failed (see {}/verify.log)",
            paths.show(&dir)
        );
    }
    say!("chaos: passed");
    Ok(())
}
