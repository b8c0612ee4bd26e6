//! Runs the accounts worker until SIGTERM, or a one-off command:
//!
//! `accounts create-admin --email EMAIL --name NAME [--password-file FILE] [--if-missing]`
//! reads the password from the first line of FILE or of standard input and creates an
//! admin (the only way one comes to exist); `--if-missing` makes a re-run a success.

use std::io::BufRead as _;
use std::process::ExitCode;

use accounts::{AccountsConfig, Application};

#[tokio::main]
async fn main() -> ExitCode {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], 9102));
    let check: platform::cli::Check = |source| AccountsConfig::from_source(source).map(drop);
    let (source, _telemetry) =
        match platform::cli::start("accounts", "HEALTH_ADDR", default, check).await {
            platform::cli::Start::Run { source, telemetry } => (source, telemetry),
            platform::cli::Start::Exit(code) => return code,
        };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match AccountsConfig::from_source(&source) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("accounts: {error}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None => serve(config).await,
        Some("create-admin") => create_admin(config, &args[1..]).await,
        Some(other) => {
            eprintln!(
                "accounts: unknown command {other:?}; usage: accounts [create-admin --email EMAIL --name NAME]"
            );
            ExitCode::from(2)
        }
    }
}

async fn serve(config: AccountsConfig) -> ExitCode {
    let shutdown = platform::shutdown::on_signal();
    let app = match Application::build(config, shutdown).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "accounts failed to start");
            eprintln!("accounts: cannot start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "accounts stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

async fn create_admin(config: AccountsConfig, args: &[String]) -> ExitCode {
    const USAGE: &str = "accounts: usage: accounts create-admin --email EMAIL --name NAME [--password-file FILE] [--if-missing]  (password: first line of FILE, or of standard input)";
    let (Some(email), Some(name)) = (flag(args, "--email"), flag(args, "--name")) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let if_missing = args.iter().any(|a| a == "--if-missing");
    // A file, for deployments whose one-shot step has no standard input (compose, a
    // Kubernetes Job with the password in a secret volume).
    let password = match flag(args, "--password-file") {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().next().unwrap_or_default().to_owned(),
            Err(error) => {
                eprintln!("accounts: cannot read the password from {path}: {error}");
                return ExitCode::from(2);
            }
        },
        None => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                eprintln!("accounts: cannot read the password from standard input");
                return ExitCode::from(2);
            }
            line
        }
    };
    let password = password.trim_end_matches(['\r', '\n']);
    let result = async {
        let pool = platform::pg::pool(&config.pg)?;
        platform::pg::migrate::run(&pool, &accounts::MIGRATIONS).await?;
        accounts::admin::create_admin(&pool, &email, &name, password, config.hash).await
    }
    .await;
    match result {
        Ok(user) => {
            println!("created admin {} ({})", user.email, user.id);
            ExitCode::SUCCESS
        }
        Err(error)
            if if_missing
                && error
                    .downcast_ref::<accounts::admin::AlreadyRegistered>()
                    .is_some() =>
        {
            println!("accounts: {error}; nothing to do");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("accounts: create-admin failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
