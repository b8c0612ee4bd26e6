//! The outbox relay against real PostgreSQL and RabbitMQ: killed in the middle of a
//! batch and started again, it publishes every committed event, and nothing else.

// PostgreSQL is a feature of platform; the workspace build turns it on for accounts and
// social, so this runs in every `./dev test`.
#![cfg(feature = "pg")]
// Test code: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use contracts::Envelope;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use platform::bus::Bus;
use platform::config::BusConfig;
use platform::pg::outbox::{self, Relay};
use platform::pg::{PgConfig, migrate};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn a_relay_killed_mid_batch_and_restarted_publishes_every_committed_event() {
    // Its exchanges, the tap queue and the database go when the test ends.
    let mut scratch = testkit::Scratch::new();
    let prefix = scratch.name().to_owned();
    let url = testkit::env::database_url(&scratch.database("relay").await);
    let settings: std::collections::HashMap<String, String> = [
        ("POSTGRES_URL".to_owned(), url),
        ("AMQP_URL".to_owned(), testkit::env::amqp_url()),
        ("PREFIX".to_owned(), prefix.clone()),
    ]
    .into_iter()
    .collect();
    let pool = platform::pg::pool(&PgConfig::from_source(&settings, "unused").unwrap()).unwrap();
    migrate::run(&pool, &[]).await.unwrap();
    let bus = Bus::connect(
        &BusConfig::from_source(&settings).unwrap(),
        "relay-test",
        false,
    )
    .await
    .unwrap();

    // A subscriber that sees every event.
    let connection = lapin::Connection::connect(
        &testkit::env::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{prefix}.subscriber");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            bus.topology().events_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();

    // 2,000 events committed, as handlers would.
    let mut committed = HashSet::new();
    let mut client = pool.get().await.unwrap();
    for _ in 0..20 {
        let tx = client.transaction().await.unwrap();
        for _ in 0..100 {
            let envelope = Envelope::new("test.thing.happened", 1, Uuid::now_v7());
            outbox::enqueue(&tx, &envelope, b"{}").await.unwrap();
            committed.insert(envelope.message_id);
        }
        tx.commit().await.unwrap();
    }
    drop(client);

    // Run the relay, and kill it as soon as the first events arrive: mid-batch, before it
    // could commit the deletion of what it published.
    let relay = Relay::new(pool.clone(), bus.clone());
    let cancel = CancellationToken::new();
    let running = tokio::spawn(relay.clone().run(Duration::from_millis(50), cancel.clone()));
    relay.wake();
    let mut seen: Vec<Uuid> = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    running.abort();
    let _ = running.await;
    seen.push(
        platform::bus::envelope::from_properties(&first.properties)
            .unwrap()
            .message_id,
    );

    // Start it again and collect until every committed event has been seen.
    let started = std::time::Instant::now();
    let restarted = tokio::spawn(
        Relay::new(pool.clone(), bus.clone()).run(Duration::from_millis(50), cancel.clone()),
    );
    let distinct = |seen: &Vec<Uuid>| seen.iter().collect::<HashSet<_>>().len();
    while distinct(&seen) < committed.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("events stopped arriving")
            .unwrap()
            .unwrap();
        seen.push(
            platform::bus::envelope::from_properties(&delivery.properties)
                .unwrap()
                .message_id,
        );
    }
    let drain = started.elapsed();
    // Whatever is still in flight arrives now; give it a moment.
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        seen.push(
            platform::bus::envelope::from_properties(&delivery.properties)
                .unwrap()
                .message_id,
        );
    }
    cancel.cancel();
    let _ = restarted.await;

    let distinct_ids: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(
        distinct_ids, committed,
        "exactly the committed events, no stranger, none missing"
    );
    let left: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the outbox is empty once everything is confirmed");
    println!(
        "published {} messages for {} events ({} republished after the kill); restarted relay drained in {drain:?} ({:.0} events/s)",
        seen.len(),
        committed.len(),
        seen.len() - committed.len(),
        committed.len() as f64 / drain.as_secs_f64()
    );

    bus.close().await;
    let _ = connection.close(200, "done".into()).await;
    pool.close();
}
