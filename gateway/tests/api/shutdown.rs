//! The real gateway binary: on SIGTERM it stops accepting connections at once, lets the
//! request in flight finish, and exits 0; `gateway healthcheck` reports readiness by its
//! exit status (for container healthchecks in images without curl).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{amqp_url, delete_broker_objects};

#[tokio::test]
async fn sigterm_stops_intake_finishes_open_requests_and_exits_zero() {
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // The catalog's queues exist but nobody consumes them: a read waits its full timeout,
    // which gives the test a request that is in flight when the signal comes.
    let settings: std::collections::HashMap<String, String> = [
        ("AMQP_URL".to_owned(), amqp_url()),
        ("PREFIX".to_owned(), prefix.clone()),
    ]
    .into_iter()
    .collect();
    let config = platform::config::BusConfig::from_source(&settings).unwrap();
    let bus = platform::bus::Bus::connect(&config, "test-declare", false)
        .await
        .unwrap();
    bus.declare_messages::<contracts::catalog::CatalogCommand, contracts::catalog::CatalogQuery>(
        &catalog::handlers::events::SUBSCRIPTIONS,
    )
    .await
    .unwrap();
    bus.close().await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("SWITCHYARD_AMQP_URL", amqp_url())
        .env("SWITCHYARD_PREFIX", &prefix)
        .env("SWITCHYARD_HTTP_ADDR", &address)
        .env("SWITCHYARD_OPERATION_KEY", "ab".repeat(32))
        .env("SWITCHYARD_ACTOR_KEY", crate::helpers::actor_key_hex())
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
    delete_broker_objects(&prefix).await;
}

#[tokio::test]
async fn the_healthcheck_command_exits_0_when_ready_and_1_otherwise() {
    let app = crate::helpers::spawn_app().await;
    // Off the test's runtime: the gateway under test must keep answering meanwhile.
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
    assert!(
        run(app.address.to_string()).await.success(),
        "a ready gateway"
    );
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
    app.teardown().await;
}
