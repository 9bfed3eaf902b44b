//! The publishing side of the event-broadcasting sample: an auth, an order
//! and a payment service announce what happened on `system-events`.
//!
//! ```sh
//! cargo run --example event_broadcaster -- http://127.0.0.1:15501,http://127.0.0.1:15502 [CHECKOUTS]
//! ```
//!
//! Each checkout is a `user.registered`, an `order.created` and a
//! `payment.completed` (every third payment fails: `payment.failed`). The
//! data carries the originating service and a schema `version`; the
//! metadata a correlation id shared by the checkout's events; each publish
//! an idempotency id, so one retried after a lost answer (on any node,
//! within the dedup window) is stored once.

use serde_json::{json, Value};
use synap::client::{Client, ClientError};

const ROOM: &str = "system-events";

/// One service's publisher.
struct Broadcaster {
    service: &'static str,
    nodes: Vec<String>,
}

impl Broadcaster {
    /// Publishes `event`, retrying on the next node while the cluster is
    /// unavailable or unreachable; the id makes the retries safe.
    async fn publish(&self, event: &str, id: &str, mut data: Value, correlation: &str) -> Result<u64, ClientError> {
        data["service"] = json!(self.service);
        data["version"] = json!("1.0");
        let metadata = json!({ "correlationId": correlation });
        let mut attempt = 0;
        loop {
            let client = Client::new(&self.nodes[attempt % self.nodes.len()]);
            match client.publish(ROOM, event, &data, Some(&metadata), Some(id)).await {
                Ok(published) => {
                    let note = if published.duplicate { " (already stored: a retry)" } else { "" };
                    println!("{}: {event} {id} at offset {}{note}", self.service, published.offset);
                    return Ok(published.offset);
                }
                Err(e @ ClientError::Http { status, .. }) if status < 500 => return Err(e),
                Err(e) if attempt < 50 => {
                    eprintln!("{}: {event} {id}: {e}; retrying", self.service);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let nodes: Vec<String> =
        args.next().unwrap_or_else(|| "http://127.0.0.1:15500".into()).split(',').map(str::to_owned).collect();
    let checkouts: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    let auth = Broadcaster { service: "auth-service", nodes: nodes.clone() };
    let orders = Broadcaster { service: "order-service", nodes: nodes.clone() };
    let payments = Broadcaster { service: "payment-service", nodes };
    for n in 1..=checkouts {
        let (user, order, payment) = (format!("u-{n}"), format!("o-{n}"), format!("p-{n}"));
        let correlation = format!("checkout-{n}");
        let registered = json!({ "userId": user, "email": format!("{user}@example.com") });
        auth.publish("user.registered", &format!("{user}-registered"), registered, &correlation).await?;
        let amount = 40 + n;
        let items = json!([{ "sku": "book", "quantity": 1 }]);
        let created = json!({ "orderId": order, "userId": user, "items": items, "total": amount });
        orders.publish("order.created", &format!("{order}-created"), created, &correlation).await?;
        if n % 3 == 0 {
            let failed = json!({ "paymentId": payment, "orderId": order, "amount": amount, "reason": "card declined" });
            payments.publish("payment.failed", &format!("{payment}-failed"), failed, &correlation).await?;
        } else {
            let paid = json!({ "paymentId": payment, "orderId": order, "amount": amount, "method": "credit_card" });
            payments.publish("payment.completed", &format!("{payment}-completed"), paid, &correlation).await?;
        }
    }
    Ok(())
}
