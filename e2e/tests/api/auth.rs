//! Registration, login, tokens, roles and rate limits.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{ADMIN_EMAIL, Workers, assert_problem, spawn_app, spawn_custom};

#[tokio::test]
async fn a_registered_user_logs_in_and_sees_themself() {
    let app = spawn_app().await;
    let body =
        json!({"email": "Lin@Example.org", "display_name": "Lin", "password": "a long password"});
    let response = app
        .anonymous
        .post(app.url("/v1/auth/register"))
        .header("prefer", "wait=10")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["role"], "student");
    assert_eq!(user["email"], "lin@example.org");
    let token = app.login("lin@example.org", "a long password").await;
    let me: Value = app
        .anonymous
        .get(app.url("/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, user);
    app.teardown().await;
}

#[tokio::test]
async fn a_failed_login_does_not_say_whether_the_email_exists() {
    let app = spawn_app().await;
    let attempt = |email: &'static str| {
        app.anonymous
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": email, "password": "wrong password"}))
            .send()
    };
    let wrong_password = assert_problem(
        attempt(ADMIN_EMAIL).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let unknown_email = assert_problem(
        attempt("nobody@example.org").await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(wrong_password["detail"], unknown_email["detail"]);
    app.teardown().await;
}

#[tokio::test]
async fn a_duplicate_or_weak_registration_is_refused() {
    let app = spawn_app().await;
    app.user("Mae", "student").await;
    let again =
        json!({"email": "MAE@example.org", "display_name": "Mae 2", "password": "a long password"});
    assert_problem(
        app.post("/v1/auth/register", &again, Some(10)).await,
        StatusCode::CONFLICT,
    )
    .await;
    let weak = json!({"email": "weak@example.org", "display_name": "Weak", "password": "short"});
    assert_problem(
        app.post("/v1/auth/register", &weak, Some(10)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    app.teardown().await;
}

#[tokio::test]
async fn only_an_admin_grants_roles() {
    let app = spawn_app().await;
    let (_, student) = app.user("Sam", "student").await;
    let body = json!({"email": "t@example.org", "display_name": "T", "password": "a long password", "role": "teacher"});
    let anonymous = app
        .anonymous
        .post(app.url("/v1/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let as_student = app
        .anonymous
        .post(app.url("/v1/auth/register"))
        .bearer_auth(&student)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(as_student, StatusCode::FORBIDDEN).await;
    let as_admin = app.post("/v1/auth/register", &body, Some(10)).await;
    assert_eq!(as_admin.status(), StatusCode::CREATED);
    app.teardown().await;
}

/// A token signed with the given PKCS#8 Ed25519 key.
fn forge(kid: &str, der: &[u8], sub: &str, exp: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": sub, "name": "Forger", "role": "admin", "iss": "switchyard-accounts",
        "aud": "switchyard", "iat": now, "exp": exp, "jti": "x"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der),
    )
    .unwrap()
}

#[tokio::test]
async fn missing_malformed_expired_forged_and_underprivileged_tokens_are_refused() {
    let app = spawn_app().await;
    let course = json!({"code": "AUTH1", "title": "Guarded"});
    let post = |token: Option<String>| {
        let mut request = app.anonymous.post(app.url("/v1/courses")).json(&course);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let missing = post(None).await.unwrap();
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_problem(missing, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        post(Some("not.a.jwt".into())).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // The real signing key, read from accounts' database, with an expiry in the past.
    let (client, connection) = tokio_postgres::connect(
        &e2e::database_url(&format!("{}_accounts", app.prefix)),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT kid, private_der FROM signing_keys", &[])
        .await
        .unwrap();
    let (kid, stored): (String, Vec<u8>) = (row.get(0), row.get(1));
    // The key is stored sealed; only the key-encryption key opens it.
    assert!(
        stored.starts_with(b"SYK1") && !stored.starts_with(&[0x30]),
        "the private key is stored sealed, not as clear PKCS#8 DER"
    );
    let vault = accounts::vault::KeyVault::from_source(&std::collections::HashMap::from([(
        "KEY_ENCRYPTION_KEY".to_owned(),
        e2e::key_encryption_key_hex(),
    )]))
    .unwrap();
    let der = vault.open(&stored).unwrap().plain;
    let admin_id = uuid::Uuid::now_v7().to_string();
    let expired = forge(&kid, &der, &admin_id, 1_000);
    let problem =
        assert_problem(post(Some(expired)).await.unwrap(), StatusCode::UNAUTHORIZED).await;
    assert!(problem["detail"].as_str().unwrap().contains("expired"));

    // Same kid, another key: the signature does not verify.
    let mut other = hex_prefix();
    other.extend_from_slice(&[7u8; 32]);
    let far = 4_000_000_000;
    assert_problem(
        post(Some(forge(&kid, &other, &admin_id, far)))
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let (_, student) = app.user("Stu", "student").await;
    assert_problem(post(Some(student)).await.unwrap(), StatusCode::FORBIDDEN).await;
    app.teardown().await;
}

/// The fixed PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), before the 32-byte seed.
fn hex_prefix() -> Vec<u8> {
    vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ]
}

#[tokio::test]
async fn users_delete_themselves_or_are_deleted_by_an_admin_but_not_by_others() {
    let app = spawn_app().await;
    let (ann, ann_token) = app.user("Ann", "student").await;
    let (bob, bob_token) = app.user("Bob", "student").await;
    let delete = |id: &str, token: &str| {
        app.anonymous
            .delete(app.url(&format!("/v1/users/{id}")))
            .bearer_auth(token)
            .header("prefer", "wait=10")
            .send()
    };
    assert_problem(
        delete(&bob, &ann_token).await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        delete(&ann, &ann_token).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let login = app
        .anonymous
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": "ann@example.org", "password": "long enough password"}))
        .send()
        .await
        .unwrap();
    assert_problem(login, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        delete(&bob, &app.admin_token).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        delete(&bob, &app.admin_token).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    drop(bob_token);
    app.teardown().await;
}

#[tokio::test]
async fn the_per_ip_rate_limit_trips_with_retry_after_and_recovers() {
    let app = spawn_custom(
        Workers::Running,
        &[("RATE_LIMIT_IP_RATE", "2"), ("RATE_LIMIT_IP_BURST", "3")],
    )
    .await;
    // Readiness polling and the admin login may have used some of the burst already.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut limited = None;
    for _ in 0..10 {
        let response = app.get("/v1/timeline").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the limit never tripped");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(response.headers()["ratelimit-limit"], "3");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.get("/v1/timeline").await.status(), StatusCode::OK);
    app.teardown().await;
}

#[tokio::test]
async fn login_is_limited_more_tightly_than_the_rest() {
    let app = spawn_custom(
        Workers::Running,
        &[
            ("RATE_LIMIT_AUTH_RATE", "1"),
            ("RATE_LIMIT_AUTH_BURST", "2"),
        ],
    )
    .await;
    let attempt = || {
        app.anonymous
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": "x@example.org", "password": "wrong password"}))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(attempt().await.unwrap().status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Other routes are not affected by the auth limit.
    assert_eq!(app.get("/v1/timeline").await.status(), StatusCode::OK);
    app.teardown().await;
}

#[tokio::test]
async fn a_login_request_is_sealed_and_transient_so_no_password_crosses_the_broker() {
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let app = spawn_app().await;
    let connection = app.amqp().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}.login-tap", app.prefix);
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{}.commands", app.prefix).into(),
            "accounts.user.login".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    app.login(ADMIN_EMAIL, e2e::ADMIN_PASSWORD).await;
    let tapped = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the login request was routed to the tap");
    let properties = &tapped.delivery.properties;
    let body = String::from_utf8_lossy(&tapped.delivery.data);
    assert!(
        !body.contains(e2e::ADMIN_PASSWORD) && !body.contains(ADMIN_EMAIL),
        "the credentials are sealed: {body}"
    );
    assert_eq!(*properties.delivery_mode(), Some(1), "transient");
    assert!(properties.expiration().is_some(), "with an expiry");
    app.teardown().await;
}
