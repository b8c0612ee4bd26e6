//! Teacher routes and assignments.

use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{assert_problem, spawn_app};

#[tokio::test]
async fn a_teacher_is_created_and_read_back() {
    let app = spawn_app().await;
    let teacher = app.create_teacher("Ada").await;
    assert_eq!(teacher["email"], "ada@example.org");
    assert_eq!(teacher["course_ids"], json!([]));
    let fetched: Value = app
        .get(&format!("/v1/teachers/{}", teacher["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, teacher);
    let page: Value = app.get("/v1/teachers").await.json().await.unwrap();
    assert_eq!(page["items"], json!([teacher]));
    app.teardown().await;
}

#[tokio::test]
async fn a_duplicate_email_is_409_and_a_bad_one_422() {
    let app = spawn_app().await;
    app.create_teacher("Alan").await;
    let response = app
        .post(
            "/v1/teachers",
            &json!({"name": "Other Alan", "email": "ALAN@example.org"}),
            Some(10),
        )
        .await;
    assert_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .post(
            "/v1/teachers",
            &json!({"name": "Bad", "email": "nope"}),
            Some(10),
        )
        .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.teardown().await;
}

#[tokio::test]
async fn assigning_and_unassigning_courses_shows_in_the_teachers_courses() {
    let app = spawn_app().await;
    let teacher = app.create_teacher("Barbara").await;
    let course = app.create_course("AS1").await;
    let path = format!(
        "/v1/teachers/{}/courses/{}",
        teacher["id"].as_str().unwrap(),
        course["id"].as_str().unwrap()
    );
    let courses_path = format!("/v1/teachers/{}/courses", teacher["id"].as_str().unwrap());

    let response = app
        .client
        .put(app.url(&path))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["course_ids"], json!([course["id"]]));
    let courses: Value = app.get(&courses_path).await.json().await.unwrap();
    assert_eq!(courses, json!([course]));

    // Assigning again is idempotent.
    let again = app
        .client
        .put(app.url(&path))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);

    let response = app
        .client
        .delete(app.url(&path))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let courses: Value = app.get(&courses_path).await.json().await.unwrap();
    assert_eq!(courses, json!([]));

    let response = app
        .client
        .delete(app.url(&path))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND).await;
    app.teardown().await;
}

#[tokio::test]
async fn assigning_an_unknown_course_or_to_an_unknown_teacher_is_404() {
    let app = spawn_app().await;
    let teacher = app.create_teacher("Edsger").await;
    let course = app.create_course("AS2").await;
    let unknown = uuid::Uuid::now_v7();
    let to_unknown_course = format!(
        "/v1/teachers/{}/courses/{unknown}",
        teacher["id"].as_str().unwrap()
    );
    let to_unknown_teacher = format!(
        "/v1/teachers/{unknown}/courses/{}",
        course["id"].as_str().unwrap()
    );
    for path in [to_unknown_course, to_unknown_teacher] {
        let response = app
            .client
            .put(app.url(&path))
            .header("prefer", "wait=10")
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::NOT_FOUND).await;
    }
    let response = app
        .client
        .put(app.url("/v1/teachers/x/courses/y"))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::BAD_REQUEST).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_deleted_teacher_is_gone_and_their_email_free() {
    let app = spawn_app().await;
    let teacher = app.create_teacher("Donald").await;
    let path = format!("/v1/teachers/{}", teacher["id"].as_str().unwrap());
    let response = app
        .client
        .delete(app.url(&path))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path).await, StatusCode::NOT_FOUND).await;
    let response = app
        .client
        .delete(app.url(&path))
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND).await;
    app.create_teacher("Donald").await;
    app.teardown().await;
}
