//! A small HTTP client for Synap, used by the CLI and by tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synap::client::ClientError> {
//! let client = synap::client::Client::new("http://127.0.0.1:15500");
//! let published = client.publish("system-events", "user.registered", &serde_json::json!({"id": 1}), None, None).await?;
//! let page = client.history("system-events", 0, 100).await?;
//! assert!(page.events.iter().any(|e| e.offset == published.offset));
//! # Ok(()) }
//! ```

mod consumer;
mod publish;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::base_url::BaseUrl;
use crate::node::cluster::ClusterStatus;
use crate::tls::TlsError;

/// A WebSocket to a node, plain or TLS.
type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
pub use crate::protocol::{RoomStats, StartAt};

pub use consumer::{
    ConsumedMessage, Consumer, ConsumerInfo, ConsumerOptions, ConsumerSettings, Fetch, NamedStart, Settle, StartSpec,
};
pub use publish::{Landed, PublishAck, PublishReceiver, PublishSender, PublishStream, Refused, MAX_IN_FLIGHT};
pub use subscribe::{Received, SubscribeOptions};

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error status.
    #[error("{status}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The server's `error` message.
        message: String,
    },
    /// The node could not be reached or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Transport {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A local file could not be written, or what was saved is damaged.
    #[error("{0}")]
    File(String),
}

/// Answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {
    /// Offset the event got.
    pub offset: u64,
    /// Room it went to.
    pub room: String,
    /// Cluster time stamped on it.
    pub timestamp: u64,
    /// Whether it was a duplicate of an earlier publish with the same id.
    pub duplicate: bool,
}

/// An event as reads return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its offset in the room.
    pub offset: u64,
    /// The room.
    pub room: String,
    /// Event type.
    pub event: String,
    /// Payload.
    pub data: Value,
    /// Metadata object.
    pub metadata: Value,
    /// Cluster time in Unix milliseconds.
    pub timestamp: u64,
    /// Event id.
    pub id: String,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The events.
    pub events: Vec<Event>,
    /// Where the next page starts.
    pub next_offset: u64,
    /// Lowest retained offset of the room.
    pub min_offset: u64,
    /// Highest offset of the room, if it has events.
    pub max_offset: Option<u64>,
}

/// How long a backup may take to arrive.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

impl ClientError {
    /// A transport failure, with every cause in `error`'s chain: reqwest
    /// says "error sending request" and keeps the reason (a refused
    /// connection, an unknown certificate issuer) in its sources.
    fn transport(url: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut reason = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !reason.contains(&cause_text) {
                reason = format!("{reason}: {cause_text}");
            }
            source = cause.source();
        }
        // What a TLS port answers to plain HTTP is a TLS alert, which
        // reads as a broken HTTP response.
        if url.starts_with("http://") && reason.contains("invalid HTTP version") {
            reason.push_str(" (does the node serve TLS? use https://)");
        }
        ClientError::Transport { url: url.to_owned(), reason }
    }
}

/// The error a node's non-success answer describes.
fn http_error(status: reqwest::StatusCode, bytes: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    ClientError::Http { status: status.as_u16(), message }
}

/// A client of a Synap cluster. Requests go to the first node;
/// subscriptions fail over to the others.
#[derive(Clone)]
pub struct Client {
    base: BaseUrl,
    nodes: Vec<BaseUrl>,
    api_key: Option<String>,
    http: reqwest::Client,
    /// The TLS set-up for `https://` and `wss://` nodes, when not the
    /// built-in one (the system's roots).
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The HTTP client every [`Client`] request uses, over `tls` if given.
fn http_client(tls: Option<&rustls::ClientConfig>) -> Result<reqwest::Client, TlsError> {
    crate::tls::http_client(tls, |builder| builder.timeout(Duration::from_secs(30)).tcp_nodelay(true))
}

/// The settings of every WebSocket the client (and `synap bench`) opens:
/// reads of at most [`crate::protocol::WS_READ_BUFFER`] bytes.
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(crate::protocol::WS_READ_BUFFER)
}

impl Client {
    /// A client for the node at `base_url` (e.g. `http://127.0.0.1:15500`).
    pub fn new(base_url: &str) -> Self {
        Self::cluster(&[base_url])
    }

