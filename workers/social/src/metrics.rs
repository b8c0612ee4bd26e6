//! The social worker's own metrics, registered next to the platform's.

use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;

/// Posts and reposts that were applied (not duplicates, not rejected).
#[derive(Debug, Clone, Default)]
pub struct SocialMetrics {
    /// Posts published.
    pub posts: Counter,
    /// Reposts.
    pub reposts: Counter,
}

impl SocialMetrics {
    /// Creates the counters and registers them on the service's `/metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let own = Self::default();
        metrics.register("switchyard_posts", "Posts published", own.posts.clone());
        metrics.register("switchyard_reposts", "Reposts", own.reposts.clone());
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exported_names_are_the_listed_ones() {
        let metrics = Metrics::new();
        SocialMetrics::register(&metrics);
        let listed = include_str!("../../../observability/metrics.txt");
        platform::metrics::check_listed(&metrics.encode(), listed, "social").unwrap();
    }
}
