//! Which protocol every member speaks (`/health`), asked of the members
//! and remembered for a while: a request newer than some member speaks is
//! never proposed, so a rolling upgrade never commits an entry an older
//! member cannot apply.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Node;
use crate::base_url::BaseUrl;
use crate::command::PROTOCOL;
use crate::peer::Lane;

/// How long a "every member speaks protocol N" answer is trusted.
const TRUST_YES: Duration = Duration::from_secs(60);
/// How long until members that did not all speak it are asked again.
const TRUST_NO: Duration = Duration::from_millis(500);

/// The newest protocol every member speaks, as last asked, and when.
#[derive(Default)]
pub(super) struct MemberProtocols {
    /// When, for which membership (its log index), the common protocol.
    answer: Option<(Instant, Option<u64>, u32)>,
    /// What each member (by URL) last said: a member that is down counts
    /// with it (versions are never downgraded; docs/operations.md).
    last_said: std::collections::HashMap<String, u32>,
}

impl MemberProtocols {
    /// Whether every member (voters and learners) speaks `protocol`.
    pub(super) async fn all_speak(&mut self, node: &Node, protocol: u32) -> bool {
        let (membership_at, urls): (Option<u64>, Vec<BaseUrl>) = {
            let metrics = node.raft.metrics().borrow().clone();
            let config = &metrics.membership_config;
            let urls = config.membership().nodes().filter(|(id, _)| **id != node.id());
            (config.log_id().map(|l| l.index), urls.map(|(_, n)| BaseUrl::lenient(&n.addr)).collect())
        };
        if let Some((at, asked_of, common)) = self.answer {
            let yes = common >= protocol;
            // A member added since may speak less: ask again.
            if asked_of == membership_at && at.elapsed() < if yes { TRUST_YES } else { TRUST_NO } {
                return yes;
            }
        }
        let mut common = PROTOCOL;
        for url in urls {
            // A member that cannot be asked counts with what it last said,
            // or as speaking nothing new if it never answered.
            let said = match member_protocol(node, &url).await {
                Some(protocol) => *self.last_said.entry(url.as_str().to_owned()).insert_entry(protocol).get(),
                None => self.last_said.get(url.as_str()).copied().unwrap_or(0),
            };
            common = common.min(said);
        }
        self.answer = Some((Instant::now(), membership_at, common));
        common >= protocol
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
