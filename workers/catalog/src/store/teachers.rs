//! Teachers and the courses they give.

use contracts::catalog::{
    Assignment, CatalogEvent, CreateTeacher, Teacher, TeacherCreated, TeacherRef,
};
use contracts::common::Page;
use contracts::{Envelope, Rejection};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use uuid::Uuid;

use super::courses::{HasId, page};
use super::outbox::{self, OutboxEntry};
use super::{
    APPLIED_KEPT, Effect, MAX_CONFLICT_RETRIES, Store, StoreError, courses, is_deleted,
    is_duplicate_key, strings, version,
};

/// The view of a stored teacher.
pub fn view(document: &Document) -> Option<Teacher> {
    Some(Teacher {
        id: Uuid::parse_str(document.get_str("_id").ok()?).ok()?,
        name: document.get_str("name").ok()?.to_owned(),
        email: document.get_str("email").ok()?.to_owned(),
        course_ids: strings(document, "courses")
            .iter()
            .filter_map(|c| Uuid::parse_str(c).ok())
            .collect(),
    })
}

impl HasId for Teacher {
    fn id(&self) -> Uuid {
        self.id
    }
}

fn json(teacher: &Teacher) -> Option<serde_json::Value> {
    serde_json::to_value(teacher).ok()
}

fn applied(document: &Document, envelope: &Envelope) -> bool {
    strings(document, "applied").contains(&envelope.message_id.to_string())
}

fn not_found(id: &str) -> Effect {
    Effect::Rejected(Rejection::not_found(format!("teacher {id} does not exist")))
}

