//! The services of the service table on this machine: their environment (own broker user,
//! own database role, generated secrets), start under supervision, readiness, stop,
//! status and logs.

use crate::process::{Tracked, check, http_status, wait_for};
use crate::{Paths, host};
use anyhow::{Context, Result, bail};
use base64::Engine;
use stack::{Database, SERVICES, Secret, Service};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The first admin, created once by `up` (password in `.dev/admin.password`).
pub const ADMIN_EMAIL: &str = "admin@switchyard.test";
/// How long anything may take to become ready.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A secret in `path`: 32 random bytes as hex, generated the first time.
pub fn secret(path: &Path) -> Result<String> {
    if !fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        write_private(path, &hex::encode(random::<32>()?))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    read_secret(path)
}

/// The secret kept in `path`.
pub fn read_secret(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Everything a service needs that this machine generated or provisioned.
pub struct Credentials {
    actor_key: String,
    operation_key: String,
    key_encryption_file: PathBuf,
}

impl Credentials {
    /// The generated keys (made the first time).
    pub fn load(paths: &Paths) -> Result<Self> {
        fs::create_dir_all(&paths.dev)?;
        let key_encryption_file = paths.dev.join("key-encryption.key");
        secret(&key_encryption_file)?;
        Ok(Self {
            actor_key: secret(&paths.dev.join("actor.key"))?,
            operation_key: secret(&paths.dev.join("operation.key"))?,
            key_encryption_file,
        })
    }

    /// The environment of `service`: its own broker user and database role, its address,
    /// the actor key, and the secrets its row names.
    pub fn environment(&self, paths: &Paths, service: &Service) -> Result<Vec<(String, String)>> {
        let mut env = vec![
            (
                "SWITCHYARD_AMQP_URL".to_owned(),
                host::value(paths, &["rabbitmq-user", service.name])?,
            ),
            ("SWITCHYARD_ACTOR_KEY".to_owned(), self.actor_key.clone()),
            (service.address_variable.to_owned(), service.address()),
        ];
        match service.database {
            Database::None => {}
            Database::Postgres => env.push((
                "SWITCHYARD_POSTGRES_URL".to_owned(),
                host::value(paths, &["database", service.name])?,
            )),
            Database::Mongo => env.push((
                "SWITCHYARD_MONGO_URL".to_owned(),
                stack::deps::MONGO_URL.to_owned(),
            )),
        }
        for secret in service.secrets {
            let value = match secret {
                Secret::OperationKey => self.operation_key.clone(),
                Secret::KeyEncryptionKeyFile => self.key_encryption_file.display().to_string(),
            };
            env.push((secret.variable().to_owned(), value));
        }
        Ok(env)
    }

    /// Creates an admin with a generated password through `accounts create-admin`;
    /// returns the password.
    pub fn create_admin(&self, paths: &Paths, email: &str, name: &str) -> Result<String> {
        let password = base64::engine::general_purpose::STANDARD.encode(random::<18>()?);
        let accounts = stack::service("accounts").context("no accounts in the service table")?;
        let env = self.environment(paths, accounts)?;
        let mut child = Command::new(paths.release().join("accounts"))
            .args(["create-admin", "--email", email, "--name", name])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run accounts create-admin")?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(stdin, "{password}")?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("accounts create-admin failed ({status})");
        }
        Ok(password)
    }
}

/// The supervised process of `service`.
pub fn tracked(paths: &Paths, service: &Service) -> Tracked {
    Tracked::new(&paths.pids(), service.name)
}

/// `cargo build --release --bins`.
pub fn build_release(paths: &Paths) -> Result<()> {
    say!("building (cargo build --release --bins)");
    check(
        Command::new("cargo")
            .args(["build", "--release", "--bins"])
            .current_dir(&paths.root)
            .stdin(Stdio::null()),
    )
}

/// Starts `service` from the release build; returns its pid.
pub fn start(paths: &Paths, credentials: &Credentials, service: &Service) -> Result<u32> {
    let env = credentials.environment(paths, service)?;
    let binary = paths.release().join(service.name);
    if !binary.exists() {
        bail!(
            "no binary {} (is '{}' a bin target?)",
            binary.display(),
            service.name
        );
    }
    let supervisor = supervisor(paths)?;
    let log = paths.logs().join(format!("{}.log", service.name));
    let pid = tracked(paths, service).start(&supervisor, &log, &binary, &env, &paths.root)?;
    say!(
        "{}: started (pid {pid}), log {}",
        service.name,
        paths.show(&log)
    );
    Ok(pid)
}

