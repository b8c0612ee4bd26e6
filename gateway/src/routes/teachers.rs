//! `/v1/teachers` and a teacher's courses.

use contracts::catalog::{Assignment, CatalogCommand, CatalogQuery, CreateTeacher, TeacherRef};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::courses::send;
use super::{
    Body, Fingerprint, ListParams, OnSuccess, Operation, Shared, answer, context, json_body,
    list_params, parse_id, read, with,
};
use crate::context::RequestContext;
use crate::problem::Problem;

/// Body of `POST /v1/teachers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTeacher {
    name: String,
    email: String,
}

pub(super) fn routes(state: Shared) -> BoxedFilter<(Response,)> {
    let create = warp::path!("v1" / "teachers")
        .and(warp::post())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(json_body::<NewTeacher>(
            state.body_limit,
            state.body_timeout,
        ))
        .then(create)
        .map(answer);
    let list = warp::path!("v1" / "teachers")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(list_params())
        .then(list)
        .map(answer);
    let get = warp::path!("v1" / "teachers" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(get)
        .map(answer);
    let delete = warp::path!("v1" / "teachers" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(delete)
        .map(answer);
    let courses = warp::path!("v1" / "teachers" / String / "courses")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(courses)
        .map(answer);
    let assign = warp::path!("v1" / "teachers" / String / "courses" / String)
        .and(warp::put())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .then(assign)
        .map(answer);
    let unassign = warp::path!("v1" / "teachers" / String / "courses" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state))
        .then(unassign)
        .map(answer);
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(delete)
        .unify()
        .or(courses)
        .unify()
        .or(assign)
        .unify()
        .or(unassign)
        .unify()
        .boxed()
}

async fn create(
    state: Shared,
    context: RequestContext,
    Body {
        value: body,
        fingerprint,
    }: Body<NewTeacher>,
) -> Result<Response, Problem> {
    let operation = Operation::for_request(&context, fingerprint);
    let teacher_id = operation.resource_id;
    let command = CatalogCommand::CreateTeacher(CreateTeacher {
        teacher_id,
        name: body.name,
        email: body.email,
    });
    send(
        &state,
        &context,
        operation,
        command,
        OnSuccess::Created(format!("/v1/teachers/{teacher_id}")),
    )
    .await
}

async fn list(
    state: Shared,
    context: RequestContext,
    params: ListParams,
) -> Result<Response, Problem> {
    let query = CatalogQuery::ListTeachers(params.page()?);
    read(&state, &context, query).await
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let query = CatalogQuery::GetTeacher(TeacherRef {
        teacher_id: parse_id("teacher", &id)?,
    });
    read(&state, &context, query).await
}

async fn delete(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let teacher_id = parse_id("teacher", &id)?;
    let operation = Operation::for_request(&context, Fingerprint::none());
    let command = CatalogCommand::DeleteTeacher(TeacherRef { teacher_id });
    send(&state, &context, operation, command, OnSuccess::NoContent).await
}

async fn courses(id: String, state: Shared, context: RequestContext) -> Result<Response, Problem> {
    let query = CatalogQuery::TeacherCourses(TeacherRef {
        teacher_id: parse_id("teacher", &id)?,
    });
    read(&state, &context, query).await
}

fn assignment(teacher: &str, course: &str) -> Result<Assignment, crate::problem::Problem> {
    Ok(Assignment {
        teacher_id: parse_id("teacher", teacher)?,
        course_id: parse_id("course", course)?,
    })
}

async fn assign(
    id: String,
    course: String,
    state: Shared,
    context: RequestContext,
) -> Result<Response, Problem> {
    let assignment = assignment(&id, &course)?;
    let operation = Operation::for_request(&context, Fingerprint::none());
    send(
        &state,
        &context,
        operation,
        CatalogCommand::AssignCourse(assignment),
        OnSuccess::Ok,
    )
    .await
}

async fn unassign(
    id: String,
    course: String,
    state: Shared,
    context: RequestContext,
) -> Result<Response, Problem> {
    let assignment = assignment(&id, &course)?;
    let operation = Operation::for_request(&context, Fingerprint::none());
    send(
        &state,
        &context,
        operation,
        CatalogCommand::UnassignCourse(assignment),
        OnSuccess::NoContent,
    )
    .await
}
