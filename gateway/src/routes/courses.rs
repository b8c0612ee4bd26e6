//! `/v1/courses`.

use std::convert::Infallible;

use contracts::accounts::Role;
use contracts::catalog::{
    self, CatalogCommand, CatalogQuery, CourseRef, CreateCourse, UpdateCourse,
};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{
    Body, ListParams, OnSuccess, Shared, context, json, json_body, list_params, parse_id, respond,
    submitted, with,
};
use crate::dispatch::RequestContext;
use crate::problem::Problem;

/// Body of `POST /v1/courses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCourse {
    code: String,
    title: String,
    #[serde(default)]
    description: String,
}

/// Body of `PATCH /v1/courses/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoursePatch {
    code: Option<String>,
    title: Option<String>,
    description: Option<String>,
}

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let create = warp::path!("v1" / "courses")
        .and(warp::post())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<NewCourse>(state.body_limit, state.body_timeout))
        .and_then(create);
    let list = warp::path!("v1" / "courses")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(list_params())
        .and_then(list);
    let get = warp::path!("v1" / "courses" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(get);
    let update = warp::path!("v1" / "courses" / String)
        .and(warp::patch())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<CoursePatch>(
            state.body_limit,
            state.body_timeout,
        ))
        .and_then(update);
    let delete = warp::path!("v1" / "courses" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state))
        .and_then(delete);
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

/// Catalog writes need an admin or a teacher.
pub(super) async fn send(
    state: &Shared,
    context: &RequestContext,
    command: CatalogCommand,
    operation: crate::dispatch::Operation,
) -> Result<crate::dispatch::Submitted, Problem> {
    super::require(context, &[Role::Admin, Role::Teacher])?;
    command.validate().map_err(Problem::invalid)?;
    state
        .dispatcher
        .submit(
            catalog::SERVICE,
            command.routing_key(),
            catalog::SCHEMA_VERSION,
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
    }: Body<NewCourse>,
) -> Result<Response, Infallible> {
    respond(
        async {
            let operation =
                state
                    .dispatcher
                    .operation_uuid(&context, "POST", "/v1/courses", fingerprint);
            let course_id = state.dispatcher.resource_uuid(&context, operation);
            let command = CatalogCommand::CreateCourse(CreateCourse {
                course_id,
                code: body.code,
                title: body.title,
                description: body.description,
            });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(
                result,
                OnSuccess::Created(format!("/v1/courses/{course_id}")),
            ))
        }
        .await,
    )
}

async fn list(
    state: Shared,
    context: RequestContext,
    params: ListParams,
) -> Result<Response, Infallible> {
    respond(
        async {
            let query = CatalogQuery::ListCourses(params.page()?);
            let page = state
                .dispatcher
                .query(query.routing_key(), &query, &context)
                .await?;
            Ok(json(StatusCode::OK, &page))
        }
        .await,
    )
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Infallible> {
    respond(
        async {
            let query = CatalogQuery::GetCourse(CourseRef {
                course_id: parse_id("course", &id)?,
            });
            let course = state
                .dispatcher
                .query(query.routing_key(), &query, &context)
                .await?;
            Ok(json(StatusCode::OK, &course))
        }
        .await,
    )
}

async fn update(
    id: String,
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<CoursePatch>,
) -> Result<Response, Infallible> {
    respond(
        async {
            let course_id = parse_id("course", &id)?;
            let operation = state.dispatcher.operation_uuid(
                &context,
                "PATCH",
                &format!("/v1/courses/{course_id}"),
                fingerprint,
            );
            let command = CatalogCommand::UpdateCourse(UpdateCourse {
                course_id,
                code: body.code,
                title: body.title,
                description: body.description,
            });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(result, OnSuccess::Ok))
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
            let course_id = parse_id("course", &id)?;
            let operation = state.dispatcher.operation_uuid(
                &context,
                "DELETE",
                &format!("/v1/courses/{course_id}"),
                crate::dispatch::Fingerprint::none(),
            );
            let command = CatalogCommand::DeleteCourse(CourseRef { course_id });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(result, OnSuccess::NoContent))
        }
        .await,
    )
}
