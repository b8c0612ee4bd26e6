//! `GET /healthz`: each dependency of a service with its status (`up`, `degraded`,
//! `down`), how long its check took, the last error seen and since when it has been in its
//! current status; overall the worst of them, `200` when up or degraded, `503` when down.
//!
//! Checks are cheap and bounded: a dependency is checked at most once per second whatever
//! the request rate (concurrent requests share the one check in flight), and a check that
//! does not finish within `HEALTH_TIMEOUT_MS` is `down` — a hung database never hangs the
//! probe. A check slower than `HEALTH_SLOW_MS` is `degraded`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::config::{ConfigError, Source, millis_or};

/// A dependency's status, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Up,
    /// Works, but slow or behind.
    Degraded,
    /// Does not work.
    Down,
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its status.
    pub status: Status,
    /// Why, when not up.
    pub error: Option<String>,
}

impl Probe {
    /// Works.
    pub fn up() -> Self {
        Self {
            status: Status::Up,
            error: None,
        }
    }

    /// Works, but not well, because of `why`.
    pub fn degraded(why: impl Into<String>) -> Self {
        Self {
            status: Status::Degraded,
            error: Some(why.into()),
        }
    }

    /// Does not work, because of `why`.
    pub fn down(why: impl Into<String>) -> Self {
        Self {
            status: Status::Down,
            error: Some(why.into()),
        }
    }
}

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Probe> + Send>> + Send + Sync>;

/// Thresholds and bounds of the checks.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// A check that takes longer is `down`.
    pub timeout: Duration,
    /// A check that takes longer is `degraded`.
    pub slow: Duration,
    /// An outbox whose oldest unpublished event is older is `degraded`.
    pub outbox_age: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            slow: Duration::from_millis(250),
            outbox_age: Duration::from_secs(30),
        }
    }
}

impl HealthConfig {
    /// Reads `HEALTH_TIMEOUT_MS` (1000), `HEALTH_SLOW_MS` (250) and `HEALTH_OUTBOX_AGE_MS`
    /// (30000).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let default = Self::default();
        Ok(Self {
            timeout: millis_or(source, "HEALTH_TIMEOUT_MS", default.timeout, 10..=60_000)?,
            slow: millis_or(source, "HEALTH_SLOW_MS", default.slow, 1..=60_000)?,
            outbox_age: millis_or(
                source,
                "HEALTH_OUTBOX_AGE_MS",
                default.outbox_age,
                100..=86_400_000,
            )?,
        })
    }
}

/// The last check of one dependency.
#[derive(Debug, Clone, Serialize)]
struct Report {
    status: Status,
    latency_ms: f64,
    /// Why it is not up now.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The most recent error seen, even if it is up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// When it entered its current status.
    since: String,
    checked_at: String,
    #[serde(skip)]
    at: Instant,
}

struct Dependency {
    name: String,
    check: Check,
    last: tokio::sync::Mutex<Option<Report>>,
}

/// The dependencies of a service and their cached checks.
#[derive(Clone)]
pub struct Health {
    config: HealthConfig,
    dependencies: Arc<Vec<Dependency>>,
}

/// How long a check's result is reused.
const REUSE: Duration = Duration::from_secs(1);

