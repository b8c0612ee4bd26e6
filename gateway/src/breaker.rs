//! Circuit breaking for queries, one breaker per service.
//!
//! A service that stops answering (its workers dead, stuck or stopped) would otherwise
//! hold every read for the whole query timeout, tying up connections and the caller's
//! patience. After `failures` consecutive timeouts the breaker opens: for `open_for` its
//! queries are answered at once with 503 and `Retry-After`. Then one query is let through
//! as a probe (half-open): an answer of any kind (a rejection too — the service is alive)
//! closes the breaker, another timeout opens it again. Only timeouts count: a refused
//! publish is already answered at once, and a rejection is the service working.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use platform::config::{ConfigError, Source, millis_or, parse_or};
use platform::metrics::Metrics;

/// When breakers open and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive query timeouts that open a service's breaker.
    pub failures: u32,
    /// How long an open breaker refuses before it lets a probe through.
    pub open_for: Duration,
}

impl BreakerConfig {
    /// Reads `BREAKER_FAILURES` (default 5) and `BREAKER_OPEN_MS` (default 5000).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let failures: u32 = parse_or(source, "BREAKER_FAILURES", 5)?;
        if !(1..=1000).contains(&failures) {
            let value = failures.to_string();
            return Err(ConfigError::new(
                "BREAKER_FAILURES",
                &value,
                "must be 1 to 1000",
            ));
        }
        let open_for = millis_or(
            source,
            "BREAKER_OPEN_MS",
            Duration::from_secs(5),
            100..=600_000,
        )?;
        Ok(Self { failures, open_for })
    }
}

/// A breaker's state, as the `switchyard_circuit_breaker_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Queries go through.
    Closed,
    /// Queries are refused at once.
    Open,
    /// One probe is in flight; the others are refused.
    HalfOpen,
}

impl State {
    fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Circuit {
    state: State,
    /// Consecutive timeouts while closed.
    failures: u32,
    opened_at: Instant,
}

/// What a query may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; report how it went with [`Breakers::record`].
    Go {
        /// This query is the half-open probe.
        probe: bool,
    },
    /// Refused: the service is not answering; try again after this long.
    Refused {
        /// Until the next probe may go.
        retry_after: Duration,
    },
}

/// How an admitted query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The service answered (whatever it said).
    Answered,
    /// No answer within the query timeout.
    TimedOut,
    /// Ended without telling (the caller left, the publish failed): says nothing about the
    /// service; a probe that ends so lets the next query probe instead.
    Abandoned,
}

/// The breakers of every service the gateway queries.
#[derive(Clone)]
pub struct Breakers {
    config: BreakerConfig,
    circuits: Arc<Mutex<HashMap<String, Circuit>>>,
    metrics: Option<Arc<Metrics>>,
}

impl Breakers {
    /// Breakers configured by `config`, reporting to `metrics`; the `services` known up
    /// front show as closed from the start (a gauge with no series looks like no data).
    pub fn new(config: BreakerConfig, metrics: Option<Arc<Metrics>>, services: &[&str]) -> Self {
        if let Some(metrics) = &metrics {
            for service in services {
                metrics
                    .circuit_breaker_state
                    .get_or_create(&platform::metrics::UpstreamLabel {
                        upstream: (*service).to_owned(),
                    })
                    .set(State::Closed.gauge());
            }
        }
        Self {
            config,
            circuits: Arc::default(),
            metrics,
        }
    }

