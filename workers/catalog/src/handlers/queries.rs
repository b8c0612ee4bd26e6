//! The query handler: reads answered by direct reply.

use contracts::catalog::CatalogQuery;
use contracts::common::{MAX_PAGE, PageRequest};
use contracts::{QueryReply, Rejection};
use platform::bus::Answer;
use serde::Serialize;
use uuid::Uuid;

use crate::store::{Store, StoreError, operations};

/// Handles the catalog query queue.
pub struct QueryHandler {
    store: Store,
}

impl QueryHandler {
    /// A handler reading `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn ok<T: Serialize>(body: &T) -> QueryReply {
    QueryReply::Ok {
        body: serde_json::to_value(body).unwrap_or_default(),
    }
}

fn missing(detail: String) -> QueryReply {
    QueryReply::Rejected {
        rejection: Rejection::not_found(detail),
    }
}

fn parse_page(page: &PageRequest) -> Result<(u32, Option<Uuid>), Rejection> {
    if !(1..=MAX_PAGE).contains(&page.limit) {
        return Err(Rejection::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let cursor = match &page.cursor {
        None => None,
        Some(text) => {
            Some(Uuid::parse_str(text).map_err(|_| Rejection::invalid("cursor is not valid"))?)
        }
    };
    Ok((page.limit, cursor))
}

impl Answer for QueryHandler {
    type Query = CatalogQuery;
    type Error = StoreError;

    async fn answer(&self, query: CatalogQuery) -> Result<QueryReply, StoreError> {
        Ok(match query {
            CatalogQuery::ListCourses(page) => match parse_page(&page) {
                Ok((limit, cursor)) => ok(&self.store.courses.page(limit, cursor).await?),
                Err(rejection) => QueryReply::Rejected { rejection },
            },
            CatalogQuery::GetCourse(r) => match self.store.courses.get(r.course_id).await? {
                Some(course) => ok(&course),
                None => missing(format!("course {} does not exist", r.course_id)),
            },
            CatalogQuery::ListTeachers(page) => match parse_page(&page) {
                Ok((limit, cursor)) => ok(&self.store.teachers.page(limit, cursor).await?),
                Err(rejection) => QueryReply::Rejected { rejection },
            },
            CatalogQuery::GetTeacher(r) => match self.store.teachers.get(r.teacher_id).await? {
                Some(teacher) => ok(&teacher),
                None => missing(format!("teacher {} does not exist", r.teacher_id)),
            },
            CatalogQuery::TeacherCourses(r) => match self.store.teachers.get(r.teacher_id).await? {
                Some(teacher) => ok(&self.store.courses.many(&teacher.course_ids).await?),
                None => missing(format!("teacher {} does not exist", r.teacher_id)),
            },
            CatalogQuery::GetOperation(r) => {
                match operations::get(&self.store, r.operation_id).await? {
                    Some(outcome) => ok(&outcome),
                    None => missing(format!("operation {} has no outcome here", r.operation_id)),
                }
            }
        })
    }
}
