//! `dlq`: list, show and replay dead letters.
//!
//! ```text
//! dlq list                          every dead-letter queue: count, then type/reason groups
//! dlq list --queue social.commands  one queue, every letter
//! dlq show <message-id> [--full]    headers and body of one letter (body cut at 4 KiB)
//! dlq replay --queue social.commands --all | --id <message-id>...
//! dlq discard --queue social.commands --id <message-id>...
//! ```
//!
//! Exit codes: 0 done, 1 the broker failed or a letter could not be moved, 2 bad usage.

use std::collections::HashSet;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};
use dlq::{DeadLetters, Selection};

/// Bytes of a body `dlq show` prints unless asked for all of it.
const SHOW_LIMIT: usize = 4096;

#[derive(Parser)]
#[command(version, about = "List, show and replay Switchyard dead letters")]
struct Cli {
    /// Broker to connect to.
    #[arg(
        long,
        env = "SWITCHYARD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// File holding the broker URL instead (a container secret); wins over --amqp-url.
    #[arg(long, env = "SWITCHYARD_AMQP_URL_FILE")]
    amqp_url_file: Option<std::path::PathBuf>,
    /// Prefix of the deployment's queue names.
    #[arg(long, env = "SWITCHYARD_PREFIX", default_value = "switchyard")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Counts per dead-letter queue and groups by type and reason; with --queue, every
    /// letter of that queue.
    List {
        /// A dead-letter queue (`social.commands`, or its full name).
        #[arg(long)]
        queue: Option<String>,
        /// Letters read per queue at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Headers and body of one letter.
    Show {
        /// Its message id.
        message_id: String,
        /// Where to look (every dead-letter queue by default).
        #[arg(long)]
        queue: Option<String>,
        /// Print the whole body (by default it is cut after 4 KiB).
        #[arg(long)]
        full: bool,
    },
    /// Moves letters back to the queue they died in (confirmed before removal).
    Replay {
        /// The dead-letter queue to replay from.
        #[arg(long)]
        queue: String,
        /// Every letter in the queue.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// Only the letters with these message ids.
        #[arg(long, num_args = 1..)]
        id: Vec<String>,
    },
    /// Removes letters for good (poison that must never run); prints an audit line each.
    Discard {
        /// The dead-letter queue.
        #[arg(long)]
        queue: String,
        /// The message ids to remove.
        #[arg(long, num_args = 1.., required = true)]
        id: Vec<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let amqp_url = match &cli.amqp_url_file {
        None => cli.amqp_url.clone(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text.trim_end().to_owned(),
            Err(error) => {
                eprintln!("dlq: cannot read {}: {error}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let letters = match DeadLetters::connect(&amqp_url, &cli.prefix).await {
        Ok(letters) => letters,
        Err(error) => {
            eprintln!("dlq: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run(&letters, cli.command).await;
    letters.close().await;
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("dlq: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(letters: &DeadLetters, command: Command) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let age = |letter: &dlq::Letter| {
        letter
            .age(now)
            .map(|d| format!("{}s", d.as_secs()))
            .unwrap_or_else(|| "?".to_owned())
    };
    match command {
        Command::List { queue: None, limit } => {
            for queue in letters.known_queues() {
                let Some(count) = letters.count(&queue).await? else {
                    continue;
                };
                println!("{queue}: {count}");
                if count == 0 {
                    continue;
                }
                for group in dlq::group(&letters.peek(&queue, limit).await?) {
                    let oldest = group
                        .oldest
                        .and_then(|t| (now - t).to_std().ok())
                        .map(|d| format!("{}s", d.as_secs()))
                        .unwrap_or_else(|| "?".to_owned());
                    println!(
                        "  {:>6}  {:<28} {:<20} oldest {oldest}",
                        group.count, group.message_type, group.reason
                    );
                }
            }
        }
        Command::List {
            queue: Some(queue),
            limit,
        } => {
            let queue = letters.resolve(&queue);
            let Some(count) = letters.count(&queue).await? else {
                anyhow::bail!("queue {queue} does not exist");
            };
            println!("{queue}: {count}");
            println!(
                "  {:<36}  {:<28} {:<20} {:>8} {:>8}  error",
                "message id", "type", "reason", "attempts", "age"
            );
            for letter in letters.peek(&queue, limit).await? {
                println!(
                    "  {:<36}  {:<28} {:<20} {:>8} {:>8}  {}",
                    letter.message_id,
                    letter.message_type,
                    letter.reason,
                    letter.attempts,
                    age(&letter),
                    letter.error
                );
            }
        }
        Command::Show {
            message_id,
            queue,
            full,
        } => {
            let queues = match queue {
                Some(queue) => vec![letters.resolve(&queue)],
                None => letters.known_queues(),
            };
            for queue in queues {
                let found = letters
                    .peek(&queue, usize::MAX)
                    .await?
                    .into_iter()
                    .find(|l| l.message_id == message_id);
                if let Some(letter) = found {
                    let body = serde_json::from_slice::<serde_json::Value>(&letter.body)
                        .ok()
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                        .unwrap_or_else(|| String::from_utf8_lossy(&letter.body).into_owned());
                    println!("queue:     {queue}");
                    println!("id:        {}", letter.message_id);
                    println!("type:      {}", letter.message_type);
                    println!("reason:    {}", letter.reason);
                    println!("error:     {}", letter.error);
                    println!("attempts:  {}", letter.attempts);
                    println!("age:       {}", age(&letter));
                    println!("home:      {}", letter.home);
                    println!(
                        "headers:   {}",
                        serde_json::to_string_pretty(&letter.headers).unwrap_or_default()
                    );
                    println!(
                        "body:\n{}",
                        dlq::shorten(&body, (!full).then_some(SHOW_LIMIT))
                    );
                    return Ok(ExitCode::SUCCESS);
                }
            }
            eprintln!("dlq: no dead letter with id {message_id}");
            return Ok(ExitCode::FAILURE);
        }
        Command::Replay { queue, all, id } => {
            let queue = letters.resolve(&queue);
            let selection = if all {
                Selection::All
            } else {
                Selection::Ids(id.into_iter().collect::<HashSet<_>>())
            };
            let report = letters.replay(&queue, &selection).await?;
            println!(
                "{queue}: moved {}, failed {}, skipped {}",
                report.moved, report.failed, report.skipped
            );
            if report.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Discard { queue, id } => {
            let queue = letters.resolve(&queue);
            let wanted: HashSet<String> = id.into_iter().collect();
            let discarded = letters.discard(&queue, &wanted).await?;
            for letter in &discarded {
                println!(
                    "discarded {} from {queue}: {} {} ({})",
                    letter.message_id, letter.message_type, letter.reason, letter.error
                );
            }
            let missing = wanted.len() - discarded.len();
            println!(
                "{queue}: discarded {}, not found {missing}",
                discarded.len()
            );
            if missing > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
