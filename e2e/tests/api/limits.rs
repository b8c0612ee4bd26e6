//! The HTTP edge under hostile or careless clients: slow and idle sockets, too many
//! connections, junk methods and paths, abandoned requests and odd bodies — all bounded,
//! all answered (or closed) in time, none growing the metrics.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use e2e::{TestApp, Workers, assert_problem, spawn_app, spawn_custom};

/// Reads until the server closes the connection (or `limit` passes); returns what it sent
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&received).into_owned(), true);
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// A stack whose gateway has short HTTP timeouts and small connection caps.
async fn strict_app() -> TestApp {
    spawn_custom(
        Workers::Running,
        &[
            ("HTTP_HEADER_TIMEOUT_MS", "500"),
            ("HTTP_BODY_TIMEOUT_MS", "500"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "8"),
        ],
    )
    .await
}

#[tokio::test]
async fn headers_that_never_finish_and_idle_keep_alive_sockets_are_closed() {
    let app = strict_app().await;
    // Half a request line, then silence.
    let mut slow = TcpStream::connect(app.address).await.unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent request is cut off");
    assert!(started.elapsed() < Duration::from_secs(4));

    // A finished request on a keep-alive connection, then nothing more.
    let mut idle = TcpStream::connect(app.address).await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(started.elapsed() < Duration::from_secs(4));
    app.teardown().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_problem_json() {
    let app = strict_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /v1/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"body\":",
        app.admin_token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    app.teardown().await;
}

#[tokio::test]
async fn connections_over_the_per_client_cap_get_503_and_the_cap_frees_up() {
    let app = spawn_custom(
        Workers::Running,
        &[
            ("HTTP_HEADER_TIMEOUT_MS", "20000"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "8"),
        ],
    )
    .await;
    // The test client's own pooled connections count against the cap too: let them go.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(app.address).await.unwrap());
    }
    // Give the accept loop a moment to admit the eight (they sent nothing, so nothing
    // answers: wait until a ninth is refused, within a deadline).
    let deadline = Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        let mut extra = TcpStream::connect(app.address).await.unwrap();
        let (answer, closed) = read_until_closed(&mut extra, Duration::from_millis(500)).await;
        if closed && answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the ninth connection was never refused"
        );
    };
    assert!(refusal.contains("too-many-connections"), "{refusal}");
    drop(held);
    // The cap frees up once the held sockets are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fresh = reqwest::Client::new();
        if let Ok(response) = fresh.get(app.url("/livez")).send().await
            && response.status() == StatusCode::OK
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections were never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn junk_methods_and_paths_do_not_add_metric_series() {
    let app = spawn_app().await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("switchyard_http_request"))
            .count()
    };
    let send_junk = |i: usize| {
        let method = reqwest::Method::from_bytes(format!("FROB{i}").as_bytes()).unwrap();
        let path = match i % 4 {
            0 => format!("/v1/courses/{i}/x/y"),
            1 => format!("/wp-admin/{i}.php"),
            2 => format!("/v1/{i}/{i}"),
            _ => format!("/v1/teachers/{i}/courses/{i}/more"),
        };
        app.client.request(method, app.url(&path)).send()
    };
    // One of each shape first, so every label value junk can reach exists already.
    for i in 0..8 {
        let _ = send_junk(i).await;
        let _ = app.client.get(app.url(&format!("/x{i}/y"))).send().await;
    }
    // Reading /metrics is itself counted once it has answered: read it once beforehand.
    let _ = app.get_text("/metrics").await;
    let before = series(&app.get_text("/metrics").await);
    for i in 8..300 {
        let _ = send_junk(i).await;
    }
    let after = series(&app.get_text("/metrics").await);
    assert_eq!(before, after, "junk requests added series");
    app.teardown().await;
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_is_logged_and_counted_as_499() {
    // Nobody answers catalog queries, so a read waits for its timeout.
    let app = spawn_custom(Workers::Declared, &[("QUERY_TIMEOUT_MS", "3000")]).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(impatient.get(app.url("/v1/courses")).send().await.is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = app.get_text("/metrics").await;
        let counted = metrics.lines().any(|l| {
            l.starts_with("switchyard_http_requests_total{")
                && l.contains("route=\"/v1/courses\"")
                && l.contains("method=\"GET\"")
                && l.contains("status_class=\"4xx\"")
        });
        if counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned request was not counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn bodies_with_duplicate_keys_are_422_and_chunked_bodies_are_read_within_the_limit() {
    let app = spawn_app().await;
    let duplicate = app
        .client
        .post(app.url("/v1/courses"))
        .header("content-type", "application/json")
        .body(r#"{"code":"DUP1","title":"First","title":"Second"}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(duplicate, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("duplicate key")
    );

    // Chunked bodies carry no Content-Length; they are read up to the body limit.
    let chunked = |parts: Vec<String>| {
        let mut request = format!(
            "POST /v1/courses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nPrefer: wait=10\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            app.admin_token
        );
        for part in parts {
            request.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
        }
        request.push_str("0\r\n\r\n");
        let address = app.address;
        async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            read_until_closed(&mut stream, Duration::from_secs(15))
                .await
                .0
        }
    };
    let answer = chunked(vec![
        r#"{"code":"CHUNK","#.into(),
        r#""title":"Chunked"}"#.into(),
    ])
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let big = format!(r#"{{"code":"BIG","title":"{}"}}"#, "x".repeat(70 * 1024));
    let parts = big
        .as_bytes()
        .chunks(8 * 1024)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let answer = chunked(parts).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    app.teardown().await;
}

#[tokio::test]
async fn ids_in_other_spellings_are_400_and_long_ids_are_not_echoed() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    for spelling in [
        format!("urn:uuid:{id}"),
        id.simple().to_string(),
        format!("{{{id}}}"),
    ] {
        let response = app.get(&format!("/v1/courses/{spelling}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    // Upper case is the same UUID in its canonical shape: accepted (404: no such course).
    let upper = id.hyphenated().to_string().to_uppercase();
    let response = app.get(&format!("/v1/courses/{upper}")).await;
    assert_problem(response, StatusCode::NOT_FOUND).await;

    let long = "a".repeat(2_000);
    let response = app.get(&format!("/v1/courses/{long}")).await;
    let problem: Value = assert_problem(response, StatusCode::BAD_REQUEST).await;
    assert!(problem.to_string().len() < 500, "{problem}");
    let longer = "a".repeat(10_000);
    let response = app.get(&format!("/v1/courses/{longer}")).await;
    let problem: Value = assert_problem(response, StatusCode::URI_TOO_LONG).await;
    assert!(problem.to_string().len() < 500, "{problem}");
    app.teardown().await;
}

#[tokio::test]
async fn a_post_or_title_made_only_of_invisible_characters_is_refused() {
    let app = spawn_app().await;
    let post = app
        .post(
            "/v1/posts",
            &serde_json::json!({"body": "\u{200B}\u{200B}\u{FEFF}\u{2060}"}),
            Some(5),
        )
        .await;
    assert_problem(post, StatusCode::UNPROCESSABLE_ENTITY).await;
    let course = app
        .post(
            "/v1/courses",
            &serde_json::json!({"code": "BLANK1", "title": "\u{200D}\u{00AD} "}),
            Some(5),
        )
        .await;
    assert_problem(course, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.teardown().await;
}

#[tokio::test]
async fn oversized_request_targets_and_headers_are_problem_json_not_empty_answers() {
    let app = spawn_app().await;
    let long_query = format!("/v1/courses?cursor={}", "a".repeat(9000));
    let response = app.get(&long_query).await;
    assert_problem(response, StatusCode::URI_TOO_LONG).await;
    let mut many = app.anonymous.get(app.url("/livez"));
    for i in 0..80 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    assert_problem(
        many.send().await.unwrap(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    )
    .await;
    let big = app
        .anonymous
        .get(app.url("/livez"))
        .header("x-big", "b".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_problem(big, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    app.teardown().await;
}
