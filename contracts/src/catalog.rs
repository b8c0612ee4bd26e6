//! Catalog service: courses, teachers and which teacher gives which course.
//!
//! Routing keys follow `<service>.<aggregate>.<verb>` for commands and queries and
//! `<service>.<aggregate>.<past tense>` for events. Each enum's serde tag is the routing key
//! its variant travels under; a unit test keeps the two in step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{OperationRef, Page, PageRequest};

/// Name of the service, used for queue names.
pub const SERVICE: &str = "catalog";

/// Current schema version of every catalog message.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest course code accepted.
pub const MAX_CODE_LEN: usize = 32;
/// Longest title or name accepted.
pub const MAX_TITLE_LEN: usize = 200;
/// Longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 5_000;
/// Longest e-mail address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

crate::messages! {
    /// Commands the catalog worker accepts.
    pub enum CatalogCommand: Command, keys in commands {
        /// Create a course.
        CreateCourse(CreateCourse) = COURSE_CREATE "catalog.course.create",
        /// Change a course's code, title or description.
        UpdateCourse(UpdateCourse) = COURSE_UPDATE "catalog.course.update",
        /// Delete a course (and unassign it from every teacher).
        DeleteCourse(CourseRef) = COURSE_DELETE "catalog.course.delete",
        /// Create a teacher.
        CreateTeacher(CreateTeacher) = TEACHER_CREATE "catalog.teacher.create",
        /// Delete a teacher.
        DeleteTeacher(TeacherRef) = TEACHER_DELETE "catalog.teacher.delete",
        /// Assign a course to a teacher.
        AssignCourse(Assignment) = TEACHER_ASSIGN_COURSE "catalog.teacher.assign_course",
        /// Remove a course from a teacher.
        UnassignCourse(Assignment) = TEACHER_UNASSIGN_COURSE "catalog.teacher.unassign_course",
    }
}

/// Body of `catalog.course.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCourse {
    /// Id chosen by the gateway so the client learns it at once.
    pub course_id: Uuid,
    /// Unique short code, e.g. `CS101`.
    pub code: String,
    /// Title.
    pub title: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Body of `catalog.course.update`: only the fields present change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCourse {
    /// The course.
    pub course_id: Uuid,
    /// New code.
    pub code: Option<String>,
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
}

/// A command or query that names one course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseRef {
    /// The course.
    pub course_id: Uuid,
}

/// Body of `catalog.teacher.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeacher {
    /// Id chosen by the gateway.
    pub teacher_id: Uuid,
    /// Display name.
    pub name: String,
    /// Unique e-mail address.
    pub email: String,
}

/// A command or query that names one teacher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeacherRef {
    /// The teacher.
    pub teacher_id: Uuid,
}

/// A teacher ↔ course pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The teacher.
    pub teacher_id: Uuid,
    /// The course.
    pub course_id: Uuid,
}

crate::messages! {
    /// Events the catalog emits.
    pub enum CatalogEvent: Event, keys in events {
        /// A course was created.
        CourseCreated(Course) = COURSE_CREATED "catalog.course.created",
        /// A course changed; carries the course as it now is.
        CourseUpdated(Course) = COURSE_UPDATED "catalog.course.updated",
        /// A course was deleted.
        CourseDeleted(CourseRef) = COURSE_DELETED "catalog.course.deleted",
        /// A teacher was created.
        TeacherCreated(TeacherCreated) = TEACHER_CREATED "catalog.teacher.created",
        /// A teacher was deleted.
        TeacherDeleted(TeacherRef) = TEACHER_DELETED "catalog.teacher.deleted",
        /// A course was assigned to a teacher.
        CourseAssigned(Assignment) = COURSE_ASSIGNED "catalog.teacher.course_assigned",
        /// A course was removed from a teacher.
        CourseUnassigned(Assignment) = COURSE_UNASSIGNED "catalog.teacher.course_unassigned",
    }
}

