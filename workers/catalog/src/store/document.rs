//! The exactly-once protocol for one MongoDB document, written once for every kind of
//! record the catalog keeps.
//!
//! A record's document holds its business fields and the bookkeeping that makes a change
//! safe without multi-document transactions: a `version` every change is guarded by
//! (optimistic concurrency), the ids of the messages `applied` to it (so a redelivery is
//! recognised), its `outbox` of events not yet published, and `pending_events` /
//! `changed_ms` for the relay. [`Records::insert`] and [`Records::change`] own all of it
//! and the conflict-retry loop; the business rules (what a change is, what a refusal
//! says) live in the handlers and see only typed records.

use std::marker::PhantomData;

use contracts::Envelope;
use contracts::catalog::CatalogEvent;
use contracts::common::Page;
use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use platform::effect::Effect;
use serde::Serialize;
use uuid::Uuid;

use super::outbox::{self, OutboxEntry};
use super::{
    APPLIED_KEPT, MAX_CONFLICT_RETRIES, StoreError, is_deleted, is_duplicate_key, version,
};

/// A kind of record stored one per document.
pub trait Record: Serialize + Sized {
    /// What one is called in errors: `course`.
    const NAME: &'static str;

    /// Its id (the document's `_id`, as a string).
    fn id(&self) -> Uuid;

    /// The record in a stored document; `None` when the document does not have its shape.
    fn from_document(document: &Document) -> Option<Self>;

    /// Its business fields as they are stored (the bookkeeping is added on insert).
    fn fields(&self) -> Document;
}

/// One change to a live record, as a business rule decided it.
#[derive(Debug)]
pub struct Edit {
    /// Update operators on business fields only (`$set`, `$push`, `$pull`).
    pub update: Document,
    /// The event the change causes: stored in the document's outbox in the same write.
    pub event: CatalogEvent,
    /// What to report once it is written.
    pub effect: Effect,
}

/// What an exactly-once write found or did.
#[derive(Debug, PartialEq)]
pub enum Written<T> {
    /// This delivery wrote it, or the rule decided without writing: report this.
    Now(Effect),
    /// An earlier delivery of the same message wrote it: the record as it stands now
    /// (`None` once it is deleted).
    Before(Option<T>),
    /// No live record has that id.
    Missing,
    /// A record with that id exists already (insert only).
    Exists,
    /// A unique index refused the write: another record holds that value.
    Taken,
}

/// Applied, showing `record` as it stands (nothing once it is deleted): what a redelivered
/// message reports.
pub fn shown<T: Serialize>(record: Option<&T>) -> Effect {
    record.map_or(Effect::Applied(None), Effect::applied)
}

/// The records of one collection.
pub struct Records<T> {
    collection: Collection<Document>,
    record: PhantomData<fn() -> T>,
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Self {
            collection: self.collection.clone(),
            record: PhantomData,
        }
    }
}

fn applied(document: &Document, envelope: &Envelope) -> bool {
    let id = envelope.message_id.to_string();
    document
        .get_array("applied")
        .is_ok_and(|ids| ids.iter().any(|b| b.as_str() == Some(id.as_str())))
}

/// Adds `fields` to the operator `operator` of `update`, creating it when absent.
fn merge(update: &mut Document, operator: &str, fields: Document) {
    match update.get_document_mut(operator) {
        Ok(existing) => existing.extend(fields),
        Err(_) => {
            update.insert(operator, fields);
        }
    }
}

impl<T: Record> Records<T> {
    /// The records in `collection`.
    pub fn new(collection: Collection<Document>) -> Self {
        Self {
            collection,
            record: PhantomData,
        }
    }

    /// The collection itself (for the outbox relay and ad-hoc updates).
    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    /// The stored document with `id`, tombstone or not.
    pub async fn document(&self, id: &str) -> Result<Option<Document>, StoreError> {
        Ok(self.collection.find_one(doc! {"_id": id}).await?)
    }

    /// The live record with `id`.
    pub async fn get(&self, id: Uuid) -> Result<Option<T>, StoreError> {
        let found = self.document(&id.to_string()).await?;
        Ok(found
            .filter(|d| !is_deleted(d))
            .as_ref()
            .and_then(T::from_document))
    }

    /// Whether a live record with `id` exists.
    pub async fn exists(&self, id: Uuid) -> Result<bool, StoreError> {
        let found = self.document(&id.to_string()).await?;
        Ok(found.is_some_and(|d| !is_deleted(&d)))
    }

