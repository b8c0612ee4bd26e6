//! The real gateway binary: on SIGTERM it stops accepting connections at once, lets the
//! request in flight finish, and exits 0; `gateway healthcheck` reports readiness by its
//! exit status (for container healthchecks in images without curl).

// Test code: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::Scratch;
use testkit::env::amqp_url;

/// Declares the catalog's queues under `prefix` (nobody consumes them).
async fn declare_catalog(prefix: &str) {
    let settings: std::collections::HashMap<String, String> = [
        ("AMQP_URL".to_owned(), amqp_url()),
        ("PREFIX".to_owned(), prefix.to_owned()),
    ]
    .into_iter()
    .collect();
    let config = platform::config::BusConfig::from_source(&settings).unwrap();
    let bus = platform::bus::Bus::connect(&config, "test-declare", false)
        .await
        .unwrap();
    bus.declare_messages::<contracts::catalog::CatalogCommand, contracts::catalog::CatalogQuery>(
        &[],
    )
    .await
    .unwrap();
    bus.close().await;
}

/// Starts the gateway binary under `prefix` and waits until `/livez` answers (it is not
/// ready without the token keys of an accounts worker, which this test does not run).
async fn start_gateway(prefix: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let gateway = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("SWITCHYARD_AMQP_URL", amqp_url())
        .env("SWITCHYARD_PREFIX", prefix)
        .env("SWITCHYARD_HTTP_ADDR", &address)
        .env("SWITCHYARD_OPERATION_KEY", "ab".repeat(32))
        .env("SWITCHYARD_ACTOR_KEY", "5a".repeat(32))
        .env("SWITCHYARD_QUERY_TIMEOUT_MS", "1500")
        .env("SWITCHYARD_GRACE_MS", "5000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("http://{address}/livez"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "the gateway never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (gateway, address)
}

#[tokio::test]
async fn sigterm_stops_intake_finishes_open_requests_and_exits_zero() {
    let scratch = Scratch::new();
    // The catalog's queues exist but nobody consumes them: a read waits its full timeout,
    // which gives the test a request that is in flight when the signal comes.
    declare_catalog(scratch.name()).await;
    let (mut gateway, address) = start_gateway(scratch.name()).await;
    let client = reqwest::Client::new();

    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("http://{address}/v1/courses");
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    // Intake stops: new connections are refused well before the open request is done.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let fresh = reqwest::Client::new()
            .get(format!("http://{address}/livez"))
            .send()
            .await;
        if fresh.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The open request gets its real answer (the query timed out: 504), not a reset.
    let answered = in_flight.await.unwrap().unwrap();
    assert_eq!(answered, StatusCode::GATEWAY_TIMEOUT);

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = gateway.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

/// Serves `/readyz` with `status` on a free port; the address.
async fn readiness(status: u16) -> String {
    use warp::Filter as _;
    let code = warp::http::StatusCode::from_u16(status).unwrap();
    let route = warp::path!("readyz").map(move || warp::reply::with_status("", code));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    address.to_string()
}

#[tokio::test]
async fn the_healthcheck_command_exits_0_when_ready_and_1_otherwise() {
    // What `healthcheck` asks is `/readyz` at the configured address; the gateway's own
    // readiness (broker, token keys) is tested end to end in e2e.
    let run = |addr: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_gateway"))
                .arg("healthcheck")
                .env("SWITCHYARD_HTTP_ADDR", addr)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(run(readiness(200).await).await.success(), "a ready service");
    assert_eq!(run(readiness(503).await).await.code(), Some(1), "not ready");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        run(closed.to_string()).await.code(),
        Some(1),
        "nothing listening"
    );
    assert_eq!(
        run("not an address".into()).await.code(),
        Some(2),
        "bad setting"
    );
}
