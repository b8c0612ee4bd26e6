//! `/v1/users/me`, `DELETE /v1/users/{id}` and a user's posts.

use contracts::accounts::{AccountsCommand, AccountsQuery, Role, UserRef};
use contracts::social::{SocialQuery, UserTimeline};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::{
    Fingerprint, ListParams, OnSuccess, Operation, Shared, answer, context, list_params, parse_id,
    read, require, submitted, with,
};
use crate::context::RequestContext;
use crate::problem::Problem;

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let me = warp::path!("v1" / "users" / "me")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(me)
        .map(answer);
    let delete = warp::path!("v1" / "users" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(delete)
        .map(answer);
    let posts = warp::path!("v1" / "users" / String / "posts")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state))
        .and(list_params())
        .then(posts)
        .map(answer);
    me.or(delete).unify().or(posts).unify().boxed()
}

async fn me(state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let principal = require(&context, &[])?;
    let query = AccountsQuery::GetUser(UserRef {
        user_id: principal.user_id,
    });
    read(&state, &context, query).await
}

async fn delete(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let user_id = parse_id("user", &id)?;
    let principal = require(&context, &[])?;
    if principal.user_id != user_id && principal.role != Role::Admin {
        return Err(Problem::forbidden(
            "only the user themself or an admin may delete a user",
        ));
    }
    let operation = Operation::for_request(&context, Fingerprint::none());
    let command = AccountsCommand::Delete(UserRef { user_id });
    let result = state
        .dispatcher
        .submit(&command, operation, &context)
        .await?;
    // Seen succeed here: this replica refuses the user's tokens at once, without
    // waiting for its next revocation fetch.
    if let crate::dispatch::Submitted::Completed { outcome, .. } = &result
        && outcome.status == contracts::OutcomeStatus::Succeeded
    {
        state.verifier.revoke(user_id);
    }
    Ok(submitted(result, OnSuccess::NoContent))
}

async fn posts(
    id: String,
    state: Shared,
    context: RequestContext,
    params: ListParams,
) -> Result<Response, Problem> {
    let user_id = parse_id("user", &id)?;
    let query = SocialQuery::UserTimeline(UserTimeline {
        user_id,
        page: params.page()?,
    });
    read(&state, &context, query).await
}
