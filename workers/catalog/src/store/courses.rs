//! Courses as stored: a code (unique among live courses), a title and a description.

use contracts::catalog::Course;
use mongodb::bson::{Document, doc};
use uuid::Uuid;

use super::document::Record;

impl Record for Course {
    const NAME: &'static str = "course";

    fn id(&self) -> Uuid {
        self.id
    }

    fn from_document(document: &Document) -> Option<Self> {
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

    fn fields(&self) -> Document {
        doc! {"code": &self.code, "title": &self.title, "description": &self.description}
    }
}

/// A tombstoned course keeps its document (the delete event lives there) but gives its
/// code back, so the unique index lets a new course take it at once.
pub fn tombstone_code(id: Uuid) -> String {
    format!("~deleted~{id}")
}
