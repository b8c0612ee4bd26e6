//! `POST /v1/posts` at the gateway: a student to post as, closed-loop runs (c clients, each
//! sending when the last answered) and open-loop runs (a fixed rate, on schedule); and the
//! social worker's commit counter and accept→commit histogram from its `/metrics`.

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// The gateway, and a student's token to post with.
#[derive(Clone)]
pub struct Poster {
    client: reqwest::Client,
    url: String,
    token: String,
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<Value> {
    // Set-up waits for each command's outcome, so the next step finds what it made.
    let mut request = client.post(url).header("prefer", "wait=10").json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {url}: {status} {answer}");
    }
    Ok(answer)
}

impl Poster {
    /// Logs in as the admin, registers a student and logs in as them.
    pub async fn new(gateway: &str, admin_email: &str, admin_password: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build()?;
        let login = |email: String, password: String| {
            let client = client.clone();
            let url = format!("{gateway}/v1/auth/login");
            async move {
                let answer = call(
                    &client,
                    &url,
                    None,
                    &json!({"email": email, "password": password}),
                )
                .await?;
                answer["access_token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("the login answered no access_token")
            }
        };
        let admin = login(admin_email.to_owned(), admin_password.to_owned()).await?;
        let run = uuid::Uuid::now_v7().simple().to_string();
        let email = format!("bench-{}@bench.test", &run[20..]);
        let password = format!("bench-{run}");
        call(
            &client,
            &format!("{gateway}/v1/auth/register"),
            Some(&admin),
            &json!({"email": email, "display_name": "Bench", "password": password, "role": "student"}),
        )
        .await
        .context("cannot register the benchmark's student")?;
        let token = login(email, password).await?;
        Ok(Self {
            client,
            url: format!("{gateway}/v1/posts"),
            token,
        })
    }

    /// One post; Ok(true) when accepted (202).
    async fn post(&self, n: u64) -> bool {
        let body = json!({"body": format!("bench post {n}")});
        match self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.status() == reqwest::StatusCode::ACCEPTED,
            Err(_) => false,
        }
    }
}

/// What a run at the gateway gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepts {
    /// Requests sent.
    pub sent: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Anything else (another status, no answer, or no client free to send on schedule).
    pub errors: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Accepted per second.
    pub per_second: f64,
    /// Latency percentiles, ms (p50, p99, p99.9).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
}

struct Tally {
    latency: Mutex<Histogram<u64>>,
    sent: AtomicU64,
    accepted: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }))
    }

    async fn record(&self, ok: bool, since: Instant) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = since.elapsed().as_micros().clamp(1, 600_000_000) as u64;
        let _ = self.latency.lock().await.record(micros);
    }

    async fn finish(&self, seconds: f64) -> Accepts {
        let latency = self.latency.lock().await;
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;
        let accepted = self.accepted.load(Ordering::Relaxed);
        Accepts {
            sent: self.sent.load(Ordering::Relaxed),
            accepted,
            errors: self.errors.load(Ordering::Relaxed),
            seconds,
            per_second: accepted as f64 / seconds,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
        }
    }
}

/// `clients` clients post back to back for `duration`.
pub async fn closed_loop(poster: &Poster, clients: usize, duration: Duration) -> Result<Accepts> {
    let tally = Tally::new()?;
    let started = Instant::now();
    let deadline = started + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (poster, tally, counter) = (poster.clone(), tally.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let ok = poster.post(counter.fetch_add(1, Ordering::Relaxed)).await;
                tally.record(ok, t0).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(tally.finish(started.elapsed().as_secs_f64()).await)
}

/// Posts at `rate` per second for `duration`, on schedule: latency counts from when a
/// request was due, so a stalled gateway shows in the percentiles (no coordinated
/// omission). At most `max_in_flight` at once; a request due with none free is an error.
pub async fn open_loop(
    poster: &Poster,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> Result<Accepts> {
    let tally = Tally::new()?;
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tally.record(false, due).await;
            continue;
        };
        let (poster, tally) = (poster.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let ok = poster.post(n).await;
            tally.record(ok, due).await;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(tally.finish(started.elapsed().as_secs_f64()).await)
}

/// The social worker's end-to-end histogram for created posts, as scraped.
#[derive(Debug, Clone, Default)]
pub struct Commits {
    /// Posts committed so far.
    pub count: f64,
    /// Cumulative bucket counts by upper bound (seconds).
    pub buckets: Vec<(f64, f64)>,
}

impl Commits {
    /// Scrapes `metrics_url` (the worker's `/metrics`).
    pub async fn scrape(client: &reqwest::Client, metrics_url: &str) -> Result<Self> {
        let text = client
            .get(metrics_url)
            .send()
            .await
            .with_context(|| format!("GET {metrics_url}"))?
            .text()
            .await?;
        let mut commits = Commits::default();
        let series = "switchyard_end_to_end_latency_seconds";
        let label = "message_type=\"social.post.create\"";
        for line in text.lines().filter(|l| l.contains(label)) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if name.starts_with(&format!("{series}_count")) {
                commits.count = value;
            } else if name.starts_with(&format!("{series}_bucket"))
                && let Some(le) = name.split("le=\"").nth(1).and_then(|r| r.split('"').next())
            {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                commits.buckets.push((bound, value));
            }
        }
        commits
            .buckets
            .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        Ok(commits)
    }

    /// The `q` quantile (seconds) of what was committed between `before` and `self`, as
    /// Prometheus's histogram_quantile estimates it (linear within a bucket).
    pub fn quantile_since(&self, before: &Commits, q: f64) -> Option<f64> {
        let deltas: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |(_, n)| *n);
                (le, n - was)
            })
            .collect();
        let total = deltas.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, n) in &deltas {
            if n >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let width = n - lower.1;
                let share = if width > 0.0 {
                    (rank - lower.1) / width
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, n);
        }
        None
    }
}
