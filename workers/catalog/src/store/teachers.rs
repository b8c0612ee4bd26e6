//! Teachers as stored: a name, an e-mail address (unique among live teachers) and the
//! ids of the courses they give.

use contracts::catalog::Teacher;
use mongodb::bson::{Document, doc};
use uuid::Uuid;

use super::document::{Record, ids};

impl Record for Teacher {
    const NAME: &'static str = "teacher";

    fn id(&self) -> Uuid {
        self.id
    }

    fn from_document(document: &Document) -> Option<Self> {
        Some(Teacher {
            id: Uuid::parse_str(document.get_str("_id").ok()?).ok()?,
            name: document.get_str("name").ok()?.to_owned(),
            email: document.get_str("email").ok()?.to_owned(),
            course_ids: ids(document, "courses"),
        })
    }

    fn fields(&self) -> Document {
        let courses: Vec<String> = self.course_ids.iter().map(Uuid::to_string).collect();
        doc! {"name": &self.name, "email": &self.email, "courses": courses}
    }
}

/// A tombstoned teacher gives the e-mail address back to the unique index.
pub fn tombstone_email(id: Uuid) -> String {
    format!("~deleted~{id}")
}
