//! `/v1/auth/register` and `/v1/auth/login`, limited per client IP more tightly than the
//! rest of the API.

use contracts::accounts::{self, AccountsCommand, AccountsQuery, Register, Role};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::{Body, OnSuccess, Operation, Shared, answer, context, json_body, read, with, write};
use crate::context::RequestContext;
use crate::problem::Problem;

/// Body of `POST /v1/auth/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    email: String,
    display_name: String,
    password: String,
    /// Only an admin may ask for anything but `student`.
    #[serde(default)]
    role: Option<Role>,
}

/// Body of `POST /v1/auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

/// The tighter per-IP limit of the auth routes.
fn auth_limit(state: Shared) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::ext::optional::<platform::http::ClientAddr>()
        .and_then(move |client: Option<platform::http::ClientAddr>| {
            let state = state.clone();
            async move {
                match client {
                    Some(client) => state
                        .limiter
                        .check_auth(client.0.ip())
                        .map_err(|e| warp::reject::custom(Problem::too_many_requests(e))),
                    None => Ok(()),
                }
            }
        })
        .untuple_one()
}

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let register = warp::path!("v1" / "auth" / "register")
        .and(warp::post())
        .and(auth_limit(state.clone()))
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<Registration>(
            state.body_limit,
            state.body_timeout,
        ))
        .then(register)
        .map(answer);
    let login = warp::path!("v1" / "auth" / "login")
        .and(warp::post())
        .and(auth_limit(state.clone()))
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<Credentials>(
            state.body_limit,
            state.body_timeout,
        ))
        .then(login)
        .map(answer);
    register.or(login).unify().boxed()
}

async fn register(
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<Registration>,
) -> Result<Response, Problem> {
    let role = body.role.unwrap_or(Role::Student);
    if role != Role::Student {
        super::require(&context, &[Role::Admin])?;
    }
    accounts::validate_registration(&body.email, &body.display_name, &body.password)
        .map_err(Problem::invalid)?;
    let operation = Operation::for_request(&context, fingerprint);
    let user_id = operation.resource_id;
    let params = state.hash;
    let password = body.password;
    // Hashing here keeps clear-text passwords off the broker's disk; it is CPU
    // work, so it runs off the async threads.
    let password_hash =
        tokio::task::spawn_blocking(move || platform::password::hash(&password, params))
            .await
            .map_err(|e| Problem::unavailable(format!("cannot hash the password: {e}")))?
            .map_err(|e| Problem::unavailable(format!("cannot hash the password: {e}")))?;
    let command = AccountsCommand::Register(Register {
        user_id,
        email: body.email,
        display_name: body.display_name,
        password_hash,
        role,
    });
    write(
        &state,
        &context,
        operation,
        command,
        OnSuccess::Created(format!("/v1/users/{user_id}")),
    )
    .await
}

async fn login(
    state: Shared,
    context: RequestContext,
    Body { value: body, .. }: Body<Credentials>,
) -> Result<Response, Problem> {
    let sealed = state
        .verifier
        .seal_login(&body.email, &body.password)
        .map_err(super::auth_problem)?;
    let query = AccountsQuery::Login(sealed);
    read(&state, &context, query).await
}
