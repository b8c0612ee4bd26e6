//! A broker resource alarm: RabbitMQ blocks every publishing connection until memory is
//! back under its watermark. The alarm is broker-wide, so this test is ignored in the
//! normal (parallel) run; `./dev test` runs it alone afterwards, with `./dev rabbitmqctl`
//! to raise and clear the alarm.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use e2e::{Workers, database_url, spawn_custom};

/// Runs `rabbitmqctl` through `./dev` (which knows the broker's user, cookie and node).
fn rabbitmqctl(args: &[&str]) {
    let dev = concat!(env!("CARGO_MANIFEST_DIR"), "/../dev");
    let status = std::process::Command::new(dev)
        .arg("rabbitmqctl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("./dev rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Clears the alarm even when the test fails half way, so the broker is usable again.
struct AlarmGuard;

impl Drop for AlarmGuard {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

/// What one write was told.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    problem: Option<String>,
    took: Duration,
}

#[tokio::test]
#[ignore = "raises a broker-wide memory alarm: `./dev test` runs it alone, after the suite"]
async fn while_the_broker_blocks_publishers_requests_fail_fast_and_nothing_is_lost_or_doubled() {
    let app = spawn_custom(Workers::Running, &[("CONFIRM_TIMEOUT_MS", "1000")]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, url, stop) = (app.client.clone(), app.url("/v1/posts"), stop.clone());
        tokio::spawn(async move {
            let mut answers: HashMap<String, Answer> = HashMap::new();
            for i in 0..2_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body = format!("alarm {i}");
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .timeout(Duration::from_secs(30))
                    .json(&json!({ "body": body }))
                    .send()
                    .await
                    .expect("the gateway answers");
                let status = response.status().as_u16();
                let problem = if status == 202 {
                    None
                } else {
                    let value: Value = response.json().await.unwrap_or(Value::Null);
                    value["type"].as_str().map(str::to_owned)
                };
                let took = started.elapsed();
                answers.insert(
                    body,
                    Answer {
                        status,
                        problem,
                        took,
                    },
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Arrange the alarm: any memory use is now over the watermark.
    let guard = AlarmGuard;
    rabbitmqctl(&["set_vm_memory_high_watermark", "0.0000001"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let readiness = loop {
        let response = app.anonymous.get(app.url("/readyz")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break response.json::<Value>().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "readiness stayed green under the alarm"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        readiness["checks"]["rabbitmq"]
            .as_str()
            .is_some_and(|s| s.starts_with("blocked")),
        "readiness says why: {readiness}"
    );
    // Reads publish too: they fail fast as well, instead of hanging for the alarm.
    let started = Instant::now();
    let read = app.get("/v1/timeline").await;
    assert_eq!(read.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(2));
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("switchyard_broker_blocked 1"),
        "the blocked gauge is set"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Clear the alarm; the gateway recovers by itself.
    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .anonymous
        .get(app.url("/readyz"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "the gateway never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = writer.await.unwrap();

    // Every answer came within the publish bound (1 s) plus slack, never after the alarm.
    let slowest = answers.values().map(|a| a.took).max().unwrap();
    assert!(
        slowest < Duration::from_secs(3),
        "a write waited {slowest:?}"
    );
    let refused: Vec<&String> = answers
        .iter()
        .filter(|(_, a)| a.problem.as_deref() == Some("/problems/unavailable"))
        .map(|(b, _)| b)
        .collect();
    assert!(
        !refused.is_empty(),
        "some writes met the alarm: {answers:?}"
    );
    assert!(
        answers.values().all(|a| a.status == 202 || a.status == 503),
        "{answers:?}"
    );

    // Nothing lost, nothing doubled: every 202 applied once, every "nothing was applied"
    // absent, every "outcome unknown" at most once.
    let (db, connection) = tokio_postgres::connect(
        &database_url(&format!("{}_social", app.prefix)),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let accepted = answers.values().filter(|a| a.status == 202).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts: HashMap<String, i64> = loop {
        let rows = db
            .query(
                "SELECT body, count(*) FROM posts WHERE body LIKE 'alarm %' GROUP BY body",
                &[],
            )
            .await
            .unwrap();
        let counts: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let applied = answers
            .iter()
            .filter(|(b, a)| a.status == 202 && counts.contains_key(*b))
            .count();
        if applied == accepted {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "{applied} of {accepted} accepted posts applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (body, answer) in &answers {
        let applied = counts.get(body).copied().unwrap_or(0);
        match (answer.status, answer.problem.as_deref()) {
            (202, _) => assert_eq!(applied, 1, "{body} accepted"),
            (_, Some("/problems/outcome-unknown")) => assert!(applied <= 1, "{body}"),
            _ => assert_eq!(applied, 0, "{body} was refused but applied"),
        }
    }
    assert!(counts.keys().all(|b| answers.contains_key(b)));
    app.teardown().await;
}
