//! `./dev`: the local stack and the checks CI runs. The services come from the service
//! table (`stack::SERVICES`); host provisioning (packages, RabbitMQ, PostgreSQL, the MongoDB
//! stand-in, the Docker engine) is `xtask/host.sh`, which this calls.

/// `dev: <message>`, like every line ./dev prints about itself.
macro_rules! say {
    ($($arg:tt)*) => { println!("dev: {}", format!($($arg)*)) };
}

mod bench;
mod chaos;
mod fuzz;
mod host;
mod images;
mod process;
mod services;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Switchyard's local stack: dependencies, services, and the checks CI runs.
#[derive(Parser)]
#[command(name = "./dev", bin_name = "./dev", disable_version_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install (apt, pip) and start RabbitMQ, the MongoDB stand-in and PostgreSQL if they
    /// are not running; safe to repeat.
    Deps,
    /// deps, build the services (only when one is not running), start them under
    /// supervision and wait for the gateway's /readyz.
    Up,
    /// Stop what ./dev started: services, then the dependencies.
    Down,
    /// One line per component (a stopped service shows how it exited).
    Status,
    /// tail -f a service's log (all services without a name); also mongo, rabbitmq,
    /// postgres, epmd.
    Logs {
        /// A service or dependency.
        name: Option<String>,
    },
    /// The checks CI runs, in stages; with no stage, all of them in this order.
    Test {
        /// Stages to run (default: all).
        #[arg(value_enum)]
        stages: Vec<test::Stage>,
    },
    /// Load at a steady rate while, one at a time, each worker is killed -9, RabbitMQ,
    /// PostgreSQL and the MongoDB stand-in restart, and the gateway gets SIGTERM; then
    /// every accepted operation is verified (CHAOS_RATE, CHAOS_SETTLE).
    Chaos {
        /// 15 requests/s, faults 3 s apart (part of ./dev test).
        #[arg(long)]
        short: bool,
    },
    /// schemathesis against a gateway of its own as an admin: fails on any 5xx or any
    /// response that breaks gateway/openapi.json (FUZZ_EXAMPLES, FUZZ_MAX_TIME).
    Fuzz {
        /// 15 examples per operation and phase, at most 45 s (part of ./dev test).
        #[arg(long)]
        short: bool,
    },
    /// The benchmark on the running stack: the broker's ceiling, the gateway's accept rate
    /// (social running and paused), end-to-end steps, CPU per message, peak RSS; a table,
    /// and JSON in .dev/bench/<time>/.
    Bench {
        /// Seconds per phase, to prove it works (part of ./dev test); figures mean nothing.
        #[arg(long)]
        short: bool,
    },
    /// shellcheck on every shell script in the repository (also in ./dev test lint).
    Shellcheck,
    /// Build one image per binary with compose/Dockerfile on a local Docker engine.
    Images {
        /// Image tag.
        #[arg(default_value = "dev")]
        tag: String,
    },
    /// images, then compose/test/run.sh: the compose core profile on that engine,
    /// loadgen --verify through it, non-root and read-only checks, everything removed.
    Containers {
        /// Image tag.
        #[arg(default_value = "test")]
        tag: String,
    },
    /// The service table, one service per line: name, kind, port, address variable,
    /// database, secret variables (tab-separated; or --json).
    Services {
        /// JSON instead of tab-separated lines.
        #[arg(long)]
        json: bool,
    },
    /// rabbitmqctl against the broker ./dev started (as its user, with its cookie).
    Rabbitmqctl {
        /// Arguments for rabbitmqctl.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs a service and records its exit status (internal: `up` starts each service so).
    #[command(hide = true)]
    Supervise(process::Supervise),
}

/// Where the checkout and its state are.
pub struct Paths {
    /// The checkout.
    pub root: PathBuf,
    /// `.dev/`: state, logs, pid files, generated secrets.
    pub dev: PathBuf,
    /// cargo's target directory.
    pub target: PathBuf,
}

impl Paths {
    fn find() -> Result<Self> {
        // The binary is target/debug/xtask unless CARGO_TARGET_DIR moved it; the checkout
        // is the manifest's parent either way.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow::anyhow!("xtask has no parent directory"))?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
            Some(t) => root.join(t),
            None => root.join("target"),
        };
        Ok(Self {
            dev: root.join(".dev"),
            root,
            target,
        })
    }

    /// `.dev/pids`.
    pub fn pids(&self) -> PathBuf {
        self.dev.join("pids")
    }

    /// `.dev/logs`.
    pub fn logs(&self) -> PathBuf {
        self.dev.join("logs")
    }

    /// The release binaries.
    pub fn release(&self) -> PathBuf {
        self.target.join("release")
    }

    /// `path` relative to the checkout, for messages.
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Supervise(s) = cli.command {
        return s.run();
    }
    let paths = Paths::find()?;
    match cli.command {
        Command::Deps => host::deps(&paths),
        Command::Up => services::up(&paths).map(|_| ()),
        Command::Down => services::down(&paths),
        Command::Status => services::status(&paths),
        Command::Logs { name } => services::logs(&paths, name.as_deref()),
        Command::Test { stages } => test::run(&paths, &stages),
        Command::Chaos { short } => chaos::run(&paths, short),
        Command::Fuzz { short } => fuzz::run(&paths, short),
        Command::Bench { short } => bench::run(&paths, short),
        Command::Shellcheck => test::shellcheck(&paths),
        Command::Images { tag } => images::build(&paths, &tag),
        Command::Containers { tag } => images::containers(&paths, &tag),
        Command::Services { json } => {
            services::print_table(json);
            Ok(())
        }
        Command::Rabbitmqctl { args } => host::rabbitmqctl(&paths, &args),
        Command::Supervise(_) => Ok(()),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dev: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
