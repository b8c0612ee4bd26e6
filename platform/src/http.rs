//! Serving a warp filter with graceful shutdown.
//!
//! warp 0.4's own `Server::run` future is not `Send` in generic code (its runner is an
//! `async fn` in a trait without a `Send` bound), so it cannot be spawned from a library.
//! This is the same hyper-util connection loop, written where we can spawn it, and it also
//! records each connection's peer address as a [`ClientAddr`] request extension.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::{Filter, Reply};

use crate::metrics::Metrics;
use tracing::Instrument as _;

/// The TCP peer of the connection a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Serves `filter` on `listener` until `cancel` fires, then lets open requests finish.
pub fn serve<F, R>(
    listener: TcpListener,
    filter: F,
    cancel: CancellationToken,
    metrics: Option<Arc<Metrics>>,
) -> tokio::task::JoinHandle<()>
where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send,
    R: Reply,
{
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
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
            let service = warp::service(filter.clone());
            let service = tower_service_fn(service, peer, metrics.clone());
            let connection = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let watched = graceful.watch(connection);
            tokio::spawn(async move {
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
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let route = crate::metrics::route_template(&path);
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
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let mut response = future.await?;
                let status = response.status().as_u16();
                tracing::Span::current().record("http.response.status_code", status);
                if let Some(metrics) = metrics {
                    metrics.observe_http(&route, method.as_str(), status, started.elapsed());
                }
                response
                    .headers_mut()
                    .insert(REQUEST_ID, request_id.clone());
                tracing::info!(
                    http.method = %method,
                    http.path = %path,
                    http.status = status,
                    latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request served"
                );
                Ok(response)
            }
            .instrument(span),
        )
    }
}
