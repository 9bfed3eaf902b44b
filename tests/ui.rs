//! The console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, Debian packages `chromium` and `chromium-driver`) against
//! a three-node cluster with an API key. The page asks for the key, shows
//! the members and the leader, lists a room, and follows it live with a
//! type filter; a wrong key gets an error, not data. A screenshot is saved
//! as `target/ui-console.png`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

const KEY: &str = "console-key";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let binary = program("SYNAP_CHROMEDRIVER", &["chromedriver"], "chromium-driver");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        wait_for(Duration::from_secs(20), "chromedriver to answer /status", || {
            let status = status.clone();
            async move { reqwest::get(&status).await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        Driver { child, url }
    }

    async fn browser(&self) -> Browser {
        let chromium = program("SYNAP_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"], "chromium");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1300"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(capabilities).connect(&self.url).await.expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the element `css`, or "" if there is none yet.
async fn text_of(browser: &Browser, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls until the element `css` holds `expected`, failing with what it
/// held last.
async fn wait_text(browser: &Browser, css: &str, expected: &str) {
    let deadline = std::time::Instant::now() + READY;
    loop {
        let text = text_of(browser, css).await;
        if text.contains(expected) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "'{css}' should show '{expected}' but shows '{text}'");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn type_key(browser: &Browser, key: &str) {
    browser.wait().for_element(Locator::Id("key-input")).await.expect("the key form").send_keys(key).await.unwrap();
    browser.find(Locator::Id("key-submit")).await.unwrap().click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_the_cluster_and_tails_a_room_in_a_real_browser() {
    let cluster = Cluster::start(3, &["--api-key", KEY, "--cluster-secret", "console-secret"]);
    cluster.wait_ready(READY).await;
    let status = cluster.nodes[0].client().with_api_key(Some(KEY.to_owned())).cluster_status().await.unwrap();
    let leader = status.leader.expect("a leader once ready");
    let node = cluster.node(leader);
    let client = node.client().with_api_key(Some(KEY.to_owned()));
    client.publish("orders", "order.created", &json!({ "n": 0 }), None, None).await.unwrap();
    client.consumer("orders", "billing").create(&Default::default()).await.expect("a consumer to show");

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let page = format!("{}/ui", node.url);

    // A wrong key is refused, and nothing of the cluster is shown.
    browser.goto(&page).await.unwrap();
    type_key(&browser, "not-the-key").await;
    wait_text(&browser, "#key-error", "refused").await;
    let console_hidden = browser.execute("return document.getElementById('console').hidden", vec![]).await.unwrap();
    assert_eq!(console_hidden, json!(true), "no data behind a wrong key");
    let members = browser.find_all(Locator::Css("#members tbody tr")).await.unwrap();
    assert!(members.is_empty(), "no members shown behind a wrong key");

    // The right key: the cluster, its leader, and the room.
    browser.execute("document.getElementById('key-input').value = ''", vec![]).await.unwrap();
    type_key(&browser, KEY).await;
    for member in &cluster.nodes {
        wait_text(&browser, &format!("#members tr[data-member='{}']", member.id), &member.url).await;
    }
    wait_text(&browser, &format!("#members tr[data-member='{leader}']"), "leader").await;
    wait_text(&browser, "#cluster-summary dd[data-fact='leader']", &leader.to_string()).await;
    wait_text(&browser, "#rooms tr[data-room='orders']", "orders").await;

    // Follow the room with a type filter; only the matching event shows.
    browser.find(Locator::Css("button[data-open='orders']")).await.unwrap().click().await.unwrap();
    // Its consumer, one event behind (none fetched yet).
    wait_text(&browser, "#consumers tr[data-consumer='billing'] td:nth-child(2)", "1").await;
    browser.wait().for_element(Locator::Id("tail-types")).await.unwrap().send_keys("order.paid").await.unwrap();
    browser.find(Locator::Id("tail-from")).await.unwrap().select_by_value("latest").await.unwrap();
    browser.find(Locator::Id("tail-start")).await.unwrap().click().await.unwrap();
    wait_text(&browser, "#tail-state", "following").await;
    client
        .publish("orders", "order.created", &json!({ "marker": "created-should-not-show" }), None, None)
        .await
        .unwrap();
    client.publish("orders", "order.paid", &json!({ "marker": "paid-shows" }), None, None).await.unwrap();
    wait_text(&browser, "#tail", "paid-shows").await;
    let tail = text_of(&browser, "#tail").await;
    assert!(tail.contains("order.paid") && tail.contains("2"), "offset and type shown: {tail}");
    assert!(!tail.contains("created-should-not-show"), "the filter lets only order.paid through: {tail}");

    // The room's publish counter moves the table too.
    wait_text(&browser, "#rooms tr[data-room='orders'] td:nth-child(2)", "3").await;

    browser.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    let png = browser.screenshot().await.unwrap();
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-console.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    browser.close().await.unwrap();
}
