//! RFC 9457 problem details: every error the gateway returns, and the mapping of warp's
//! own rejections (unknown path, wrong method, oversized body…) onto them.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Rejection, Reply};

/// Media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem, ready to be a response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Names the kind of problem; serialised as the relative URI `/problems/<slug>`.
    #[serde(rename = "type", serialize_with = "problem_type")]
    pub kind: &'static str,
    /// Short, fixed summary of the kind.
    pub title: &'static str,
    /// HTTP status, repeated in the body.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The operation, when the problem is a command's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Seconds after which a retry may succeed (sent as `Retry-After` too).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// Extra response headers (`WWW-Authenticate`, `RateLimit-*`).
    #[serde(skip)]
    pub headers: Vec<(&'static str, String)>,
}

impl Problem {
    /// A problem with `status`, a slug naming its kind, and a detail.
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: slug,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            operation_id: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404: no such resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 422: well-formed but breaks a rule.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }

    /// 503: the broker is unavailable or nobody consumes the route.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        problem.retry_after = Some(1);
        problem
    }

    /// 503 for a command that may have reached the broker although its publish failed (no
    /// confirm in time, or the channel died after sending): it names the operation, to be
    /// polled or retried with the same `Idempotency-Key`, never blindly retried.
    pub fn outcome_unknown(operation_id: &str, error: &platform::bus::PublishError) -> Self {
        tracing::warn!(operation_id, %error, "command publish unconfirmed; outcome unknown");
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome-unknown",
            format!(
                "the message broker did not confirm the command in time, so it may or may not \
                 be applied: poll /v1/operations/{operation_id}, or retry with the same \
                 Idempotency-Key"
            ),
        );
        problem.operation_id = Some(operation_id.to_owned());
        problem.retry_after = Some(1);
        problem
            .headers
            .push(("location", format!("/v1/operations/{operation_id}")));
        problem
            .headers
            .push(("operation-id", operation_id.to_owned()));
        problem
    }

    /// 503 at once: the service's command queue is at its bound, so the broker refused the
    /// command. Nothing was applied; the client should back off a little longer than for a
    /// blip, which is what the service needs to catch up.
    pub fn overloaded(service: &str) -> Self {
        let mut problem = Self::unavailable(format!(
            "the {service} service is overloaded (its queue of pending commands is full); nothing was applied, retry later"
        ));
        problem.retry_after = Some(2);
        problem
    }

    /// 503 at once: the service's circuit breaker is open (its queries kept timing out).
    pub fn circuit_open(service: &str, retry_after: std::time::Duration) -> Self {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u32;
        let mut problem = Self::unavailable(format!(
            "{service} is not answering (its last queries timed out); the gateway stops asking it for {seconds} s"
        ));
        problem.retry_after = Some(seconds);
        problem
    }

    /// 504: no answer in time.
    pub fn timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", detail)
    }

    /// 401 with a `WWW-Authenticate` challenge (RFC 6750).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail.clone());
        let challenge = format!(
            "Bearer realm=\"switchyard\", error=\"invalid_token\", error_description=\"{detail}\""
        );
        problem.headers.push(("www-authenticate", challenge));
        problem
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 429 with `Retry-After` and the `RateLimit-*` headers of the IETF draft.
    pub fn too_many_requests(exceeded: crate::rate_limit::Exceeded) -> Self {
        let seconds = exceeded.retry_after.as_secs_f64().ceil().max(1.0) as u32;
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("rate limit exceeded; retry in {seconds} s"),
        );
        problem.retry_after = Some(seconds);
        problem
            .headers
            .push(("ratelimit-limit", exceeded.limit.to_string()));
        problem.headers.push(("ratelimit-remaining", "0".into()));
        problem
            .headers
            .push(("ratelimit-reset", seconds.to_string()));
        problem
    }

    /// From a worker's rejection.
    pub fn from_rejection(rejection: &contracts::Rejection) -> Self {
        use contracts::RejectionKind::{Conflict, Forbidden, Invalid, NotFound, Unauthorized};
        match rejection.kind {
            NotFound => Self::not_found(rejection.detail.clone()),
            Conflict => Self::new(StatusCode::CONFLICT, "conflict", rejection.detail.clone()),
            Invalid => Self::invalid(rejection.detail.clone()),
            Unauthorized => Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                rejection.detail.clone(),
            ),
            Forbidden => Self::forbidden(rejection.detail.clone()),
        }
    }
}

fn problem_type<S: serde::Serializer>(
    slug: &&'static str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("/problems/{slug}"))
}

impl Reply for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(body.into());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
        response
    }
}

impl warp::reject::Reject for Problem {}

/// Turns any rejection into a problem response; the last filter of the API.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    use warp::reject::{
        InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader,
        PayloadTooLarge, UnsupportedMediaType,
    };
    let problem = if let Some(problem) = rejection.find::<Problem>() {
        problem.clone()
    } else if rejection.is_not_found() {
        Problem::not_found("no such route")
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "request body is too large",
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        Problem::new(
            StatusCode::LENGTH_REQUIRED,
            "length-required",
            "send a Content-Length header",
        )
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send application/json",
        )
    } else if let Some(query) = rejection.find::<InvalidQuery>() {
        Problem::bad_request(format!("invalid query string: {query}"))
    } else if let Some(header) = rejection.find::<InvalidHeader>() {
        Problem::bad_request(header.to_string())
    } else if let Some(header) = rejection.find::<MissingHeader>() {
        Problem::bad_request(header.to_string())
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "method not allowed on this route",
        )
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        Problem::bad_request("the request could not be processed")
    };
    Ok(problem.into_response())
}
