//! Deleted users stay deleted (their tokens stop working on every replica, and no ordering
//! of commands and events about them brings them back in social or the catalog), and
//! workers trust only the actors the gateway vouched for, with the role they need.

use contracts::accounts::{AccountsEvent, Role, User, UserRef};
use contracts::catalog::{self, CatalogCommand, CreateCourse};
use contracts::social::{self, CreatePost, SocialCommand};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use e2e::{TestApp, Workers, assert_problem, database_url, spawn_app, spawn_custom};

/// Publishes a message by hand (as a queued or late message would arrive), confirmed.
async fn publish<T: Serialize>(
    app: &TestApp,
    exchange: &str,
    routing_key: &str,
    envelope: &contracts::Envelope,
    body: &T,
) {
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let properties = platform::bus::envelope::to_properties(envelope);
    channel
        .basic_publish(
            format!("{}.{exchange}", app.prefix).as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(body).unwrap(),
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Publishes a signed course creation by `actor` with `role` by hand and asserts the
/// catalog records it as rejected and creates nothing.
async fn assert_catalog_refuses(app: &TestApp, actor: &str, role: &str, code: &str) {
    let operation = Uuid::now_v7();
    let mut envelope = contracts::Envelope::new(catalog::commands::COURSE_CREATE, 1, operation);
    envelope.message_id = operation;
    let command = CatalogCommand::CreateCourse(CreateCourse {
        course_id: Uuid::now_v7(),
        code: code.into(),
        title: format!("{code} by a {role}"),
        description: String::new(),
    });
    e2e::sign_actor(&mut envelope, actor, role, &command);
    publish(
        app,
        "commands",
        catalog::commands::COURSE_CREATE,
        &envelope,
        &command,
    )
    .await;
    assert_eq!(catalog_status(app, operation).await, "rejected");
    let courses: Value = app.get("/v1/courses").await.json().await.unwrap();
    assert!(!courses.to_string().contains(code), "{courses}");
}

/// The status the catalog recorded for `operation`, waiting up to 10 s for one.
async fn catalog_status(app: &TestApp, operation: Uuid) -> String {
    let operations = app
        .mongo()
        .await
        .collection::<mongodb::bson::Document>("operations");
    let filter = mongodb::bson::doc! {"_id": operation.to_string(), "status": {"$exists": true}};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = operations.find_one(filter.clone()).await.unwrap() {
            return found.get_str("status").unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no outcome for {operation}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Rows in social's tables for `user`: (author rows, posts).
async fn social_rows(app: &TestApp, user: &str) -> (i64, i64) {
    let url = database_url(&format!("{}_social", app.prefix));
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let id = Uuid::parse_str(user).unwrap();
    let authors: i64 = db
        .query_one("SELECT count(*) FROM authors WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let posts: i64 = db
        .query_one("SELECT count(*) FROM posts WHERE author_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    (authors, posts)
}

async fn delete_user(app: &TestApp, user: &str, wait: bool) -> StatusCode {
    let mut request = app.client.delete(app.url(&format!("/v1/users/{user}")));
    if wait {
        request = request.header("prefer", "wait=10");
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn a_deleted_users_token_is_refused_for_writes_once_the_revocation_reaches_the_gateway() {
    let app = spawn_custom(Workers::Running, &[("REVOCATION_REFRESH_MS", "200")]).await;
    let (student, student_token) = app.user("Gone", "student").await;
    let (teacher, teacher_token) = app.user("Tess", "teacher").await;
    let post = app
        .anonymous
        .post(app.url("/v1/posts"))
        .bearer_auth(&student_token)
        .json(&json!({"body": "before"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::ACCEPTED);
    // Without waiting: this replica learns of the deletions from accounts' revocation
    // list, as every other replica would.
    assert_eq!(
        delete_user(&app, &student, false).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        delete_user(&app, &teacher, false).await,
        StatusCode::ACCEPTED
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = app
            .anonymous
            .post(app.url("/v1/courses"))
            .bearer_auth(&teacher_token)
            .json(&json!({"code": "GONE1", "title": "Never"}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::UNAUTHORIZED {
            let problem: Value = response.json().await.unwrap();
            assert!(problem["detail"].as_str().unwrap().contains("deleted"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a deleted teacher's token still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = app
        .anonymous
        .post(app.url("/v1/posts"))
        .bearer_auth(&student_token)
        .json(&json!({"body": "after"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_post_applied_after_its_authors_deletion_is_refused_and_brings_nobody_back() {
    let app = spawn_app().await;
    let (uid, token) = app.user("Late", "student").await;
    let first = app
        .anonymous
        .post(app.url("/v1/posts"))
        .bearer_auth(&token)
        .header("prefer", "wait=10")
        .json(&json!({"body": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(delete_user(&app, &uid, true).await, StatusCode::NO_CONTENT);
    app.eventually(&format!("/v1/users/{uid}/posts"), |p| {
        p["items"] == json!([])
    })
    .await;
    assert_eq!(social_rows(&app, &uid).await, (0, 0));

    // A post that sat in the queue (or was sent with the old token) arrives now.
    let operation = Uuid::now_v7();
    let mut envelope = contracts::Envelope::new(social::commands::POST_CREATE, 1, operation);
    envelope.message_id = operation;
    let command = SocialCommand::CreatePost(CreatePost {
        post_id: Uuid::now_v7(),
        author_name: "Late".into(),
        body: "from beyond".into(),
    });
    e2e::sign_actor(&mut envelope, &uid, "student", &command);
    publish(
        &app,
        "commands",
        social::commands::POST_CREATE,
        &envelope,
        &command,
    )
    .await;
    // Its outcome is recorded as a refusal; a later post landing shows the queue moved on.
    let (_, other) = app.user("Later", "student").await;
    let later = app
        .anonymous
        .post(app.url("/v1/posts"))
        .bearer_auth(&other)
        .header("prefer", "wait=10")
        .json(&json!({"body": "a later post"}))
        .send()
        .await
        .unwrap();
    assert_eq!(later.status(), StatusCode::CREATED);
    let outcome = social_outcome(&app, operation).await;
    assert_eq!(outcome["status"], "rejected", "{outcome}");
    assert_eq!(social_rows(&app, &uid).await, (0, 0));
    let timeline: Value = app.get("/v1/timeline").await.json().await.unwrap();
    assert!(!timeline.to_string().contains("from beyond"));
    app.teardown().await;
}

/// The outcome social recorded for `operation`, waiting for it to exist.
async fn social_outcome(app: &TestApp, operation: Uuid) -> Value {
    let url = database_url(&format!("{}_social", app.prefix));
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(row) = db
            .query_opt(
                "SELECT status, rejection FROM operations WHERE id = $1",
                &[&operation],
            )
            .await
            .unwrap()
        {
            let status: String = row.get(0);
            let rejection: Option<Value> = row.get(1);
            return json!({"status": status, "rejection": rejection});
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no outcome for {operation}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn registered(id: Uuid, name: &str, role: Role) -> AccountsEvent {
    AccountsEvent::UserRegistered(User {
        id,
        email: format!("{}@example.org", name.to_lowercase()),
        display_name: name.into(),
        role,
    })
}

async fn publish_event(app: &TestApp, event: &AccountsEvent) {
    let envelope = contracts::Envelope::new(event.routing_key(), 1, Uuid::now_v7());
    publish(app, "events", event.routing_key(), &envelope, event).await;
}

#[tokio::test]
async fn a_registration_delivered_after_the_same_users_deletion_leaves_no_author_or_teacher() {
    let app = spawn_app().await;
    let ghost = Uuid::now_v7();
    publish_event(
        &app,
        &AccountsEvent::UserDeleted(UserRef { user_id: ghost }),
    )
    .await;
    // Only once the deletion was handled (its tombstone exists) does the registration
    // arrive: the order the issue describes.
    let url = database_url(&format!("{}_social", app.prefix));
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db
        .query_opt("SELECT 1 FROM deleted_users WHERE id = $1", &[&ghost])
        .await
        .unwrap()
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "deletion not handled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let catalog = app.mongo().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while catalog
        .collection::<mongodb::bson::Document>("deleted_users")
        .find_one(mongodb::bson::doc! {"_id": ghost.to_string()})
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "catalog deletion not handled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    publish_event(&app, &registered(ghost, "Ghost", Role::Teacher)).await;
    // A later registration, published after, shows the first was consumed.
    let witness = Uuid::now_v7();
    publish_event(&app, &registered(witness, "Witness", Role::Teacher)).await;
    app.eventually(&format!("/v1/teachers/{witness}"), |t| {
        t["id"] == witness.to_string()
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while social_rows(&app, &witness.to_string()).await.0 == 0 {
        assert!(std::time::Instant::now() < deadline, "witness never known");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let teacher = app.get(&format!("/v1/teachers/{ghost}")).await;
    assert_eq!(teacher.status(), StatusCode::NOT_FOUND);
    assert_eq!(social_rows(&app, &ghost.to_string()).await, (0, 0));
    app.teardown().await;
}

#[tokio::test]
async fn a_course_command_from_a_deleted_teacher_is_refused_by_the_catalog() {
    let app = spawn_app().await;
    let (teacher, _) = app.user("Tom", "teacher").await;
    app.eventually(&format!("/v1/teachers/{teacher}"), |t| {
        t["id"] == teacher.as_str()
    })
    .await;
    assert_eq!(
        delete_user(&app, &teacher, true).await,
        StatusCode::NO_CONTENT
    );
    app.eventually(&format!("/v1/teachers/{teacher}"), |t| t["status"] == 404)
        .await;
    assert_catalog_refuses(&app, &teacher, "teacher", "GHOST").await;
    app.teardown().await;
}

#[tokio::test]
async fn two_commands_with_one_message_id_create_one_course_and_the_other_is_dead_lettered() {
    let app = spawn_app().await;
    let me: Value = app.get("/v1/users/me").await.json().await.unwrap();
    let admin = me["id"].as_str().unwrap().to_owned();
    let operation = Uuid::now_v7();
    let mut envelope = contracts::Envelope::new(catalog::commands::COURSE_CREATE, 1, operation);
    envelope.message_id = operation;
    for code in ["SAMEID1", "SAMEID2"] {
        let command = CatalogCommand::CreateCourse(CreateCourse {
            course_id: Uuid::now_v7(),
            code: code.into(),
            title: code.into(),
            description: String::new(),
        });
        e2e::sign_actor(&mut envelope, &admin, "admin", &command);
        publish(
            &app,
            "commands",
            catalog::commands::COURSE_CREATE,
            &envelope,
            &command,
        )
        .await;
    }
    let connection = app.amqp().await;
    let dlq = format!("{}.catalog.commands.dlq", app.prefix);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let channel = connection.create_channel().await.unwrap();
        let count = channel
            .queue_declare(
                dlq.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        if count == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let courses: Value = app.get("/v1/courses").await.json().await.unwrap();
    let items = courses["items"].as_array().unwrap();
    let same: Vec<&Value> = items
        .iter()
        .filter(|c| c["code"].as_str().unwrap().starts_with("SAMEID"))
        .collect();
    assert_eq!(same.len(), 1, "{courses}");
    app.teardown().await;
}

/// Messages in `queue`'s dead-letter queue, waiting up to 10 s for `expected`.
async fn dead_letters(app: &TestApp, queue: &str, expected: u32) -> u32 {
    let connection = app.amqp().await;
    let dlq = format!("{}.{queue}.dlq", app.prefix);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let channel = connection.create_channel().await.unwrap();
        let count = channel
            .queue_declare(
                dlq.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        if count >= expected || std::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn commands_with_an_actor_the_gateway_did_not_vouch_for_are_dead_lettered() {
    let app = spawn_app().await;
    let (student, _) = app.user("Mallory", "student").await;
    let admin_id: Value = app.get("/v1/users/me").await.json().await.unwrap();
    let admin_id = admin_id["id"].as_str().unwrap().to_owned();
    // Someone with broker access but without the actor key: an admin as actor, unsigned,
    // and a student's signature with the role changed to admin.
    let course = |code: &str| {
        CatalogCommand::CreateCourse(CreateCourse {
            course_id: Uuid::now_v7(),
            code: code.into(),
            title: code.into(),
            description: String::new(),
        })
    };
    let mut unsigned =
        contracts::Envelope::new(catalog::commands::COURSE_CREATE, 1, Uuid::now_v7());
    unsigned.message_id = unsigned.correlation_id;
    unsigned.actor = Some(admin_id.clone());
    unsigned.actor_role = Some("admin".into());
    publish(
        &app,
        "commands",
        catalog::commands::COURSE_CREATE,
        &unsigned,
        &course("FORGED1"),
    )
    .await;
    let mut promoted =
        contracts::Envelope::new(catalog::commands::COURSE_CREATE, 1, Uuid::now_v7());
    promoted.message_id = promoted.correlation_id;
    let forged2 = course("FORGED2");
    e2e::sign_actor(&mut promoted, &student, "student", &forged2);
    promoted.actor_role = Some("admin".into());
    publish(
        &app,
        "commands",
        catalog::commands::COURSE_CREATE,
        &promoted,
        &forged2,
    )
    .await;
    // And a social post in the admin's name.
    let mut impersonation =
        contracts::Envelope::new(social::commands::POST_CREATE, 1, Uuid::now_v7());
    impersonation.message_id = impersonation.correlation_id;
    impersonation.actor = Some(admin_id.clone());
    let post = SocialCommand::CreatePost(CreatePost {
        post_id: Uuid::now_v7(),
        author_name: "Admin".into(),
        body: "not really the admin".into(),
    });
    publish(
        &app,
        "commands",
        social::commands::POST_CREATE,
        &impersonation,
        &post,
    )
    .await;

    assert_eq!(dead_letters(&app, "catalog.commands", 2).await, 2);
    assert_eq!(dead_letters(&app, "social.commands", 1).await, 1);
    let courses: Value = app.get("/v1/courses").await.json().await.unwrap();
    assert!(!courses.to_string().contains("FORGED"));
    let timeline: Value = app.get("/v1/timeline").await.json().await.unwrap();
    assert!(!timeline.to_string().contains("not really"));
    app.teardown().await;
}

#[tokio::test]
async fn the_catalog_rechecks_the_role_a_vouched_for_actor_holds() {
    let app = spawn_app().await;
    let (student, _) = app.user("Sam", "student").await;
    assert_catalog_refuses(&app, &student, "student", "STUDENT1").await;
    app.teardown().await;
}
