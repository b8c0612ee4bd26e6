//! Courses: create, update, delete (tombstone), read and page.

use contracts::catalog::{CatalogEvent, Course, CourseRef, CreateCourse, UpdateCourse};
use contracts::common::Page;
use contracts::{Envelope, Rejection};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use uuid::Uuid;

use super::outbox::{self, OutboxEntry};
use super::{
    APPLIED_KEPT, Effect, MAX_CONFLICT_RETRIES, Store, StoreError, is_deleted, is_duplicate_key,
    strings, version,
};

/// The view of a stored course.
pub fn view(document: &Document) -> Option<Course> {
    Some(Course {
        id: Uuid::parse_str(document.get_str("_id").ok()?).ok()?,
        code: document.get_str("code").ok()?.to_owned(),
        title: document.get_str("title").ok()?.to_owned(),
        description: document
            .get_str("description")
            .unwrap_or_default()
            .to_owned(),
    })
}

fn json(course: &Course) -> Option<serde_json::Value> {
    serde_json::to_value(course).ok()
}

fn applied(document: &Document, envelope: &Envelope) -> bool {
    strings(document, "applied").contains(&envelope.message_id.to_string())
}

/// A tombstoned course keeps its document (the delete event lives there) but gives its
/// code back, so the unique index lets a new course take it at once.
fn tombstone_code(id: &str) -> String {
    format!("~deleted~{id}")
}

