//! The accounts worker's own metrics, registered next to the platform's.

use platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// A single `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// Registrations and logins.
#[derive(Debug, Clone, Default)]
pub struct AccountsMetrics {
    /// Users registered (applied, not duplicates or rejections).
    pub registrations: Counter,
    /// Logins by outcome.
    pub logins: Family<OutcomeLabel, Counter>,
}

impl AccountsMetrics {
    /// Creates the counters and registers them on the service's `/metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let own = Self::default();
        metrics.register(
            "switchyard_registrations",
            "Users registered",
            own.registrations.clone(),
        );
        metrics.register(
            "switchyard_logins",
            "Logins, by outcome",
            own.logins.clone(),
        );
        own
    }

    /// Counts a login that ended with `outcome` (`success` or `failure`).
    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exported_names_are_the_listed_ones() {
        let metrics = Metrics::new();
        let own = AccountsMetrics::register(&metrics);
        own.login("success");
        let listed = include_str!("../../../observability/metrics.txt");
        platform::metrics::check_listed(&metrics.encode(), listed, "accounts").unwrap();
    }
}
