//! `loadgen`: realistic traffic at the gateway, a latency summary, and proof that every
//! accepted operation took effect exactly once.
//!
//! ```text
//! loadgen --rate 200 --duration 30s --verify          open loop: 200 requests/s on schedule
//! loadgen --concurrency 32 --count 10000 --scenario post
//! loadgen --rate 40 --duration 120s --record run.jsonl   (chaos: load now …)
//! loadgen --verify-only run.jsonl                     (… verify after the faults)
//! ```
//!
//! In open-loop mode latency is measured from when a request was due, not when it was
//! sent, so a stalled gateway shows up in the percentiles instead of quietly lowering the
//! rate (coordinated omission). Exit status: 0 done (and verified clean), 1 set-up or
//! verification failed (lost or duplicated operations), 2 bad usage.

mod client;
mod stats;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use client::{Api, World};
use stats::{Class, Stats, classify};
use verify::{Accepted, Kind, Recorder};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Drive traffic at the Switchyard gateway and verify every accepted operation"
)]
struct Cli {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// What to send: a realistic mix, or one kind of request.
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    scenario: Scenario,
    /// Open loop: requests started per second, on schedule, whatever the answers do.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Closed loop: this many clients, each sending its next request when the last answered.
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to send (`30s`, `2m`, `500ms`).
    #[arg(long, value_parser = parse_duration, conflicts_with = "count")]
    duration: Option<Duration>,
    /// How many requests to send.
    #[arg(long)]
    count: Option<u64>,
    /// The admin who registers the run's teacher.
    #[arg(long, default_value = "admin@switchyard.test")]
    admin_email: String,
    /// File holding the admin's password (`./dev up` writes it).
    #[arg(long, default_value = ".dev/admin.password")]
    admin_password_file: PathBuf,
    /// Students to post and repost as.
    #[arg(long, default_value_t = 3)]
    students: usize,
    /// Write every accepted operation to this file (JSON lines).
    #[arg(long)]
    record: Option<PathBuf>,
    /// After the load, check every accepted operation took effect exactly once.
    #[arg(long)]
    verify: bool,
    /// Send nothing: verify the operations recorded in this file.
    #[arg(long, conflicts_with_all = ["rate", "concurrency", "duration", "count", "verify"])]
    verify_only: Option<PathBuf>,
    /// How long verification waits for operations to finish.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    verify_timeout: Duration,
    /// Per-request timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Mixed,
    Register,
    Login,
    Course,
    Assign,
    Post,
    Repost,
    Read,
}

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Register,
    Login,
    Course,
    Assign,
    Post,
    Repost,
    Timeline,
    Courses,
    Course1,
    Operation,
}

/// The realistic mix: mostly posting and reading, some catalog work, a few sign-ups.
const MIX: [(Op, u32); 10] = [
    (Op::Register, 1),
    (Op::Login, 1),
    (Op::Course, 8),
    (Op::Assign, 5),
    (Op::Post, 35),
    (Op::Repost, 10),
    (Op::Timeline, 15),
    (Op::Courses, 10),
    (Op::Course1, 10),
    (Op::Operation, 5),
];

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn pick(scenario: Scenario, roll: u32) -> Op {
    match scenario {
        Scenario::Register => Op::Register,
        Scenario::Login => Op::Login,
        Scenario::Course => Op::Course,
        Scenario::Assign => Op::Assign,
        Scenario::Post => Op::Post,
        Scenario::Repost => Op::Repost,
        Scenario::Read => [Op::Timeline, Op::Courses, Op::Course1][(roll % 3) as usize],
        Scenario::Mixed => {
            let total: u32 = MIX.iter().map(|(_, w)| w).sum();
            let mut at = roll % total;
            for (op, weight) in MIX {
                if at < weight {
                    return op;
                }
                at -= weight;
            }
            Op::Timeline
        }
    }
}

/// One request to send, and what to record if it is accepted.
struct Request {
    route: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    /// Kind, key and owner of the effect to verify.
    record: Option<(Kind, String, Option<String>)>,
}

