//! `/v1/teachers` and a teacher's courses.

use std::convert::Infallible;

use contracts::catalog::{Assignment, CatalogCommand, CatalogQuery, CreateTeacher, TeacherRef};
use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::courses::send;
use super::{
    Body, ListParams, OnSuccess, Shared, context, json, json_body, list_params, parse_id, respond,
    submitted, with,
};
use crate::dispatch::RequestContext;

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
            let operation =
                state
                    .dispatcher
                    .operation_uuid(&context, "POST", "/v1/teachers", fingerprint);
            let teacher_id = state.dispatcher.resource_uuid(&context, operation);
            let command = CatalogCommand::CreateTeacher(CreateTeacher {
                teacher_id,
                name: body.name,
                email: body.email,
            });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(
                result,
                OnSuccess::Created(format!("/v1/teachers/{teacher_id}")),
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
            let query = CatalogQuery::ListTeachers(params.page()?);
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
            let query = CatalogQuery::GetTeacher(TeacherRef {
                teacher_id: parse_id("teacher", &id)?,
            });
            let teacher = state
                .dispatcher
                .query(query.routing_key(), &query, &context)
                .await?;
            Ok(json(StatusCode::OK, &teacher))
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
            let operation = state.dispatcher.operation_uuid(
                &context,
                "DELETE",
                &format!("/v1/teachers/{teacher_id}"),
                crate::dispatch::Fingerprint::none(),
            );
            let command = CatalogCommand::DeleteTeacher(TeacherRef { teacher_id });
            let result = send(&state, &context, command, operation).await?;
            Ok(submitted(result, OnSuccess::NoContent))
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
            let courses = state
                .dispatcher
                .query(query.routing_key(), &query, &context)
                .await?;
            Ok(json(StatusCode::OK, &courses))
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
            let path = format!(
                "/v1/teachers/{}/courses/{}",
                assignment.teacher_id, assignment.course_id
            );
            let operation = state.dispatcher.operation_uuid(
                &context,
                "PUT",
                &path,
                crate::dispatch::Fingerprint::none(),
            );
            let result = send(
                &state,
                &context,
                CatalogCommand::AssignCourse(assignment),
                operation,
            )
            .await?;
            Ok(submitted(result, OnSuccess::Ok))
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
            let path = format!(
                "/v1/teachers/{}/courses/{}",
                assignment.teacher_id, assignment.course_id
            );
            let operation = state.dispatcher.operation_uuid(
                &context,
                "DELETE",
                &path,
                crate::dispatch::Fingerprint::none(),
            );
            let result = send(
                &state,
                &context,
                CatalogCommand::UnassignCourse(assignment),
                operation,
            )
            .await?;
            Ok(submitted(result, OnSuccess::NoContent))
        }
        .await,
    )
}
