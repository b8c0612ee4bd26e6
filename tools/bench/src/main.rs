//! `bench`: what this machine's stack can do, in one run (`./dev bench` starts it on the
//! running stack). It measures, and prints as a table and writes as JSON:
//!
//! - the broker's ceiling: confirmed persistent mandatory publishes to a quorum queue at
//!   128 and 1,024 in flight, and consuming with a large prefetch;
//! - the gateway's accept rate for `POST /v1/posts`, closed loop at c=32 and c=128, with
//!   the social worker running and then paused (SIGSTOP);
//! - end to end: open-loop steps of rising rate, each with accepted/s, committed/s, the
//!   command queue's depth before and after, and accept→commit percentiles; the highest
//!   rate sustained without backlog growth;
//! - CPU time per message of every watched process (from /proc) and its peak RSS;
//! - the ratios of the gateway and of end to end to the broker's ceiling.
//!
//! It asserts nothing about speed: numbers are for the README and the closing notes.

mod broker;
mod http;
mod procs;

use anyhow::{Context, Result};
use clap::Parser;
use procs::Watched;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    version,
    about = "Measure the stack: broker ceiling, gateway accepts, end-to-end commits, CPU per message"
)]
struct Cli {
    /// The gateway to post to (its rate limits raised: `./dev bench` starts one).
    #[arg(long)]
    gateway: String,
    /// RabbitMQ, as a user that may declare a queue of its own.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp: String,
    /// The admin who registers the benchmark's student.
    #[arg(long, default_value = "admin@switchyard.test")]
    admin_email: String,
    /// File holding the admin's password.
    #[arg(long, default_value = ".dev/admin.password")]
    admin_password_file: PathBuf,
    /// The social worker's metrics (commits and the accept→commit histogram).
    #[arg(long, default_value = "http://127.0.0.1:9103/metrics")]
    social_metrics: String,
    /// The social worker's command queue (its depth is the backlog).
    #[arg(long, default_value = "switchyard.social.commands")]
    queue: String,
    /// The social worker's pid, paused (SIGSTOP) for the gateway-alone runs.
    #[arg(long)]
    pause: u32,
    /// A process to account for: NAME=PID, or NAME=comm:COMMAND for every process with
    /// that command name (RabbitMQ's beam.smp, PostgreSQL's backends). Repeatable.
    #[arg(long = "watch", value_parser = Watched::parse)]
    watched: Vec<Watched>,
    /// A seconds-long run that proves the benchmark works (./dev test); its figures mean
    /// nothing.
    #[arg(long)]
    short: bool,
    /// Where the JSON report goes.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// CPU per message and peak RSS of one watched process over one phase.
#[derive(Debug, Clone, Serialize)]
struct Cost {
    cpu_seconds: f64,
    cpu_us_per_message: Option<f64>,
    peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct GatewayRun {
    consumers: &'static str,
    clients: usize,
    #[serde(flatten)]
    accepts: http::Accepts,
    cost: BTreeMap<String, Cost>,
}

#[derive(Debug, Serialize)]
struct Step {
    rate: f64,
    #[serde(flatten)]
    accepts: http::Accepts,
    committed: f64,
    committed_per_second: f64,
    queue_depth_start: u64,
    queue_depth_end: u64,
    backlog_growth: i64,
    sustained: bool,
    commit_p50_ms: Option<f64>,
    commit_p99_ms: Option<f64>,
    cost: BTreeMap<String, Cost>,
}

#[derive(Debug, Serialize)]
struct Drain {
    messages: u64,
    seconds: f64,
    committed_per_second: f64,
    cost: BTreeMap<String, Cost>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    short: bool,
    broker: Vec<broker::Rate>,
    gateway: Vec<GatewayRun>,
    end_to_end: Vec<Step>,
    highest_sustained_rate: Option<f64>,
    drain_after_pause: Option<Drain>,
    gateway_to_broker: Option<f64>,
    end_to_end_to_broker: Option<f64>,
}

struct Bench {
    cli: Cli,
    ticks: f64,
    connection: lapin::Connection,
    metrics: reqwest::Client,
}

impl Bench {
    fn samples(&self) -> Vec<procs::Sample> {
        self.cli
            .watched
            .iter()
            .map(|w| w.sample(self.ticks))
            .collect()
    }

    fn cost(&self, before: &[procs::Sample], messages: f64) -> BTreeMap<String, Cost> {
        self.cli
            .watched
            .iter()
            .zip(before)
            .map(|(w, b)| {
                let now = w.sample(self.ticks);
                let cpu = (now.cpu_seconds - b.cpu_seconds).max(0.0);
                let cost = Cost {
                    cpu_seconds: cpu,
                    cpu_us_per_message: (messages > 0.0).then(|| cpu * 1e6 / messages),
                    peak_rss_mb: now.peak_rss_bytes as f64 / 1e6,
                };
                (w.name.clone(), cost)
            })
            .collect()
    }