/// Body of `catalog.teacher.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeacherCreated {
    /// The teacher.
    pub teacher_id: Uuid,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

crate::messages! {
    /// Queries the catalog answers.
    pub enum CatalogQuery: Query, keys in queries {
        /// A page of courses.
        ListCourses(PageRequest) -> Page<Course> = COURSE_LIST "catalog.course.list",
        /// One course.
        GetCourse(CourseRef) -> Course = COURSE_GET "catalog.course.get",
        /// A page of teachers.
        ListTeachers(PageRequest) -> Page<Teacher> = TEACHER_LIST "catalog.teacher.list",
        /// One teacher.
        GetTeacher(TeacherRef) -> Teacher = TEACHER_GET "catalog.teacher.get",
        /// The courses a teacher gives.
        TeacherCourses(TeacherRef) -> Vec<Course> = TEACHER_COURSES "catalog.teacher.courses",
        /// The outcome of an operation this service handled.
        GetOperation(OperationRef) -> crate::Outcome = OPERATION_GET "catalog.operation.get",
    }
}

/// A course as clients and events see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Course {
    /// Id.
    pub id: Uuid,
    /// Unique code.
    pub code: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
}

/// A teacher as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// Ids of the courses this teacher gives.
    pub course_ids: Vec<Uuid>,
}

/// Checks a course code; the same rule runs at the gateway (fast 422) and in the worker.
pub fn validate_code(code: &str) -> Result<(), String> {
    if code.is_empty() || code.len() > MAX_CODE_LEN {
        return Err(format!("code must be 1 to {MAX_CODE_LEN} characters"));
    }
    if !code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("code may contain only letters, digits, '-' and '_'".into());
    }
    Ok(())
}

/// Checks a title or a name: not blank, bounded length.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if crate::text::is_blank(value) {
        return Err(format!("{field} must not be blank"));
    }
    if value.contains('\0') {
        return Err(format!("{field} must not contain NUL characters"));
    }
    if value.chars().count() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    Ok(())
}

/// Checks a description: may be empty, bounded length.
pub fn validate_description(value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err("description must not contain NUL characters".into());
    }
    if value.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(format!(
            "description must be at most {MAX_DESCRIPTION_LEN} characters"
        ));
    }
    Ok(())
}

/// Checks an e-mail address loosely (one `@`, something on each side, no spaces); the
/// real check is the mail a teacher receives.
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err("email must be an address like name@example.org".into())
    }
}

