//! The HTTP API: route table and the filters every route shares.

mod auth;
mod courses;
mod health;
mod operations;
mod posts;
mod teachers;
mod users;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use contracts::Message;

use crate::context::RequestContext;
use crate::dispatch::{DispatchError, Dispatcher, Operation, Submitted, operation_view};
use crate::operation_id::Fingerprint;
use crate::problem::{self, Problem};
use platform::bus::PublishError;

/// What handlers share.
pub struct State {
    /// Bus access.
    pub dispatcher: Dispatcher,
    /// Cap on `Prefer: wait`.
    pub max_wait: Duration,
    /// Cap on body size.
    pub body_limit: u64,
    /// Time a body may take to arrive.
    pub body_timeout: Duration,
    /// Token verification.
    pub verifier: crate::auth::Verifier,
    /// Rate limits.
    pub limiter: crate::rate_limit::RateLimiter,
    /// argon2id cost for registration.
    pub hash: platform::password::HashParams,
    /// What `/healthz` checks.
    pub health: platform::healthz::Health,
}

/// Shared handler state.
pub type Shared = Arc<State>;

/// The whole API, with every rejection turned into a problem response.
pub fn api(
    state: Shared,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    head_limits()
        .and(api_routes(state))
        .recover(problem::recover)
        .unify()
}

/// Longest request target (path and query) accepted; longer is 414.
const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) accepted; more is 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most headers accepted; more is 431.
const MAX_HEADERS: usize = 64;

/// Refuses oversized request heads with problem+json before any route runs. These are
/// tighter than hyper's own buffer (`SWITCHYARD_HTTP_MAX_HEAD_BYTES`), whose refusals
/// have empty bodies, so a client normally hears why.
fn head_limits() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::path::full())
        .and(
            warp::query::raw()
                .or(warp::any().map(String::new))
                .unify(),
        )
        .and_then(
            |headers: warp::http::HeaderMap, path: warp::path::FullPath, query: String| async move {
                if path.as_str().len() + query.len() > MAX_TARGET_BYTES {
                    return Err(warp::reject::custom(Problem::new(
                        StatusCode::URI_TOO_LONG,
                        "uri-too-long",
                        format!("the request target is over {MAX_TARGET_BYTES} bytes"),
                    )));
                }
                let bytes: usize = headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len())
                    .sum();
                if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
                    return Err(warp::reject::custom(Problem::new(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "headers-too-large",
                        format!(
                            "send at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes of them"
                        ),
                    )));
                }
                Ok(())
            },
        )
        .untuple_one()
}

fn api_routes(
    state: Shared,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    health::routes(state.clone())
        .or(auth::routes(state.clone()))
        .unify()
        .or(users::routes(state.clone()))
        .unify()
        .or(posts::routes(state.clone()))
        .unify()
        .or(courses::routes(state.clone()))
        .unify()
        .or(teachers::routes(state.clone()))
        .unify()
        .or(operations::routes(state))
        .unify()
}

