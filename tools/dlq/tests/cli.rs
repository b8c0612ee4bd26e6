//! The `dlq` binary against a real broker: list, show and replay a dead letter, and the
//! exit codes of its failures.

// Test helpers outside #[test] functions may fail loudly: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use platform::bus::Topology;
use platform::bus::consumer::death_headers;

use testkit::env::amqp_url;

fn dlq(prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dlq"))
        .env("SWITCHYARD_AMQP_URL", amqp_url())
        .env("SWITCHYARD_PREFIX", prefix)
        .args(args)
        .output()
        .unwrap()
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}

#[tokio::test]
async fn lists_shows_and_replays_a_dead_letter_back_to_its_queue() {
    // Its queues and exchanges go when the test ends.
    let scratch = testkit::Scratch::new();
    let prefix = scratch.name().to_owned();
    let topology = Topology::new(&prefix);
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare_exchanges(&channel).await.unwrap();
    let queue = topology.command_queue("social");
    topology
        .declare_work_queue(
            &channel,
            &queue,
            &topology.commands_exchange(),
            &["social.post.create"],
            None,
        )
        .await
        .unwrap();
    // A letter as the consumer dead-letters it: original headers plus the death headers.
    let id = uuid::Uuid::now_v7().to_string();
    let mut headers = FieldTable::default();
    headers.insert("x-request-id".into(), text("req-dlq"));
    headers.insert(death_headers::REASON.into(), text("undecodable"));
    headers.insert(
        death_headers::ERROR.into(),
        text("body is not JSON: expected value"),
    );
    headers.insert(death_headers::ATTEMPTS.into(), AMQPValue::LongLongInt(1));
    headers.insert(
        death_headers::DIED_AT.into(),
        text("2026-01-01T00:00:00+00:00"),
    );
    headers.insert(death_headers::QUEUE.into(), text(&queue));
    let properties = BasicProperties::default()
        .with_message_id(id.as_str().into())
        .with_type("social.post.create".into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let dlq_name = topology.dead_letter_queue(&queue);
    channel
        .basic_publish(
            "".into(),
            dlq_name.as_str().into(),
            BasicPublishOptions::default(),
            b"{not json",
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let list = dlq(&prefix, &["list"]);
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{out}");
    assert!(out.contains(&format!("{dlq_name}: 1")), "{out}");
    assert!(
        out.contains("social.post.create") && out.contains("undecodable"),
        "{out}"
    );

    let one = dlq(&prefix, &["list", "--queue", "social.commands"]);
    let out = String::from_utf8_lossy(&one.stdout);
    assert!(
        out.contains(&id) && out.contains("body is not JSON"),
        "{out}"
    );

    let show = dlq(&prefix, &["show", &id]);
    let out = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{out}");
    assert!(
        out.contains("{not json") && out.contains("req-dlq"),
        "{out}"
    );

    let missing = dlq(&prefix, &["show", "no-such-id"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead letter"));
    let usage = dlq(&prefix, &["replay", "--queue", "social.commands"]);
    assert_eq!(usage.status.code(), Some(2), "neither --all nor --id");

    let replay = dlq(
        &prefix,
        &["replay", "--queue", "social.commands", "--id", &id],
    );
    let out = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "{out}");
    assert!(out.contains("moved 1, failed 0, skipped 0"), "{out}");

    // Back in its queue, without the death headers, with the rest.
    let mut back = None;
    for _ in 0..100 {
        back = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if back.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let back = back.expect("the letter is back in its queue");
    assert_eq!(back.delivery.data, b"{not json");
    let headers = dlq::table_json(back.delivery.properties.headers().as_ref().unwrap());
    assert_eq!(headers["x-request-id"], "req-dlq");
    assert!(headers.get(death_headers::REASON).is_none());
    assert!(headers.get(dlq::REPLAYED_AT).is_some());
    assert_eq!(
        platform::bus::topology::message_count(&connection, &dlq_name)
            .await
            .unwrap(),
        Some(0)
    );

    // A letter that must never run is discarded by id, with an audit line; an id that is
    // not there makes the exit status 1.
    let poison = uuid::Uuid::now_v7().to_string();
    let mut headers = FieldTable::default();
    headers.insert(death_headers::REASON.into(), text("unknown-type"));
    headers.insert(death_headers::QUEUE.into(), text(&queue));
    channel
        .basic_publish(
            "".into(),
            dlq_name.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default()
                .with_message_id(poison.as_str().into())
                .with_type("social.post.explode".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let discard = dlq(
        &prefix,
        &[
            "discard",
            "--queue",
            "social.commands",
            "--id",
            &poison,
            "absent",
        ],
    );
    let out = String::from_utf8_lossy(&discard.stdout);
    assert_eq!(discard.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("discarded {poison}")) && out.contains("unknown-type"),
        "{out}"
    );
    assert!(out.contains("discarded 1, not found 1"), "{out}");
    let mut left = None;
    for _ in 0..100 {
        left = platform::bus::topology::message_count(&connection, &dlq_name)
            .await
            .unwrap();
        if left == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, Some(0));

    let _ = connection.close(200, "done".into()).await;
}
