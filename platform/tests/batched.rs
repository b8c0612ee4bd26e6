//! Batched exactly-once handling against real PostgreSQL and RabbitMQ: one batch that
//! mixes good messages, a business-rule rejection, refused data, a poison message, a
//! transient failure and a duplicate comes out as if each had been handled alone — every
//! good effect once, the rejection's writes rolled back, the bad two dead-lettered alone
//! with their reasons, the transient one retried until it applies once — and a redelivery
//! afterwards changes nothing.

// PostgreSQL is a feature of platform; the workspace build turns it on for accounts and
// social, so this runs in every `./dev test`.
#![cfg(feature = "pg")]
// Test code: a panic is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use contracts::social::{SocialCommand, SocialQuery, commands};
use contracts::{Envelope, Rejection};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use platform::bus::consumer::{self, ConsumerOptions, reasons};
use platform::bus::{Bus, DeadLetter, Incoming, Outgoing};
use platform::config::BusConfig;
use platform::pg::handle::{Apply, Batched, Effect, Transient, TxFuture};
use platform::pg::outbox::Relay;
use platform::pg::{PgConfig, Pool, Transaction, migrate, prepared};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The body of a test command: write `label` under `n`, and behave as `label` says.
#[derive(Debug, Deserialize)]
struct Thing {
    n: i32,
    label: String,
}

/// Rules that write a row per message (no key, so a second application would show as
/// a second row) and fail on demand.
#[derive(Default)]
struct Rules {
    /// Attempts at the `flaky` message so far.
    flaky_attempts: Arc<AtomicU32>,
}

impl Apply for Rules {
    type Message = Thing;

    fn accept(&self, incoming: &Incoming) -> Result<Thing, DeadLetter> {
        serde_json::from_slice(&incoming.body)
            .map_err(|e| DeadLetter::new(reasons::UNDECODABLE, e.to_string()))
    }

    fn apply<'t>(
        &'t self,
        tx: &'t Transaction<'t>,
        _envelope: &'t Envelope,
        thing: &'t Thing,
    ) -> TxFuture<'t> {
        Box::pin(async move {
            prepared::execute(
                tx,
                "INSERT INTO things (n, label) VALUES ($1, $2)",
                &[&thing.n, &thing.label],
            )
            .await?;
            match thing.label.as_str() {
                "reject" => Ok(Effect::Rejected(Rejection::conflict("not this one"))),
                // Fails twice, wherever it runs (in the batch, alone once the batch was
                // split, after a delay): it must end up applied once.
                "flaky" if self.flaky_attempts.fetch_add(1, Ordering::SeqCst) < 2 => {
                    Err(Transient::new("flaky store"))
                }
                _ => Ok(Effect::Applied(Some(serde_json::json!({ "n": thing.n })))),
            }
        })
    }
}

struct Setup {
    _scratch: testkit::Scratch,
    bus: Bus,
    pool: Pool,
    queue: String,
}