/// Injects the shared state.
fn with(state: Shared) -> impl Filter<Extract = (Shared,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Reads request id, `Prefer: wait`, `Idempotency-Key` and the bearer token (a token
/// that is present but bad is a 401 even on public routes), and applies the per-IP and
/// per-user rate limits. Runs once per request, after its route matched.
fn context(state: Shared) -> impl Filter<Extract = (RequestContext,), Error = Rejection> + Clone {
    warp::header::optional::<String>(platform::http::REQUEST_ID)
        .and(warp::header::optional::<String>("prefer"))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("traceparent"))
        .and(warp::ext::optional::<platform::http::ClientAddr>())
        .and(warp::method())
        .and(warp::path::full())
        .and_then(
            move |request_id: Option<String>,
                  prefer: Option<String>,
                  key: Option<String>,
                  authorization: Option<String>,
                  trace: Option<String>,
                  client: Option<platform::http::ClientAddr>,
                  method: warp::http::Method,
                  path: warp::path::FullPath| {
                let state = state.clone();
                async move {
                    let mut context =
                        build_context(&state, request_id, prefer, key, authorization, client)
                            .map_err(warp::reject::custom)?;
                    context.traceparent = Some(crate::context::traceparent(trace.as_deref()));
                    context.method = method.as_str().to_owned();
                    // Ids in paths are UUIDs, which compare case-insensitively: a retry
                    // that spells one in capitals names the same operation.
                    context.path = path.as_str().to_ascii_lowercase();
                    Ok::<_, Rejection>(context)
                }
            },
        )
}

fn build_context(
    state: &State,
    request_id: Option<String>,
    prefer: Option<String>,
    key: Option<String>,
    authorization: Option<String>,
    client: Option<platform::http::ClientAddr>,
) -> Result<RequestContext, Problem> {
    if let Some(client) = client {
        state
            .limiter
            .check_ip(client.0.ip())
            .map_err(Problem::too_many_requests)?;
    }
    if let Some(key) = &key {
        let ok = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(Problem::bad_request(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
    }
    let principal = match authorization {
        None => None,
        Some(header) => {
            let principal = state.verifier.verify(Some(&header)).map_err(auth_problem)?;
            state
                .limiter
                .check_user(principal.user_id)
                .map_err(Problem::too_many_requests)?;
            Some(principal)
        }
    };
    Ok(RequestContext {
        request_id: request_id.unwrap_or_default(),
        actor: principal.as_ref().map(|p| p.user_id.to_string()),
        principal,
        wait: prefer
            .as_deref()
            .and_then(parse_prefer_wait)
            .map(|w| w.min(state.max_wait)),
        idempotency_key: key,
        traceparent: None,
        method: String::new(),
        path: String::new(),
    })
}

fn auth_problem(error: crate::auth::AuthError) -> Problem {
    match error {
        crate::auth::AuthError::Unavailable => Problem::unavailable(error.to_string()),
        other => Problem::unauthorized(other.to_string()),
    }
}

/// The caller, who must be authenticated and hold one of `roles` (any role if empty).
fn require<'c>(
    context: &'c RequestContext,
    roles: &[contracts::accounts::Role],
) -> Result<&'c crate::auth::Principal, Problem> {
    let principal = context
        .principal
        .as_ref()
        .ok_or_else(|| auth_problem(crate::auth::AuthError::Missing))?;
    if !roles.is_empty() && !roles.contains(&principal.role) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(Problem::forbidden(format!(
            "this needs the role {}",
            names.join(" or ")
        )));
    }
    Ok(principal)
}

/// The `wait` preference of a `Prefer` header (RFC 7240), in whole seconds. Malformed
/// preferences are ignored, as the RFC asks.
pub fn parse_prefer_wait(header: &str) -> Option<Duration> {
    header
        .split(',')
        .flat_map(|part| part.split(';'))
        .filter_map(|token| token.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("wait"))
        .and_then(|(_, value)| value.trim().trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A JSON body of type `T`: `application/json`, at most `limit` bytes (with a
/// `Content-Length` or chunked), arriving within `timeout`, strictly decoded (no duplicate
/// keys, no NUL, no unknown fields).
fn json_body<T: DeserializeOwned + Send>(
    limit: u64,
    timeout: Duration,
) -> impl Filter<Extract = (Body<T>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(
            move |content_type: Option<String>, length: Option<u64>, stream| async move {
                let json = content_type.as_deref().is_some_and(|c| {
                    let media = c
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    media == "application/json"
                        || (media.starts_with("application/") && media.ends_with("+json"))
                });
                if !json {
                    return Err(warp::reject::custom(Problem::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported-media-type",
                        "send the body as application/json",
                    )));
                }
                if length.is_some_and(|n| n > limit) {
                    return Err(warp::reject::custom(too_large(limit)));
                }
                let bytes = tokio::time::timeout(timeout, collect_body(stream, limit))
                    .await
                    .map_err(|_| {
                        warp::reject::custom(Problem::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "body-timeout",
                            format!("the body did not arrive within {} ms", timeout.as_millis()),
                        ))
                    })?
                    .map_err(warp::reject::custom)?;
                let value = crate::json::parse(&bytes).map_err(|error| {
                    warp::reject::custom(match error {
                        crate::json::StrictError::Malformed(detail) => {
                            Problem::bad_request(format!("malformed JSON: {detail}"))
                        }
                        crate::json::StrictError::Refused(detail) => Problem::invalid(detail),
                    })
                })?;
                // Canonical, so the fingerprint ignores spacing and key order.
                let fingerprint = Fingerprint::of(&crate::json::canonical(&value));
                let value = serde_json::from_value::<T>(value).map_err(|error| {
                    warp::reject::custom(Problem::invalid(format!("invalid body: {error}")))
                })?;
                Ok(Body { value, fingerprint })
            },
        )
}

/// A decoded request body and its fingerprint.
struct Body<T> {
    value: T,
    fingerprint: Fingerprint,
}

fn too_large(limit: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("request body is larger than {limit} bytes"),
    )
}