    /// A client that knows several nodes (an empty list means the default
    /// `http://127.0.0.1:15500`).
    pub fn cluster<S: AsRef<str>>(base_urls: &[S]) -> Self {
        let mut nodes: Vec<BaseUrl> = base_urls.iter().map(|u| BaseUrl::lenient(u.as_ref())).collect();
        if nodes.is_empty() {
            nodes.push(BaseUrl::lenient("http://127.0.0.1:15500"));
        }
        // Building fails only if the TLS back end cannot start; ring always
        // does, and reqwest's plain default is then as good.
        let http = http_client(None).unwrap_or_default();
        Self { base: nodes[0].clone(), nodes, api_key: None, http, tls: None }
    }

    /// Checks `https://` and `wss://` nodes against the CA certificate(s)
    /// in the PEM file `ca` instead of the system's roots.
    pub fn with_ca(mut self, ca: &std::path::Path) -> Result<Self, TlsError> {
        let tls = crate::tls::client_config(Some(ca), None)?;
        self.http = http_client(Some(&tls))?;
        self.tls = Some(Arc::new(tls));
        Ok(self)
    }

    /// Opens the WebSocket that `request` asks for, over this client's TLS
    /// set-up for `wss://`.
    async fn connect_websocket(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<
        (WebSocket, tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>),
        tokio_tungstenite::tungstenite::Error,
    > {
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        // Nagle off (`true`): a consumer's ack or a publish sent while the
        // previous frame is unacknowledged would otherwise wait for the
        // server's delayed acknowledgement (up to 40 ms).
        tokio_tungstenite::connect_async_tls_with_config(request, Some(websocket_config()), true, connector).await
    }

    /// Sends `key` as a bearer token on every request.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// A WebSocket handshake request for `path` on `base`, with the key.
    fn websocket_request(
        &self,
        base: &BaseUrl,
        path: &str,
    ) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = base.websocket(path);
        let mut request = url.as_str().into_client_request().map_err(|e| ClientError::Decode(e.to_string()))?;
        if let Some(key) = &self.api_key {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| ClientError::Decode("the API key is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder, url: &str) -> Result<T, ClientError> {
        let request = match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response = request.send().await.map_err(|e| ClientError::transport(url, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::transport(url, &e))?;
        if !status.is_success() {
            return Err(http_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Saves a backup of the node's whole state to `out` (replaced only once
    /// the new copy is whole and its checksum matches), and answers what it
    /// holds. Needs the admin permission.
    pub async fn backup(&self, out: &std::path::Path) -> Result<crate::store::backup::Checked, ClientError> {
        use tokio::io::AsyncWriteExt;
        let url = self.base.join("/admin/backup");
        let mut request = self.http.get(&url).timeout(BACKUP_TIMEOUT);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let transport = |e: reqwest::Error| ClientError::transport(&url, &e);
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(transport)?;
            return Err(http_error(status, &bytes));
        }
        let partial = std::path::PathBuf::from(format!("{}.partial", out.display()));
        let file_err = |e: std::io::Error| ClientError::File(format!("{}: {e}", partial.display()));
        let mut file = tokio::fs::File::create(&partial).await.map_err(file_err)?;
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            file.write_all(&chunk).await.map_err(file_err)?;
        }
        file.flush().await.map_err(file_err)?;
        let file = file.into_std().await;
        let saved = partial.clone();
        let checked = tokio::task::spawn_blocking(move || {
            crate::durable::sync_data(&file).map_err(|e| ClientError::File(format!("{}: {e}", saved.display())))?;
            crate::store::backup::check(&saved).map_err(|e| ClientError::File(e.to_string()))
        })
        .await
        .map_err(|e| ClientError::File(e.to_string()))??;
        let renamed = std::fs::rename(&partial, out).and_then(|()| match out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => crate::durable::sync_dir(dir),
            _ => crate::durable::sync_dir(std::path::Path::new(".")),
        });
        renamed.map_err(|e| ClientError::File(format!("{}: {e}", out.display())))?;
        Ok(checked)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.base.join(path);
        self.send(self.http.get(&url), &url).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ClientError> {
        let url = self.base.join(path);
        self.send(self.http.post(&url).json(body), &url).await
    }

    /// Publishes one event.
    pub async fn publish(
        &self,
        room: &str,
        event: &str,
        data: &Value,
        metadata: Option<&Value>,
        id: Option<&str>,
    ) -> Result<PublishResult, ClientError> {
        let mut body = serde_json::json!({ "event": event, "data": data });
        if let Some(metadata) = metadata {
            body["metadata"] = metadata.clone();
        }
        if let Some(id) = id {
            body["id"] = Value::from(id);
        }
        self.post(&format!("/stream/{room}/publish"), &body).await
    }

    /// Reads a page of `room` from `from` (negative: from the end).
    pub async fn history(&self, room: &str, from: i64, limit: usize) -> Result<HistoryPage, ClientError> {
        self.get(&format!("/stream/{room}/history?from_offset={from}&limit={limit}")).await
    }

    /// Reads the whole retained history of `room`, page by page.
    pub async fn history_all(&self, room: &str) -> Result<Vec<Event>, ClientError> {
        let mut events = Vec::new();
        let mut from = 0;
        loop {
            let page = self.history(room, from as i64, crate::store::MAX_PAGE).await?;
            let done = page.events.is_empty() || page.max_offset.is_none_or(|max| page.next_offset > max);
            events.extend(page.events);
            if done {
                return Ok(events);
            }
            from = page.next_offset;
        }
    }

    /// Names of all rooms.
    pub async fn rooms(&self) -> Result<Vec<String>, ClientError> {
        let value: Value = self.get("/stream/list").await?;
        serde_json::from_value(value["rooms"].clone()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Statistics of `room`.
    pub async fn stats(&self, room: &str) -> Result<RoomStats, ClientError> {
        self.get(&format!("/stream/{room}/stats")).await
    }

    /// Changes `room`'s retention settings (`None`: keep; `Some(None)`: no
    /// limit); answers its statistics after the change. Needs the admin
    /// permission on the room.
    pub async fn update_room(&self, room: &str, change: &crate::command::RoomChange) -> Result<RoomStats, ClientError> {
        let mut body = serde_json::Map::new();
        if let Some(max_events) = change.max_events {
            body.insert("max_events".into(), serde_json::json!(max_events));
        }
        if let Some(max_age_secs) = change.max_age_secs {
            body.insert("max_age_secs".into(), serde_json::json!(max_age_secs));
        }
        if let Some(max_bytes) = change.max_bytes {
            body.insert("max_bytes".into(), serde_json::json!(max_bytes));
        }
        let url = self.base.join(&format!("/stream/{room}"));
        let answer: Value = self.send(self.http.patch(&url).json(&Value::Object(body)), &url).await?;
        serde_json::from_value(answer["stats"].clone()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The node's view of the cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.get("/admin/cluster").await
    }

    /// Initialises the cluster from the node's own configuration.
    pub async fn cluster_init(&self) -> Result<Value, ClientError> {
        self.post("/admin/cluster/init", &serde_json::json!({})).await
    }

    /// Adds a learner and waits until it has caught up.
    pub async fn add_learner(&self, id: u64, url: &str) -> Result<Value, ClientError> {
        self.post("/admin/cluster/learners", &serde_json::json!({ "id": id, "url": url })).await
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: u64) -> Result<Value, ClientError> {
        self.post("/admin/cluster/voters", &serde_json::json!({ "id": id })).await
    }

    /// Has the node build a snapshot now; answers once it is written.
    pub async fn snapshot(&self) -> Result<Value, ClientError> {
        self.post("/admin/snapshot", &serde_json::json!({})).await
    }

    /// Removes a member.
    pub async fn remove(&self, id: u64) -> Result<Value, ClientError> {
        let url = self.base.join(&format!("/admin/cluster/members/{id}"));
        self.send(self.http.delete(&url), &url).await
    }

    /// Sets `key` to `value` (a string, stored as is), optionally with a
    /// time to live and only if absent (`nx`). Answers whether it wrote:
    /// with `nx`, `false` means someone else holds the key.
    pub async fn kv_set(&self, key: &str, value: &str, ttl_secs: Option<u64>, nx: bool) -> Result<bool, ClientError> {
        let body = serde_json::json!({ "key": key, "value": value, "ttl": ttl_secs, "nx": nx });
        let answer: Value = self.post("/kv/set", &body).await?;
        answer["written"].as_bool().ok_or_else(|| ClientError::Decode(format!("kv set answered {answer}")))
    }

    /// The value of `key`, or `None` if it is absent or expired.
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>, ClientError> {
        match self.get::<Value>(&format!("/kv/get/{key}")).await {
            Ok(answer) => Ok(answer["value"].as_str().map(str::to_owned)),
            Err(ClientError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `/ready`: Ok when the node has a leader and is caught up.
    pub async fn ready(&self) -> Result<Value, ClientError> {
        self.get("/ready").await
    }
}
