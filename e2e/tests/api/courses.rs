//! Course routes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{assert_problem, spawn_app};

#[tokio::test]
async fn creating_a_course_with_prefer_wait_answers_201_with_the_course() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/courses",
            &json!({"code": "CS101", "title": "Intro", "description": "d"}),
            Some(10),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let course: Value = response.json().await.unwrap();
    assert_eq!(course["code"], "CS101");
    assert_eq!(
        location,
        format!("/v1/courses/{}", course["id"].as_str().unwrap())
    );
    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, course);
    app.teardown().await;
}

#[tokio::test]
async fn creating_a_course_without_waiting_answers_202_and_the_operation_succeeds() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/courses",
            &json!({"code": "CS102", "title": "Intro"}),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    assert_eq!(
        location,
        format!("/v1/operations/{}", body["operation_id"].as_str().unwrap())
    );
    let operation = app.wait_for_operation(&location).await;
    assert_eq!(operation["status"], "succeeded");
    assert_eq!(operation["resource"]["code"], "CS102");
    app.teardown().await;
}

#[tokio::test]
async fn a_duplicate_course_code_is_rejected_with_409() {
    let app = spawn_app().await;
    app.create_course("DUP1").await;
    let response = app
        .post(
            "/v1/courses",
            &json!({"code": "DUP1", "title": "Again"}),
            Some(10),
        )
        .await;
    let problem = assert_problem(response, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().unwrap().contains("DUP1"));
    assert!(problem["operation_id"].is_string());
    app.teardown().await;
}

#[tokio::test]
async fn a_rejected_operation_reports_its_reason_when_polled() {
    let app = spawn_app().await;
    app.create_course("DUP2").await;
    let response = app
        .post(
            "/v1/courses",
            &json!({"code": "DUP2", "title": "Again"}),
            None,
        )
        .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let operation = app.wait_for_operation(&location).await;
    assert_eq!(operation["status"], "rejected");
    assert_eq!(operation["rejection"]["kind"], "conflict");
    app.teardown().await;
}

#[tokio::test]
async fn an_invalid_course_is_422_and_never_published() {
    let app = spawn_app().await;
    for body in [
        json!({"code": "", "title": "t"}),
        json!({"code": "OK1", "title": "   "}),
        json!({"code": "has space", "title": "t"}),
    ] {
        let response = app.post("/v1/courses", &body, None).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let page: Value = app.get("/v1/courses").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    app.teardown().await;
}

#[tokio::test]
async fn an_unknown_course_is_404_and_a_malformed_id_is_400() {
    let app = spawn_app().await;
    let missing = uuid::Uuid::now_v7();
    assert_problem(
        app.get(&format!("/v1/courses/{missing}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        app.get("/v1/courses/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn courses_are_listed_in_pages_with_a_cursor() {
    let app = spawn_app().await;
    for n in 0..5 {
        app.create_course(&format!("PG{n}")).await;
    }
    let first: Value = app.get("/v1/courses?limit=2").await.json().await.unwrap();
    let codes = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(codes(&first), ["PG0", "PG1"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!("/v1/courses?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(codes(&second), ["PG2", "PG3"]);
    let cursor = second["next_cursor"].as_str().unwrap();
    let last: Value = app
        .get(&format!("/v1/courses?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(codes(&last), ["PG4"]);
    assert!(last["next_cursor"].is_null());
    assert_problem(
        app.get("/v1/courses?limit=0").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // The gateway only checks that a cursor is plain; the catalog judges its meaning.
    let garbage = app.get("/v1/courses?cursor=garbage").await;
    assert_problem(garbage, StatusCode::UNPROCESSABLE_ENTITY).await;
    let markup = app.get("/v1/courses?cursor=%3Cscript%3E").await;
    assert_problem(markup, StatusCode::BAD_REQUEST).await;
    app.teardown().await;
}

#[tokio::test]
async fn patching_a_course_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let course = app.create_course("UP1").await;
    let path = format!("/v1/courses/{}", course["id"].as_str().unwrap());
    let response = app
        .client
        .patch(app.url(&path))
        .header("prefer", "wait=10")
        .json(&json!({"title": "New title"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["title"], "New title");
    assert_eq!(updated["code"], "UP1");
    app.teardown().await;
}

#[tokio::test]
async fn patching_to_a_taken_code_is_409_and_an_unknown_course_404() {
    let app = spawn_app().await;
    app.create_course("TAKEN").await;
    let course = app.create_course("FREE").await;
    let path = format!("/v1/courses/{}", course["id"].as_str().unwrap());
    let patch = |path: String, body: Value| {
        app.client
            .patch(app.url(&path))
            .header("prefer", "wait=10")
            .json(&body)
            .send()
    };
    let response = patch(path.clone(), json!({"code": "TAKEN"})).await.unwrap();
    assert_problem(response, StatusCode::CONFLICT).await;
    let response = patch(
        format!("/v1/courses/{}", uuid::Uuid::now_v7()),
        json!({"title": "x"}),
    )
    .await
    .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND).await;
    let response = patch(path, json!({})).await.unwrap();
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.teardown().await;
}

#[tokio::test]
async fn deleting_a_course_frees_its_code_and_removes_it_from_teachers() {
    let app = spawn_app().await;
    let course = app.create_course("DEL1").await;
    let teacher = app.create_teacher("Grace").await;
    let course_id = course["id"].as_str().unwrap();
    let teacher_id = teacher["id"].as_str().unwrap();
    let assign = app
        .client
        .put(app.url(&format!("/v1/teachers/{teacher_id}/courses/{course_id}")))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(assign.status(), StatusCode::OK);

    let response = app
        .client
        .delete(app.url(&format!("/v1/courses/{course_id}")))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_problem(
        app.get(&format!("/v1/courses/{course_id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let courses: Value = app
        .get(&format!("/v1/teachers/{teacher_id}/courses"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(courses, json!([]));
    let teacher: Value = app
        .get(&format!("/v1/teachers/{teacher_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(teacher["course_ids"], json!([]));
    app.create_course("DEL1").await;
    app.teardown().await;
}