impl CatalogCommand {
    /// Validates the fields of the command; an error is a permanent rejection.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::CreateCourse(c) => {
                validate_code(&c.code)?;
                validate_text("title", &c.title, MAX_TITLE_LEN)?;
                validate_description(&c.description)
            }
            Self::UpdateCourse(u) => {
                if u.code.is_none() && u.title.is_none() && u.description.is_none() {
                    return Err("nothing to change: give code, title or description".into());
                }
                if let Some(code) = &u.code {
                    validate_code(code)?;
                }
                if let Some(title) = &u.title {
                    validate_text("title", title, MAX_TITLE_LEN)?;
                }
                if let Some(d) = &u.description {
                    validate_description(d)?;
                }
                Ok(())
            }
            Self::CreateTeacher(t) => {
                validate_text("name", &t.name, MAX_TITLE_LEN)?;
                validate_email(&t.email)
            }
            Self::DeleteCourse(_)
            | Self::DeleteTeacher(_)
            | Self::AssignCourse(_)
            | Self::UnassignCourse(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_of<T: Serialize>(value: &T) -> String {
        let json = serde_json::to_value(value).unwrap_or_default();
        json["type"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn every_command_serialises_with_its_routing_key_as_type() {
        let id = Uuid::nil();
        let all = [
            CatalogCommand::CreateCourse(CreateCourse {
                course_id: id,
                code: "C".into(),
                title: "T".into(),
                description: String::new(),
            }),
            CatalogCommand::UpdateCourse(UpdateCourse {
                course_id: id,
                code: None,
                title: None,
                description: None,
            }),
            CatalogCommand::DeleteCourse(CourseRef { course_id: id }),
            CatalogCommand::CreateTeacher(CreateTeacher {
                teacher_id: id,
                name: "N".into(),
                email: "e".into(),
            }),
            CatalogCommand::DeleteTeacher(TeacherRef { teacher_id: id }),
            CatalogCommand::AssignCourse(Assignment {
                teacher_id: id,
                course_id: id,
            }),
            CatalogCommand::UnassignCourse(Assignment {
                teacher_id: id,
                course_id: id,
            }),
        ];
        for command in &all {
            assert_eq!(tag_of(command), command.routing_key());
        }
        let keys: Vec<_> = all.iter().map(CatalogCommand::routing_key).collect();
        assert_eq!(keys, commands::ALL);
    }

    #[test]
    fn every_event_and_query_serialises_with_its_routing_key_as_type() {
        let id = Uuid::nil();
        let course = Course {
            id,
            code: "C".into(),
            title: "T".into(),
            description: String::new(),
        };
        let assignment = Assignment {
            teacher_id: id,
            course_id: id,
        };
        let events = [
            CatalogEvent::CourseCreated(course.clone()),
            CatalogEvent::CourseUpdated(course),
            CatalogEvent::CourseDeleted(CourseRef { course_id: id }),
            CatalogEvent::TeacherCreated(TeacherCreated {
                teacher_id: id,
                name: "N".into(),
                email: "e".into(),
            }),
            CatalogEvent::TeacherDeleted(TeacherRef { teacher_id: id }),
            CatalogEvent::CourseAssigned(assignment.clone()),
            CatalogEvent::CourseUnassigned(assignment),
        ];
        for event in &events {
            assert_eq!(tag_of(event), event.routing_key());
        }
        let page = PageRequest {
            limit: 1,
            cursor: None,
        };
        let queries = [
            CatalogQuery::ListCourses(page.clone()),
            CatalogQuery::GetCourse(CourseRef { course_id: id }),
            CatalogQuery::ListTeachers(page),
            CatalogQuery::GetTeacher(TeacherRef { teacher_id: id }),
            CatalogQuery::TeacherCourses(TeacherRef { teacher_id: id }),
            CatalogQuery::GetOperation(OperationRef { operation_id: id }),
        ];
        for query in &queries {
            assert_eq!(tag_of(query), query.routing_key());
        }
        let keys: Vec<_> = queries.iter().map(CatalogQuery::routing_key).collect();
        assert_eq!(keys, queries::ALL);
    }

    #[test]
    fn unknown_fields_in_a_command_are_refused() {
        let body = r#"{"type":"catalog.course.delete","course_id":"00000000-0000-0000-0000-000000000000","x":1}"#;
        assert!(serde_json::from_str::<CatalogCommand>(body).is_err());
    }

    #[test]
    fn codes_titles_and_emails_are_checked() {
        assert!(validate_code("CS-101_a").is_ok());
        assert!(validate_code("").is_err());
        assert!(validate_code("has space").is_err());
        assert!(validate_code(&"x".repeat(MAX_CODE_LEN + 1)).is_err());
        assert!(validate_text("title", "  ", 10).is_err());
        assert!(validate_text("title", "ok", 10).is_ok());
        assert!(validate_email("ada@example.org").is_ok());
        for bad in [
            "ada",
            "@example.org",
            "ada@",
            "ada@org",
            "a b@example.org",
            "a@b@c.org",
        ] {
            assert!(validate_email(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn an_update_with_nothing_to_change_is_invalid() {
        let update = CatalogCommand::UpdateCourse(UpdateCourse {
            course_id: Uuid::nil(),
            code: None,
            title: None,
            description: None,
        });
        assert!(update.validate().is_err());
    }
}
