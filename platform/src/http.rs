//! Serving a warp filter with graceful shutdown and bounded connections.
//!
//! warp 0.4's own `Server::run` future is not `Send` in generic code (its runner is an
//! `async fn` in a trait without a `Send` bound), so it cannot be spawned from a library.
//! This is the same hyper-util connection loop, written where we can spawn it, and it also
//! records each connection's peer address as a [`ClientAddr`] request extension.
//!
//! Every connection is bounded ([`HttpLimits`]): headers must arrive within a timeout
//! (hyper starts that clock whenever it waits for a request head, so it also closes idle
//! keep-alive connections), the read buffer is capped, and the number of open connections
//! is capped overall and per client address; a connection over a cap gets a 503 and is
//! closed, so one client's idle sockets cannot use up the process's file descriptors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use warp::{Filter, Reply};

use crate::config::{ConfigError, Source, millis_or, parse_or};
use crate::metrics::Metrics;
use tracing::Instrument as _;

/// Bounds on what one connection and one client may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time for a request's headers to arrive; also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Time for a request's body to arrive once its headers did (applied where bodies are
    /// read).
    pub body_timeout: Duration,
    /// Open connections, all clients together.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_client: usize,
    /// Largest request head (request line and headers) hyper buffers; past it hyper
    /// answers 431 itself. Routes may check tighter limits and answer problem+json.
    pub max_head_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_client: 256,
            max_head_bytes: 64 * 1024,
        }
    }
}

impl HttpLimits {
    /// Reads `HTTP_HEADER_TIMEOUT_MS`, `HTTP_BODY_TIMEOUT_MS`, `HTTP_MAX_CONNECTIONS`,
    /// `HTTP_MAX_CONNECTIONS_PER_CLIENT` and `HTTP_MAX_HEAD_BYTES`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let limits = Self {
            header_timeout: millis_or(
                source,
                "HTTP_HEADER_TIMEOUT_MS",
                d.header_timeout,
                100..=600_000,
            )?,
            body_timeout: millis_or(
                source,
                "HTTP_BODY_TIMEOUT_MS",
                d.body_timeout,
                100..=600_000,
            )?,
            max_connections: parse_or(source, "HTTP_MAX_CONNECTIONS", d.max_connections)?,
            max_connections_per_client: parse_or(
                source,
                "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                d.max_connections_per_client,
            )?,
            max_head_bytes: parse_or(source, "HTTP_MAX_HEAD_BYTES", d.max_head_bytes)?,
        };
        if limits.max_connections == 0 || limits.max_connections_per_client == 0 {
            return Err(ConfigError::new(
                "HTTP_MAX_CONNECTIONS",
                &limits.max_connections.to_string(),
                "connection limits must be at least 1",
            ));
        }
        if !(8192..=1024 * 1024).contains(&limits.max_head_bytes) {
            return Err(ConfigError::new(
                "HTTP_MAX_HEAD_BYTES",
                &limits.max_head_bytes.to_string(),
                "must be 8 KiB to 1 MiB",
            ));
        }
        Ok(limits)
    }
}

/// Open connections, overall and per client address.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; leaving gives its slots back.
struct Slot {
    table: Arc<Mutex<Connections>>,
    client: IpAddr,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut table) = self.table.lock() {
            table.total = table.total.saturating_sub(1);
            if let Some(count) = table.per_client.get_mut(&self.client) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    table.per_client.remove(&self.client);
                }
            }
            if let Some(metrics) = &self.metrics {
                metrics.http_open_connections.set(table.total as i64);
            }
        }
    }
}

/// Takes a slot for a connection from `client`, or says which cap it would break.
fn admit(
    table: &Arc<Mutex<Connections>>,
    client: IpAddr,
    limits: &HttpLimits,
    metrics: Option<&Arc<Metrics>>,
) -> Result<Slot, &'static str> {
    let mut guard = table.lock().map_err(|_| "overall")?;
    if guard.total >= limits.max_connections {
        return Err("overall");
    }
    let count = guard.per_client.entry(client).or_insert(0);
    if *count >= limits.max_connections_per_client {
        return Err("per_client");
    }
    *count += 1;
    guard.total += 1;
    if let Some(metrics) = metrics {
        metrics.http_open_connections.set(guard.total as i64);
    }
    Ok(Slot {
        table: table.clone(),
        client,
        metrics: metrics.cloned(),
    })
}

