//! Prometheus metrics (OpenMetrics text on `/metrics`), one registry per service.
//!
//! Label values are always from small, fixed sets (route templates, queue names, routing
//! keys, outcomes), never user input or ids, so the series count stays bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of HTTP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template, e.g. `/v1/courses/{id}`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// `2xx`, `4xx`, `5xx`…
    pub status_class: String,
}

/// Labels of HTTP durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
}

/// Labels of published messages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// Exchange (without the deployment prefix).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// `confirmed`, `unroutable`, `nacked` or `failed`.
    pub outcome: String,
}

/// Labels of consumed messages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumeLabels {
    /// Queue (without the deployment prefix).
    pub queue: String,
    /// `ack`, `retry` or `dead`.
    pub outcome: String,
}

/// Labels of a dead-lettered message.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// Queue it died in (without the deployment prefix).
    pub queue: String,
    /// One of `platform::bus::consumer::reasons`.
    pub reason: String,
}

/// A single `queue` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// Queue (without the deployment prefix).
    pub queue: String,
}

/// A single `message_type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Message type (routing key it was defined with).
    pub message_type: String,
}

/// A single `operation` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// Store operation, e.g. `command_transaction`.
    pub operation: String,
}

/// A single `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why, from a fixed set.
    pub reason: String,
}

/// A single `upstream` label: a service the gateway talks to. Not `service`, which the
/// scrape sets to the service exporting the series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// Service name.
    pub upstream: String,
}

/// A request the gateway refused at once: for which service, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The service the request was for.
    pub upstream: String,
    /// `queue_full`, `broker_blocked`, `no_consumer`, `broker_unavailable` or
    /// `circuit_open`.
    pub reason: String,
}

/// A breaker transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Service whose breaker changed.
    pub upstream: String,
    /// `closed`, `open` or `half_open`.
    pub to: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to 30 s, with 0.5 s as a boundary because the latency SLO is "under 500 ms".
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// Histogram boundaries, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How `observability/metrics.txt` heads a service's own metrics: `# Business: <service>`.
pub const BUSINESS_SECTION: &str = "# Business: ";

/// The metric names `metrics_txt` (the text of `observability/metrics.txt`) lists as
/// `service`'s own, from its `# Business: <service>` section up to the next heading.
pub fn business_names<'a>(metrics_txt: &'a str, service: &str) -> Vec<&'a str> {
    let heading = format!("{BUSINESS_SECTION}{service}");
    metrics_txt
        .lines()
        .map(str::trim)
        .skip_while(|l| !(l == &heading || l.starts_with(&format!("{heading} "))))
        .skip(1)
        .take_while(|l| !l.starts_with('#'))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Checks a service's exposition `text` against `metrics_txt`: every name it lists as the
