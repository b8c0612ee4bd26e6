//! `/v1/courses`.

use contracts::accounts::Role;
use contracts::catalog::{CatalogCommand, CatalogQuery, CourseRef, CreateCourse, UpdateCourse};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::{
    Body, Fingerprint, ListParams, OnSuccess, Operation, Shared, answer, context, json_body,
    list_params, parse_id, read, with, write,
};
use crate::context::RequestContext;
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
        .then(create)
        .map(answer);
    let list = warp::path!("v1" / "courses")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(list_params())
        .then(list)
        .map(answer);
    let get = warp::path!("v1" / "courses" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(get)
        .map(answer);
    let update = warp::path!("v1" / "courses" / String)
        .and(warp::patch())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<CoursePatch>(
            state.body_limit,
            state.body_timeout,
        ))
        .then(update)
        .map(answer);
    let delete = warp::path!("v1" / "courses" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state))
        .then(delete)
        .map(answer);
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
    operation: Operation,
    command: CatalogCommand,
    on_success: OnSuccess,
) -> Result<Response, Problem> {
    super::require(context, &[Role::Admin, Role::Teacher])?;
    command.validate().map_err(Problem::invalid)?;
    write(state, context, operation, command, on_success).await
}

async fn create(
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<NewCourse>,
) -> Result<Response, Problem> {
    let operation = Operation::for_request(&context, fingerprint);
    let course_id = operation.resource_id;
    let command = CatalogCommand::CreateCourse(CreateCourse {
        course_id,
        code: body.code,
        title: body.title,
        description: body.description,
    });
    send(
        &state,
        &context,
        operation,
        command,
        OnSuccess::Created(format!("/v1/courses/{course_id}")),
    )
    .await
}

async fn list(
    state: Shared,
    context: RequestContext,
    params: ListParams,
) -> Result<Response, Problem> {
    let query = CatalogQuery::ListCourses(params.page()?);
    read(&state, &context, query).await
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let query = CatalogQuery::GetCourse(CourseRef {
        course_id: parse_id("course", &id)?,
    });
    read(&state, &context, query).await
}

async fn update(
    id: String,
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<CoursePatch>,
) -> Result<Response, Problem> {
    let course_id = parse_id("course", &id)?;
    let operation = Operation::for_request(&context, fingerprint);
    let command = CatalogCommand::UpdateCourse(UpdateCourse {
        course_id,
        code: body.code,
        title: body.title,
        description: body.description,
    });
    send(&state, &context, operation, command, OnSuccess::Ok).await
}

async fn delete(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let course_id = parse_id("course", &id)?;
    let operation = Operation::for_request(&context, Fingerprint::none());
    let command = CatalogCommand::DeleteCourse(CourseRef { course_id });
    send(&state, &context, operation, command, OnSuccess::NoContent).await
}