/// Builds a [`Request`] from its six parts, in order.
fn request(
    route: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    record: Option<(Kind, String, Option<String>)>,
) -> Request {
    Request {
        route,
        method,
        path,
        token,
        body,
        record,
    }
}

/// Everything the request tasks share.
struct Run {
    api: Api,
    world: World,
    seq: AtomicU64,
    stats: Mutex<Stats>,
    recorder: Mutex<Recorder>,
    accepted: Mutex<Vec<Accepted>>,
    /// Recently seen original posts, to repost.
    seen_posts: Mutex<Vec<String>>,
    /// Recently accepted operation ids, to poll.
    recent_ops: Mutex<Vec<String>>,
}

fn remember(ring: &Mutex<Vec<String>>, item: String) {
    if let Ok(mut ring) = ring.lock() {
        if ring.len() >= 256 {
            ring.remove(0);
        }
        ring.push(item);
    }
}

fn any_of(ring: &Mutex<Vec<String>>) -> Option<String> {
    let ring = ring.lock().ok()?;
    if ring.is_empty() {
        return None;
    }
    Some(ring[rand::rng().random_range(0..ring.len())].clone())
}

impl Run {
    fn student(&self) -> &client::User {
        let i = rand::rng().random_range(0..self.world.students.len());
        &self.world.students[i]
    }