/// service's own is exported, and every `switchyard_` name exported is listed somewhere.
/// (Labelled families show only once they have a series; give each one first.)
pub fn check_listed(text: &str, metrics_txt: &str, service: &str) -> Result<(), String> {
    let base = |name: &str| name.strip_suffix("_total").unwrap_or(name).to_owned();
    let listed: Vec<String> = metrics_txt
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(base)
        .collect();
    let mut problems = Vec::new();
    for name in business_names(metrics_txt, service) {
        if !text.contains(&format!("# TYPE {} ", base(name))) {
            problems.push(format!("{name} is listed for {service} but not exported"));
        }
    }
    if business_names(metrics_txt, service).is_empty() {
        problems.push(format!(
            "metrics.txt has no section {BUSINESS_SECTION}{service}"
        ));
    }
    for exported in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("switchyard_"))
    {
        if !listed.iter().any(|l| l == exported) {
            problems.push(format!("{exported} is exported but not in metrics.txt"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every metric a service exposes.
pub struct Metrics {
    // Behind a lock only so services can add their own metrics after start-up; a scrape
    // holds it for the encoding.
    registry: Mutex<Registry>,
    /// HTTP requests by route, method and status class.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request duration.
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Published messages by outcome.
    pub published: Family<PublishLabels, Counter>,
    /// Consumed messages by outcome.
    pub consumed: Family<ConsumeLabels, Counter>,
    /// Dead-lettered messages by reason.
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    /// Time to handle a message.
    pub handling: Family<QueueLabel, Histogram, fn() -> Histogram>,
    /// From the gateway accepting a command to the worker committing it.
    pub end_to_end: Family<TypeLabel, Histogram, fn() -> Histogram>,
    /// Events committed but not yet published.
    pub outbox_backlog: Gauge,
    /// Age of the oldest unpublished event.
    pub outbox_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Redelivered messages recognised and skipped.
    pub inbox_duplicates: Counter,
    /// Store operation duration.
    pub db_duration: Family<OperationLabel, Histogram, fn() -> Histogram>,
    /// Open HTTP connections.
    pub http_open_connections: Gauge,
    /// HTTP connections refused at a cap, by which cap.
    pub http_connections_refused: Family<ReasonLabel, Counter>,
    /// 1 while connected to the broker.
    pub broker_connected: Gauge,
    /// Broker reconnections.
    pub broker_reconnects: Counter,
    /// 1 while the broker blocks this service's publishers (a resource alarm).
    pub broker_blocked: Gauge,
    /// The gateway's circuit breaker per service it queries: 0 closed, 1 open, 2 half-open.
    pub circuit_breaker_state: Family<UpstreamLabel, Gauge>,
    /// Circuit breaker transitions, by service and the state entered.
    pub circuit_breaker_transitions: Family<TransitionLabels, Counter>,
    /// Requests the gateway refused at once with 503 and `Retry-After`, by service and
    /// reason: backpressure and breakers, as opposed to failures.
    pub gateway_refusals: Family<RefusalLabels, Counter>,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let metrics = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            published: Family::default(),
            consumed: Family::default(),
            dead_lettered: Family::default(),
            handling: Family::new_with_constructor(latency_histogram),
            end_to_end: Family::new_with_constructor(latency_histogram),
            outbox_backlog: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
            inbox_duplicates: Counter::default(),
            db_duration: Family::new_with_constructor(latency_histogram),
            http_open_connections: Gauge::default(),
            http_connections_refused: Family::default(),
            broker_connected: Gauge::default(),
            broker_reconnects: Counter::default(),
            broker_blocked: Gauge::default(),
            circuit_breaker_state: Family::default(),
            circuit_breaker_transitions: Family::default(),
            gateway_refusals: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        let r = &mut registry;
        r.register(
            "switchyard_http_requests",
            "HTTP requests served",
            metrics.http_requests.clone(),
        );
        r.register(
            "switchyard_http_request_duration_seconds",
            "HTTP request duration",
            metrics.http_duration.clone(),
        );
        r.register(
            "switchyard_http_open_connections",
            "HTTP connections open",
            metrics.http_open_connections.clone(),
        );
        r.register(
            "switchyard_http_connections_refused",
            "HTTP connections refused at a cap (reason: overall or per_client)",
            metrics.http_connections_refused.clone(),
        );
        r.register(
            "switchyard_messages_published",
            "Messages published, by outcome",
            metrics.published.clone(),
        );
        r.register(
            "switchyard_messages_consumed",
            "Messages consumed, by outcome",
            metrics.consumed.clone(),
        );
        r.register(
            "switchyard_messages_dead_lettered",
            "Messages moved to a dead-letter queue, by reason",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "switchyard_message_handling_duration_seconds",
            "Time to handle a message",
            metrics.handling.clone(),
        );
        r.register(
            "switchyard_end_to_end_latency_seconds",
            "From the gateway accepting a command to its commit",
            metrics.end_to_end.clone(),
        );
        r.register(
            "switchyard_outbox_backlog",
            "Events committed, not yet published",
            metrics.outbox_backlog.clone(),
        );
        r.register(
            "switchyard_outbox_oldest_age_seconds",
            "Age of the oldest unpublished event",
            metrics.outbox_oldest_age.clone(),
        );
        r.register(
            "switchyard_inbox_duplicates",
            "Redelivered messages skipped",
            metrics.inbox_duplicates.clone(),
        );
        r.register(
            "switchyard_db_operation_duration_seconds",
            "Store operation duration",
            metrics.db_duration.clone(),
        );
        r.register(
            "switchyard_broker_connected",
            "1 while connected to RabbitMQ",
            metrics.broker_connected.clone(),
        );
        r.register(
            "switchyard_broker_reconnects",
            "Reconnections to RabbitMQ",
            metrics.broker_reconnects.clone(),
        );
        r.register(
            "switchyard_broker_blocked",
            "1 while RabbitMQ blocks this service's publishers (memory or disk alarm)",
            metrics.broker_blocked.clone(),
        );
        r.register(
            "switchyard_circuit_breaker_state",
            "The gateway's circuit breaker for a service's queries: 0 closed, 1 open, 2 half-open",
            metrics.circuit_breaker_state.clone(),
        );
        r.register(
            "switchyard_circuit_breaker_transitions",
            "Circuit breaker transitions, by upstream service and the state entered",
            metrics.circuit_breaker_transitions.clone(),
        );
        r.register(
            "switchyard_gateway_refusals",
            "Requests the gateway refused at once (503 with Retry-After), by upstream service and reason",
            metrics.gateway_refusals.clone(),
        );
        Arc::new(Self {
            registry: Mutex::new(registry),
            ..metrics
        })
    }

    /// Registers one of the service's own metrics (its business counters) next to the
    /// platform's, so it shows on the same `/metrics`. `name` starts with `switchyard_` and
    /// is listed in `observability/metrics.txt` under the service's business section.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.register(name, help, metric);
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }

    /// Records a circuit breaker entering `state` (`gauge` is its numeric value).
    pub fn observe_breaker(&self, service: &str, gauge: i64, state: &str) {
        let label = UpstreamLabel {
            upstream: service.to_owned(),
        };
        self.circuit_breaker_state.get_or_create(&label).set(gauge);
        let transition = TransitionLabels {
            upstream: service.to_owned(),
            to: state.to_owned(),
        };
        self.circuit_breaker_transitions
            .get_or_create(&transition)
            .inc();
    }

    /// Records one handled HTTP request.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let class = format!("{}xx", status / 100);
        let labels = HttpLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status_class: class,
        };
        self.http_requests.get_or_create(&labels).inc();
        let route = RouteLabels {
            route: labels.route,
            method: labels.method,
        };
        self.http_duration
            .get_or_create(&route)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a connection refused at a cap (`overall` or `per_client`).
    pub fn observe_refused_connection(&self, cap: &str) {
        self.http_connections_refused
            .get_or_create(&ReasonLabel {
                reason: cap.to_owned(),
            })
            .inc();
    }

    /// Records a store operation's duration.
    pub fn observe_db(&self, operation: &str, elapsed: Duration) {
        self.db_duration
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Strips the deployment prefix from a queue or exchange name (`switchyard.catalog.commands`
/// → `catalog.commands`), so dashboards work whatever the prefix.
pub fn unprefixed<'a>(prefix: &str, name: &'a str) -> &'a str {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(name)
}

/// The route template of a request path: known words are kept, anything else (ids,
/// operation ids, typos) becomes `{id}`, and foreign paths become `other`, so random URLs
/// cannot mint new series.
pub fn route_template(path: &str) -> String {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if segments.len() > 6 {
        return "other".into();
    }
    let parts: Vec<&str> = segments
        .iter()
        .map(|s| if ROUTE_WORDS.contains(s) { *s } else { "{id}" })
        .collect();
    let template = format!("/{}", parts.join("/"));
    // Only templates that name a real route become label values: anything else (probes
    // for `/wp-admin`, made-up shapes) shares one series.
    if ROUTES.contains(&template.as_str()) {
        template
    } else {
        "other".into()
    }
}

/// Path segments that are part of a route (everything else is an id).
const ROUTE_WORDS: [&str; 17] = [
    "v1",
    "courses",
    "teachers",
    "operations",
    "auth",
    "register",
    "login",
    "users",
    "me",
    "posts",
    "reposts",
    "timeline",
    "livez",
    "readyz",
    "healthz",
    "metrics",
    "openapi.json",
];

/// Every route template the HTTP servers answer; the closed set of `route` label values
/// (plus `other`).
pub const ROUTES: [&str; 23] = [
    "/",
    "/livez",
    "/readyz",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/v1/auth/register",
    "/v1/auth/login",
    "/v1/users/me",
    "/v1/users/{id}",
    "/v1/users/{id}/posts",
    "/v1/posts",
    "/v1/posts/{id}",
    "/v1/posts/{id}/reposts",
    "/v1/timeline",
    "/v1/courses",
    "/v1/courses/{id}",
    "/v1/teachers",
    "/v1/teachers/{id}",
    "/v1/teachers/{id}/courses",
    "/v1/teachers/{id}/courses/{id}",
    "/v1/operations/{id}",
    "/v1/operations",
];

/// The `method` label: a standard method's name, `other` for anything else (a client may
/// send any token as a method, and each would be a new series).
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_hide_ids_and_foreign_paths() {
        assert_eq!(route_template("/v1/courses"), "/v1/courses");
        assert_eq!(route_template("/v1/courses/0192-abc"), "/v1/courses/{id}");
        assert_eq!(
            route_template("/v1/teachers/a/courses/b"),
            "/v1/teachers/{id}/courses/{id}"
        );
        assert_eq!(route_template("/wp-admin/setup.php"), "other");
        assert_eq!(route_template("/v1/a/b/c"), "other");
        assert_eq!(route_template("/v1/courses/a/b"), "other");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"FROB").unwrap()),
            "other"
        );
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        assert_eq!(route_template("/"), "/");
        assert_eq!(route_template("/v1/users/me"), "/v1/users/me");
    }

    #[test]
    fn counters_show_up_in_the_exposition_with_their_conventional_names() {
        let metrics = Metrics::new();
        metrics.observe_http("/v1/courses", "POST", 202, Duration::from_millis(3));
        let posts = Counter::<u64>::default();
        metrics.register("switchyard_posts", "Posts published", posts.clone());
        posts.inc();
        let text = metrics.encode();
        assert!(text.contains("switchyard_http_requests_total{route=\"/v1/courses\",method=\"POST\",status_class=\"2xx\"} 1"), "{text}");
        assert!(text.contains("switchyard_http_request_duration_seconds_bucket"));
        assert!(text.contains("switchyard_posts_total 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_metric_the_dashboards_and_alerts_use_is_exported() {
        let listed = include_str!("../../observability/metrics.txt");
        let metrics = Metrics::new();
        // Labelled families appear only once they have a series.
        let d = Duration::from_millis(1);
        metrics.observe_http("/v1/courses", "GET", 200, d);
        metrics.observe_db("command_transaction", d);
        let label = |v: &str| v.to_owned();
        metrics
            .published
            .get_or_create(&PublishLabels {
                exchange: label("e"),
                routing_key: label("k"),
                outcome: label("confirmed"),
            })
            .inc();
        metrics
            .consumed
            .get_or_create(&ConsumeLabels {
                queue: label("q"),
                outcome: label("ack"),
            })
            .inc();
        metrics
            .dead_lettered
            .get_or_create(&DeadLetterLabels {
                queue: label("q"),
                reason: label("undecodable"),
            })
            .inc();
        metrics
            .handling
            .get_or_create(&QueueLabel { queue: label("q") })
            .observe(0.1);
        metrics
            .end_to_end
            .get_or_create(&TypeLabel {
                message_type: label("t"),
            })
            .observe(0.1);
        metrics.observe_refused_connection("overall");
        metrics.observe_breaker("catalog", 1, "open");
        metrics
            .gateway_refusals
            .get_or_create(&RefusalLabels {
                upstream: label("social"),
                reason: label("queue_full"),
            })
            .inc();
        let text = metrics.encode();
        for name in platform_names(listed) {
            // Counters are declared without `_total` in the TYPE line.
            let base = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{name} is listed but not exported:\n{text}"
            );
        }
    }

    /// The names `metrics.txt` lists before the business sections, which each service
    /// checks itself.
    fn platform_names(listed: &str) -> impl Iterator<Item = &str> {
        listed
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with(BUSINESS_SECTION))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    }

    #[test]
    fn prefixes_are_stripped_from_names() {
        assert_eq!(
            unprefixed("switchyard", "switchyard.catalog.commands"),
            "catalog.commands"
        );
        assert_eq!(unprefixed("switchyard", "amq.direct"), "amq.direct");
    }
}