/// Reads a body to its end, refusing it as soon as it passes `limit` bytes (a chunked
/// body announces no length, so the limit is enforced while reading).
async fn collect_body<S, B>(stream: S, limit: u64) -> Result<Vec<u8>, Problem>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt as _;
    let mut stream = std::pin::pin!(stream);
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk
            .map_err(|error| Problem::bad_request(format!("cannot read the body: {error}")))?;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            if (body.len() + part.len()) as u64 > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body)
}

/// Parses an id from the path. Only the hyphenated form (either case) is an id: other
/// spellings of the same UUID (`urn:uuid:`, braces, no dashes) would make one resource
/// answer to several paths and idempotency keys. A malformed one is a 400 that names it
/// (shortened: an id is never echoed at length).
fn parse_id(kind: &str, text: &str) -> Result<Uuid, Problem> {
    let hyphenated = text.len() == 36;
    match Uuid::try_parse(text) {
        Ok(id) if hyphenated => Ok(id),
        _ => {
            let shown: String = text.chars().take(40).collect();
            let cut = if shown.len() < text.len() { "…" } else { "" };
            Err(Problem::bad_request(format!(
                "{kind} id {shown:?}{cut} is not a UUID (write it as 8-4-4-4-12 hex digits)"
            )))
        }
    }
}

/// A JSON response with a status.
fn json(status: StatusCode, body: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Either side becomes a response.
/// Sends `command` for this request's `operation` and answers as `on_success` says.
async fn write<C: Message>(
    state: &State,
    context: &RequestContext,
    operation: Operation,
    command: C,
    on_success: OnSuccess,
) -> Result<Response, Problem> {
    let result = state
        .dispatcher
        .submit(&command, operation, context)
        .await?;
    Ok(submitted(result, on_success))
}

/// Asks `query` and answers 200 with the reply.
async fn read<Q: Message>(
    state: &State,
    context: &RequestContext,
    query: Q,
) -> Result<Response, Problem> {
    let body = state.dispatcher.query(&query, context).await?;
    Ok(json(StatusCode::OK, &body))
}

/// Turns a handler's refusal into its problem+json response: every route ends with
/// `.then(handler).map(answer)`, so a handler is plain `?`-using code.
fn answer(result: Result<Response, Problem>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

/// How a route answers a command that succeeded within the client's wait.
enum OnSuccess {
    /// 201 with the resource and its `Location`.
    Created(String),
    /// 200 with the resource.
    Ok,
    /// 204.
    NoContent,
}

/// Answers a submitted command: 202 with the operation, or the final status.
fn submitted(result: Submitted, on_success: OnSuccess) -> Response {
    let (operation_id, outcome) = match result {
        Submitted::Accepted { operation_id } => {
            let location = format!("/v1/operations/{operation_id}");
            let body = serde_json::json!({"operation_id": operation_id, "status": "accepted"});
            let mut response = json(StatusCode::ACCEPTED, &body);
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert("location", value);
            }
            return response;
        }
        Submitted::Completed {
            operation_id,
            outcome,
        } => (operation_id, outcome),
    };
    let mut response = if let Some(rejection) = &outcome.rejection {
        let mut problem = Problem::from_rejection(rejection);
        problem.operation_id = Some(operation_id.clone());
        problem.into_response()
    } else {
        let resource = outcome
            .resource
            .clone()
            .unwrap_or_else(|| operation_view(&operation_id, &outcome));
        match on_success {
            OnSuccess::Created(location) => {
                let mut response = json(StatusCode::CREATED, &resource);
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert("location", value);
                }
                response
            }
            OnSuccess::Ok => json(StatusCode::OK, &resource),
            OnSuccess::NoContent => {
                let mut response = Response::new(Vec::new().into());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&operation_id) {
        response.headers_mut().insert("operation-id", value);
    }
    response
}

/// `limit` and `cursor` of list routes.
#[derive(Debug)]
struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListParams {
    fn page(self) -> Result<contracts::common::PageRequest, Problem> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=contracts::common::MAX_PAGE).contains(&limit) {
            return Err(Problem::bad_request(format!(
                "limit must be between 1 and {}",
                contracts::common::MAX_PAGE
            )));
        }
        // Cursors are opaque (each service has its own format) but always short and plain.
        if let Some(cursor) = &self.cursor {
            let plain = cursor.len() <= 100
                && cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
            if !plain {
                return Err(Problem::bad_request(
                    "cursor is not valid; use next_cursor from a previous page",
                ));
            }
        }
        Ok(contracts::common::PageRequest {
            limit,
            cursor: self.cursor,
        })
    }
}