/// Answers a connection over a cap with a short 503 and closes it, without reading the
/// request (the cap exists because reading costs).
async fn refuse(mut stream: TcpStream, cap: &'static str) {
    let body = format!(
        "{{\"type\":\"/problems/too-many-connections\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"too many open connections ({})\"}}",
        if cap == "per_client" {
            "from this address"
        } else {
            "in total"
        }
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// The TCP peer of the connection a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Serves `filter` on `listener` until `cancel` fires, then lets open requests finish.
pub fn serve<F, R>(
    listener: TcpListener,
    filter: F,
    cancel: CancellationToken,
    metrics: Option<Arc<Metrics>>,
    limits: HttpLimits,
) -> tokio::task::JoinHandle<()>
where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send,
    R: Reply,
{
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let table = Arc::new(Mutex::new(Connections::default()));
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_head_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.header_timeout)
            .keep_alive_timeout(limits.header_timeout)
            .max_concurrent_streams(64)
            .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
        loop {
            let (stream, peer) = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Usually EMFILE: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match admit(&table, peer.ip(), &limits, metrics.as_ref()) {
                Ok(slot) => slot,
                Err(cap) => {
                    if let Some(metrics) = &metrics {
                        metrics.observe_refused_connection(cap);
                    }
                    tracing::warn!(client = %peer.ip(), cap, "connection refused: too many open connections");
                    tokio::spawn(refuse(stream, cap));
                    continue;
                }
            };
            let service = warp::service(filter.clone());
            let service = tower_service_fn(service, peer, metrics.clone());
            let connection = builder
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let watched = graceful.watch(connection);
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(error) = watched.await {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

/// Wraps the warp service: each request carries its peer address and an `X-Request-Id`
/// (the client's if it sent a usable one, a fresh UUID v7 otherwise), which is echoed on
/// the response; one access-log line is written per request.
fn tower_service_fn<S>(inner: S, peer: SocketAddr, metrics: Option<Arc<Metrics>>) -> Edge<S> {
    Edge {
        inner,
        peer,
        metrics,
    }
}

/// Status recorded for a request whose client went away before it was answered (nginx's
/// convention; never sent, since nobody is listening).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Longest path written to a log line; longer ones are cut (with a marker).
const LOG_PATH_MAX: usize = 256;

/// The path as logged: at most [`LOG_PATH_MAX`] bytes, cut on a character boundary.
fn log_path(path: &str) -> String {
    if path.len() <= LOG_PATH_MAX {
        return path.to_owned();
    }
    let mut end = LOG_PATH_MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &path[..end], path.len())
}

/// One request's access-log line and metrics, written when it ends: answered, or
/// abandoned by its client (hyper drops the handler's future then, and this guard with
/// it, so the request is still logged and counted, as 499).
struct Served {
    route: String,
    method: &'static str,
    path: String,
    started: std::time::Instant,
    metrics: Option<Arc<Metrics>>,
    status: Option<u16>,
}

impl Served {
    fn answered(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let status = self.status.unwrap_or(CLIENT_CLOSED_REQUEST);
        if let Some(metrics) = &self.metrics {
            metrics.observe_http(&self.route, self.method, status, elapsed);
        }
        let message = if self.status.is_some() {
            "request served"
        } else {
            "client closed the connection before the answer"
        };
        tracing::info!(
            http.method = self.method,
            http.path = %self.path,
            http.status = status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "{message}"
        );
    }
}

/// The header naming a request end to end.
pub const REQUEST_ID: &str = "x-request-id";

#[derive(Clone)]
struct Edge<S> {
    inner: S,
    peer: SocketAddr,
    metrics: Option<Arc<Metrics>>,
}

/// A client's request id is used only if it is short and plain, so it is safe to copy
/// into headers and logs.
fn usable_request_id(value: &http::HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Edge<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = std::time::Instant::now();
        request.extensions_mut().insert(ClientAddr(self.peer));
        let request_id = match request.headers().get(REQUEST_ID) {
            Some(value) if usable_request_id(value) => value.clone(),
            _ => {
                let fresh = uuid::Uuid::now_v7().to_string();
                let value = http::HeaderValue::from_str(&fresh)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("invalid"));
                request.headers_mut().insert(REQUEST_ID, value.clone());
                value
            }
        };
        let method = crate::metrics::method_label(request.method());
        let path = log_path(request.uri().path());
        let route = crate::metrics::route_template(request.uri().path());
        let span = tracing::info_span!(
            "http request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
            request_id = request_id.to_str().unwrap_or_default(),
        );
        let incoming = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        crate::telemetry::continue_trace(&span, incoming);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let mut served = Served {
            route,
            method,
            path,
            started,
            metrics: self.metrics.clone(),
            status: None,
        };
        Box::pin(
            async move {
                let mut response = future.await?;
                let status = response.status().as_u16();
                tracing::Span::current().record("http.response.status_code", status);
                response
                    .headers_mut()
                    .insert(REQUEST_ID, request_id.clone());
                served.answered(status);
                Ok(response)
            }
            .instrument(span),
        )
    }
}
