//! Replay for debugging: loads the last 1,000 events of `system-events`
//! and prints the failed payments among them.
//!
//! ```sh
//! cargo run --example replay_debug -- http://127.0.0.1:15501
//! ```

use synap::client::Client;

#[tokio::main]
async fn main() -> Result<(), synap::client::ClientError> {
    let urls = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:15500".into());
    let client = Client::new(urls.split(',').next().unwrap_or(&urls));
    // A negative offset counts back from the end of the room.
    let page = client.history("system-events", -1000, 1000).await?;
    let mut failed = 0;
    for event in page.events.iter().filter(|e| e.event == "payment.failed") {
        failed += 1;
        println!(
            "failed payment at offset {}: {} for order {} ({}), correlation {}",
            event.offset,
            event.data["paymentId"],
            event.data["orderId"],
            event.data["reason"],
            event.metadata["correlationId"]
        );
    }
    println!("{failed} failed payments in the last {} events", page.events.len());
    Ok(())
}