    /// A page of live records in id (creation) order, after `cursor`.
    pub async fn page(&self, limit: u32, cursor: Option<Uuid>) -> Result<Page<T>, StoreError> {
        let mut filter = doc! {"deleted_at": {"$exists": false}};
        if let Some(after) = cursor {
            filter.insert("_id", doc! {"$gt": after.to_string()});
        }
        let documents: Vec<Document> = self
            .collection
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::from(limit) + 1)
            .await?
            .try_collect()
            .await?;
        Ok(page(
            documents.iter().filter_map(T::from_document).collect(),
            limit,
        ))
    }

    /// The live records among `ids`, in the order given.
    pub async fn many(&self, ids: &[Uuid]) -> Result<Vec<T>, StoreError> {
        let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let documents: Vec<Document> = self
            .collection
            .find(doc! {"_id": {"$in": &keys}})
            .await?
            .try_collect()
            .await?;
        let mut found: Vec<T> = documents
            .iter()
            .filter(|d| !is_deleted(d))
            .filter_map(T::from_document)
            .collect();
        let mut ordered = Vec::with_capacity(found.len());
        for id in ids {
            if let Some(at) = found.iter().position(|r| r.id() == *id) {
                ordered.push(found.swap_remove(at));
            }
        }
        Ok(ordered)
    }

    /// Inserts `record` with `event` in its outbox, exactly once for the message of
    /// `envelope`.
    pub async fn insert(
        &self,
        envelope: &Envelope,
        record: &T,
        event: &CatalogEvent,
    ) -> Result<Written<T>, StoreError> {
        let id = record.id().to_string();
        let entry = OutboxEntry::new(envelope, event).to_document()?;
        let mut document = doc! {"_id": &id};
        document.extend(record.fields());
        document.extend(doc! {
            "version": 1_i64,
            "applied": [envelope.message_id.to_string()],
            "outbox": [entry],
            "pending_events": 1,
            "changed_ms": outbox::now_ms(),
            "created_at": mongodb::bson::DateTime::now(),
        });
        match self.collection.insert_one(document).await {
            Ok(_) => Ok(Written::Now(Effect::applied(record))),
            Err(error) if is_duplicate_key(&error) => Ok(match self.document(&id).await? {
                Some(existing) if applied(&existing, envelope) => {
                    Written::Before(T::from_document(&existing))
                }
                Some(_) => Written::Exists,
                None => Written::Taken,
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// Changes the live record `id` as `decide` says, exactly once for the message of
    /// `envelope`: `decide` sees the record as it stands and returns the edit, or the
    /// effect to report without writing. When another writer changed the document in
    /// between, it is read again and `decide` asked again.
    pub async fn change(
        &self,
        envelope: &Envelope,
        id: Uuid,
        mut decide: impl FnMut(T) -> Result<Edit, Effect>,
    ) -> Result<Written<T>, StoreError> {
        let id = id.to_string();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self.document(&id).await? else {
                return Ok(Written::Missing);
            };
            if applied(&current, envelope) {
                let now = (!is_deleted(&current))
                    .then(|| T::from_document(&current))
                    .flatten();
                return Ok(Written::Before(now));
            }
            if is_deleted(&current) {
                return Ok(Written::Missing);
            }
            let Some(record) = T::from_document(&current) else {
                return Err(StoreError::Malformed(format!("{} {id}", T::NAME)));
            };
            let Edit {
                mut update,
                event,
                effect,
            } = match decide(record) {
                Ok(edit) => edit,
                Err(effect) => return Ok(Written::Now(effect)),
            };
            let entry = OutboxEntry::new(envelope, &event).to_document()?;
            let applied = doc! {
                "$each": [envelope.message_id.to_string()],
                "$slice": -APPLIED_KEPT,
            };
            merge(
                &mut update,
                "$push",
                doc! {"applied": applied, "outbox": entry},
            );
            merge(&mut update, "$set", doc! {"changed_ms": outbox::now_ms()});
            merge(
                &mut update,
                "$inc",
                doc! {"version": 1_i64, "pending_events": 1},
            );
            let guard = doc! {"_id": &id, "version": version(&current)};
            match self.collection.update_one(guard, update).await {
                Ok(done) if done.matched_count == 1 => return Ok(Written::Now(effect)),
                Ok(_) => continue,
                Err(error) if is_duplicate_key(&error) => return Ok(Written::Taken),
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Contention(format!("{} {id}", T::NAME)))
    }
}

/// Cuts one extra item off to learn whether there is a next page.
fn page<T: Record>(mut items: Vec<T>, limit: u32) -> Page<T> {
    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|item| item.id().to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// The ids in a string array field (absent or malformed entries skipped).
pub(crate) fn ids(document: &Document, field: &str) -> Vec<Uuid> {
    document
        .get_array(field)
        .map(|items| {
            items
                .iter()
                .filter_map(Bson::as_str)
                .filter_map(|s| Uuid::parse_str(s).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, PartialEq)]
    struct Item(Uuid);

    impl Record for Item {
        const NAME: &'static str = "item";
        fn id(&self) -> Uuid {
            self.0
        }
        fn from_document(_: &Document) -> Option<Self> {
            None
        }
        fn fields(&self) -> Document {
            Document::new()
        }
    }

    fn items(n: u128) -> Vec<Item> {
        (1..=n).map(|i| Item(Uuid::from_u128(i))).collect()
    }

    #[test]
    fn a_full_page_points_at_its_last_item() {
        let page = page(items(3), 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(Uuid::from_u128(2).to_string()));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let page = page(items(2), 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn bookkeeping_joins_the_business_operators() {
        let mut update = doc! {"$set": {"title": "t"}, "$pull": {"courses": "c"}};
        merge(&mut update, "$set", doc! {"changed_ms": 1_i64});
        merge(&mut update, "$inc", doc! {"version": 1_i64});
        assert_eq!(
            update,
            doc! {
                "$set": {"title": "t", "changed_ms": 1_i64},
                "$pull": {"courses": "c"},
                "$inc": {"version": 1_i64},
            }
        );
    }
}