async fn setup() -> Setup {
    let mut scratch = testkit::Scratch::new();
    let prefix = scratch.name().to_owned();
    let url = testkit::env::database_url(&scratch.database("batched").await);
    let settings: HashMap<String, String> = [
        ("POSTGRES_URL", url.as_str()),
        ("AMQP_URL", testkit::env::amqp_url().as_str()),
        ("PREFIX", prefix.as_str()),
        ("RETRY_BASE_MS", "50"),
        ("RETRY_MAX_DELAY_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let pool = platform::pg::pool(&PgConfig::from_source(&settings, "unused").unwrap()).unwrap();
    migrate::run(&pool, &[]).await.unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE things (n int NOT NULL, label text NOT NULL)")
        .await
        .unwrap();
    let bus = Bus::connect(
        &BusConfig::from_source(&settings).unwrap(),
        "batch-test",
        false,
    )
    .await
    .unwrap();
    // Social's queues stand in for any service's: the test publishes its own bodies.
    bus.declare_messages::<SocialCommand, SocialQuery>(&[])
        .await
        .unwrap();
    let queue = bus.topology().command_queue(contracts::social::SERVICE);
    Setup {
        _scratch: scratch,
        bus,
        pool,
        queue,
    }
}

async fn publish(bus: &Bus, envelope: &Envelope, body: &[u8]) {
    bus.publisher()
        .publish(Outgoing {
            exchange: &bus.topology().commands_exchange(),
            routing_key: commands::POST_CREATE,
            envelope,
            body,
            mandatory: true,
            expiration: None,
            extra_headers: None,
        })
        .await
        .unwrap();
}

fn command(n: i32, label: &str) -> (Envelope, Vec<u8>) {
    let envelope = Envelope::new(commands::POST_CREATE, 1, Uuid::now_v7());
    let body = serde_json::to_vec(&serde_json::json!({ "n": n, "label": label })).unwrap();
    (envelope, body)
}

/// Rows per `n`.
async fn rows(pool: &Pool) -> HashMap<i32, i64> {
    pool.get()
        .await
        .unwrap()
        .query("SELECT n, count(*) FROM things GROUP BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Recorded outcome status per operation.
async fn outcomes(pool: &Pool) -> HashMap<Uuid, String> {
    pool.get()
        .await
        .unwrap()
        .query("SELECT id, status FROM operations", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The value of a sample in the service's metrics text (0 when absent).
fn sample(bus: &Bus, line_prefix: &str) -> f64 {
    bus.render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix(line_prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

const TRANSACTIONS: &str =
    "switchyard_db_operation_duration_seconds_count{operation=\"command_transaction\"} ";

#[tokio::test]
async fn a_mixed_batch_is_handled_as_if_each_message_were_alone() {
    let Setup {
        _scratch,
        bus,
        pool,
        queue,
    } = setup().await;

    // Everything is queued before the consumer starts, so it arrives as one batch.
    let mut good = Vec::new();
    for n in 1..=10 {
        let (envelope, body) = command(n, "good");
        publish(&bus, &envelope, &body).await;
        good.push(envelope.message_id);
    }
    let (rejected, body) = command(30, "reject");
    publish(&bus, &rejected, &body).await;
    let (refused, body) = command(40, "nul \u{0} byte");
    publish(&bus, &refused, &body).await;
    let poison = Envelope::new(commands::POST_CREATE, 1, Uuid::now_v7());
    publish(&bus, &poison, b"this is not json").await;
    let (flaky, body) = command(20, "flaky");
    publish(&bus, &flaky, &body).await;
    // The same message twice (a publisher that retried after a lost confirm).
    let (twice, body) = command(50, "twice");
    publish(&bus, &twice, &body).await;
    publish(&bus, &twice, &body).await;

    let rules = Rules::default();
    let flaky_attempts = rules.flaky_attempts.clone();
    let relay = Relay::new(pool.clone(), bus.clone());
    let cancel = CancellationToken::new();
    let options = ConsumerOptions {
        queue: queue.clone(),
        dead_letters: true,
        grace: Duration::from_secs(5),
        retry_pause: Duration::from_millis(50),
        batch_max: 64,
        // Long enough that all 16 deliveries make one batch on a busy machine.
        batch_window: Duration::from_millis(300),
    };
    let consuming = tokio::spawn(consumer::run(
        bus.clone(),
        options,
        Arc::new(Batched::commands(pool.clone(), relay, rules)),
        cancel.clone(),
    ));

    let expected_rows: HashMap<i32, i64> =
        (1..=10).map(|n| (n, 1)).chain([(20, 1), (50, 1)]).collect();
    testkit::eventually(
        "every good effect, once",
        Duration::from_secs(20),
        || async {
            let rows = rows(&pool).await;
            if rows == expected_rows {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    )
    .await;

    let outcomes = outcomes(&pool).await;
    for id in good.iter().chain([&flaky.message_id, &twice.message_id]) {
        assert_eq!(outcomes.get(id).map(String::as_str), Some("succeeded"));
    }
    assert_eq!(
        outcomes.get(&rejected.message_id).map(String::as_str),
        Some("rejected"),
        "the rejection is recorded, and its write rolled back"
    );
    assert!(!outcomes.contains_key(&refused.message_id));
    assert!(!outcomes.contains_key(&poison.message_id));
    assert_eq!(outcomes.len(), 13);
    assert_eq!(
        flaky_attempts.load(Ordering::SeqCst),
        3,
        "two failures, then applied"
    );
    assert!(
        sample(&bus, "switchyard_inbox_duplicates_total ") >= 1.0,
        "the second copy was answered from the record"
    );
    // At most: the batch, one transaction per accepted message once a failure split it,
    // and the flaky one's two retries.
    let transactions = sample(&bus, TRANSACTIONS);
    assert!(
        transactions <= 1.0 + 15.0 + 2.0,
        "{transactions} transactions"
    );

    // The two bad ones are dead-lettered alone, each with its reason.
    let dlq = bus.topology().dead_letter_queue(&queue);
    let reasons_seen = dead_letter_reasons(&dlq, 2).await;
    assert_eq!(
        reasons_seen.get(&refused.message_id).map(String::as_str),
        Some(reasons::REJECTED),
        "refused data: {reasons_seen:?}"
    );
    assert_eq!(
        reasons_seen.get(&poison.message_id).map(String::as_str),
        Some(reasons::UNDECODABLE),
        "{reasons_seen:?}"
    );

    // A redelivery of a handled message, later: answered from the record, nothing doubled.
    let duplicates = sample(&bus, "switchyard_inbox_duplicates_total ");
    let body = serde_json::to_vec(&serde_json::json!({ "n": 1, "label": "good" })).unwrap();
    let original = Envelope {
        message_id: good[0],
        ..Envelope::new(commands::POST_CREATE, 1, good[0])
    };
    publish(&bus, &original, &body).await;
    testkit::eventually("the redelivery answered", Duration::from_secs(10), || {
        let bus = bus.clone();
        async move {
            let now = sample(&bus, "switchyard_inbox_duplicates_total ");
            if now > duplicates {
                Ok(())
            } else {
                Err(format!("{now} duplicates"))
            }
        }
    })
    .await;
    assert_eq!(rows(&pool).await, expected_rows);

    cancel.cancel();
    consuming.await.unwrap().unwrap();
    bus.close().await;
    pool.close();
}

#[tokio::test]
async fn messages_queued_together_commit_in_fewer_transactions_than_messages() {
    let Setup {
        _scratch,
        bus,
        pool,
        queue,
    } = setup().await;
    for n in 0..40 {
        let (envelope, body) = command(n, "good");
        publish(&bus, &envelope, &body).await;
    }
    let cancel = CancellationToken::new();
    let options = ConsumerOptions {
        queue,
        dead_letters: true,
        grace: Duration::from_secs(5),
        retry_pause: Duration::from_millis(50),
        batch_max: 20,
        batch_window: Duration::from_millis(300),
    };
    let relay = Relay::new(pool.clone(), bus.clone());
    let consuming = tokio::spawn(consumer::run(
        bus.clone(),
        options,
        Arc::new(Batched::commands(pool.clone(), relay, Rules::default())),
        cancel.clone(),
    ));
    testkit::eventually("all 40 applied", Duration::from_secs(20), || async {
        let applied: i64 = rows(&pool).await.values().sum();
        if applied == 40 {
            Ok(())
        } else {
            Err(format!("{applied} applied"))
        }
    })
    .await;
    let transactions = sample(&bus, TRANSACTIONS);
    assert!(
        (2.0..=4.0).contains(&transactions),
        "40 messages at up to 20 a batch took {transactions} transactions"
    );
    cancel.cancel();
    consuming.await.unwrap().unwrap();
    bus.close().await;
    pool.close();
}

/// Reads `count` dead letters from `dlq`: message id → reason.
async fn dead_letter_reasons(dlq: &str, count: usize) -> HashMap<Uuid, String> {
    let connection = testkit::broker::connect().await;
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            dlq.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = HashMap::new();
    while seen.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("dead letters stopped arriving")
            .unwrap()
            .unwrap();
        let id = platform::bus::envelope::from_properties(&delivery.properties)
            .unwrap()
            .message_id;
        let reason = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(contracts::headers::DEATH_REASON).cloned());
        let reason = match reason {
            Some(AMQPValue::LongString(text)) => text.to_string(),
            other => format!("{other:?}"),
        };
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        seen.insert(id, reason);
    }
    let _ = connection.close(200, "done".into()).await;
    seen
}
