//! The publishing side of the event-broadcasting sample: the auth, order and
//! payment services announce what happened on `system-events`.
//!
//! ```sh
//! cargo run --example broadcaster -- http://127.0.0.1:15501,http://127.0.0.1:15502
//! ```
//!
//! Every event carries the originating service in its data, a correlation
//! id in its metadata, and an idempotency id, so a publish retried after a
//! lost answer (any node, within the dedup window) is stored once.

use serde_json::json;
use synap::client::{Client, ClientError};

const ROOM: &str = "system-events";

/// Publishes one event, retrying through the next node while the cluster
/// answers "unavailable" or cannot be reached. The id makes retries safe.
async fn announce(nodes: &[String], event: &str, id: &str, data: serde_json::Value, correlation: &str) -> u64 {
    let metadata = json!({ "correlationId": correlation });
    for attempt in 0.. {
        let client = Client::new(&nodes[attempt % nodes.len()]);
        match client.publish(ROOM, event, &data, Some(&metadata), Some(id)).await {
            Ok(published) => {
                let note = if published.duplicate { " (already stored: a retry)" } else { "" };
                println!("{event} {id} at offset {}{note}", published.offset);
                return published.offset;
            }
            Err(ClientError::Http { status, message }) if status < 500 => {
                panic!("{event} {id} refused ({status}): {message}")
            }
            Err(e) => {
                eprintln!("{event} {id}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    unreachable!("the loop only ends by returning")
}

#[tokio::main]
async fn main() {
    let nodes: Vec<String> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:15500".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    for n in 1..=3 {
        let user = format!("u-{n}");
        let order = format!("o-{n}");
        let correlation = format!("checkout-{n}");
        let registered = json!({ "service": "auth-service", "userId": user, "email": format!("{user}@example.com") });
        announce(&nodes, "user.registered", &format!("{user}-registered"), registered, &correlation).await;
        let created = json!({ "service": "order-service", "orderId": order, "userId": user, "amount": 40 + n, "currency": "USD" });
        announce(&nodes, "order.created", &format!("{order}-created"), created, &correlation).await;
        let paid =
            json!({ "service": "payment-service", "paymentId": format!("p-{n}"), "orderId": order, "amount": 40 + n });
        announce(&nodes, "payment.completed", &format!("p-{n}-completed"), paid, &correlation).await;
    }
}
