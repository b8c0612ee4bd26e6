//! The rules for teachers: an e-mail address is unique among live teachers, a course is
//! assigned only while it exists, assigning twice is a success, unassigning what a
//! teacher does not give is not found.

use contracts::catalog::{
    Assignment, CatalogEvent, CreateTeacher, Teacher, TeacherCreated, TeacherRef,
};
use contracts::{Envelope, Rejection};
use mongodb::bson::doc;
use platform::effect::Effect;

use crate::store::document::{Edit, Written, shown};
use crate::store::teachers::tombstone_email;
use crate::store::{Store, StoreError};

fn missing(teacher: uuid::Uuid) -> Effect {
    Effect::Rejected(Rejection::not_found(format!(
        "teacher {teacher} does not exist"
    )))
}

/// Creates a teacher; a duplicate id or e-mail address is a conflict.
pub async fn create(
    store: &Store,
    envelope: &Envelope,
    command: &CreateTeacher,
) -> Result<Effect, StoreError> {
    let teacher = Teacher {
        id: command.teacher_id,
        name: command.name.clone(),
        email: command.email.to_lowercase(),
        course_ids: Vec::new(),
    };
    let event = CatalogEvent::TeacherCreated(TeacherCreated {
        teacher_id: teacher.id,
        name: teacher.name.clone(),
        email: teacher.email.clone(),
    });
    Ok(
        match store.teachers.insert(envelope, &teacher, &event).await? {
            Written::Now(effect) => effect,
            Written::Before(now) => shown(now.as_ref()),
            Written::Exists => Effect::Rejected(Rejection::conflict(format!(
                "teacher {} already exists",
                teacher.id
            ))),
            Written::Taken | Written::Missing => Effect::Rejected(Rejection::conflict(format!(
                "a teacher with email {} already exists",
                teacher.email
            ))),
        },
    )
}

/// What a change to a teacher reports, the rule's own effect aside.
fn settle(written: Written<Teacher>, teacher: uuid::Uuid, show: bool) -> Effect {
    match written {
        Written::Now(effect) => effect,
        Written::Before(now) if show => shown(now.as_ref()),
        Written::Before(_) => Effect::Applied(None),
        // No unique value changes here: a refusal can only mean the teacher is gone.
        Written::Missing | Written::Exists | Written::Taken => missing(teacher),
    }
}

/// Deletes a teacher (a tombstone that gives the e-mail address back).
pub async fn delete(
    store: &Store,
    envelope: &Envelope,
    command: &TeacherRef,
) -> Result<Effect, StoreError> {
    let id = command.teacher_id;
    let written = store
        .teachers
        .change(envelope, id, |_| {
            Ok(Edit {
                update: doc! {"$set": {
                    "deleted_at": mongodb::bson::DateTime::now(),
                    "email": tombstone_email(id),
                }},
                event: CatalogEvent::TeacherDeleted(command.clone()),
                effect: Effect::Applied(None),
            })
        })
        .await?;
    Ok(settle(written, id, false))
}

/// Assigns a course that exists; assigning one already given is a success.
pub async fn assign(
    store: &Store,
    envelope: &Envelope,
    command: &Assignment,
) -> Result<Effect, StoreError> {
    let course = command.course_id;
    if !store.courses.exists(course).await? {
        return Ok(Effect::Rejected(Rejection::not_found(format!(
            "course {course} does not exist"
        ))));
    }
    let written = store
        .teachers
        .change(envelope, command.teacher_id, |mut teacher| {
            if teacher.course_ids.contains(&course) {
                return Err(Effect::applied(&teacher));
            }
            teacher.course_ids.push(course);
            Ok(Edit {
                update: doc! {"$push": {"courses": course.to_string()}},
                effect: Effect::applied(&teacher),
                event: CatalogEvent::CourseAssigned(command.clone()),
            })
        })
        .await?;
    let effect = settle(written, command.teacher_id, true);
    // The course may have been deleted between the check and the assignment; its delete
    // pulls it from teachers, but could have run before our push. Undo in that case.
    if effect.is_applied() && !store.courses.exists(course).await? {
        let course = course.to_string();
        store
            .teachers
            .collection()
            .update_one(
                doc! {"_id": command.teacher_id.to_string()},
                doc! {"$pull": {"courses": &course}},
            )
            .await?;
    }
    Ok(effect)
}

/// Removes a course from a teacher who gives it.
pub async fn unassign(
    store: &Store,
    envelope: &Envelope,
    command: &Assignment,
) -> Result<Effect, StoreError> {
    let (teacher, course) = (command.teacher_id, command.course_id);
    let written = store
        .teachers
        .change(envelope, teacher, |current| {
            if !current.course_ids.contains(&course) {
                return Err(Effect::Rejected(Rejection::not_found(format!(
                    "teacher {teacher} does not give course {course}"
                ))));
            }
            Ok(Edit {
                update: doc! {"$pull": {"courses": course.to_string()}},
                event: CatalogEvent::CourseUnassigned(command.clone()),
                effect: Effect::Applied(None),
            })
        })
        .await?;
    Ok(settle(written, teacher, false))
}