/// Query string of list routes; an empty one is fine.
fn list_params() -> impl Filter<Extract = (ListParams,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            serde_urlencoded_like(&raw)
                .map_err(|detail| warp::reject::custom(Problem::bad_request(detail)))
        })
}

/// Parses `limit` and `cursor` by hand: two keys do not justify another dependency, and
/// the error can name the offending parameter.
fn serde_urlencoded_like(raw: &str) -> Result<ListParams, String> {
    let mut params = ListParams {
        limit: None,
        cursor: None,
    };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                params.limit = Some(
                    value
                        .parse()
                        .map_err(|_| format!("limit {value:?} is not a number"))?,
                );
            }
            "cursor" => params.cursor = Some(value.to_owned()),
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    Ok(params)
}

/// The problem+json for a dispatch that failed: the one place the bus's failures get their
/// HTTP status, type and retry advice.
impl From<DispatchError> for Problem {
    fn from(error: DispatchError) -> Self {
        match error {
            DispatchError::Encode(detail) => {
                Problem::bad_request(format!("cannot encode {detail}"))
            }
            DispatchError::NotSent { service, error } => publish_problem(&service, &error),
            DispatchError::OutcomeUnknown {
                operation_id,
                error,
            } => Problem::outcome_unknown(&operation_id, &error),
            DispatchError::CircuitOpen {
                service,
                retry_after,
            } => Problem::circuit_open(&service, retry_after),
            error @ DispatchError::Timeout { .. } => Problem::timeout(error.to_string()),
            DispatchError::Rejected(rejection) => Problem::from_rejection(&rejection),
            error @ DispatchError::Unreadable => Problem::unavailable(error.to_string()),
            error @ DispatchError::UnknownOperation(_) => Problem::not_found(error.to_string()),
            DispatchError::KeyReused { operation_id } => {
                let mut problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    crate::dispatch::KEY_REUSED,
                );
                problem.operation_id = Some(operation_id);
                problem
            }
        }
    }
}

