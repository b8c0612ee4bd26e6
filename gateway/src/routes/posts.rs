//! `/v1/posts` and `/v1/timeline`.

use contracts::social::{CreatePost, PostRef, Repost, SocialCommand, SocialQuery};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::{
    Body, Fingerprint, ListParams, OnSuccess, Operation, Shared, answer, context, json_body,
    list_params, parse_id, read, require, with, write,
};
use crate::context::RequestContext;
use crate::problem::Problem;

/// Body of `POST /v1/posts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPost {
    body: String,
}

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let create = warp::path!("v1" / "posts")
        .and(warp::post())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<NewPost>(state.body_limit, state.body_timeout))
        .then(create)
        .map(answer);
    let repost = warp::path!("v1" / "posts" / String / "reposts")
        .and(warp::post())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(repost)
        .map(answer);
    let get = warp::path!("v1" / "posts" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(get)
        .map(answer);
    let delete = warp::path!("v1" / "posts" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(delete)
        .map(answer);
    let timeline = warp::path!("v1" / "timeline")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state))
        .and(list_params())
        .then(timeline)
        .map(answer);
    create
        .or(repost)
        .unify()
        .or(get)
        .unify()
        .or(delete)
        .unify()
        .or(timeline)
        .unify()
        .boxed()
}

/// Social writes check the post before it travels.
async fn send(
    state: &Shared,
    context: &RequestContext,
    operation: Operation,
    command: SocialCommand,
    on_success: OnSuccess,
) -> Result<Response, Problem> {
    command.validate().map_err(Problem::invalid)?;
    write(state, context, operation, command, on_success).await
}

async fn create(
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<NewPost>,
) -> Result<Response, Problem> {
    let principal = require(&context, &[])?;
    let operation = Operation::for_request(&context, fingerprint);
    let post_id = operation.resource_id;
    let command = SocialCommand::CreatePost(CreatePost {
        post_id,
        author_name: principal.name.clone(),
        body: body.body,
    });
    send(
        &state,
        &context,
        operation,
        command,
        OnSuccess::Created(format!("/v1/posts/{post_id}")),
    )
    .await
}

async fn repost(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let original_id = parse_id("post", &id)?;
    let principal = require(&context, &[])?;
    let operation = Operation::for_request(&context, Fingerprint::none());
    let post_id = operation.resource_id;
    let command = SocialCommand::Repost(Repost {
        post_id,
        original_id,
        author_name: principal.name.clone(),
    });
    send(
        &state,
        &context,
        operation,
        command,
        OnSuccess::Created(format!("/v1/posts/{post_id}")),
    )
    .await
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let query = SocialQuery::GetPost(PostRef {
        post_id: parse_id("post", &id)?,
    });
    read(&state, &context, query).await
}

async fn delete(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let post_id = parse_id("post", &id)?;
    require(&context, &[])?;
    let operation = Operation::for_request(&context, Fingerprint::none());
    send(
        &state,
        &context,
        operation,
        SocialCommand::DeletePost(PostRef { post_id }),
        OnSuccess::NoContent,
    )
    .await
}

async fn timeline(
    state: Shared,
    context: RequestContext,
    params: ListParams,
) -> Result<Response, Problem> {
    let query = SocialQuery::GlobalTimeline(params.page()?);
    read(&state, &context, query).await
}
