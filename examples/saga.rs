//! A saga over `system-events`: the order service places orders, the
//! inventory service reserves stock on `order.created` (or publishes
//! `inventory.reservation_failed`), the payment service charges on
//! `inventory.reserved` and publishes `payment.completed`.
//!
//! ```sh
//! cargo run --example saga -- http://127.0.0.1:15501,http://127.0.0.1:15502,http://127.0.0.1:15503 [ORDERS]
//! ```
//!
//! Each service is a durable consumer with a type filter; every step's
//! publish carries an id derived from the order, so a step redone after a
//! redelivery is stored once. The program ends once every order it placed
//! has reached `payment.completed` or `inventory.reservation_failed`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use synap::client::{Client, ClientError, Consumer, ConsumerOptions, StartSpec};

const ROOM: &str = "system-events";
/// Units in stock per SKU; an order for more fails its reservation.
const STOCK: u64 = 3;

/// Runs one saga step: fetches from `consumer`, hands each message to
/// `step` (which answers the event to publish next: type, id, data), and
/// acks it once that publish is stored.
async fn service(
    name: &str,
    client: Client,
    consumer: Consumer,
    mut step: impl FnMut(&Value) -> (String, String, Value),
) -> Result<(), ClientError> {
    loop {
        let fetch = consumer.fetch(10, Duration::from_secs(2)).await?;
        for message in fetch.messages {
            let event = &message.event;
            let (next, id, data) = step(&event.data);
            let published = client.publish(ROOM, &next, &data, Some(&event.metadata), Some(&id)).await?;
            println!("{name}: {} {} -> {next} at offset {}", event.event, event.data["orderId"], published.offset);
            consumer.ack(&[event.offset]).await?;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let urls = args.next().unwrap_or_else(|| "http://127.0.0.1:15500".into());
    let orders: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let nodes: Vec<&str> = urls.split(',').collect();
    let client = Client::cluster(&nodes);
    // Start where the room is now: this run's orders only.
    let latest = |types: &str| ConsumerOptions {
        start: Some(StartSpec::Named(synap::client::NamedStart::Latest)),
        types: Some(types.into()),
        ack_wait_ms: Some(5_000),
        ..Default::default()
    };
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let inventory = client.consumer(ROOM, &format!("inventory-{run}"));
    inventory.create(&latest("order.created")).await?;
    let payments = client.consumer(ROOM, &format!("payments-{run}"));
    payments.create(&latest("inventory.reserved")).await?;
    let watcher = client.consumer(ROOM, &format!("saga-watch-{run}"));
    watcher.create(&latest("payment.completed,inventory.reservation_failed")).await?;

    let inventory_task = tokio::spawn(service("inventory-service", client.clone(), inventory, |order| {
        let id = order["orderId"].as_str().unwrap_or("?").to_owned();
        let wanted: u64 = order["items"]
            .as_array()
            .map_or(0, |items| items.iter().map(|i| i["quantity"].as_u64().unwrap_or(0)).sum());
        if wanted <= STOCK {
            (
                "inventory.reserved".into(),
                format!("{id}-reserved"),
                json!({ "orderId": id, "items": order["items"], "total": order["total"] }),
            )
        } else {
            let reason = format!("{wanted} units wanted, {STOCK} in stock");
            (
                "inventory.reservation_failed".into(),
                format!("{id}-reservation-failed"),
                json!({ "orderId": id, "reason": reason }),
            )
        }
    }));
    let payment_task = tokio::spawn(service("payment-service", client.clone(), payments, |reserved| {
        let id = reserved["orderId"].as_str().unwrap_or("?").to_owned();
        let data = json!({ "orderId": id, "paymentId": format!("pay-{id}"), "amount": reserved["total"] });
        ("payment.completed".into(), format!("{id}-paid"), data)
    }));

    // The order service: every fourth order asks for more than is in stock.
    for n in 1..=orders {
        let id = format!("saga-{run}-{n}");
        let quantity = if n % 4 == 0 { STOCK + 2 } else { 1 };
        let data = json!({ "orderId": id, "items": [{ "sku": "lamp", "quantity": quantity }], "total": 20 * quantity });
        let metadata = json!({ "correlationId": id });
        client.publish(ROOM, "order.created", &data, Some(&metadata), Some(&format!("{id}-created"))).await?;
        println!("order-service: order.created {id} ({quantity} units)");
    }

    let mut finished = BTreeSet::new();
    while (finished.len() as u64) < orders {
        for message in watcher.fetch(10, Duration::from_secs(2)).await?.messages {
            let order = message.event.data["orderId"].as_str().unwrap_or("?").to_owned();
            println!("saga: {order} ended with {}", message.event.event);
            finished.insert(order);
            watcher.ack(&[message.event.offset]).await?;
        }
    }
    inventory_task.abort();
    payment_task.abort();
    for name in ["inventory", "payments", "saga-watch"] {
        client.consumer(ROOM, &format!("{name}-{run}")).delete().await?;
    }
    println!("saga: all {orders} orders finished");
    Ok(())
}