/// The binary that supervises a service: the xtask at its path, not this process's own
/// file, which a `cargo build --bins` during `./dev test` may have replaced (a replaced
/// running binary is "(deleted)" to the kernel; any build of the xtask supervises alike).
pub fn supervisor(paths: &Paths) -> Result<PathBuf> {
    let built = paths.target.join("debug/xtask");
    if built.exists() {
        return Ok(built);
    }
    std::env::current_exe().context("cannot find the xtask binary")
}

/// A gateway of its own beside `./dev up`'s (same broker, workers and keys) on `port`,
/// its pid file and log in `dir`, with the rate limits out of the way of a single client
/// and `extra` settings on top; waits until it is ready.
pub fn second_gateway(
    paths: &Paths,
    credentials: &Credentials,
    dir: &Path,
    port: u16,
    extra: &[(&str, &str)],
) -> Result<Tracked> {
    let gateway = stack::gateway();
    let mut env = credentials.environment(paths, gateway)?;
    env.retain(|(k, _)| k != gateway.address_variable);
    env.push((
        gateway.address_variable.to_owned(),
        format!("127.0.0.1:{port}"),
    ));
    let unlimited = [
        "SWITCHYARD_RATE_LIMIT_IP_RATE",
        "SWITCHYARD_RATE_LIMIT_IP_BURST",
        "SWITCHYARD_RATE_LIMIT_USER_RATE",
        "SWITCHYARD_RATE_LIMIT_USER_BURST",
        "SWITCHYARD_RATE_LIMIT_AUTH_RATE",
        "SWITCHYARD_RATE_LIMIT_AUTH_BURST",
    ];
    for (k, v) in unlimited.map(|k| (k, "1000000")).iter().chain(extra) {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    let tracked = Tracked::new(dir, gateway.name);
    tracked.start(
        &supervisor(paths)?,
        &dir.join("gateway.log"),
        &paths.release().join(gateway.name),
        &env,
        &paths.root,
    )?;
    if !wait_for(DEADLINE, || http_status(port, "/readyz") == Some(200)) {
        tracked.stop(Duration::from_secs(10));
        bail!(
            "the second gateway is not ready on :{port} (see {}/gateway.log)",
            paths.show(dir)
        );
    }
    Ok(tracked)
}

/// `service`'s `/readyz` answers 200.
pub fn ready(service: &Service) -> bool {
    http_status(service.port, "/readyz") == Some(200)
}

/// Every service is ready.
pub fn all_ready() -> bool {
    SERVICES.iter().all(ready)
}

/// deps, build (when a service is not running), start the missing services and wait for
/// the gateway's /readyz. Returns whether any service was started here.
pub fn up(paths: &Paths) -> Result<bool> {
    host::deps(paths)?;
    fs::create_dir_all(paths.pids())?;
    fs::create_dir_all(paths.logs())?;
    let missing: Vec<&Service> = SERVICES
        .iter()
        .filter(|s| tracked(paths, s).running().is_none())
        .collect();
    if missing.is_empty() {
        say!("all services already running");
        print_urls(paths);
        return Ok(false);
    }
    build_release(paths)?;
    let credentials = Credentials::load(paths)?;
    ensure_admin(paths, &credentials)?;
    for service in &missing {
        start(paths, &credentials, service)?;
    }
    let gateway = stack::gateway();
    let ok = wait_for(DEADLINE, || {
        ready(gateway)
            || missing
                .iter()
                .any(|s| tracked(paths, s).running().is_none())
    });
    for service in &missing {
        let t = tracked(paths, service);
        if t.running().is_none() {
            let log = paths.logs().join(format!("{}.log", service.name));
            let how = t.ended().map(|e| e.to_string()).unwrap_or_default();
            bail!(
                "{} exited during start-up {how}; last lines of {}:\n{}",
                service.name,
                paths.show(&log),
                tail(&log, 20)
            );
        }
    }
    if !ok {
        bail!(
            "{}/readyz not 200 within {}s (see .dev/logs/)",
            gateway.url(),
            DEADLINE.as_secs()
        );
    }
    say!("ready");
    print_urls(paths);
    Ok(true)
}

fn ensure_admin(paths: &Paths, credentials: &Credentials) -> Result<()> {
    let file = paths.dev.join("admin.password");
    if fs::metadata(&file).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let password = credentials.create_admin(paths, ADMIN_EMAIL, "Admin")?;
    write_private(&file, &format!("{password}\n"))?;
    say!("created admin {ADMIN_EMAIL} (password in .dev/admin.password)");
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_urls(paths: &Paths) {
    println!();
    for s in SERVICES {
        println!("  {:<10} {}", s.name, s.url());
    }
    println!("  {:<10} {}", "rabbitmq", stack::deps::AMQP_URL);
    println!(
        "  {:<10} http://127.0.0.1:{} (management, guest/guest)",
        "",
        stack::deps::RABBITMQ_MANAGEMENT_PORT
    );
    println!(
        "  {:<10} http://127.0.0.1:{}/metrics",
        "",
        stack::deps::RABBITMQ_PROMETHEUS_PORT
    );
    println!("  {:<10} {}", "mongo", stack::deps::MONGO_URL);
    println!("  {:<10} {}", "postgres", stack::deps::POSTGRES_URL);
    if paths.dev.join("admin.password").exists() {
        println!(
            "  {:<10} {ADMIN_EMAIL}, password in .dev/admin.password",
            "admin"
        );
    }
}

/// Stops every service (all at once, then the shared grace period), then the
/// dependencies.
pub fn stop_services(paths: &Paths, grace: Duration) {
    let running: Vec<(Tracked, u32)> = SERVICES
        .iter()
        .filter_map(|s| {
            let t = tracked(paths, s);
            t.running().map(|pid| (t, pid))
        })
        .collect();
    for (t, pid) in &running {
        say!("stopping {} (pid {pid})", t.name);
        crate::process::signal(*pid, "TERM");
    }
    for (t, pid) in &running {
        t.await_stop(*pid, grace);
        t.stop(grace);
    }
}

/// Stops what ./dev started: services, then the dependencies.
pub fn down(paths: &Paths) -> Result<()> {
    stop_services(paths, Duration::from_secs(10));
    host::run(paths, &["stop"])
}

/// One line per service, then one per dependency.
pub fn status(paths: &Paths) -> Result<()> {
    for s in SERVICES {
        let t = tracked(paths, s);
        match t.running() {
            Some(pid) => println!("{:<10} {:<8} {:<8} {}", s.name, "running", pid, s.url()),
            None => {
                let how = t.ended().map(|e| format!(" ({e})")).unwrap_or_default();
                println!(
                    "{:<10} {:<8} {:<8} {}{how}",
                    s.name,
                    "stopped",
                    "-",
                    s.url()
                )
            }
        }
    }
    host::run(paths, &["status"])
}

/// `tail -f` of a service's log, every service's, or a dependency's.
pub fn logs(paths: &Paths, name: Option<&str>) -> Result<()> {
    let files: Vec<PathBuf> = match name {
        None => SERVICES
            .iter()
            .map(|s| paths.logs().join(format!("{}.log", s.name)))
            .filter(|p| p.exists())
            .collect(),
        Some(name) if stack::service(name).is_some() => {
            vec![paths.logs().join(format!("{name}.log"))]
        }
        Some(name @ ("mongo" | "epmd" | "rabbitmq" | "postgres")) => {
            vec![PathBuf::from(host::value(paths, &["log", name])?)]
        }
        Some(other) => bail!(
            "unknown log '{other}' (services: {}; mongo, rabbitmq, postgres, epmd)",
            names().join(" ")
        ),
    };
    if files.is_empty() {
        bail!("no service logs yet in .dev/logs");
    }
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        bail!("no log {} yet", missing.display());
    }
    check(Command::new("tail").args(["-n", "100", "-f"]).args(&files))
}

fn names() -> Vec<&'static str> {
    SERVICES.iter().map(|s| s.name).collect()
}

fn secrets(s: &Service) -> String {
    if s.secrets.is_empty() {
        return "-".to_owned();
    }
    let names: Vec<&str> = s.secrets.iter().map(|x| x.variable()).collect();
    names.join(",")
}

/// The service table, for scripts (the panel test, the deployment checks).
pub fn print_table(json: bool) {
    let database = |s: &Service| match s.database {
        Database::None => "-",
        Database::Postgres => "postgres",
        Database::Mongo => "mongo",
    };
    let kind = |s: &Service| match s.kind {
        stack::Kind::Gateway => "gateway",
        stack::Kind::Worker => "worker",
    };
    if json {
        let rows: Vec<_> = SERVICES
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "kind": kind(s), "port": s.port,
                    "address_variable": s.address_variable, "database": database(s),
                    "secrets": s.secrets.iter().map(|x| x.variable()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        for s in SERVICES {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                s.name,
                kind(s),
                s.port,
                s.address_variable,
                database(s),
                secrets(s)
            );
        }
    }
}
