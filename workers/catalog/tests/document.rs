//! The document protocol against the MongoDB stand-in: a change is applied once however
//! often its message arrives, a lost race re-reads and decides again, a unique value
//! taken elsewhere is reported, and each write leaves exactly one event in the outbox.

// Test helpers outside #[test] functions may fail loudly: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use catalog::store::Store;
use catalog::store::document::{Edit, Written};
use contracts::Envelope;
use contracts::catalog::{CatalogEvent, Course};
use mongodb::bson::doc;
use platform::effect::Effect;
use uuid::Uuid;

/// A store in a database of its own, dropped at the end (also when the test fails).
struct Scratch {
    store: Store,
    _scratch: testkit::Scratch,
}

impl Scratch {
    async fn new() -> Self {
        let mut scratch = testkit::Scratch::new();
        scratch.uses_mongo();
        let store = Store::connect(&testkit::env::mongo_url(), scratch.name())
            .await
            .expect("mongodb");
        Self {
            store,
            _scratch: scratch,
        }
    }
}

fn envelope() -> Envelope {
    Envelope::new("catalog.course.update", 1, Uuid::now_v7())
}

fn course(code: &str) -> Course {
    Course {
        id: Uuid::now_v7(),
        code: code.to_owned(),
        title: "Title".to_owned(),
        description: String::new(),
    }
}

fn retitle(title: &str) -> impl FnMut(Course) -> Result<Edit, Effect> + '_ {
    move |mut course| {
        course.title = title.to_owned();
        Ok(Edit {
            update: doc! {"$set": {"title": title}},
            effect: Effect::applied(&course),
            event: CatalogEvent::CourseUpdated(course),
        })
    }
}

async fn outbox_len(store: &Store, id: Uuid) -> usize {
    let document = store
        .courses
        .document(&id.to_string())
        .await
        .unwrap()
        .unwrap();
    document.get_array("outbox").map(Vec::len).unwrap_or(0)
}

#[tokio::test]
async fn a_change_delivered_twice_is_applied_once_and_reports_the_record() {
    let scratch = Scratch::new().await;
    let store = &scratch.store;
    let created = course("DOC-1");
    let create = envelope();
    let event = CatalogEvent::CourseCreated(created.clone());
    let first = store
        .courses
        .insert(&create, &created, &event)
        .await
        .unwrap();
    assert_eq!(first, Written::Now(Effect::applied(&created)));
    let again = store
        .courses
        .insert(&create, &created, &event)
        .await
        .unwrap();
    assert_eq!(again, Written::Before(Some(created.clone())));

    let update = envelope();
    let written = store
        .courses
        .change(&update, created.id, retitle("New"))
        .await
        .unwrap();
    assert!(matches!(written, Written::Now(Effect::Applied(Some(_)))));
    // Redelivered with another decision (say, after a crash lost its outcome): the
    // document remembers the message, so nothing is written a second time.
    let redelivered = store
        .courses
        .change(&update, created.id, retitle("Other"))
        .await
        .unwrap();
    let Written::Before(Some(now)) = redelivered else {
        panic!("expected the record as it stands, got {redelivered:?}");
    };
    assert_eq!(now.title, "New");
    assert_eq!(
        outbox_len(store, created.id).await,
        2,
        "one event per write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_reads_again_and_decides_on_the_new_state() {
    let scratch = Scratch::new().await;
    let store = &scratch.store;
    let created = course("DOC-2");
    let event = CatalogEvent::CourseCreated(created.clone());
    store
        .courses
        .insert(&envelope(), &created, &event)
        .await
        .unwrap();
    let mut decisions = 0;
    let written = store
        .courses
        .change(&envelope(), created.id, |mut course| {
            decisions += 1;
            if decisions == 1 {
                // Another writer gets in between this read and the guarded update.
                // (`decide` is synchronous; block_in_place lets the driver's tasks run.)
                let courses = store.courses.collection().clone();
                let id = created.id.to_string();
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async move {
                        courses
                            .update_one(doc! {"_id": id}, doc! {"$inc": {"version": 1_i64}})
                            .await
                            .expect("the other writer's update");
                    });
                });
            }
            course.title = format!("decided {decisions} times");
            Ok(Edit {
                update: doc! {"$set": {"title": &course.title}},
                effect: Effect::applied(&course),
                event: CatalogEvent::CourseUpdated(course),
            })
        })
        .await
        .unwrap();
    assert_eq!(decisions, 2);
    assert!(matches!(written, Written::Now(_)));
    let stored = store.courses.get(created.id).await.unwrap().unwrap();
    assert_eq!(stored.title, "decided 2 times");
    assert_eq!(outbox_len(store, created.id).await, 2);
}

#[tokio::test]
async fn taken_values_missing_records_and_refusals_write_nothing() {
    let scratch = Scratch::new().await;
    let store = &scratch.store;
    let first = course("DOC-3");
    let second = course("DOC-4");
    for c in [&first, &second] {
        let event = CatalogEvent::CourseCreated(c.clone());
        store.courses.insert(&envelope(), c, &event).await.unwrap();
    }
    // Another course with a taken code, and the same id again from another message.
    let mut clash = course("DOC-3");
    let event = CatalogEvent::CourseCreated(clash.clone());
    assert_eq!(
        store
            .courses
            .insert(&envelope(), &clash, &event)
            .await
            .unwrap(),
        Written::Taken
    );
    clash.id = first.id;
    clash.code = "DOC-5".to_owned();
    assert_eq!(
        store
            .courses
            .insert(&envelope(), &clash, &event)
            .await
            .unwrap(),
        Written::Exists
    );
    // An update to a code another live course holds.
    let written = store
        .courses
        .change(&envelope(), second.id, |course| {
            Ok(Edit {
                update: doc! {"$set": {"code": "DOC-3"}},
                effect: Effect::applied(&course),
                event: CatalogEvent::CourseUpdated(course),
            })
        })
        .await
        .unwrap();
    assert_eq!(written, Written::Taken);
    // A rule that refuses.
    let refusal = Effect::Rejected(contracts::Rejection::conflict("no"));
    let written = store
        .courses
        .change(&envelope(), second.id, |_| Err(refusal.clone()))
        .await
        .unwrap();
    assert_eq!(written, Written::Now(refusal));
    assert_eq!(
        outbox_len(store, second.id).await,
        1,
        "only the creation's event"
    );
    // Nothing there.
    let gone = Uuid::now_v7();
    let written = store
        .courses
        .change(&envelope(), gone, retitle("x"))
        .await
        .unwrap();
    assert_eq!(written, Written::Missing);
}