/// Creates a course; a duplicate code is a conflict.
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
    let entry = OutboxEntry::new(envelope, &CatalogEvent::CourseCreated(course.clone()));
    let id = course.id.to_string();
    let document = doc! {
        "_id": &id,
        "code": &course.code,
        "title": &course.title,
        "description": &course.description,
        "version": 1_i64,
        "applied": [envelope.message_id.to_string()],
        "outbox": [entry.to_document()?],
        "pending_events": 1,
        "changed_ms": outbox::now_ms(),
        "created_at": mongodb::bson::DateTime::now(),
    };
    match store.courses.insert_one(document).await {
        Ok(_) => Ok(Effect::Applied(json(&course))),
        Err(error) if is_duplicate_key(&error) => {
            match store.courses.find_one(doc! {"_id": &id}).await? {
                Some(existing) if applied(&existing, envelope) => {
                    Ok(Effect::Applied(view(&existing).as_ref().and_then(json)))
                }
                Some(_) => Ok(Effect::Rejected(Rejection::conflict(format!(
                    "course {id} already exists"
                )))),
                None => Ok(Effect::Rejected(Rejection::conflict(format!(
                    "a course with code {} already exists",
                    course.code
                )))),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// Changes the given fields of a course.
pub async fn update(
    store: &Store,
    envelope: &Envelope,
    command: &UpdateCourse,
) -> Result<Effect, StoreError> {
    let id = command.course_id.to_string();
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(current) = store.courses.find_one(doc! {"_id": &id}).await? else {
            return Ok(Effect::Rejected(Rejection::not_found(format!(
                "course {id} does not exist"
            ))));
        };
        if applied(&current, envelope) {
            return Ok(Effect::Applied(view(&current).as_ref().and_then(json)));
        }
        if is_deleted(&current) {
            return Ok(Effect::Rejected(Rejection::not_found(format!(
                "course {id} does not exist"
            ))));
        }
        let Some(mut course) = view(&current) else {
            return Err(StoreError::Contention(format!("course {id} is malformed")));
        };
        if let Some(code) = &command.code {
            course.code = code.clone();
        }
        if let Some(title) = &command.title {
            course.title = title.clone();
        }
        if let Some(description) = &command.description {
            course.description = description.clone();
        }
        let entry = OutboxEntry::new(envelope, &CatalogEvent::CourseUpdated(course.clone()));
        let result = store
            .courses
            .update_one(
                doc! {"_id": &id, "version": version(&current)},
                doc! {
                    "$set": {
                        "code": &course.code,
                        "title": &course.title,
                        "description": &course.description,
                        "changed_ms": outbox::now_ms(),
                    },
                    "$inc": {"version": 1_i64, "pending_events": 1},
                    "$push": {
                        "applied": {"$each": [envelope.message_id.to_string()], "$slice": -APPLIED_KEPT},
                        "outbox": entry.to_document()?,
                    },
                },
            )
            .await;
        match result {
            Ok(done) if done.matched_count == 1 => return Ok(Effect::Applied(json(&course))),
            Ok(_) => continue,
            Err(error) if is_duplicate_key(&error) => {
                return Ok(Effect::Rejected(Rejection::conflict(format!(
                    "a course with code {} already exists",
                    course.code
                ))));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(StoreError::Contention(format!("course {id}")))
}

/// Deletes a course and removes it from every teacher who gave it.
pub async fn delete(
    store: &Store,
    envelope: &Envelope,
    command: &CourseRef,
) -> Result<Effect, StoreError> {
    let id = command.course_id.to_string();
    let mut done = false;
    for _ in 0..MAX_CONFLICT_RETRIES {
        let Some(current) = store.courses.find_one(doc! {"_id": &id}).await? else {
            return Ok(Effect::Rejected(Rejection::not_found(format!(
                "course {id} does not exist"
            ))));
        };
        if applied(&current, envelope) {
            done = true;
            break;
        }
        if is_deleted(&current) {
            return Ok(Effect::Rejected(Rejection::not_found(format!(
                "course {id} does not exist"
            ))));
        }
        let entry = OutboxEntry::new(
            envelope,
            &CatalogEvent::CourseDeleted(CourseRef {
                course_id: command.course_id,
            }),
        );
        let result = store
            .courses
            .update_one(
                doc! {"_id": &id, "version": version(&current)},
                doc! {
                    "$set": {
                        "deleted_at": mongodb::bson::DateTime::now(),
                        "code": tombstone_code(&id),
                        "changed_ms": outbox::now_ms(),
                    },
                    "$inc": {"version": 1_i64, "pending_events": 1},
                    "$push": {
                        "applied": {"$each": [envelope.message_id.to_string()], "$slice": -APPLIED_KEPT},
                        "outbox": entry.to_document()?,
                    },
                },
            )
            .await?;
        if result.matched_count == 1 {
            done = true;
            break;
        }
    }
    if !done {
        return Err(StoreError::Contention(format!("course {id}")));
    }
    // Idempotent, so a redelivery after a crash here simply finishes the job.
    store
        .teachers
        .update_many(doc! {"courses": &id}, doc! {"$pull": {"courses": &id}})
        .await?;
    Ok(Effect::Applied(None))
}

/// One live course.
pub async fn get(store: &Store, id: Uuid) -> Result<Option<Course>, StoreError> {
    let found = store.courses.find_one(doc! {"_id": id.to_string()}).await?;
    Ok(found.filter(|d| !is_deleted(d)).as_ref().and_then(view))
}

/// Whether a live course exists.
pub async fn exists(store: &Store, id: &str) -> Result<bool, StoreError> {
    let found = store.courses.find_one(doc! {"_id": id}).await?;
    Ok(found.is_some_and(|d| !is_deleted(&d)))
}

/// A page of live courses in id (creation) order, after `cursor`.
pub async fn list(
    store: &Store,
    limit: u32,
    cursor: Option<Uuid>,
) -> Result<Page<Course>, StoreError> {
    let mut filter = doc! {"deleted_at": {"$exists": false}};
    if let Some(after) = cursor {
        filter.insert("_id", doc! {"$gt": after.to_string()});
    }
    let documents: Vec<Document> = store
        .courses
        .find(filter)
        .sort(doc! {"_id": 1})
        .limit(i64::from(limit) + 1)
        .await?
        .try_collect()
        .await?;
    Ok(page(documents.iter().filter_map(view).collect(), limit))
}

/// Live courses among `ids`, in the order given.
pub async fn many(store: &Store, ids: &[String]) -> Result<Vec<Course>, StoreError> {
    let documents: Vec<Document> = store
        .courses
        .find(doc! {"_id": {"$in": ids}})
        .await?
        .try_collect()
        .await?;
    let found: Vec<Course> = documents
        .iter()
        .filter(|d| !is_deleted(d))
        .filter_map(view)
        .collect();
    Ok(ids
        .iter()
        .filter_map(|id| found.iter().find(|c| c.id.to_string() == *id).cloned())
        .collect())
}

/// Cuts one extra item off to learn whether there is a next page.
pub(crate) fn page<T: HasId>(mut items: Vec<T>, limit: u32) -> Page<T> {
    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|item| item.id().to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Items that can be paged by id.
pub(crate) trait HasId {
    fn id(&self) -> Uuid;
}

impl HasId for Course {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course(n: u128) -> Course {
        Course {
            id: Uuid::from_u128(n),
            code: format!("C{n}"),
            title: "t".into(),
            description: String::new(),
        }
    }

    #[test]
    fn a_full_page_points_at_its_last_item() {
        let page = page(vec![course(1), course(2), course(3)], 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(Uuid::from_u128(2).to_string()));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let page = page(vec![course(1), course(2)], 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, None);
    }
}
