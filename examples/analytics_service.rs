//! The analytics service of the event-broadcasting sample: a durable
//! consumer `analytics` on `system-events`, delivered by push over a
//! WebSocket, that keeps running tallies (registrations, orders, revenue).
//!
//! ```sh
//! cargo run --example analytics_service -- http://127.0.0.1:15501,http://127.0.0.1:15502,http://127.0.0.1:15503 [STOP_AFTER]
//! ```
//!
//! When the node it is connected to goes away it moves to the next one;
//! messages that were out unacked on the lost connection come back once
//! their lease ends, so nothing is lost, and the tallies count each event
//! once because they remember the offsets they have counted. With
//! `STOP_AFTER` it exits once it has counted that many events.

use std::collections::BTreeSet;

use synap::client::{Client, ConsumerOptions, Settle};

#[derive(Default)]
struct Tallies {
    counted: BTreeSet<u64>,
    registrations: u64,
    orders: u64,
    payments: u64,
    failed_payments: u64,
    revenue: u64,
}

#[tokio::main]
async fn main() -> Result<(), synap::client::ClientError> {
    let mut args = std::env::args().skip(1);
    let urls = args.next().unwrap_or_else(|| "http://127.0.0.1:15500".into());
    let stop_after: Option<usize> = args.next().and_then(|n| n.parse().ok());
    let nodes: Vec<&str> = urls.split(',').collect();
    let consumer = Client::cluster(&nodes).consumer("system-events", "analytics");
    let options = ConsumerOptions { ack_wait_ms: Some(5_000), max_ack_pending: Some(100), ..Default::default() };
    consumer.create(&options).await?;
    println!("analytics: listening on system-events");
    let mut tallies = Tallies::default();
    consumer
        .push(|message| {
            let event = &message.event;
            if tallies.counted.insert(event.offset) {
                match event.event.as_str() {
                    "user.registered" => tallies.registrations += 1,
                    "order.created" => tallies.orders += 1,
                    "payment.completed" => {
                        tallies.payments += 1;
                        tallies.revenue += event.data["amount"].as_u64().unwrap_or(0);
                    }
                    "payment.failed" => tallies.failed_payments += 1,
                    _ => {}
                }
                println!(
                    "analytics: {} at offset {} (delivery {}): {} registrations, {} orders, {} payments ({} failed), revenue {}",
                    event.event,
                    event.offset,
                    message.delivery,
                    tallies.registrations,
                    tallies.orders,
                    tallies.payments,
                    tallies.failed_payments,
                    tallies.revenue
                );
            }
            if stop_after.is_some_and(|n| tallies.counted.len() >= n) {
                return Settle::Stop;
            }
            Settle::Ack
        })
        .await
}
