//! `/v1/teachers` and a teacher's courses.

use std::convert::Infallible;

use contracts::catalog::{Assignment, CatalogCommand, CatalogQuery, CreateTeacher, TeacherRef};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::courses::send;
use super::{
    Body, Fingerprint, ListParams, OnSuccess, Operation, Shared, context, json_body, list_params,
    parse_id, read, respond, with,
};
use crate::context::RequestContext;

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
        .and_then(create);
    let list = warp::path!("v1" / "teachers")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and(list_params())
        .and_then(list);
    let get = warp::path!("v1" / "teachers" / String)
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(get);
    let delete = warp::path!("v1" / "teachers" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(delete);
    let courses = warp::path!("v1" / "teachers" / String / "courses")
        .and(warp::get())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(courses);
    let assign = warp::path!("v1" / "teachers" / String / "courses" / String)
        .and(warp::put())
        .and(with(state.clone()))
        .and(context(state.clone()))
        .and_then(assign);
    let unassign = warp::path!("v1" / "teachers" / String / "courses" / String)
        .and(warp::delete())
        .and(with(state.clone()))
        .and(context(state))
        .and_then(unassign);
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
) -> Result<Response, Infallible> {
    respond(
        async {
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
            let query = CatalogQuery::ListTeachers(params.page()?);
            read(&state, &context, query).await
        }
        .await,
    )
}

async fn get(id: String, state: Shared, context: RequestContext) -> Result<Response, Infallible> {
    respond(
        async {
            let query = CatalogQuery::GetTeacher(TeacherRef {
                teacher_id: parse_id("teacher", &id)?,
            });
            read(&state, &context, query).await
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
            let teacher_id = parse_id("teacher", &id)?;
            let operation = Operation::for_request(&context, Fingerprint::none());
            let command = CatalogCommand::DeleteTeacher(TeacherRef { teacher_id });
            send(&state, &context, operation, command, OnSuccess::NoContent).await
        }
        .await,
    )
}

async fn courses(
    id: String,
    state: Shared,
    context: RequestContext,
) -> Result<Response, Infallible> {
    respond(
        async {
            let query = CatalogQuery::TeacherCourses(TeacherRef {
                teacher_id: parse_id("teacher", &id)?,
            });
            read(&state, &context, query).await
        }
        .await,
    )
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
) -> Result<Response, Infallible> {
    respond(
        async {
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
        .await,
    )
}

async fn unassign(
    id: String,
    course: String,
    state: Shared,
    context: RequestContext,
) -> Result<Response, Infallible> {
    respond(
        async {
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
        .await,
    )
}
