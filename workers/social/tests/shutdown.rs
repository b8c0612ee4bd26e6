//! SIGTERM on the real binary: it stops taking messages, finishes or returns the ones in
//! flight, flushes its outbox, and exits 0 — and no command is lost or applied twice.

// Test helpers outside #[test] functions may fail loudly: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contracts::Envelope;
use contracts::social::{CreatePost, SocialCommand, commands};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

/// The key the worker verifies actors with; the test vouches for its posts with it.
const ACTOR_KEY: &str = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

async fn message_count(connection: &Connection, queue: &str) -> u32 {
    platform::bus::topology::message_count(connection, queue)
        .await
        .unwrap()
        .expect("the queue exists")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn sigterm_drains_in_flight_commands_flushes_the_outbox_and_exits_zero() {
    const COMMANDS: usize = 400;
    // The queues the worker declares, the tap and the database go when the test ends.
    let mut scratch = testkit::Scratch::new();
    let prefix = scratch.name().to_owned();
    let database = scratch.database("social").await;
    let amqp_url = testkit::env::amqp_url();

    // A tap on the events exchange, bound before the worker runs, sees every event the
    // worker publishes.
    let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let events = format!("{prefix}.events");
    let tap = format!("{prefix}.tap");
    channel
        .exchange_declare(
            events.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            tap.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            tap.as_str().into(),
            events.as_str().into(),
            "social.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let health = format!("127.0.0.1:{}", free_port());
    let mut worker = Command::new(env!("CARGO_BIN_EXE_social"))
        .env("SWITCHYARD_AMQP_URL", &amqp_url)
        .env("SWITCHYARD_PREFIX", &prefix)
        .env(
            "SWITCHYARD_POSTGRES_URL",
            testkit::env::database_url(&database),
        )
        .env("SWITCHYARD_HEALTH_ADDR", &health)
        .env("SWITCHYARD_GRACE_MS", "5000")
        .env("SWITCHYARD_PREFETCH", "64")
        .env("SWITCHYARD_ACTOR_KEY", ACTOR_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("social binary starts");
    let ready = format!("http://{health}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(&ready)
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(Instant::now() < deadline, "social never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let author = uuid::Uuid::now_v7();
    let actor_key = platform::actor::ActorKey::new(&secrecy::SecretSlice::from(
        hex::decode(ACTOR_KEY).unwrap(),
    ))
    .unwrap();
    let mut confirms = Vec::new();
    for i in 0..COMMANDS {
        let command = SocialCommand::CreatePost(CreatePost {
            post_id: uuid::Uuid::now_v7(),
            author_name: "Draining".into(),
            body: format!("post {i}"),
        });
        let mut envelope = Envelope::new(commands::POST_CREATE, 1, uuid::Uuid::now_v7());
        envelope.message_id = envelope.correlation_id;
        let body = serde_json::to_vec(&command).unwrap();
        actor_key.sign(&mut envelope, author, "student", &body);
        let properties = platform::bus::envelope::to_properties(&envelope);
        confirms.push(
            channel
                .basic_publish(
                    format!("{prefix}.commands").as_str().into(),
                    commands::POST_CREATE.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    properties,
                )
                .await
                .unwrap(),
        );
    }
    for confirm in confirms {
        confirm.await.unwrap();
    }
    // Stop it mid-stream: some posts applied, most still queued or in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while testkit::pg::count(&database, "posts").await < 10 {
        assert!(Instant::now() < deadline, "social applied nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = worker.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "social did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");

    let applied = testkit::pg::count(&database, "posts").await;
    let commands_queue = format!("{prefix}.social.commands");
    let queued = i64::from(message_count(&connection, &commands_queue).await);
    assert_eq!(
        applied + queued,
        COMMANDS as i64,
        "applied {applied} + queued {queued}"
    );
    assert!(
        queued > 0,
        "it stopped taking messages before the queue ran dry"
    );
    assert_eq!(
        testkit::pg::count(&database, "outbox").await,
        0,
        "outbox flushed"
    );
    let published = i64::from(message_count(&connection, &tap).await);
    assert_eq!(published, applied, "every applied post's event went out");
    let dead = message_count(&connection, &format!("{commands_queue}.dlq")).await;
    assert_eq!(dead, 0);

    let _ = connection.close(200, "done".into()).await;
}
