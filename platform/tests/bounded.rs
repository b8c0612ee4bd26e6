//! Command queues are bounded: past `COMMAND_QUEUE_MAX_LENGTH` the broker nacks a publish
//! (nothing stored, so the gateway can answer 503 and the client retry), what was accepted
//! stays queued, and room made by a consumer takes publishes again. A queue declared
//! before the bound existed (a quorum queue's arguments cannot change) is kept and still
//! bound, rather than failing the service's start.

// Test code: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use contracts::Envelope;
use contracts::social::{SocialCommand, SocialQuery, commands};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use platform::bus::{Bus, Outgoing, PublishError};
use platform::config::BusConfig;
use uuid::Uuid;

async fn bus(prefix: &str, bound: &str) -> Bus {
    let settings: HashMap<String, String> = [
        ("AMQP_URL", testkit::env::amqp_url().as_str()),
        ("PREFIX", prefix),
        ("COMMAND_QUEUE_MAX_LENGTH", bound),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let bus = Bus::connect(
        &BusConfig::from_source(&settings).unwrap(),
        "bounded-test",
        false,
    )
    .await
    .unwrap();
    bus.declare_messages::<SocialCommand, SocialQuery>(&[])
        .await
        .unwrap();
    bus
}

async fn publish(bus: &Bus) -> Result<(), PublishError> {
    let envelope = Envelope::new(commands::POST_CREATE, 1, Uuid::now_v7());
    bus.publisher()
        .publish(Outgoing {
            exchange: &bus.topology().commands_exchange(),
            routing_key: commands::POST_CREATE,
            envelope: &envelope,
            body: b"{}",
            mandatory: true,
            expiration: None,
            extra_headers: None,
        })
        .await
}

#[tokio::test]
async fn a_full_command_queue_refuses_publishes_and_keeps_what_it_took() {
    let scratch = testkit::Scratch::new();
    let bus = bus(scratch.name(), "3").await;
    let queue = bus.topology().command_queue(contracts::social::SERVICE);
    for _ in 0..3 {
        publish(&bus).await.unwrap();
    }
    // A quorum queue notices it is over its bound as it stores a message, so one or two
    // may slip past before the publisher is told: the bound is firm within a message or two.
    let mut accepted_past = 0;
    loop {
        match publish(&bus).await {
            Ok(()) => accepted_past += 1,
            Err(PublishError::Nacked) => break,
            Err(other) => panic!("past the bound: {other}"),
        }
        assert!(
            accepted_past <= 2,
            "{accepted_past} accepted past the bound"
        );
    }
    for _ in 0..3 {
        let refused = publish(&bus).await;
        assert!(
            matches!(refused, Err(PublishError::Nacked)),
            "once refused, refused until there is room: {refused:?}"
        );
    }
    let connection = testkit::broker::connect().await;
    let held = testkit::broker::message_count(&connection, &queue).await;
    assert_eq!(held, 3 + accepted_past, "every confirmed message is held");

    // Consumers make room (the queue takes publishes again once it is well below its
    // bound, not at the first free slot, so it does not flap): the next publish is taken.
    let channel = connection.create_channel().await.unwrap();
    for _ in 0..held {
        let taken = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert!(taken.is_some());
    }
    publish(&bus).await.unwrap();
    assert_eq!(testkit::broker::message_count(&connection, &queue).await, 1);
    bus.close().await;
}

#[tokio::test]
async fn a_command_queue_declared_before_the_bound_is_kept_and_still_bound() {
    let scratch = testkit::Scratch::new();
    let prefix = scratch.name().to_owned();
    let topology = platform::bus::topology::Topology::new(&prefix);
    let queue = topology.command_queue(contracts::social::SERVICE);
    // As an earlier release declared it: no x-max-length.
    let connection = testkit::broker::connect().await;
    let channel = connection.create_channel().await.unwrap();
    topology.declare_exchanges(&channel).await.unwrap();
    topology
        .declare_work_queue(
            &channel,
            &queue,
            &topology.commands_exchange(),
            &[commands::POST_CREATE],
            None,
        )
        .await
        .unwrap();

    // A command waiting in it when the new release starts.
    channel
        .basic_publish(
            topology.commands_exchange().as_str().into(),
            commands::POST_CREATE.into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // The service starts with a bound configured: its start succeeds, the old queue and
    // its message are kept, and it takes commands past the new bound (it has none).
    let bus = bus(&prefix, "2").await;
    for _ in 0..3 {
        publish(&bus).await.unwrap();
    }
    assert_eq!(testkit::broker::message_count(&connection, &queue).await, 4);
    bus.close().await;
}