    fn setup_item<'a>(&self, items: &'a [String]) -> &'a str {
        &items[rand::rng().random_range(0..items.len())]
    }

    /// Sends one request of kind `op`; records its latency (from `due`) and outcome.
    async fn one(&self, op: Op, due: Instant) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let run = &self.world.run;
        let Request {
            route,
            method,
            path,
            token,
            body,
            record,
        } = match op {
            Op::Register => {
                let email = format!("u{n}-{run}@loadgen.test");
                request(
                    "POST /v1/auth/register",
                    Method::POST,
                    "/v1/auth/register".into(),
                    None,
                    Some(
                        json!({"email": email, "display_name": format!("User {n}"), "password": client::PASSWORD}),
                    ),
                    Some((Kind::Register, email, None)),
                )
            }
            Op::Login => {
                let email = format!("student0-{run}@loadgen.test");
                request(
                    "POST /v1/auth/login",
                    Method::POST,
                    "/v1/auth/login".into(),
                    None,
                    Some(json!({"email": email, "password": client::PASSWORD})),
                    None,
                )
            }
            Op::Course => {
                let code = format!("C{n}-{run}");
                request(
                    "POST /v1/courses",
                    Method::POST,
                    "/v1/courses".into(),
                    Some(self.world.teacher.token.clone()),
                    Some(json!({"code": code, "title": format!("Course {n}")})),
                    Some((Kind::Course, code, None)),
                )
            }
            Op::Assign => {
                let course = self.setup_item(&self.world.courses).to_owned();
                let teacher = self.world.teacher.id.clone();
                request(
                    "PUT /v1/teachers/{id}/courses/{id}",
                    Method::PUT,
                    format!("/v1/teachers/{teacher}/courses/{course}"),
                    Some(self.world.teacher.token.clone()),
                    None,
                    Some((Kind::Assign, course, Some(teacher))),
                )
            }
            Op::Post => {
                let student = self.student();
                let text = format!("loadgen {run} post {n}");
                request(
                    "POST /v1/posts",
                    Method::POST,
                    "/v1/posts".into(),
                    Some(student.token.clone()),
                    Some(json!({"body": text})),
                    Some((Kind::Post, text, Some(student.id.clone()))),
                )
            }
            Op::Repost => {
                let student = self.student();
                let original = any_of(&self.seen_posts)
                    .unwrap_or_else(|| self.setup_item(&self.world.posts).to_owned());
                request(
                    "POST /v1/posts/{id}/reposts",
                    Method::POST,
                    format!("/v1/posts/{original}/reposts"),
                    Some(student.token.clone()),
                    None,
                    Some((
                        Kind::Repost,
                        format!("repost:{original}"),
                        Some(student.id.clone()),
                    )),
                )
            }
            Op::Timeline => request(
                "GET /v1/timeline",
                Method::GET,
                "/v1/timeline?limit=20".into(),
                None,
                None,
                None,
            ),
            Op::Courses => request(
                "GET /v1/courses",
                Method::GET,
                "/v1/courses?limit=20".into(),
                None,
                None,
                None,
            ),
            Op::Course1 => request(
                "GET /v1/courses/{id}",
                Method::GET,
                format!("/v1/courses/{}", self.setup_item(&self.world.courses)),
                None,
                None,
                None,
            ),
            Op::Operation => {
                let id = any_of(&self.recent_ops).unwrap_or_else(|| "none".into());
                request(
                    "GET /v1/operations/{id}",
                    Method::GET,
                    format!("/v1/operations/{id}"),
                    None,
                    None,
                    None,
                )
            }
        };
        let write = record.is_some();
        let answer = self
            .api
            .send(method, &path, token.as_deref(), body.as_ref(), None)
            .await;
        let latency = due.elapsed();
        let status = answer.as_ref().ok().map(|(s, _)| *s);
        let class = classify(status, write);
        if let Ok(mut stats) = self.stats.lock() {
            stats.record(route, status, class, latency);
        }
        let Ok((_, response)) = answer else { return };
        if op == Op::Timeline {
            for post in response["items"].as_array().into_iter().flatten().take(5) {
                let root = post["repost_of"].as_str().or(post["id"].as_str());
                if let Some(root) = root {
                    remember(&self.seen_posts, root.to_owned());
                }
            }
        }
        if let (Class::Accepted, Some((kind, key, owner))) = (class, record) {
            let Some(operation_id) = response["operation_id"].as_str() else {
                return;
            };
            let accepted = Accepted {
                kind,
                operation_id: operation_id.to_owned(),
                key,
                owner,
            };
            remember(&self.recent_ops, accepted.operation_id.clone());
            if let Ok(mut recorder) = self.recorder.lock()
                && let Err(error) = recorder.write(&accepted)
            {
                eprintln!("loadgen: cannot record an operation: {error:#}");
            }
            if let Ok(mut list) = self.accepted.lock() {
                list.push(accepted);
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = Api::new(&cli.url, cli.timeout)?;
    if let Some(path) = &cli.verify_only {
        let accepted = verify::read_record(path)?;
        return verify_and_report(&api, &accepted, cli.verify_timeout).await;
    }
    if cli.rate.is_none() && cli.concurrency.is_none() {
        eprintln!("loadgen: give --rate (open loop) or --concurrency (closed loop)");
        return Ok(ExitCode::from(2));
    }
    if cli.duration.is_none() && cli.count.is_none() {
        eprintln!("loadgen: give --duration or --count");
        return Ok(ExitCode::from(2));
    }
    if let Some(rate) = cli.rate
        && !(rate > 0.0 && rate <= 100_000.0)
    {
        eprintln!("loadgen: --rate must be between 0 and 100000");
        return Ok(ExitCode::from(2));
    }
    let password = std::fs::read_to_string(&cli.admin_password_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the admin password from {}: {e}",
            cli.admin_password_file.display()
        )
    })?;
    let world = client::set_up(&api, &cli.admin_email, password.trim(), cli.students).await?;
    let run = Arc::new(Run {
        api: api.clone(),
        world,
        seq: AtomicU64::new(0),
        stats: Mutex::new(Stats::new()),
        recorder: Mutex::new(Recorder::create(cli.record.as_deref())?),
        accepted: Mutex::new(Vec::new()),
        seen_posts: Mutex::new(Vec::new()),
        recent_ops: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("loadgen: interrupted, finishing the requests in flight");
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let progress = if cli.quiet {
        ProgressBar::hidden()
    } else {
        let bar = match (cli.duration, cli.count) {
            (Some(d), _) => ProgressBar::new(d.as_secs().max(1)),
            (None, Some(n)) => ProgressBar::new(n),
            (None, None) => ProgressBar::new_spinner(),
        };
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };

    let started = Instant::now();
    let done = |sent: u64| {
        stop.load(Ordering::SeqCst)
            || cli.duration.is_some_and(|d| started.elapsed() >= d)
            || cli.count.is_some_and(|c| sent >= c)
    };
    let scenario = cli.scenario;
    // Bounds the requests in flight so a stalled gateway cannot make loadgen itself
    // exhaust memory or sockets; a request that finds no slot counts as an error.
    let slots = Arc::new(Semaphore::new(4096));
    let mut tasks = tokio::task::JoinSet::new();
    let tick_progress = |bar: &ProgressBar, sent: u64| {
        if cli.duration.is_some() {
            bar.set_position(started.elapsed().as_secs());
        } else {
            bar.set_position(sent);
        }
        if let Ok(stats) = run.stats.lock() {
            bar.set_message(format!(
                "{:.0} req/s, accepted {}, refused {}, errors {}",
                stats.total() as f64 / started.elapsed().as_secs_f64().max(0.001),
                stats.accepted,
                stats.refused,
                stats.errors
            ));
        }
    };
    if let Some(rate) = cli.rate {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut sent: u64 = 0;
        while !done(sent) {
            let due = started + interval.mul_f64(sent as f64);
            tokio::time::sleep_until(due.into()).await;
            let op = pick(scenario, rand::rng().random());
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let run = run.clone();
                    tasks.spawn(async move {
                        run.one(op, due).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    if let Ok(mut stats) = run.stats.lock() {
                        stats.record(
                            "(no slot: too many in flight)",
                            None,
                            Class::Error,
                            Duration::ZERO,
                        );
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
            sent += 1;
            if sent.is_multiple_of(64) {
                tick_progress(&progress, sent);
            }
        }
    } else {
        let clients = cli.concurrency.unwrap_or(1).max(1);
        let sent = Arc::new(AtomicU64::new(0));
        for _ in 0..clients {
            let run = run.clone();
            let sent = sent.clone();
            let stop = stop.clone();
            let (duration, count) = (cli.duration, cli.count);
            tasks.spawn(async move {
                loop {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    if stop.load(Ordering::SeqCst)
                        || duration.is_some_and(|d| started.elapsed() >= d)
                        || count.is_some_and(|c| n >= c)
                    {
                        break;
                    }
                    let op = pick(scenario, rand::rng().random());
                    run.one(op, Instant::now()).await;
                }
            });
        }
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    tick_progress(&progress, sent.load(Ordering::SeqCst));
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    if let Ok(mut recorder) = run.recorder.lock() {
        recorder.finish()?;
    }
    if let Ok(stats) = run.stats.lock() {
        print!("{}", stats.render(elapsed));
    }
    if !cli.verify {
        return Ok(ExitCode::SUCCESS);
    }
    let accepted = run.accepted.lock().map(|a| a.clone()).unwrap_or_default();
    verify_and_report(&api, &accepted, cli.verify_timeout).await
}

async fn verify_and_report(
    api: &Api,
    accepted: &[Accepted],
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (tally, problems) = verify::verify(api, accepted, timeout).await?;
    for problem in problems.iter().take(20) {
        println!("  {problem}");
    }
    if problems.len() > 20 {
        println!("  … and {} more", problems.len() - 20);
    }
    println!(
        "verify: {} accepted operations in {:.1}s: verified {}, lost {}, duplicated {}, pending {}, rejected {}",
        tally.total,
        started.elapsed().as_secs_f64(),
        tally.verified,
        tally.lost,
        tally.duplicated,
        tally.pending,
        tally.rejected
    );
    Ok(if tally.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn the_mix_follows_its_weights_and_single_scenarios_stay_single() {
        let mut posts = 0;
        for roll in 0..100 {
            if pick(Scenario::Mixed, roll) == Op::Post {
                posts += 1;
            }
        }
        assert_eq!(posts, 35);
        assert!((0..50).all(|r| pick(Scenario::Course, r) == Op::Course));
        assert!((0..50).all(|r| matches!(
            pick(Scenario::Read, r),
            Op::Timeline | Op::Courses | Op::Course1
        )));
    }
}
