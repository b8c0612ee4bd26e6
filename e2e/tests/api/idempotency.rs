//! Idempotency keys that cannot leak or lie: anonymous callers share no key space, and a
//! key reused with another body is a 422, never the first request's result.

use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{assert_problem, spawn_app};

#[tokio::test]
async fn anonymous_registrations_with_the_same_key_and_other_bodies_are_separate_users() {
    let app = spawn_app().await;
    let register = |email: &str| {
        app.anonymous
            .post(app.url("/v1/auth/register"))
            .header("idempotency-key", "shared-key-1")
            .header("prefer", "wait=10")
            .json(&json!({"email": email, "display_name": "Same Key", "password": "long enough password"}))
            .send()
    };
    let first = register("first@example.org").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = register("second@example.org").await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_ne!(first["id"], second["id"]);
    assert_eq!(
        second["email"], "second@example.org",
        "nothing of the first leaks"
    );
    // Both accounts exist.
    app.login("first@example.org", "long enough password").await;
    app.login("second@example.org", "long enough password")
        .await;
    // The same body again is the same operation: one user, the same answer.
    let again = register("second@example.org").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], second["id"]);
    app.teardown().await;
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422_and_the_same_body_replays_its_outcome() {
    let app = spawn_app().await;
    let create = |body: Value, wait: bool| {
        let mut request = app
            .client
            .post(app.url("/v1/courses"))
            .header("idempotency-key", "course-key-1")
            .json(&body);
        if wait {
            request = request.header("prefer", "wait=10");
        }
        request.send()
    };
    let a = json!({"code": "IDEMA", "title": "First"});
    // Key order and spacing do not change the fingerprint.
    let a_reordered = json!({"title": "First", "code": "IDEMA"});
    let first = create(a.clone(), true).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let operation = first.headers()["operation-id"].to_str().unwrap().to_owned();
    let replay = create(a_reordered, false).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED, "the recorded outcome");
    assert_eq!(
        replay.headers()["operation-id"].to_str().unwrap(),
        operation
    );
    for wait in [true, false] {
        let other = create(json!({"code": "IDEMB", "title": "Second"}), wait)
            .await
            .unwrap();
        let problem = assert_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    }
    let courses: Value = app.get("/v1/courses").await.json().await.unwrap();
    assert!(!courses.to_string().contains("IDEMB"));
    app.teardown().await;
}

#[tokio::test]
async fn a_reused_key_that_races_the_first_request_is_never_reported_as_its_success() {
    let app = spawn_app().await;
    let send = |code: &str| {
        app.client
            .post(app.url("/v1/teachers"))
            .header("idempotency-key", "teacher-key-1")
            .json(&json!({"name": code, "email": format!("{}@example.org", code.to_lowercase())}))
            .send()
    };
    // Both go out before either is applied (no waiting), so the second may reach the
    // worker as a duplicate of the first.
    let (first, second) = tokio::join!(send("Racer"), send("Other"));
    let (first, second) = (first.unwrap(), second.unwrap());
    let mut locations = Vec::new();
    for response in [first, second] {
        match response.status() {
            StatusCode::ACCEPTED => {
                locations.push(response.headers()["location"].to_str().unwrap().to_owned())
            }
            StatusCode::UNPROCESSABLE_ENTITY => {}
            other => panic!("unexpected {other}"),
        }
    }
    let outcomes: Vec<Value> =
        futures::future::join_all(locations.iter().map(|l| app.wait_for_operation(l))).await;
    let succeeded = outcomes
        .iter()
        .filter(|o| o["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 1, "{outcomes:?}");
    for outcome in outcomes.iter().filter(|o| o["status"] != "succeeded") {
        assert!(
            outcome["rejection"]["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{outcome}"
        );
    }
    let teachers: Value = app.get("/v1/teachers").await.json().await.unwrap();
    assert_eq!(teachers["items"].as_array().unwrap().len(), 1, "{teachers}");
    app.teardown().await;
}