    async fn depth(&self) -> Result<u64> {
        broker::depth(&self.connection, &self.cli.queue).await
    }

    /// Waits until the command queue is empty (or `limit` passed); the messages and
    /// seconds it took.
    async fn drain(&self, limit: Duration) -> Result<(u64, f64)> {
        let start = self.depth().await?;
        let started = Instant::now();
        while self.depth().await? > 0 {
            if started.elapsed() > limit {
                anyhow::bail!(
                    "{} still holds {} messages after {}s",
                    self.cli.queue,
                    self.depth().await?,
                    limit.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // An empty queue still leaves the deliveries the worker holds (its prefetch): wait
        // until its commit counter stands still, so a step counts only its own commits.
        let mut last = self.commits().await?.count;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.commits().await?.count;
            if now == last {
                break;
            }
            last = now;
        }
        Ok((start, started.elapsed().as_secs_f64()))
    }

    async fn commits(&self) -> Result<http::Commits> {
        http::Commits::scrape(&self.metrics, &self.cli.social_metrics).await
    }
}

fn signal(pid: u32, name: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("cannot run kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

async fn run(cli: Cli) -> Result<Report> {
    let password = std::fs::read_to_string(&cli.admin_password_file)
        .with_context(|| format!("cannot read {}", cli.admin_password_file.display()))?;
    let poster = http::Poster::new(&cli.gateway, &cli.admin_email, password.trim()).await?;
    let bench = Bench {
        ticks: procs::ticks_per_second(),
        connection: broker::connect(&cli.amqp).await?,
        metrics: reqwest::Client::new(),
        cli,
    };
    let short = bench.cli.short;
    let drain_limit = Duration::from_secs(if short { 120 } else { 900 });
    let machine = machine();
    println!("bench: {machine}");

    let messages = if short { 2_000 } else { 100_000 };
    println!("bench: broker ceiling ({messages} messages of 200 B per window)");
    let ceiling = broker::ceiling(&bench.cli.amqp, messages, &[128, 1_024]).await?;

    let run_for = Duration::from_secs(if short { 2 } else { 20 });
    let mut gateway = Vec::new();
    for clients in [32, 128] {
        println!(
            "bench: gateway, social running, c={clients}, {}s",
            run_for.as_secs()
        );
        bench.drain(drain_limit).await?;
        let before = bench.samples();
        let accepts = http::closed_loop(&poster, clients, run_for).await?;
        let cost = bench.cost(&before, accepts.accepted as f64);
        gateway.push(GatewayRun {
            consumers: "running",
            clients,
            accepts,
            cost,
        });
    }

    let rates: &[f64] = if short {
        &[50.0, 100.0]
    } else {
        &[
            100.0, 250.0, 500.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0, 6_000.0,
        ]
    };
    let step_for = Duration::from_secs(if short { 3 } else { 30 });
    let mut steps = Vec::new();
    for &rate in rates {
        bench.drain(drain_limit).await?;
        println!("bench: end to end at {rate}/s for {}s", step_for.as_secs());
        let depth_start = bench.depth().await?;
        let commits_before = bench.commits().await?;
        let before = bench.samples();
        let accepts = http::open_loop(&poster, rate, step_for, 4_096).await?;
        let depth_end = bench.depth().await?;
        let commits_after = bench.commits().await?;
        let committed = commits_after.count - commits_before.count;
        let cost = bench.cost(&before, committed);
        let growth = depth_end as i64 - depth_start as i64;
        // What arrived in the last second may still be on its way: more than that left
        // behind is a backlog that grows.
        let sustained = growth <= rate as i64 && accepts.errors == 0;
        let ms = |q| {
            commits_after
                .quantile_since(&commits_before, q)
                .map(|s| s * 1e3)
        };
        steps.push(Step {
            rate,
            committed,
            committed_per_second: committed / accepts.seconds,
            queue_depth_start: depth_start,
            queue_depth_end: depth_end,
            backlog_growth: growth,
            sustained,
            commit_p50_ms: ms(0.5),
            commit_p99_ms: ms(0.99),
            accepts,
            cost,
        });
        if !sustained {
            break;
        }
    }
    let highest_sustained_rate = steps
        .iter()
        .filter(|s| s.sustained)
        .map(|s| s.committed_per_second)
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        });

    // Each paused run drains before the next, and is short enough (10 s at ~6,500/s) to
    // stay under the command queue's default bound (COMMAND_QUEUE_MAX_LENGTH, 100,000):
    // past it the gateway answers 503 at once, which is backpressure, not an accept rate.
    let paused_for = Duration::from_secs(if short { 2 } else { 10 });
    let mut drain = None;
    for clients in [32, 128] {
        bench.drain(drain_limit).await?;
        println!(
            "bench: gateway, social paused, c={clients}, {}s",
            paused_for.as_secs()
        );
        signal(bench.cli.pause, "STOP")?;
        let before = bench.samples();
        let accepts = http::closed_loop(&poster, clients, paused_for).await;
        let cost = bench.cost(&before, accepts.as_ref().map_or(0.0, |a| a.accepted as f64));
        signal(bench.cli.pause, "CONT")?;
        gateway.push(GatewayRun {
            consumers: "paused",
            clients,
            accepts: accepts?,
            cost,
        });
        println!("bench: social resumed; draining the backlog");
        let before = bench.samples();
        let (backlog, seconds) = bench.drain(drain_limit).await?;
        // The larger backlog gives the steadier drain rate.
        if backlog > drain.as_ref().map_or(0, |d: &Drain| d.messages) {
            drain = Some(Drain {
                messages: backlog,
                seconds,
                committed_per_second: backlog as f64 / seconds.max(0.001),
                cost: bench.cost(&before, backlog as f64),
            });
        }
    }

    let ceiling_rate = ceiling.first().map(|r| r.per_second);
    let best_gateway = gateway
        .iter()
        .filter(|g| g.consumers == "paused")
        .map(|g| g.accepts.per_second)
        .fold(0.0, f64::max);
    let _ = bench.connection.close(200, "bench done".into()).await;
    Ok(Report {
        machine,
        short,
        gateway_to_broker: ceiling_rate.map(|c| best_gateway / c),
        end_to_end_to_broker: ceiling_rate.zip(highest_sustained_rate).map(|(c, e)| e / c),
        broker: ceiling,
        gateway,
        end_to_end: steps,
        highest_sustained_rate,
        drain_after_pause: drain,
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1_048_576.0);
    format!("{cpus} CPUs ({model}), {memory:.0} GiB")
}

fn print(report: &Report) {
    println!();
    println!("broker ceiling                              msg/s");
    for r in &report.broker {
        println!("  {:<40} {:>9.0}", r.what, r.per_second);
    }
    println!();
    println!(
        "gateway POST /v1/posts (closed loop)    req/s   p50 ms   p99 ms  p99.9 ms  errors  CPU µs/req"
    );
    for g in &report.gateway {
        let cpu: Vec<String> = g
            .cost
            .iter()
            .filter_map(|(n, c)| Some(format!("{n} {:.0}", c.cpu_us_per_message?)))
            .collect();
        println!(
            "  social {:<8} c={:<4}          {:>8.0} {:>8.1} {:>8.1} {:>9.1} {:>7}  {}",
            g.consumers,
            g.clients,
            g.accepts.per_second,
            g.accepts.p50_ms,
            g.accepts.p99_ms,
            g.accepts.p999_ms,
            g.accepts.errors,
            cpu.join(", ")
        );
    }
    println!();
    println!(
        "end to end (open loop)   accepted/s committed/s  depth start→end  commit p50/p99 ms  CPU µs/commit"
    );
    for s in &report.end_to_end {
        let cpu: Vec<String> = s
            .cost
            .iter()
            .filter_map(|(n, c)| Some(format!("{n} {:.0}", c.cpu_us_per_message?)))
            .collect();
        let q = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        println!(
            "  {:>6.0}/s {:<8}     {:>8.0} {:>11.0}  {:>7} → {:<7}  {:>7} / {:<7}  {}",
            s.rate,
            if s.sustained { "" } else { "(backlog)" },
            s.accepts.per_second,
            s.committed_per_second,
            s.queue_depth_start,
            s.queue_depth_end,
            q(s.commit_p50_ms),
            q(s.commit_p99_ms),
            cpu.join(", ")
        );
    }
    if let Some(d) = &report.drain_after_pause {
        let cpu: Vec<String> = d
            .cost
            .iter()
            .filter_map(|(n, c)| Some(format!("{n} {:.0}", c.cpu_us_per_message?)))
            .collect();
        println!(
            "  drain after the pause: {} messages in {:.1}s = {:.0}/s; CPU µs/commit {}",
            d.messages,
            d.seconds,
            d.committed_per_second,
            cpu.join(", ")
        );
    }
    println!();
    let peak: Vec<String> = report
        .gateway
        .last()
        .map(|g| {
            g.cost
                .iter()
                .map(|(n, c)| format!("{n} {:.0} MB", c.peak_rss_mb))
                .collect()
        })
        .unwrap_or_default();
    println!("peak RSS: {}", peak.join(", "));
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1} %", v * 100.0));
    println!(
        "highest sustained end to end: {}/s; gateway ÷ broker ceiling {}; end to end ÷ broker ceiling {}",
        report
            .highest_sustained_rate
            .map_or("-".to_owned(), |r| format!("{r:.0}")),
        pct(report.gateway_to_broker),
        pct(report.end_to_end_to_broker)
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json.clone();
    match run(cli).await {
        Ok(report) => {
            print(&report);
            if let Some(path) = json {
                match serde_json::to_vec_pretty(&report) {
                    Ok(bytes) => {
                        if let Err(e) = std::fs::write(&path, bytes) {
                            eprintln!("bench: error: cannot write {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                        println!("bench: report in {}", path.display());
                    }
                    Err(e) => {
                        eprintln!("bench: error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