/// The 503 for a publish that certainly did not reach a queue: retrying is safe.
fn publish_problem(service: &str, error: &PublishError) -> Problem {
    match error {
        PublishError::Unroutable(_) => {
            tracing::warn!(service, "command unroutable: no queue bound");
            Problem::unavailable(format!(
                "the {service} service is not accepting requests; nothing was applied"
            ))
        }
        PublishError::Nacked => {
            tracing::warn!(service, "command refused: the service's queue is full");
            Problem::overloaded(service)
        }
        PublishError::Blocked(reason) => {
            tracing::warn!(service, %reason, "publish refused: the broker blocks publishers");
            Problem::unavailable(format!(
                "the message broker is refusing new messages ({reason}); nothing was applied"
            ))
        }
        other => {
            tracing::warn!(service, error = %other, "publish failed");
            Problem::unavailable("the message broker is unavailable; nothing was applied")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_read_and_malformed_preferences_are_ignored() {
        assert_eq!(parse_prefer_wait("wait=5"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_prefer_wait("respond-async, wait=10"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_prefer_wait("return=minimal; wait=\"3\""),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_prefer_wait("wait=soon"), None);
        assert_eq!(parse_prefer_wait("return=minimal"), None);
    }

    #[test]
    fn list_parameters_are_checked() {
        let params = serde_urlencoded_like("limit=5&cursor=abc").unwrap();
        assert_eq!(params.limit, Some(5));
        assert!(serde_urlencoded_like("limit=x").is_err());
        assert!(serde_urlencoded_like("page=2").is_err());
        assert!(serde_urlencoded_like("").unwrap().limit.is_none());
    }

    #[test]
    fn refusals_are_told_apart_from_failures() {
        let unsent = |error| DispatchError::NotSent {
            service: "social".into(),
            error,
        };
        let reasons = [
            (unsent(PublishError::Nacked), Some(("social", "queue_full"))),
            (
                unsent(PublishError::Blocked("memory".into())),
                Some(("social", "broker_blocked")),
            ),
            (
                unsent(PublishError::Unroutable("social.post.create".into())),
                Some(("social", "no_consumer")),
            ),
            (
                unsent(PublishError::Unavailable),
                Some(("social", "broker_unavailable")),
            ),
            (
                DispatchError::CircuitOpen {
                    service: "catalog".into(),
                    retry_after: Duration::from_secs(1),
                },
                Some(("catalog", "circuit_open")),
            ),
            (
                DispatchError::Timeout {
                    service: "catalog".into(),
                    after: Duration::from_secs(1),
                },
                None,
            ),
            (
                DispatchError::OutcomeUnknown {
                    operation_id: "op".into(),
                    error: PublishError::Timeout(Duration::from_secs(5)),
                },
                None,
            ),
        ];
        for (error, expected) in reasons {
            assert_eq!(error.refusal(), expected, "{error}");
        }
    }

    #[test]
    fn every_dispatch_error_has_its_status_and_retry_advice() {
        let problem = |e: DispatchError| Problem::from(e);
        let unsent = problem(DispatchError::NotSent {
            service: "social".into(),
            error: PublishError::Unroutable("social.post.create".into()),
        });
        assert_eq!(
            (unsent.status, unsent.kind, unsent.retry_after),
            (503, "unavailable", Some(1))
        );
        assert!(
            unsent.detail.contains("nothing was applied"),
            "{}",
            unsent.detail
        );
        let full = problem(DispatchError::NotSent {
            service: "social".into(),
            error: PublishError::Nacked,
        });
        assert_eq!(
            (full.status, full.kind, full.retry_after),
            (503, "unavailable", Some(2))
        );
        assert!(
            full.detail.contains("social service is overloaded"),
            "{}",
            full.detail
        );
        let unknown = problem(DispatchError::OutcomeUnknown {
            operation_id: "op".into(),
            error: PublishError::Timeout(Duration::from_secs(5)),
        });
        assert_eq!((unknown.status, unknown.kind), (503, "outcome-unknown"));
        assert_eq!(unknown.operation_id.as_deref(), Some("op"));
        let open = problem(DispatchError::CircuitOpen {
            service: "catalog".into(),
            retry_after: Duration::from_millis(2_500),
        });
        assert_eq!((open.status, open.retry_after), (503, Some(3)));
        let timeout = problem(DispatchError::Timeout {
            service: "catalog".into(),
            after: Duration::from_secs(5),
        });
        assert_eq!((timeout.status, timeout.kind), (504, "timeout"));
        let rejected = problem(DispatchError::Rejected(contracts::Rejection {
            kind: contracts::RejectionKind::Conflict,
            detail: "code taken".into(),
        }));
        assert_eq!(
            (rejected.status, rejected.detail.as_str()),
            (409, "code taken")
        );
        assert_eq!(problem(DispatchError::Unreadable).status, 503);
        assert_eq!(
            problem(DispatchError::UnknownOperation("x".into())).status,
            404
        );
        assert_eq!(
            problem(DispatchError::Encode("query: x".into())).status,
            400
        );
        let reused = problem(DispatchError::KeyReused {
            operation_id: "op".into(),
        });
        assert_eq!(
            (reused.status, reused.kind),
            (422, "idempotency-key-reused")
        );
        assert_eq!(reused.operation_id.as_deref(), Some("op"));
    }
}