impl Health {
    /// No dependencies yet.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            dependencies: Arc::new(Vec::new()),
        }
    }

    /// The thresholds in force.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// Adds a dependency called `name`, checked by `check`.
    pub fn with<F, Fut>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Probe> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        let mut dependencies: Vec<Dependency> = match Arc::try_unwrap(self.dependencies) {
            Ok(dependencies) => dependencies,
            // Only while building, before any clone exists; a clone keeps its own list.
            Err(shared) => shared
                .iter()
                .map(|d| Dependency {
                    name: d.name.clone(),
                    check: d.check.clone(),
                    last: tokio::sync::Mutex::new(None),
                })
                .collect(),
        };
        dependencies.push(Dependency {
            name: name.to_owned(),
            check,
            last: tokio::sync::Mutex::new(None),
        });
        self.dependencies = Arc::new(dependencies);
        self
    }

    /// The broker connection of `bus`: down while disconnected, degraded while the broker
    /// blocks publishers (reads of what is stored still work).
    pub fn with_broker(self, bus: &crate::bus::Bus) -> Self {
        let bus = bus.clone();
        self.with("rabbitmq", move || {
            let state = bus.broker_state();
            async move {
                match state {
                    crate::bus::BrokerState::Up => Probe::up(),
                    crate::bus::BrokerState::Blocked(_) => Probe::degraded(state.describe()),
                    crate::bus::BrokerState::Down => Probe::down(state.describe()),
                }
            }
        })
    }

    /// The outbox of a service on `metrics`: degraded when its oldest unpublished event is
    /// older than `HEALTH_OUTBOX_AGE_MS` (the relay is behind or cannot publish).
    pub fn with_outbox(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let limit = self.config.outbox_age;
        self.with("outbox", move || {
            let age = metrics.outbox_oldest_age.get();
            let backlog = metrics.outbox_backlog.get();
            async move {
                if age > limit.as_secs_f64() {
                    Probe::degraded(format!(
                        "{backlog} events unpublished, the oldest {age:.0} s old (limit {} s)",
                        limit.as_secs()
                    ))
                } else {
                    Probe::up()
                }
            }
        })
    }

    /// A PostgreSQL database through `pool`: a connection and `SELECT 1`.
    #[cfg(feature = "pg")]
    pub fn with_postgres(self, pool: crate::pg::Pool) -> Self {
        self.with("postgres", move || {
            let pool = pool.clone();
            async move {
                let client = match pool.get().await {
                    Ok(client) => client,
                    Err(error) => return Probe::down(format!("cannot connect: {error}")),
                };
                match client.simple_query("SELECT 1").await {
                    Ok(_) => Probe::up(),
                    Err(error) => Probe::down(crate::pg::describe(&error)),
                }
            }
        })
    }

    /// Checks every dependency (or reuses a check under a second old) and answers with the
    /// HTTP status and the report.
    pub async fn report(&self) -> (u16, Value) {
        let checks = self.dependencies.iter().map(|d| self.check(d));
        let reports = futures::future::join_all(checks).await;
        let overall = reports.iter().map(|r| r.status).max().unwrap_or(Status::Up);
        let mut checks = serde_json::Map::new();
        for (dependency, report) in self.dependencies.iter().zip(reports) {
            checks.insert(
                dependency.name.clone(),
                serde_json::to_value(report).unwrap_or(Value::Null),
            );
        }
        let code = if overall == Status::Down { 503 } else { 200 };
        (
            code,
            serde_json::json!({"status": overall, "checks": Value::Object(checks)}),
        )
    }

    async fn check(&self, dependency: &Dependency) -> Report {
        // One check at a time per dependency: requests arriving meanwhile wait for it and
        // take its result.
        let mut last = dependency.last.lock().await;
        if let Some(report) = last.as_ref()
            && report.at.elapsed() < REUSE
        {
            return report.clone();
        }
        let started = Instant::now();
        let probe = match tokio::time::timeout(self.config.timeout, (dependency.check)()).await {
            Ok(probe) => probe,
            Err(_) => Probe::down(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
        };
        let latency = started.elapsed();
        let probe = if probe.status == Status::Up && latency > self.config.slow {
            Probe::degraded(format!(
                "slow: {} ms (limit {} ms)",
                latency.as_millis(),
                self.config.slow.as_millis()
            ))
        } else {
            probe
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let since = match last.as_ref() {
            Some(previous) if previous.status == probe.status => previous.since.clone(),
            _ => now.clone(),
        };
        let last_error = probe
            .error
            .clone()
            .or_else(|| last.as_ref().and_then(|p| p.last_error.clone()));
        let report = Report {
            status: probe.status,
            latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
            error: probe.error,
            last_error,
            since,
            checked_at: now,
            at: Instant::now(),
        };
        *last = Some(report.clone());
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn config() -> HealthConfig {
        HealthConfig {
            timeout: Duration::from_millis(100),
            slow: Duration::from_millis(40),
            outbox_age: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn the_worst_dependency_decides_and_only_down_is_503() {
        let health = Health::new(config())
            .with("a", || async { Probe::up() })
            .with("b", || async { Probe::degraded("behind") });
        let (code, report) = health.report().await;
        assert_eq!(code, 200);
        assert_eq!(report["status"], "degraded");
        assert_eq!(report["checks"]["b"]["error"], "behind");
        let health = health.with("c", || async { Probe::down("gone") });
        let (code, report) = health.report().await;
        assert_eq!(code, 503);
        assert_eq!(report["status"], "down");
    }

    #[tokio::test]
    async fn a_hung_check_is_down_after_the_timeout_and_a_slow_one_degraded() {
        let health = Health::new(config())
            .with("hung", std::future::pending::<Probe>)
            .with("slow", || async {
                tokio::time::sleep(Duration::from_millis(60)).await;
                Probe::up()
            });
        let started = Instant::now();
        let (code, report) = health.report().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(code, 503);
        assert_eq!(report["checks"]["hung"]["status"], "down");
        assert!(
            report["checks"]["hung"]["error"]
                .as_str()
                .unwrap()
                .contains("no answer within 100 ms")
        );
        assert_eq!(report["checks"]["slow"]["status"], "degraded");
    }

    #[tokio::test]
    async fn checks_are_reused_for_a_second_and_remember_their_last_error() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let health = Health::new(config()).with("db", move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Probe::down("refused")
                } else {
                    Probe::up()
                }
            }
        });
        let reports = futures::future::join_all((0..20).map(|_| health.report())).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one check for 20 requests");
        assert!(reports.iter().all(|(code, _)| *code == 503));
        let first_since = reports[0].1["checks"]["db"]["since"].clone();
        tokio::time::sleep(REUSE + Duration::from_millis(50)).await;
        let (code, report) = health.report().await;
        assert_eq!(code, 200);
        assert_eq!(report["checks"]["db"]["status"], "up");
        assert_eq!(report["checks"]["db"]["last_error"], "refused");
        assert!(report["checks"]["db"].get("error").is_none());
        assert_ne!(report["checks"]["db"]["since"], first_since);
    }
}
