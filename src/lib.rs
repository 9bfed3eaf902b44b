#![warn(missing_docs)]
//! Synap: a clustered, replicated event-stream server.
//!
//! Services publish events to named rooms through any node; a Raft cluster
//! (openraft) replicates each event to a majority and fsyncs it before the
//! state machine gives it a dense per-room offset; every node serves history
//! and live subscriptions from its applied state.
//!
//! The crate is the server, the `synap` command line and a client library.
//! A request flows down through these layers, and its answer back up:
//!
//! - [`api`]: the HTTP surface (public API, admin, internal Raft
//!   transport): parsing, validation, keys, rendering;
//! - [`service`]: the room and KV operations every surface calls;
//! - [`node`]: one cluster member, its write path (proposer with group
//!   commit, forwarding to the leader), read barriers and membership;
//! - [`raft`]: openraft's log store (segment files), state machine and
//!   network;
//! - [`store`]: the applied data model in sled (rooms, events, KV, dedup),
//!   snapshots and checkpoints;
//! - [`hub`]: live fan-out from the state machine to subscribers.
//!
//! Beside them: [`command`] (what a Raft entry carries), [`protocol`] (wire
//! types shared with the client), [`peer`] (node-to-node HTTP),
//! [`durable`] (every fsync), [`codec`] (the binary encoding), [`filter`]
//! (event-type patterns), [`base_url`], [`client`] (an HTTP client for
//! applications and tests), [`cli`] and [`server`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), synap::client::ClientError> {
//! use serde_json::json;
//! let client = synap::client::Client::new("http://127.0.0.1:15500");
//! let at = client.publish("system-events", "user.registered", &json!({"userId": "u1"}), None, None).await?;
//! println!("stored at offset {}", at.offset);
//! # Ok(()) }
//! ```

pub mod api;
pub mod base_url;
pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod command;
pub mod durable;
pub mod filter;
pub mod hub;
pub mod node;
pub mod peer;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;
