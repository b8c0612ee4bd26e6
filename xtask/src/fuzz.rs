//! `./dev fuzz`: schemathesis against a gateway of its own (same broker, workers and
//! operation key as `./dev up`, rate limits raised so the fuzzer reaches the handlers
//! rather than 429s), authenticated as an admin of its own; fails on any 5xx or any
//! response that breaks the OpenAPI document.

use crate::process::output;
use crate::services::{self, Credentials};
use crate::{Paths, host};
use anyhow::{Context, Result, bail};
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The fuzzer's gateway, apart from `./dev up`'s.
const PORT: u16 = 8089;

/// Runs the fuzzer; `short` is the CI variant (15 examples, at most 45 s).
pub fn run(paths: &Paths, short: bool) -> Result<()> {
    let examples = std::env::var("FUZZ_EXAMPLES")
        .unwrap_or_else(|_| (if short { "15" } else { "150" }).to_owned());
    let max_time = std::env::var("FUZZ_MAX_TIME")
        .unwrap_or_else(|_| (if short { "45" } else { "300" }).to_owned());
    services::up(paths)?;
    let venv = host::venv(paths, "fuzz")?;
    services::build_release(paths)?;
    let run = paths
        .dev
        .join("fuzz")
        .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    fs::create_dir_all(&run)?;
    let credentials = Credentials::load(paths)?;
    // The rate limits out of the fuzzer's way, but for logins (two argon2 hashes each).
    let tracked = services::second_gateway(
        paths,
        &credentials,
        &run,
        PORT,
        &[
            ("SWITCHYARD_QUERY_TIMEOUT_MS", "5000"),
            ("SWITCHYARD_RATE_LIMIT_AUTH_RATE", "1200"),
            ("SWITCHYARD_RATE_LIMIT_AUTH_BURST", "40"),
        ],
    )?;
    let outcome = fuzz(paths, &credentials, &venv, &run, &examples, &max_time);
    tracked.stop(Duration::from_secs(30));
    outcome
}

fn fuzz(
    paths: &Paths,
    credentials: &Credentials,
    venv: &std::path::Path,
    run: &std::path::Path,
    examples: &str,
    max_time: &str,
) -> Result<()> {
    // An admin of its own: the fuzzer may well delete the user it acts as (and register its
    // e-mail again as a student), which must not cost ./dev up its admin.
    let email = format!(
        "fuzz-{}-{}@switchyard.test",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        std::process::id()
    );
    let password = credentials.create_admin(paths, &email, "Fuzzer")?;
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let answer = output(Command::new("curl").args([
        "-sf",
        "-X",
        "POST",
        &format!("http://127.0.0.1:{PORT}/v1/auth/login"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]))
    .with_context(|| format!("cannot log in as {email}"))?;
    let token = serde_json::from_str::<serde_json::Value>(&answer)?["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no access_token in the login answer for {email}"))?;
    say!(
        "fuzz: schemathesis, up to {examples} examples per operation and phase, against :{PORT} as admin {email}"
    );
    let log = fs::File::create(run.join("schemathesis.log"))?;
    // The fuzzer's working directory is its run directory, so its cache (.schemathesis/,
    // .hypothesis/) stays under .dev/ rather than in the checkout.
    // Held to 100 requests/s: logins cost two argon2 hashes each, and an unthrottled
    // fuzzer would queue more of them than accounts answers within the query timeout (a
    // 504 that measures this machine, not a bug).
    let status = Command::new(venv.join("bin/st"))
        .arg("run")
        .arg(format!("http://127.0.0.1:{PORT}/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", examples, "--workers", "2", "--seed", "20261124"])
        .args(["--rate-limit", "100/s", "--request-timeout", "40", "--max-time", max_time])
        .args(["--report", "har", "--report-dir"])
        .arg(run)
        .args(["--output-truncate", "true", "--warnings", "off"])
        .current_dir(run)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot run schemathesis")?;
    let text = fs::read_to_string(run.join("schemathesis.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(25)..] {
        println!("{line}");
    }
    let (requests, server_errors) = har_counts(run)?;
    say!(
        "fuzz: {requests} requests, {server_errors} answered 5xx; schemathesis {status} (log: {}/schemathesis.log)",
        paths.show(run)
    );
    if !status.success() {
        bail!("fuzz: schemathesis found failures");
    }
    if server_errors > 0 {
        bail!("fuzz: server errors");
    }
    if requests == 0 {
        bail!("fuzz: no requests recorded in the HAR reports");
    }
    say!("fuzz: passed");
    Ok(())
}

/// Requests and 5xx answers in the HAR reports of a run.
fn har_counts(run: &std::path::Path) -> Result<(usize, usize)> {
    let (mut requests, mut server_errors) = (0, 0);
    for entry in fs::read_dir(run)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("har-") && name.ends_with(".json")) {
            continue;
        }
        let har: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        for e in har["log"]["entries"].as_array().into_iter().flatten() {
            requests += 1;
            if e["response"]["status"].as_u64().is_some_and(|s| s >= 500) {
                server_errors += 1;
            }
        }
    }
    Ok((requests, server_errors))
}
