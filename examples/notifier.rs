//! The consuming side of the event-broadcasting sample: an email service
//! that follows `system-events` from any node and sends each message once.
//!
//! ```sh
//! cargo run --example notifier -- http://127.0.0.1:15501,http://127.0.0.1:15502,http://127.0.0.1:15503
//! ```
//!
//! The subscription moves to another node when its node goes away and
//! resumes after the last event it handled, so it sees every event in
//! order. Handling is made idempotent with the replicated KV store: a key
//! per message, set with `nx` and a day's TTL, is claimed before the email
//! goes out, so a second instance of the service (or a replay) skips it.

use std::ops::ControlFlow;

use synap::client::{Client, Received, StartAt, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), synap::client::ClientError> {
    let nodes: Vec<String> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:15500".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let client = Client::cluster(&nodes);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The subscription hands events over; the work (which talks to the
    // cluster again) happens on this task.
    let subscription = {
        let client = client.clone();
        tokio::spawn(async move {
            let options = SubscribeOptions { types: Some("user.registered,order.created,payment.completed".into()) };
            client
                .subscribe("system-events", StartAt::Offset(0), options, |received| match received {
                    Received::Event(event) => match tx.send(event) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    },
                    Received::Gap { requested, earliest } => {
                        eprintln!("events {requested}..{earliest} expired before we read them");
                        ControlFlow::Continue(())
                    }
                })
                .await
        })
    };
    while let Some(event) = rx.recv().await {
        let claim = format!("email-service:sent:{}", event.id);
        if !client.kv_set(&claim, "1", Some(86_400), true).await? {
            println!("offset {}: {} already handled, skipping", event.offset, event.event);
            continue;
        }
        let message = match event.event.as_str() {
            "user.registered" => format!("welcome email to {}", event.data["email"]),
            "order.created" => format!("order confirmation for {}", event.data["orderId"]),
            "payment.completed" => format!("payment receipt for {}", event.data["paymentId"]),
            other => format!("nothing to send for {other}"),
        };
        println!("offset {}: {message}", event.offset);
    }
    subscription.await.unwrap_or(Ok(()))
}
