//! Latency histograms and status counts per route, and the summary printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// How a request ended, as far as the run's totals care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A write the gateway accepted (202, or 201/200/204 with an answer).
    Accepted,
    /// A read or a login that answered.
    Answered,
    /// Refused for now: 429, 503, or no connection (the stack is busy or recovering).
    Refused,
    /// A business rejection (404, 409, 422 …): the request was wrong for the state.
    Rejected,
    /// Anything else: a 5xx other than 503, a timeout, an unexpected status.
    Error,
}

/// Classifies a response: `status` is `None` when no response came.
pub fn classify(status: Option<u16>, write: bool) -> Class {
    match status {
        None | Some(429 | 503) => Class::Refused,
        Some(200..=299) if write => Class::Accepted,
        Some(200..=299) => Class::Answered,
        Some(400..=499) => Class::Rejected,
        Some(_) => Class::Error,
    }
}

/// One route's numbers.
struct RouteStats {
    /// `None` only if hdrhistogram refused the bounds, which are within its documented range.
    latency: Option<Histogram<u64>>,
    count: u64,
    statuses: BTreeMap<String, u64>,
}

impl RouteStats {
    fn new() -> Self {
        Self {
            // 1 µs to an hour at 3 significant digits; longer saturates at an hour.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
            count: 0,
            statuses: BTreeMap::new(),
        }
    }
}

/// Everything measured during a run.
pub struct Stats {
    routes: BTreeMap<&'static str, RouteStats>,
    /// Totals per class.
    pub accepted: u64,
    /// Reads and logins answered.
    pub answered: u64,
    /// Refused (429, 503, no connection).
    pub refused: u64,
    /// Business rejections.
    pub rejected: u64,
    /// Errors.
    pub errors: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty.
    pub fn new() -> Self {
        Self {
            routes: BTreeMap::new(),
            accepted: 0,
            answered: 0,
            refused: 0,
            rejected: 0,
            errors: 0,
        }
    }

    /// Records one request to `route` that took `latency` and ended with `status` (`None`:
    /// no response).
    pub fn record(
        &mut self,
        route: &'static str,
        status: Option<u16>,
        class: Class,
        latency: Duration,
    ) {
        let entry = self.routes.entry(route).or_insert_with(RouteStats::new);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(latency) = &mut entry.latency {
            latency.saturating_record(micros);
        }
        entry.count += 1;
        let key = status.map_or_else(|| "no response".to_owned(), |s| s.to_string());
        *entry.statuses.entry(key).or_default() += 1;
        match class {
            Class::Accepted => self.accepted += 1,
            Class::Answered => self.answered += 1,
            Class::Refused => self.refused += 1,
            Class::Rejected => self.rejected += 1,
            Class::Error => self.errors += 1,
        }
    }

    /// Requests recorded.
    pub fn total(&self) -> u64 {
        self.routes.values().map(|r| r.count).sum()
    }

    /// The summary table: per route, count, rate, p50/p90/p99/max and status codes.
    pub fn render(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(0.001);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}  statuses",
            "route", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let ms = |h: Option<&Histogram<u64>>, q: f64| {
            h.map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        for (route, stats) in &self.routes {
            let h = stats.latency.as_ref();
            let statuses: Vec<String> = stats
                .statuses
                .iter()
                .map(|(code, n)| format!("{code}×{n}"))
                .collect();
            let _ = writeln!(
                out,
                "{route:<34} {:>7} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
                stats.count,
                stats.count as f64 / secs,
                ms(h, 0.5),
                ms(h, 0.9),
                ms(h, 0.99),
                ms(h, 1.0),
                statuses.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "total {} requests in {:.1}s = {:.1} req/s: accepted {}, answered {}, refused {}, rejected {}, errors {}",
            self.total(),
            secs,
            self.total() as f64 / secs,
            self.accepted,
            self.answered,
            self.refused,
            self.rejected,
            self.errors
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified_by_status_and_kind() {
        assert_eq!(classify(Some(202), true), Class::Accepted);
        assert_eq!(classify(Some(200), false), Class::Answered);
        assert_eq!(classify(Some(503), true), Class::Refused);
        assert_eq!(classify(Some(429), false), Class::Refused);
        assert_eq!(classify(None, true), Class::Refused);
        assert_eq!(classify(Some(409), true), Class::Rejected);
        assert_eq!(classify(Some(500), true), Class::Error);
        assert_eq!(classify(Some(504), false), Class::Error);
    }

    #[test]
    fn the_summary_has_percentiles_and_status_counts_per_route() {
        let mut stats = Stats::new();
        for ms in 1..=100 {
            stats.record(
                "GET /v1/timeline",
                Some(200),
                Class::Answered,
                Duration::from_millis(ms),
            );
        }
        stats.record(
            "POST /v1/posts",
            Some(503),
            Class::Refused,
            Duration::from_millis(3),
        );
        let text = stats.render(Duration::from_secs(10));
        let line = text
            .lines()
            .find(|l| l.starts_with("GET /v1/timeline"))
            .unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "100", "count");
        assert_eq!(fields[3], "10.0", "req/s");
        assert!(fields[4].starts_with("50."), "p50 {}", fields[4]);
        assert!(fields[6].starts_with("99."), "p99 {}", fields[6]);
        assert!(line.contains("200×100"));
        assert!(text.contains("refused 1"));
        assert_eq!(stats.total(), 101);
    }
}
