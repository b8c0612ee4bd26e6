//! `/v1/posts` and `/v1/timeline`.

use std::convert::Infallible;

use contracts::social::{self, CreatePost, PostRef, Repost, SocialCommand, SocialQuery};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{
    Body, ListParams, OnSuccess, Shared, context, json, json_body, list_params, parse_id, require,
    respond, submitted, with,
};
use crate::dispatch::{RequestContext, Submitted};
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
        .and_then(create);
    let repost = warp::path!("v1" / "posts" / String / "reposts")
        .and(warp::post())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(repost);
    let get = warp::path!("v1" / "posts" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(get);
    let delete = warp::path!("v1" / "posts" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(delete);
    let timeline = warp::path!("v1" / "timeline")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state))
        .and(list_params())
        .and_then(timeline);
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

async fn send(
    state: &Shared,
    context: &RequestContext,
    command: SocialCommand,
    operation: crate::dispatch::Operation,
) -> Result<Submitted, Problem> {
    command.validate().map_err(Problem::invalid)?;
    state
        .dispatcher
        .submit(
            social::SERVICE,
            command.routing_key(),
            social::SCHEMA_VERSION,
            &command,
            operation,
            context,
        )
        .await
}

async fn create(
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<NewPost>,
) -> Result<Response, Infallible> {
    respond(
        async {
            let principal = require(&context, &[])?;
            let operation =
                state
                    .dispatcher
                    .operation_uuid(&context, "POST", "/v1/posts", fingerprint);
            let post_id = state.dispatcher.resource_uuid(&context, operation);
            let command = SocialCommand::CreatePost(CreatePost {
                post_id,
                author_name: principal.name.clone(),
                body: body.body,
            });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(
                result,
                OnSuccess::Created(format!("/v1/posts/{post_id}")),
            ))
        }
        .await,
    )
}

async fn repost(
    id: String,
    state: Shared,
    context: RequestContext,
) -> Result<Response, Infallible> {
    respond(
        async {
            let original_id = parse_id("post", &id)?;
            let principal = require(&context, &[])?;
            let path = format!("/v1/posts/{original_id}/reposts");
            let operation = state.dispatcher.operation_uuid(
                &context,
                "POST",
                &path,
                crate::dispatch::Fingerprint::none(),
            );
            let post_id = state.dispatcher.resource_uuid(&context, operation);
            let command = SocialCommand::Repost(Repost {
                post_id,
                original_id,
                author_name: principal.name.clone(),
            });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(
                result,
                OnSuccess::Created(format!("/v1/posts/{post_id}")),
            ))
        }
        .await,
    )
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Infallible> {
    respond(
        async {
            let query = SocialQuery::GetPost(PostRef {
                post_id: parse_id("post", &id)?,
            });
            let post = state
                .dispatcher
                .query(query.routing_key(), &query, &context)
                .await?;
            Ok(json(StatusCode::OK, &post))
        }
        .await,
    )
}

async fn delete(
    id: String,
    state: Shared,
    context: RequestContext,
) -> Result<Response, Infallible> {
    respond(
        async {
            let post_id = parse_id("post", &id)?;
            require(&context, &[])?;
            let operation = state.dispatcher.operation_uuid(
                &context,
                "DELETE",
                &format!("/v1/posts/{post_id}"),
                crate::dispatch::Fingerprint::none(),
            );
            let result = send(
                &state,
                &context,
                SocialCommand::DeletePost(PostRef { post_id }),
                operation,
            )
            .await?;
            Ok(submitted(result, OnSuccess::NoContent))
        }
        .await,
    )
}

async fn timeline(
    state: Shared,
    context: RequestContext,
    params: ListParams,
) -> Result<Response, Infallible> {
    respond(
        async {
            let query = SocialQuery::GlobalTimeline(params.page()?);
            let page = state
                .dispatcher
                .query(query.routing_key(), &query, &context)
                .await?;
            Ok(json(StatusCode::OK, &page))
        }
        .await,
    )
}
