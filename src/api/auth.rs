//! API keys and what each may do.
//!
//! Keys come from `--api-key` (full access) and from an `--auth-file`
//! (TOML) that gives each key a set of actions and room patterns. A request
//! carries its key as `Authorization: Bearer <key>` or, for browsers'
//! WebSocket and EventSource, `?api_key=<key>`. With no keys configured the
//! API is open. Wrong or missing key: 401; key without the permission: 403.

use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::Deserialize;

use super::error::ApiError;
use super::{constant_time_eq, AppState};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish, create rooms, write KV.
    Publish,
    /// Read history and stats, subscribe (WebSocket, SSE, consume), read KV.
    Subscribe,
    /// Cluster administration, room deletion, metrics.
    Admin,
}

impl Action {
    /// The action's name as keys list it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Admin => "admin",
        }
    }
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A name for logs and errors (never the key itself).
    #[serde(default)]
    pub name: String,
    /// The secret the client sends.
    key: String,
    /// Allowed actions.
    permissions: Vec<Action>,
    /// Room patterns the actions apply to (`*` matches any run of
    /// characters); absent means every room.
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

impl ApiKey {
    fn allows(&self, action: Action, room: Option<&str>) -> bool {
        self.permissions.contains(&action)
            && match (room, &self.rooms) {
                (_, None) | (None, Some(_)) => true,
                (Some(room), Some(patterns)) => patterns.iter().any(|p| glob(p, room)),
            }
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why the key configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid key list.
    #[error("invalid auth file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    keys: Vec<ApiKey>,
}

/// The configured keys of a node.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    keys: Vec<ApiKey>,
}

impl Auth {
    /// Keys with full access (from `--api-key`), plus those of `file`.
    pub fn load(full_access: &[String], file: Option<&Path>) -> Result<Self, AuthConfigError> {
        let mut keys: Vec<ApiKey> = full_access
            .iter()
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, key)| ApiKey {
                name: format!("api-key-{}", i + 1),
                key: key.clone(),
                permissions: vec![Action::Publish, Action::Subscribe, Action::Admin],
                rooms: None,
            })
            .collect();
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|source| AuthConfigError::Read { path: shown.clone(), source })?;
            let parsed: AuthFile = toml::from_str(&text)
                .map_err(|e| AuthConfigError::Invalid { path: shown.clone(), message: e.to_string() })?;
            if let Some(empty) = parsed.keys.iter().find(|k| k.key.is_empty()) {
                let message = format!("key '{}' has an empty secret", empty.name);
                return Err(AuthConfigError::Invalid { path: shown, message });
            }
            keys.extend(parsed.keys);
        }
        Ok(Self { keys })
    }

    /// A key with the admin permission on every room, if any (a joining
    /// node uses it to ask the cluster to add it).
    pub fn admin_key(&self) -> Option<String> {
        self.keys.iter().find(|k| k.permissions.contains(&Action::Admin) && k.rooms.is_none()).map(|k| k.key.clone())
    }

    /// True when no keys are configured: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller presenting `token`, or 401.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller::Anyone);
        }
        let Some(token) = token else {
            return Err(unauthorized("missing API key: send Authorization: Bearer <key> or ?api_key=<key>"));
        };
        // Compare against every key so the time taken does not reveal
        // which one (or how much of one) matched.
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(token.as_bytes(), key.key.as_bytes()) && found.is_none() {
                found = Some(key.clone());
            }
        }
        found.map(|k| Caller::Key(Arc::new(k))).ok_or_else(|| unauthorized("invalid API key"))
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError { status: StatusCode::UNAUTHORIZED, message: message.to_owned() }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No keys are configured.
    Anyone,
    /// A valid key.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// Whether the caller may do `action` (on `room`, if it concerns one).
    pub fn may(&self, action: Action, room: Option<&str>) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(key) => key.allows(action, room),
        }
    }

    /// 403 unless the caller may do `action` on `room`.
    pub fn require(&self, action: Action, room: Option<&str>) -> Result<(), ApiError> {
        if self.may(action, room) {
            return Ok(());
        }
        let name = match self {
            Caller::Key(key) => key.name.clone(),
            Caller::Anyone => String::new(),
        };
        let target = room.map(|r| format!(" on room '{r}'")).unwrap_or_default();
        let message = format!("key '{name}' lacks the {} permission{target}", action.as_str());
        Err(ApiError { status: StatusCode::FORBIDDEN, message })
    }
}

/// The key a request carries: the bearer token, else `?api_key=`.
pub fn token_of(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            return Some(token.trim().to_owned());
        }
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "api_key").map(|(_, v)| v.into_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        app.auth.authenticate(token_of(parts).as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_patterns() {
        assert!(glob("orders.*", "orders.eu"));
        assert!(glob("orders.*", "orders.eu.west"));
        assert!(!glob("orders.*", "payments"));
        assert!(glob("*", "anything"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }
}
