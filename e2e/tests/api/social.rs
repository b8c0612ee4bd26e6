//! Posts, reposts, timelines, and the events that connect the services.

use contracts::social::commands as social_commands;
use lapin::options::BasicPublishOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{assert_problem, spawn_app};

async fn post_as(app: &e2e::TestApp, token: &str, body: &str) -> reqwest::Response {
    app.anonymous
        .post(app.url("/v1/posts"))
        .bearer_auth(token)
        .header("prefer", "wait=10")
        .json(&json!({"body": body}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_post_appears_on_its_authors_and_the_global_timeline() {
    let app = spawn_app().await;
    let (uid, token) = app.user("Pia", "student").await;
    let response = post_as(&app, &token, "hello, world").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let post: Value = response.json().await.unwrap();
    assert_eq!(post["author_id"], uid.as_str());
    assert_eq!(post["author_name"], "Pia");
    assert_eq!(post["repost_count"], 0);
    let fetched: Value = app
        .get(&format!("/v1/posts/{}", post["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, post);
    let mine: Value = app
        .get(&format!("/v1/users/{uid}/posts"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"], json!([post]));
    let global: Value = app.get("/v1/timeline").await.json().await.unwrap();
    assert!(global["items"].as_array().unwrap().contains(&post));
    app.teardown().await;
}

#[tokio::test]
async fn a_post_must_be_between_1_and_280_characters_and_needs_a_token() {
    let app = spawn_app().await;
    let (_, token) = app.user("Len", "student").await;
    assert_problem(
        post_as(&app, &token, &"x".repeat(281)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        post_as(&app, &token, "   ").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(
        post_as(&app, &token, &"é".repeat(280)).await.status(),
        StatusCode::CREATED
    );
    let anonymous = app
        .anonymous
        .post(app.url("/v1/posts"))
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_post_is_reposted_once_per_user() {
    let app = spawn_app().await;
    let (_, author) = app.user("Ori", "student").await;
    let (fan, fan_token) = app.user("Fan", "student").await;
    let post: Value = post_as(&app, &author, "worth sharing")
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/posts/{}/reposts", post["id"].as_str().unwrap());
    let repost = || {
        app.anonymous
            .post(app.url(&path))
            .bearer_auth(&fan_token)
            .header("prefer", "wait=10")
            .send()
    };
    let first = repost().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let reposted: Value = first.json().await.unwrap();
    assert_eq!(reposted["repost_of"], post["id"]);
    assert_eq!(reposted["author_id"], fan.as_str());
    assert_eq!(reposted["body"], "worth sharing");
    assert_problem(repost().await.unwrap(), StatusCode::CONFLICT).await;
    let original: Value = app
        .get(&format!("/v1/posts/{}", post["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(original["repost_count"], 1);
    let unknown = format!("/v1/posts/{}/reposts", uuid::Uuid::now_v7());
    let response = app
        .anonymous
        .post(app.url(&unknown))
        .bearer_auth(&fan_token)
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND).await;
    app.teardown().await;
}

#[tokio::test]
async fn only_the_author_deletes_a_post_and_its_reposts_go_with_it() {
    let app = spawn_app().await;
    let (_, author) = app.user("Del", "student").await;
    let (_, other) = app.user("Oth", "student").await;
    let post: Value = post_as(&app, &author, "short-lived")
        .await
        .json()
        .await
        .unwrap();
    let id = post["id"].as_str().unwrap();
    let repost_path = format!("/v1/posts/{id}/reposts");
    let repost: Value = app
        .anonymous
        .post(app.url(&repost_path))
        .bearer_auth(&other)
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delete = |token: &str| {
        app.anonymous
            .delete(app.url(&format!("/v1/posts/{id}")))
            .bearer_auth(token)
            .header("prefer", "wait=10")
            .send()
    };
    assert_problem(delete(&other).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert_eq!(
        delete(&author).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.get(&format!("/v1/posts/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.get(&format!("/v1/posts/{}", repost["id"].as_str().unwrap()))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn the_global_timeline_pages_newest_first() {
    let app = spawn_app().await;
    let (uid, token) = app.user("Pag", "student").await;
    for n in 0..5 {
        post_as(&app, &token, &format!("post {n}")).await;
    }
    let path = format!("/v1/users/{uid}/posts?limit=2");
    let first: Value = app.get(&path).await.json().await.unwrap();
    let bodies = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(bodies(&first), ["post 4", "post 3"]);
    let next = format!("{path}&cursor={}", first["next_cursor"].as_str().unwrap());
    let second: Value = app.get(&next).await.json().await.unwrap();
    assert_eq!(bodies(&second), ["post 2", "post 1"]);
    app.teardown().await;
}

#[tokio::test]
async fn a_course_created_by_a_teacher_is_announced_in_their_name() {
    let app = spawn_app().await;
    let (teacher_id, teacher) = app.user("Tea", "teacher").await;
    let response = app
        .anonymous
        .post(app.url("/v1/courses"))
        .bearer_auth(&teacher)
        .header("prefer", "wait=10")
        .json(&json!({"code": "ANN1", "title": "Announced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let timeline = app
        .eventually(&format!("/v1/users/{teacher_id}/posts"), |page| {
            page["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        })
        .await;
    assert_eq!(timeline["items"][0]["body"], "New course ANN1: Announced");
    app.teardown().await;
}

#[tokio::test]
async fn a_course_created_by_an_admin_is_announced_by_the_system() {
    let app = spawn_app().await;
    app.create_course("ANN2").await;
    let system = format!("/v1/users/{}/posts", contracts::social::SYSTEM_AUTHOR);
    let timeline = app
        .eventually(&system, |page| {
            page["items"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    assert_eq!(timeline["items"][0]["author_name"], "Switchyard");
    assert!(
        timeline["items"][0]["body"]
            .as_str()
            .unwrap()
            .contains("ANN2")
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_registered_teacher_becomes_a_catalog_teacher_and_leaves_with_their_account() {
    let app = spawn_app().await;
    let (teacher_id, token) = app.user("Ted", "teacher").await;
    let teacher = app
        .eventually(&format!("/v1/teachers/{teacher_id}"), |t| {
            t["id"] == teacher_id.as_str()
        })
        .await;
    assert_eq!(teacher["email"], "ted@example.org");
    post_as(&app, &token, "bye soon").await;
    let response = app
        .anonymous
        .delete(app.url(&format!("/v1/users/{teacher_id}")))
        .bearer_auth(&token)
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.eventually(&format!("/v1/teachers/{teacher_id}"), |t| {
        t["status"] == 404
    })
    .await;
    app.eventually(&format!("/v1/users/{teacher_id}/posts"), |p| {
        p["items"] == json!([])
    })
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn a_social_command_delivered_twice_makes_one_post() {
    let app = spawn_app().await;
    let (uid, _) = app.user("Dup", "student").await;
    let operation = uuid::Uuid::now_v7();
    let command = contracts::social::SocialCommand::CreatePost(contracts::social::CreatePost {
        post_id: uuid::Uuid::now_v7(),
        author_name: "Dup".into(),
        body: "only once".into(),
    });
    let mut envelope = contracts::Envelope::new(social_commands::POST_CREATE, 1, operation);
    envelope.message_id = operation;
    e2e::sign_actor(&mut envelope, &uid, "student", &command);
    let properties = platform::bus::envelope::to_properties(&envelope);
    let body = serde_json::to_vec(&command).unwrap();
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let exchange = format!("{}.commands", app.prefix);
    for _ in 0..2 {
        channel
            .basic_publish(
                exchange.as_str().into(),
                social_commands::POST_CREATE.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await
            .unwrap();
    }
    let (_, token) = app.user("After", "student").await;
    post_as(&app, &token, "a later post").await;
    let page = app
        .eventually(&format!("/v1/users/{uid}/posts"), |p| {
            p["items"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn an_event_delivered_twice_announces_once() {
    let app = spawn_app().await;
    let course = contracts::catalog::CatalogEvent::CourseCreated(contracts::catalog::Course {
        id: uuid::Uuid::now_v7(),
        code: "TWICE".into(),
        title: "Twice".into(),
        description: String::new(),
    });
    let envelope = contracts::Envelope::new(
        contracts::catalog::events::COURSE_CREATED,
        1,
        uuid::Uuid::now_v7(),
    );
    let properties = platform::bus::envelope::to_properties(&envelope);
    let body = serde_json::to_vec(&course).unwrap();
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let exchange = format!("{}.events", app.prefix);
    for _ in 0..2 {
        channel
            .basic_publish(
                exchange.as_str().into(),
                contracts::catalog::events::COURSE_CREATED.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await
            .unwrap();
    }
    app.create_course("LATER").await;
    let system = format!("/v1/users/{}/posts", contracts::social::SYSTEM_AUTHOR);
    let page = app
        .eventually(&system, |p| {
            p["items"].as_array().is_some_and(|i| i.len() >= 2)
        })
        .await;
    let twice = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["body"].as_str().unwrap().contains("TWICE"))
        .count();
    assert_eq!(twice, 1);
    app.teardown().await;
}

#[tokio::test]
async fn one_course_request_carries_one_trace_and_request_id_through_catalog_and_social() {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let app = spawn_app().await;
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}.trace-events", app.prefix);
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .unwrap();
    for key in ["catalog.course.created", "social.post.created"] {
        channel
            .queue_bind(
                queue.as_str().into(),
                format!("{}.events", app.prefix).into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .client
        .post(app.url("/v1/courses"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-request-id", "trace-me-1")
        .json(&json!({"code": "TRC", "title": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let envelope = platform::bus::envelope::from_properties(&delivery.properties).unwrap();
        seen.push((delivery.routing_key.to_string(), envelope));
    }
    let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.contains(&"catalog.course.created") && keys.contains(&"social.post.created"),
        "{keys:?}"
    );
    let correlation = seen[0].1.correlation_id;
    for (key, envelope) in &seen {
        let traceparent = envelope.traceparent.as_deref().unwrap_or_default();
        assert!(
            traceparent.contains(trace),
            "{key} lost the trace: {traceparent}"
        );
        assert_eq!(
            envelope.request_id.as_deref(),
            Some("trace-me-1"),
            "{key} lost the request id"
        );
        assert_eq!(
            envelope.correlation_id, correlation,
            "{key} has another correlation id"
        );
    }
    app.teardown().await;
}