    fn circuits(&self) -> MutexGuard<'_, HashMap<String, Circuit>> {
        // A panic while holding the lock cannot leave a circuit half-written (every update
        // is a few field stores), so a poisoned lock is still usable.
        self.circuits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May a query to `service` go now?
    pub fn admit(&self, service: &str, now: Instant) -> Admission {
        let mut circuits = self.circuits();
        let Some(circuit) = circuits.get_mut(service) else {
            return Admission::Go { probe: false };
        };
        match circuit.state {
            State::Closed => Admission::Go { probe: false },
            State::Open => {
                let reopens = circuit.opened_at + self.config.open_for;
                if now >= reopens {
                    self.transition(service, circuit, State::HalfOpen, now);
                    Admission::Go { probe: true }
                } else {
                    Admission::Refused {
                        retry_after: reopens - now,
                    }
                }
            }
            // The probe decides; until it does, the others wait a little.
            State::HalfOpen => Admission::Refused {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// Reports how a query admitted by [`Breakers::admit`] ended.
    pub fn record(&self, service: &str, probe: bool, result: Ended, now: Instant) {
        let mut circuits = self.circuits();
        let circuit = circuits.entry(service.to_owned()).or_insert(Circuit {
            state: State::Closed,
            failures: 0,
            opened_at: now,
        });
        match (result, circuit.state) {
            (Ended::Answered, State::Closed) => circuit.failures = 0,
            (Ended::Answered, _) => {
                circuit.failures = 0;
                self.transition(service, circuit, State::Closed, now);
            }
            (Ended::TimedOut, State::Closed) => {
                circuit.failures += 1;
                if circuit.failures >= self.config.failures {
                    self.transition(service, circuit, State::Open, now);
                }
            }
            (Ended::TimedOut, State::HalfOpen) if probe => {
                self.transition(service, circuit, State::Open, now);
            }
            (Ended::Abandoned, State::HalfOpen) if probe => {
                // Open again, already due: the next query is the probe.
                self.transition(service, circuit, State::Open, now);
                circuit.opened_at = now.checked_sub(self.config.open_for).unwrap_or(now);
            }
            // A query admitted before the breaker opened, ending late: already counted.
            _ => {}
        }
    }

    /// Starts a query to `service`: an [`Attempt`] to finish with how it ended (dropped
    /// unfinished, it counts as abandoned), or how long to wait when the breaker is open.
    pub fn attempt(&self, service: &str) -> std::result::Result<Attempt, Duration> {
        match self.admit(service, Instant::now()) {
            Admission::Go { probe } => Ok(Attempt {
                breakers: self.clone(),
                service: service.to_owned(),
                probe,
                ended: None,
            }),
            Admission::Refused { retry_after } => Err(retry_after),
        }
    }

    /// The state of `service`'s breaker.
    pub fn state(&self, service: &str) -> State {
        self.circuits()
            .get(service)
            .map_or(State::Closed, |circuit| circuit.state)
    }

    fn transition(&self, service: &str, circuit: &mut Circuit, to: State, now: Instant) {
        if circuit.state == to {
            return;
        }
        circuit.state = to;
        if to == State::Open {
            circuit.opened_at = now;
        }
        match to {
            State::Open => {
                tracing::warn!(
                    service,
                    open_for_ms = self.config.open_for.as_millis() as u64,
                    "circuit breaker open: the service's queries keep timing out"
                );
            }
            State::HalfOpen => tracing::info!(service, "circuit breaker half-open: probing"),
            State::Closed => tracing::info!(service, "circuit breaker closed: the service answers"),
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_breaker(service, to.gauge(), to.label());
        }
    }
}

/// One query under a breaker; reports how it ended when finished or dropped.
pub struct Attempt {
    breakers: Breakers,
    service: String,
    probe: bool,
    ended: Option<Ended>,
}

impl Attempt {
    /// How the query ended.
    pub fn finish(mut self, ended: Ended) {
        self.ended = Some(ended);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let ended = self.ended.unwrap_or(Ended::Abandoned);
        self.breakers
            .record(&self.service, self.probe, ended, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(
            BreakerConfig {
                failures: 3,
                open_for: Duration::from_secs(5),
            },
            None,
            &[],
        )
    }

    #[test]
    fn consecutive_timeouts_open_it_and_an_answer_in_between_resets_the_count() {
        let b = breakers();
        let t = Instant::now();
        b.record("catalog", false, Ended::TimedOut, t);
        b.record("catalog", false, Ended::TimedOut, t);
        b.record("catalog", false, Ended::Answered, t);
        b.record("catalog", false, Ended::TimedOut, t);
        b.record("catalog", false, Ended::TimedOut, t);
        assert_eq!(b.state("catalog"), State::Closed);
        b.record("catalog", false, Ended::TimedOut, t);
        assert_eq!(b.state("catalog"), State::Open);
        assert_eq!(
            b.admit("catalog", t + Duration::from_secs(2)),
            Admission::Refused {
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(b.admit("social", t), Admission::Go { probe: false });
    }

    #[test]
    fn after_the_open_period_one_probe_goes_and_its_answer_closes_it() {
        let b = breakers();
        let t = Instant::now();
        for _ in 0..3 {
            b.record("catalog", false, Ended::TimedOut, t);
        }
        let later = t + Duration::from_secs(5);
        assert_eq!(b.admit("catalog", later), Admission::Go { probe: true });
        assert_eq!(b.state("catalog"), State::HalfOpen);
        assert!(matches!(
            b.admit("catalog", later),
            Admission::Refused { .. }
        ));
        b.record("catalog", true, Ended::Answered, later);
        assert_eq!(b.state("catalog"), State::Closed);
        assert_eq!(b.admit("catalog", later), Admission::Go { probe: false });
    }

    #[test]
    fn a_probe_that_times_out_opens_it_again_and_an_abandoned_probe_hands_over() {
        let b = breakers();
        let t = Instant::now();
        for _ in 0..3 {
            b.record("catalog", false, Ended::TimedOut, t);
        }
        let probe_at = t + Duration::from_secs(5);
        assert_eq!(b.admit("catalog", probe_at), Admission::Go { probe: true });
        b.record("catalog", true, Ended::TimedOut, probe_at);
        assert_eq!(b.state("catalog"), State::Open);
        assert!(matches!(
            b.admit("catalog", probe_at + Duration::from_secs(1)),
            Admission::Refused { .. }
        ));
        let next = probe_at + Duration::from_secs(5);
        assert_eq!(b.admit("catalog", next), Admission::Go { probe: true });
        b.record("catalog", true, Ended::Abandoned, next);
        assert_eq!(b.admit("catalog", next), Admission::Go { probe: true });
        // A late timeout of a query admitted before the breaker opened changes nothing.
        b.record("catalog", false, Ended::TimedOut, next);
        assert_eq!(b.state("catalog"), State::HalfOpen);
    }
}
