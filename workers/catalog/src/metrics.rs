//! The catalog's own metrics, registered next to the platform's.

use platform::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;

/// Changes to the catalog that were applied (not duplicates, not rejected).
#[derive(Debug, Clone, Default)]
pub struct CatalogMetrics {
    /// Courses created.
    pub courses_created: Counter,
    /// Courses assigned to teachers.
    pub teachers_assigned: Counter,
}

impl CatalogMetrics {
    /// Creates the counters and registers them on the service's `/metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let own = Self::default();
        metrics.register(
            "switchyard_courses_created",
            "Courses created",
            own.courses_created.clone(),
        );
        metrics.register(
            "switchyard_teachers_assigned",
            "Courses assigned to teachers",
            own.teachers_assigned.clone(),
        );
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exported_names_are_the_listed_ones() {
        let metrics = Metrics::new();
        CatalogMetrics::register(&metrics);
        let listed = include_str!("../../../observability/metrics.txt");
        platform::metrics::check_listed(&metrics.encode(), listed, "catalog").unwrap();
    }
}
