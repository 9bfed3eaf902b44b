//! Base URLs of nodes (`http://host:port`), normalised once where they
//! enter: flags, admin requests, the client's node list. Everything after
//! that joins paths onto them without second-guessing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's base URL: `http://` or `https://`, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct BaseUrl(String);

/// Why a text is not a base URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an http:// or https:// URL")]
pub struct NotAUrl(pub String);

fn normalise(text: &str) -> String {
    text.trim().trim_end_matches('/').to_owned()
}

impl BaseUrl {
    /// Parses `text`, refusing anything but `http://` and `https://` URLs.
    pub fn parse(text: &str) -> Result<Self, NotAUrl> {
        let url = normalise(text);
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(Self(url)),
            _ => Err(NotAUrl(text.to_owned())),
        }
    }

    /// `text` as a base URL without checking its scheme: for addresses a
    /// caller hands the client as they are, and for member addresses that
    /// were checked when they joined.
    pub fn lenient(text: &str) -> Self {
        Self(normalise(text))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL of `path` (which starts with `/`) on this node.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The WebSocket form of [`BaseUrl::join`]: `ws://` for `http://`,
    /// `wss://` for `https://`.
    pub fn websocket(&self, path: &str) -> String {
        let base = match self.0.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => self.0.replacen("http://", "ws://", 1),
        };
        format!("{base}{path}")
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = NotAUrl;

    fn from_str(text: &str) -> Result<Self, NotAUrl> {
        Self::parse(text)
    }
}

impl TryFrom<String> for BaseUrl {
    type Error = NotAUrl;

    fn try_from(text: String) -> Result<Self, NotAUrl> {
        Self::parse(&text)
    }
}

impl From<BaseUrl> for String {
    fn from(url: BaseUrl) -> String {
        url.0
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_trims_and_checks_the_scheme() {
        assert_eq!(BaseUrl::parse(" http://10.0.0.1:15500/ ").unwrap().as_str(), "http://10.0.0.1:15500");
        assert_eq!(BaseUrl::parse("https://synap.example//").unwrap().as_str(), "https://synap.example");
        assert!(BaseUrl::parse("10.0.0.1:15500").is_err());
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("http://").is_err());
        assert!(BaseUrl::parse("http://a b").is_err());
    }

    #[test]
    fn joining_and_websocket_forms() {
        let url = BaseUrl::parse("http://127.0.0.1:1/").unwrap();
        assert_eq!(url.join("/raft/vote"), "http://127.0.0.1:1/raft/vote");
        assert_eq!(url.websocket("/stream/a/ws"), "ws://127.0.0.1:1/stream/a/ws");
        let tls = BaseUrl::parse("https://n1").unwrap();
        assert_eq!(tls.websocket("/x"), "wss://n1/x");
        assert_eq!(BaseUrl::lenient("n1:80/").as_str(), "n1:80");
    }

    #[test]
    fn json_checks_what_it_reads() {
        let url: BaseUrl = serde_json::from_str("\"http://a:1/\"").unwrap();
        assert_eq!(serde_json::to_string(&url).unwrap(), "\"http://a:1\"");
        assert!(serde_json::from_str::<BaseUrl>("\"a:1\"").is_err());
    }
}