/// Creates a teacher; a duplicate e-mail is a conflict.
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
    let entry = OutboxEntry::new(envelope, &event);
    let id = teacher.id.to_string();
    let empty: Vec<String> = Vec::new();
    let document = doc! {
        "_id": &id,
        "name": &teacher.name,
        "email": &teacher.email,
        "courses": empty,
        "version": 1_i64,
        "applied": [envelope.message_id.to_string()],
        "outbox": [entry.to_document()?],
        "pending_events": 1,
        "changed_ms": outbox::now_ms(),
        "created_at": mongodb::bson::DateTime::now(),
    };
    match store.teachers.insert_one(document).await {
        Ok(_) => Ok(Effect::Applied(json(&teacher))),
        Err(error) if is_duplicate_key(&error) => {
            match store.teachers.find_one(doc! {"_id": &id}).await? {
                Some(existing) if applied(&existing, envelope) => {
                    Ok(Effect::Applied(view(&existing).as_ref().and_then(json)))
                }
                Some(_) => Ok(Effect::Rejected(Rejection::conflict(format!(
                    "teacher {id} already exists"
                )))),
                None => Ok(Effect::Rejected(Rejection::conflict(format!(
                    "a teacher with email {} already exists",
                    teacher.email
                )))),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// Applies one guarded change to a live teacher, re-reading on contention. `change`
/// decides from the current state: `Err(effect)` to stop with that effect, or
/// `Ok((update, result))` to apply `update` and report `result`.
async fn change<F>(
    store: &Store,
    envelope: &Envelope,
    id: &str,
    mut decide: F,
) -> Result<Effect, StoreError>
where
    F: FnMut(&Document) -> Result<Result<(Document, Effect), Effect>, StoreError>,
{
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(current) = store.teachers.find_one(doc! {"_id": id}).await? else {
            return Ok(not_found(id));
        };
        if applied(&current, envelope) {
            return Ok(Effect::Applied(view(&current).as_ref().and_then(json)));
        }
        if is_deleted(&current) {
            return Ok(not_found(id));
        }
        let (mut update, effect) = match decide(&current)? {
            Ok(pair) => pair,
            Err(stop) => return Ok(stop),
        };
        let applied_push =
            doc! {"$each": [envelope.message_id.to_string()], "$slice": -APPLIED_KEPT};
        match update.get_document_mut("$push") {
            Ok(push) => {
                push.insert("applied", applied_push);
            }
            Err(_) => {
                update.insert("$push", doc! {"applied": applied_push});
            }
        }
        update.insert("$inc", doc! {"version": 1_i64, "pending_events": 1});
        match update.get_document_mut("$set") {
            Ok(set) => {
                set.insert("changed_ms", outbox::now_ms());
            }
            Err(_) => {
                update.insert("$set", doc! {"changed_ms": outbox::now_ms()});
            }
        }
        let result = store
            .teachers
            .update_one(doc! {"_id": id, "version": version(&current)}, update)
            .await?;
        if result.matched_count == 1 {
            return Ok(effect);
        }
    }
    Err(StoreError::Contention(format!("teacher {id}")))
}

/// Deletes a teacher (tombstone; the e-mail becomes free again).
pub async fn delete(
    store: &Store,
    envelope: &Envelope,
    command: &TeacherRef,
) -> Result<Effect, StoreError> {
    let id = command.teacher_id.to_string();
    let entry =
        OutboxEntry::new(envelope, &CatalogEvent::TeacherDeleted(command.clone())).to_document()?;
    change(store, envelope, &id, |_| {
        let update = doc! {
            "$set": {"deleted_at": mongodb::bson::DateTime::now(), "email": format!("~deleted~{id}")},
            "$push": {"outbox": entry.clone()},
        };
        Ok(Ok((update, Effect::Applied(None))))
    })
    .await
    .map(|effect| match effect {
        Effect::Applied(_) => Effect::Applied(None),
        other => other,
    })
}

/// Assigns a course; assigning one already given is a no-op success.
pub async fn assign(
    store: &Store,
    envelope: &Envelope,
    command: &Assignment,
) -> Result<Effect, StoreError> {
    let id = command.teacher_id.to_string();
    let course = command.course_id.to_string();
    if !courses::exists(store, &course).await? {
        return Ok(Effect::Rejected(Rejection::not_found(format!(
            "course {course} does not exist"
        ))));
    }
    let entry =
        OutboxEntry::new(envelope, &CatalogEvent::CourseAssigned(command.clone())).to_document()?;
    let effect = change(store, envelope, &id, |current| {
        let Some(mut teacher) = view(current) else {
            return Err(StoreError::Contention(format!("teacher {id} is malformed")));
        };
        if teacher.course_ids.contains(&command.course_id) {
            return Ok(Err(Effect::Applied(json(&teacher))));
        }
        teacher.course_ids.push(command.course_id);
        let update = doc! {"$push": {"courses": &course, "outbox": entry.clone()}};
        Ok(Ok((update, Effect::Applied(json(&teacher)))))
    })
    .await?;
    // The course may have been deleted between the check and the assignment; its delete
    // pulls it from teachers, but could have run before our push. Undo in that case.
    if matches!(effect, Effect::Applied(_)) && !courses::exists(store, &course).await? {
        store
            .teachers
            .update_one(doc! {"_id": &id}, doc! {"$pull": {"courses": &course}})
            .await?;
    }
    Ok(effect)
}

/// Removes a course from a teacher.
pub async fn unassign(
    store: &Store,
    envelope: &Envelope,
    command: &Assignment,
) -> Result<Effect, StoreError> {
    let id = command.teacher_id.to_string();
    let course = command.course_id.to_string();
    let entry = OutboxEntry::new(envelope, &CatalogEvent::CourseUnassigned(command.clone()))
        .to_document()?;
    change(store, envelope, &id, |current| {
        if !strings(current, "courses").contains(&course) {
            return Ok(Err(Effect::Rejected(Rejection::not_found(format!(
                "teacher {id} does not give course {course}"
            )))));
        }
        let update = doc! {"$pull": {"courses": &course}, "$push": {"outbox": entry.clone()}};
        Ok(Ok((update, Effect::Applied(None))))
    })
    .await
    .map(|effect| match effect {
        Effect::Applied(_) => Effect::Applied(None),
        other => other,
    })
}

/// One live teacher.
pub async fn get(store: &Store, id: Uuid) -> Result<Option<Teacher>, StoreError> {
    let found = store
        .teachers
        .find_one(doc! {"_id": id.to_string()})
        .await?;
    Ok(found.filter(|d| !is_deleted(d)).as_ref().and_then(view))
}

/// A page of live teachers after `cursor`.
pub async fn list(
    store: &Store,
    limit: u32,
    cursor: Option<Uuid>,
) -> Result<Page<Teacher>, StoreError> {
    let mut filter = doc! {"deleted_at": {"$exists": false}};
    if let Some(after) = cursor {
        filter.insert("_id", doc! {"$gt": after.to_string()});
    }
    let documents: Vec<Document> = store
        .teachers
        .find(filter)
        .sort(doc! {"_id": 1})
        .limit(i64::from(limit) + 1)
        .await?
        .try_collect()
        .await?;
    Ok(page(documents.iter().filter_map(view).collect(), limit))
}
