//! Runs the accounts worker until SIGTERM, or a one-off command:
//!
//! `accounts create-admin --email EMAIL --name NAME [--password-file FILE] [--if-missing]`
//! reads the password from the first line of FILE or of standard input and creates an
//! admin (the only way one comes to exist); `--if-missing` makes a re-run a success.

use std::io::BufRead as _;
use std::process::ExitCode;

use accounts::AccountsConfig;

/// The one-off commands besides serving.
#[derive(Debug, clap::Parser)]
#[command(
    name = "accounts",
    about = "The accounts worker; with no command it serves until SIGTERM"
)]
enum Command {
    /// Creates an admin (the only way one comes to exist).
    CreateAdmin(CreateAdmin),
}

#[derive(Debug, clap::Args)]
struct CreateAdmin {
    /// The admin's e-mail address.
    #[arg(long)]
    email: String,
    /// The admin's display name.
    #[arg(long)]
    name: String,
    /// Read the password from the first line of this file instead of standard input: for
    /// one-shot steps without standard input (compose, a Kubernetes Job with the password
    /// in a secret volume).
    #[arg(long, value_name = "FILE")]
    password_file: Option<std::path::PathBuf>,
    /// An admin with that e-mail address already existing is a success, so a deployment
    /// step can run on every release.
    #[arg(long)]
    if_missing: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    platform::cli::run_with::<accounts::Application, _, _>(|config, args| async move {
        match <Command as clap::Parser>::try_parse_from(
            std::iter::once("accounts".to_owned()).chain(args),
        ) {
            Ok(Command::CreateAdmin(command)) => create_admin(config, command).await,
            Err(error) => {
                // Usage errors go to standard error (exit 2), --help to standard output.
                let _ = error.print();
                ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
            }
        }
    })
    .await
}

async fn create_admin(config: AccountsConfig, command: CreateAdmin) -> ExitCode {
    let CreateAdmin {
        email,
        name,
        password_file,
        if_missing,
    } = command;
    let password = match password_file {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().next().unwrap_or_default().to_owned(),
            Err(error) => {
                eprintln!(
                    "accounts: cannot read the password from {}: {error}",
                    path.display()
                );
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
