//! MongoDB storage for the catalog, correct without multi-document transactions.
//!
//! Every change is one atomic single-document update that also records the operation id
//! in the document's `applied` list and appends the events it causes to the document's
//! `outbox`. Updates are guarded by the document's `version` (optimistic concurrency), so
//! a redelivered command either finds its id in `applied` or re-reads and re-decides;
//! it can never apply twice. [`document`] implements that protocol once, for any
//! [`document::Record`]. Steps that touch other documents (pulling a deleted course
//! from every teacher) are idempotent by nature and are simply redone on redelivery.
//! After the effect, the outcome is written to `operations` (first write wins), and only
//! then is the message acknowledged.

pub mod courses;
pub mod document;
pub mod operations;
pub mod outbox;
pub mod teachers;

use contracts::catalog::{Course, Teacher};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, Database, IndexModel};

use document::Records;

/// How many operation ids a document remembers; the `operations` collection is the
/// primary duplicate check, this list only covers a crash between effect and outcome.
pub const APPLIED_KEPT: i32 = 64;
/// How often an optimistic update is retried when another writer got there first.
pub const MAX_CONFLICT_RETRIES: usize = 8;

/// A storage failure; always transient from the handler's point of view.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A stored document does not have the expected shape.
    #[error("malformed document: {0}")]
    Decode(#[from] mongodb::bson::de::Error),
    /// A value could not be turned into BSON.
    #[error("cannot encode: {0}")]
    Encode(#[from] mongodb::bson::ser::Error),
    /// Concurrent writers kept winning the race.
    #[error("too much contention on {0}")]
    Contention(String),
    /// A stored record (or outcome) does not have its shape.
    #[error("malformed {0}")]
    Malformed(String),
}

/// The catalog's collections.
#[derive(Clone)]
pub struct Store {
    /// The database.
    pub db: Database,
    /// Courses (tombstoned on delete so the delete's event has a home).
    pub courses: Records<Course>,
    /// Teachers, each with the ids of the courses they give.
    pub teachers: Records<Teacher>,
    /// Outcomes of handled operations, keyed by operation id.
    pub operations: Collection<Document>,
    /// Ids of deleted users: a deletion wins over whatever about that user arrives later.
    pub deleted_users: Collection<Document>,
}

impl Store {
    /// Connects and makes sure the unique indexes exist.
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        let client = Client::with_uri_str(url).await?;
        let db = client.database(database);
        let store = Self {
            courses: Records::new(db.collection("courses")),
            teachers: Records::new(db.collection("teachers")),
            operations: db.collection("operations"),
            deleted_users: db.collection("deleted_users"),
            db,
        };
        let unique = IndexOptions::builder().unique(true).build();
        store
            .courses
            .collection()
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"code": 1})
                    .options(unique.clone())
                    .build(),
            )
            .await?;
        store
            .teachers
            .collection()
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"email": 1})
                    .options(unique)
                    .build(),
            )
            .await?;
        Ok(store)
    }

    /// Records that a user was deleted (idempotent).
    pub async fn tombstone_user(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        let document = doc! {"_id": id.to_string(), "deleted_at": mongodb::bson::DateTime::now()};
        match self.deleted_users.insert_one(document).await {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_key(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether a user was deleted.
    pub async fn is_deleted_user(&self, id: uuid::Uuid) -> Result<bool, StoreError> {
        Ok(self
            .deleted_users
            .find_one(doc! {"_id": id.to_string()})
            .await?
            .is_some())
    }

    /// Round trip to the server, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }
}

/// True when the error is a unique-index violation (code 11000), whichever write path
/// reported it.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|w| w.iter().any(|e| e.code == 11000)),
        _ => false,
    }
}

/// The document's version, for optimistic updates.
pub(crate) fn version(document: &Document) -> i64 {
    document
        .get_i64("version")
        .or_else(|_| document.get_i32("version").map(i64::from))
        .unwrap_or(0)
}

/// Whether the document is a tombstone.
pub(crate) fn is_deleted(document: &Document) -> bool {
    document.contains_key("deleted_at")
}

/// A failed read is worth another try within the caller's deadline.
impl platform::bus::QueryFailure for StoreError {}
