//! The rules for courses: a code is unique among live courses, an update changes only the
//! fields it names, a deleted course leaves every teacher who gave it.

use contracts::catalog::{CatalogEvent, Course, CourseRef, CreateCourse, UpdateCourse};
use contracts::{Envelope, Rejection};
use mongodb::bson::doc;
use platform::effect::Effect;

use crate::store::courses::tombstone_code;
use crate::store::document::{Edit, Written, shown};
use crate::store::{Store, StoreError};

fn missing(course: uuid::Uuid) -> Effect {
    Effect::Rejected(Rejection::not_found(format!(
        "course {course} does not exist"
    )))
}

fn code_taken(code: &str) -> Effect {
    Effect::Rejected(Rejection::conflict(format!(
        "a course with code {code} already exists"
    )))
}

/// Creates a course; a duplicate id or code is a conflict.
pub async fn create(
    store: &Store,
    envelope: &Envelope,
    command: &CreateCourse,
) -> Result<Effect, StoreError> {
    let course = Course {
        id: command.course_id,
        code: command.code.clone(),
        title: command.title.clone(),
        description: command.description.clone(),
    };
    let event = CatalogEvent::CourseCreated(course.clone());
    Ok(
        match store.courses.insert(envelope, &course, &event).await? {
            Written::Now(effect) => effect,
            Written::Before(now) => shown(now.as_ref()),
            Written::Exists => Effect::Rejected(Rejection::conflict(format!(
                "course {} already exists",
                course.id
            ))),
            Written::Taken | Written::Missing => code_taken(&course.code),
        },
    )
}

/// Changes the fields the command names; taking another live course's code is a conflict.
pub async fn update(
    store: &Store,
    envelope: &Envelope,
    command: &UpdateCourse,
) -> Result<Effect, StoreError> {
    let mut code = None;
    let written = store
        .courses
        .change(envelope, command.course_id, |mut course| {
            if let Some(new) = &command.code {
                course.code.clone_from(new);
            }
            if let Some(title) = &command.title {
                course.title.clone_from(title);
            }
            if let Some(description) = &command.description {
                course.description.clone_from(description);
            }
            code = Some(course.code.clone());
            Ok(Edit {
                update: doc! {"$set": {
                    "code": &course.code,
                    "title": &course.title,
                    "description": &course.description,
                }},
                effect: Effect::applied(&course),
                event: CatalogEvent::CourseUpdated(course),
            })
        })
        .await?;
    Ok(match written {
        Written::Now(effect) => effect,
        Written::Before(now) => shown(now.as_ref()),
        Written::Missing | Written::Exists => missing(command.course_id),
        Written::Taken => code_taken(code.as_deref().unwrap_or_default()),
    })
}

/// Deletes a course (a tombstone that gives its code back) and removes it from every
/// teacher who gave it.
pub async fn delete(
    store: &Store,
    envelope: &Envelope,
    command: &CourseRef,
) -> Result<Effect, StoreError> {
    let id = command.course_id;
    let written = store
        .courses
        .change(envelope, id, |_| {
            Ok(Edit {
                update: doc! {"$set": {
                    "deleted_at": mongodb::bson::DateTime::now(),
                    "code": tombstone_code(id),
                }},
                event: CatalogEvent::CourseDeleted(command.clone()),
                effect: Effect::Applied(None),
            })
        })
        .await?;
    match written {
        Written::Now(_) | Written::Before(_) => {}
        Written::Missing | Written::Exists | Written::Taken => return Ok(missing(id)),
    }
    // Idempotent, so a redelivery after a crash here simply finishes the job.
    let id = id.to_string();
    store
        .teachers
        .collection()
        .update_many(doc! {"courses": &id}, doc! {"$pull": {"courses": &id}})
        .await?;
    Ok(Effect::Applied(None))
}
