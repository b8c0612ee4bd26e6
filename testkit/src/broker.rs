//! The broker as a test looks at it: through the management API.

use reqwest::Client;
use serde_json::Value;

use crate::env;

/// GETs a management API path (the default vhost is `%2f`).
pub async fn management_get(path: &str) -> Value {
    Client::new()
        .get(format!("{}{path}", env::management_url()))
        .send()
        .await
        .expect("management API reachable")
        .json()
        .await
        .expect("management API answers JSON")
}

/// Deletes every queue and exchange under `prefix`, whatever declared them (work, dead
/// letter, delay and query queues, a test's tap queues), so the broker keeps nothing.
pub async fn delete_objects(prefix: &str) {
    let client = Client::new();
    let base = env::management_url();
    let start = format!("{prefix}.");
    for kind in ["queues", "exchanges"] {
        let listing = management_get(&format!("/{kind}/%2f?columns=name")).await;
        let names = listing.as_array().cloned().unwrap_or_default();
        for name in names.iter().filter_map(|q| q["name"].as_str()) {
            if name.starts_with(&start) {
                let _ = client
                    .delete(format!("{base}/{kind}/%2f/{name}"))
                    .send()
                    .await;
            }
        }
    }
}

/// The broker's names of the connections of the stack under `prefix` (the management
/// API lists a new connection a moment after it opened).
pub async fn connections_of(prefix: &str) -> Vec<String> {
    let listing = management_get("/connections?columns=name,client_properties").await;
    listing
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| {
            c["client_properties"]["connection_name"]
                .as_str()
                .is_some_and(|label| label.starts_with(&format!("{prefix}:")))
        })
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Closes (from the broker's side) every connection of the stack under `prefix`, as a
/// broker restart or a network cut would. Returns how many it closed.
pub async fn drop_connections(prefix: &str) -> usize {
    let client = Client::new();
    let base = env::management_url();
    let mut closed = 0;
    for name in connections_of(prefix).await {
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let response = client
            .delete(format!("{base}/connections/{encoded}"))
            .send()
            .await
            .expect("management API reachable");
        if response.status().is_success() {
            closed += 1;
        }
    }
    closed
}

/// A raw AMQP connection to the test broker.
pub async fn connect() -> lapin::Connection {
    lapin::Connection::connect(&env::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("amqp connection")
}

/// How many messages `queue` holds.
pub async fn message_count(connection: &lapin::Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("queue exists");
    declared.message_count()
}
