//! What the leader proposes on its own, once a second: `Expire` (expired
//! KV keys and old dedup records) and `Trim` (events past their room's age
//! limit, also in rooms nobody publishes to). Each entry also moves cluster
//! time forward, which is what KV reads judge expiry by.
//!
//! `Trim` is protocol 2: it is proposed only once every member says it
//! speaks it, so that a rolling upgrade never commits an entry an older
//! member cannot apply.

use std::sync::Weak;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Node;
use crate::base_url::BaseUrl;
use crate::command::{Request, PROTOCOL};
use crate::peer::Lane;

/// How often the leader proposes its housekeeping.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long a "every member speaks protocol N" answer is trusted.
const TRUST_YES: Duration = Duration::from_secs(60);
/// How long until members that did not all speak it are asked again.
const TRUST_NO: Duration = Duration::from_secs(10);

/// While `node` exists and leads, proposes its housekeeping every [`EVERY`].
pub async fn run(node: Weak<Node>) {
    let mut tick = tokio::time::interval(EVERY);
    let mut members = MemberProtocols::default();
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let metrics = node.raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        if metrics.current_leader != Some(node.id()) {
            continue;
        }
        if let Err(e) = node.proposer.propose(Request::Expire).await {
            tracing::debug!("expiry proposal: {e}");
        }
        let aged = node.store.rooms().is_ok_and(|rooms| rooms.iter().any(|r| r.config.max_age_secs.is_some()));
        if aged && members.all_speak(&node, 2).await {
            if let Err(e) = node.proposer.propose(Request::Trim).await {
                tracing::debug!("trim proposal: {e}");
            }
        }
    }
}

/// What the members said of their protocol, when.
#[derive(Default)]
struct MemberProtocols {
    answer: Option<(Instant, bool)>,
}

impl MemberProtocols {
    /// Whether every member (voters and learners) speaks `protocol`.
    async fn all_speak(&mut self, node: &Node, protocol: u32) -> bool {
        if let Some((at, yes)) = self.answer {
            if at.elapsed() < if yes { TRUST_YES } else { TRUST_NO } {
                return yes;
            }
        }
        let urls: Vec<BaseUrl> = {
            let metrics = node.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership().clone();
            membership.nodes().filter(|(id, _)| **id != node.id()).map(|(_, n)| BaseUrl::lenient(&n.addr)).collect()
        };
        let mut yes = PROTOCOL >= protocol;
        for url in urls {
            yes &= member_protocol(node, &url).await.is_some_and(|p| p >= protocol);
        }
        self.answer = Some((Instant::now(), yes));
        yes
    }
}

/// The protocol a member says it speaks in `/health` (1 if it says none:
/// versions before protocols were numbered); `None` if it cannot be asked.
async fn member_protocol(node: &Node, url: &BaseUrl) -> Option<u32> {
    let request = node.peers.request(Lane::Public, reqwest::Method::GET, url, "/health");
    let response = request.timeout(Duration::from_secs(1)).send().await.ok()?;
    let health: Value = response.json().await.ok()?;
    Some(health["protocol"].as_u64().map_or(1, |p| p as u32))
}
