//! Logs and traces. Logs are JSON lines on stdout filtered by `SWITCHYARD_LOG` (`RUST_LOG`
//! syntax, default `info`). Traces go out by OTLP/HTTP when `SWITCHYARD_OTLP_ENDPOINT` is
//! set (e.g. `http://127.0.0.1:4318/v1/traces`; Jaeger ingests OTLP natively), sampled at
//! `SWITCHYARD_TRACE_SAMPLE_RATIO` (default 1.0), through a batch processor on its own
//! thread so a slow or absent collector never blocks a request.
//!
//! Trace context crosses the broker in the envelope's W3C `traceparent`: [`traceparent`]
//! renders the current span's context, [`continue_trace`] makes a span a child of one.

use std::collections::HashMap;

use crate::config::{ConfigError, Source};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// What to log and where and how much to trace.
#[derive(Debug, Clone, Default)]
pub struct TraceConfig {
    /// OTLP/HTTP traces endpoint; no export when absent.
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces kept, 0.0–1.0.
    pub sample_ratio: f64,
    /// Log filter (`RUST_LOG` syntax); `info` when absent.
    pub log: Option<String>,
}

impl TraceConfig {
    /// Reads `OTLP_ENDPOINT`, `TRACE_SAMPLE_RATIO` and `LOG` from `source`, refusing bad
    /// values (services: a typo in a deployment file should stop the start, not be ignored).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let sample_ratio: f64 = crate::config::parse_or(source, "TRACE_SAMPLE_RATIO", 1.0)?;
        if !(0.0..=1.0).contains(&sample_ratio) {
            let value = sample_ratio.to_string();
            return Err(ConfigError::new(
                "TRACE_SAMPLE_RATIO",
                &value,
                "must be 0.0 to 1.0",
            ));
        }
        let otlp_endpoint = source.get("OTLP_ENDPOINT").filter(|e| !e.is_empty());
        if let Some(endpoint) = &otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "OTLP_ENDPOINT",
                endpoint,
                "must be an http:// or https:// URL (OTLP/HTTP)",
            ));
        }
        let log = source.get("LOG");
        if let Some(filter) = &log {
            EnvFilter::try_new(filter).map_err(|e| ConfigError::new("LOG", filter, e))?;
        }
        Ok(Self {
            otlp_endpoint,
            sample_ratio,
            log,
        })
    }
}

/// Flushes and stops the trace exporter when dropped (at the end of `main`).
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests call this before looking at what arrived).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            eprintln!("trace flush failed: {error}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {error}");
        }
    }
}

/// Installs JSON logs and traces as configured. A second call in one process (tests) is
/// ignored and returns an inert guard.
pub fn init_with(service: &'static str, config: &TraceConfig) -> TelemetryGuard {
    init_with_writer(service, config, BoxMakeWriter::new(std::io::stdout))
}

/// As [`init_with`], writing log lines to `writer` (tests capture them).
pub fn init_with_writer(
    service: &'static str,
    config: &TraceConfig,
    writer: BoxMakeWriter,
) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = config
        .log
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson { service })
        .with_writer(writer);
    let provider = config.otlp_endpoint.as_ref().and_then(|endpoint| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(endpoint.clone())
            .build();
        match exporter {
            Ok(exporter) => {
                let resource = opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build();
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                            config.sample_ratio,
                        ))))
                        .with_resource(resource)
                        .build(),
                )
            }
            Err(error) => {
                eprintln!("{service}: traces disabled, cannot build the OTLP exporter: {error}");
                None
            }
        }
    });
    // The log filter applies to the log lines only: `SWITCHYARD_LOG=warn` quiets the logs
    // without turning off the info-level request and message spans that traces are made
    // of. Spans below info (library internals) are never created.
    let global = filter
        .max_level_hint()
        .map_or(LevelFilter::TRACE, |level| level.max(LevelFilter::INFO));
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("switchyard")));
    let installed = tracing_subscriber::registry()
        .with(global)
        .with(otel)
        .with(json.with_filter(filter))
        .try_init();
    if installed.is_err() {
        return TelemetryGuard { provider: None };
    }
    // Every line carries the service and version already.
    tracing::info!("telemetry initialised");
    TelemetryGuard { provider }
}

/// For tests: logs only when `TEST_LOG` is set, so passing runs stay quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let config = TraceConfig {
            log: std::env::var("SWITCHYARD_LOG").ok(),
            ..TraceConfig::default()
        };
        std::mem::forget(init_with("test", &config));
    }
}

/// The W3C `traceparent` of the current span, if it is being traced.
pub fn traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace named by `traceparent` (a message's sender).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    // Fails only if the span was already entered or closed; then it keeps its own parent.
    let _ = span.set_parent(context);
}

/// One JSON object per line: timestamp, level, service, version, target, message, every
/// field of the event and of the spans it happened in (outermost first, inner ones win).
/// Flat, so `trace_id`, `span_id`, `request_id` and `operation_id`, recorded on the request
/// and message spans, are top-level fields of every line logged while handling them.
struct FlatJson {
    service: &'static str,
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".into(), now.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("service".into(), self.service.into());
        line.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        line.insert("target".into(), event.metadata().target().into());
        let mut recorded = Map::new();
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    for (key, value) in fields {
                        // otel.* fields steer the exporter; they say nothing to a log reader.
                        if !key.starts_with("otel.") {
                            recorded.insert(key, value);
                        }
                    }
                }
            }
        }
        event.record(&mut Fields(&mut recorded));
        // The line's own keys (service, version, ...) are what log pipelines index by: a
        // field of the same name moves aside instead of replacing them.
        for (key, value) in recorded {
            if line.contains_key(&key) {
                line.insert(format!("{key}_field"), value);
            } else {
                line.insert(key, value);
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields into the line.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Records the trace and span ids of `span` (from its OpenTelemetry context, or failing
/// that the W3C `traceparent` it continues) as fields, so every log line inside it has them.
pub fn record_ids(span: &tracing::Span, fallback: Option<&str>) {
    let traceparent = span
        .in_scope(traceparent)
        .or_else(|| fallback.map(str::to_owned));
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut parts = traceparent.split('-');
    if let (Some(_), Some(trace_id), Some(span_id)) = (parts.next(), parts.next(), parts.next()) {
        span.record("trace_id", trace_id);
        span.record("span_id", span_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_field_named_like_a_line_key_moves_aside_instead_of_replacing_it() {
        let captured = Captured::default();
        let writer = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson { service: "unit" })
            .with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                version = 7,
                service = "other",
                name = "x",
                "migration applied"
            );
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(line["service"], "unit");
        assert_eq!(line["version_field"], 7);
        assert_eq!(line["service_field"], "other");
        assert_eq!(line["name"], "x");
        assert_eq!(line["message"], "migration applied");
    }
}
