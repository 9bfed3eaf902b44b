//! API keys and what each may do.
//!
//! Keys come from `--api-key` (full access) and from an `--auth-file`
//! (TOML) that gives each key a set of actions and, optionally, patterns.
//! A request carries its key as `Authorization: Bearer <key>`, as
//! `Authorization: Basic` with the key's name as user and the key as
//! password (what the Synap SDKs send), or, for browsers' WebSocket and
//! EventSource, `?api_key=<key>`. With no keys configured the API is open.
//! Wrong or missing key: 401; key without the permission: 403. The keys are
//! read again on SIGHUP ([`Auth::reload`]).
//!
//! A key with patterns is scoped: it acts on the rooms, and on the KV keys,
//! that its patterns match, and on nothing else. What concerns no room or
//! key (cluster administration, metrics) needs a key without patterns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
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
    /// Whether the key may do `action` on `target` (a room or KV key name;
    /// `None` for what concerns neither). A scoped key acts only on what
    /// its patterns match.
    fn allows(&self, action: Action, target: Option<&str>) -> bool {
        self.permissions.contains(&action)
            && match (target, &self.rooms) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(name), Some(patterns)) => patterns.iter().any(|p| glob(p, name)),
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

/// The configured keys of a node, and where they came from, so that they
/// can be read again.
#[derive(Debug, Default)]
pub struct Auth {
    keys: RwLock<Arc<Vec<ApiKey>>>,
    full_access: Vec<String>,
    file: Option<PathBuf>,
}

impl Auth {
    /// Keys with full access (from `--api-key`), plus those of `file`.
    pub fn load(full_access: &[String], file: Option<&Path>) -> Result<Self, AuthConfigError> {
        let keys = read_keys(full_access, file)?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            full_access: full_access.to_vec(),
            file: file.map(Path::to_owned),
        })
    }

    /// Reads the keys again (the `--auth-file` may have changed) and
    /// answers how many there are. On any error the keys stay as they were;
    /// a reload that would leave a node that had keys with none (an open
    /// API) is refused too.
    pub fn reload(&self) -> Result<usize, AuthConfigError> {
        let keys = read_keys(&self.full_access, self.file.as_deref())?;
        if keys.is_empty() && !self.is_open() {
            let path = self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let message = "it holds no keys, which would open the API to anyone; keeping the current keys".into();
            return Err(AuthConfigError::Invalid { path, message });
        }
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    fn current(&self) -> Arc<Vec<ApiKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A key with the admin permission on every room, if any (a joining
    /// node uses it to ask the cluster to add it).
    pub fn admin_key(&self) -> Option<String> {
        self.current()
            .iter()
            .find(|k| k.permissions.contains(&Action::Admin) && k.rooms.is_none())
            .map(|k| k.key.clone())
    }

    /// True when no keys are configured: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.current().is_empty()
    }

    /// The caller presenting `credential`, or 401.
    pub fn authenticate(&self, credential: Option<&Credential>) -> Result<Caller, ApiError> {
        let keys = self.current();
        if keys.is_empty() {
            return Ok(Caller::Anyone);
        }
        let Some(credential) = credential else {
            return Err(unauthorized(
                "missing API key: send Authorization: Bearer <key>, Basic <name:key>, or ?api_key=<key>",
            ));
        };
        // Compare against every key so the time taken does not reveal
        // which one (or how much of one) matched.
        let mut found = None;
        for key in keys.iter() {
            if constant_time_eq(credential.key.as_bytes(), key.key.as_bytes()) && found.is_none() {
                found = Some(key.clone());
            }
        }
        let found = found.ok_or_else(|| unauthorized("invalid API key"))?;
        if credential.user.as_ref().is_some_and(|user| *user != found.name) {
            return Err(unauthorized("invalid API key: the Basic user is not the key's name"));
        }
        Ok(Caller::Key(Arc::new(found)))
    }
}

/// The keys of `--api-key` (full access) and of the file, if any.
fn read_keys(full_access: &[String], file: Option<&Path>) -> Result<Vec<ApiKey>, AuthConfigError> {
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
        let text =
            std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read { path: shown.clone(), source })?;
        let parsed: AuthFile = toml::from_str(&text)
            .map_err(|e| AuthConfigError::Invalid { path: shown.clone(), message: e.to_string() })?;
        if let Some(empty) = parsed.keys.iter().find(|k| k.key.is_empty()) {
            let message = format!("key '{}' has an empty secret", empty.name);
            return Err(AuthConfigError::Invalid { path: shown, message });
        }
        keys.extend(parsed.keys);
    }
    Ok(keys)
}

/// A key as a request presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The secret.
    pub key: String,
    /// With Basic authentication, the user: the key's name.
    pub user: Option<String>,
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::unauthorized(message)
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
    /// Whether the caller may do `action` on `room` (`None`: on what
    /// concerns no room, which a scoped key may not).
    pub fn may(&self, action: Action, room: Option<&str>) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(key) => key.allows(action, room),
        }
    }

    /// Whether the caller may do `action` on anything at all (listing shows
    /// a scoped key the rooms it may see).
    pub fn may_some(&self, action: Action) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(key) => key.permissions.contains(&action),
        }
    }

    /// 403 unless the caller may do `action` on `room` (`None`: cluster-wide,
    /// which needs a key without patterns).
    pub fn require(&self, action: Action, room: Option<&str>) -> Result<(), ApiError> {
        let target = match room {
            Some(room) => format!(" on room '{room}'"),
            None => " on the whole cluster (a key without room patterns)".to_owned(),
        };
        self.require_on(action, room, &target)
    }

    /// 403 unless the caller may do `action` on the KV key `key`: a scoped
    /// key's patterns must match the KV key.
    pub fn require_kv(&self, action: Action, key: &str) -> Result<(), ApiError> {
        self.require_on(action, Some(key), &format!(" on KV key '{key}'"))
    }

    fn require_on(&self, action: Action, name: Option<&str>, target: &str) -> Result<(), ApiError> {
        if self.may(action, name) {
            return Ok(());
        }
        let key = match self {
            Caller::Key(key) => key.name.clone(),
            Caller::Anyone => String::new(),
        };
        Err(ApiError::forbidden(format!("key '{key}' lacks the {} permission{target}", action.as_str())))
    }
}

/// The key a request carries: `Authorization: Bearer`, `Authorization:
/// Basic` (name:key), else `?api_key=`. A Basic header that does not decode
/// carries no key (and gets a 401 where one is needed).
pub fn credential_of(parts: &Parts) -> Option<Credential> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Credential { key: rest.trim().to_owned(), user: None });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, key) = decoded.split_once(':')?;
            return Some(Credential { key: key.to_owned(), user: Some(user.to_owned()) });
        }
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| Credential { key: v.into_owned(), user: None })
}

/// The key a request carried, as sent (for relaying it to the leader as a
/// bearer token).
pub struct Token(pub Option<String>);

impl FromRequestParts<AppState> for Token {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(credential_of(parts).map(|c| c.key)))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        app.auth.authenticate(credential_of(parts).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn key(permissions: Vec<Action>, rooms: Option<Vec<&str>>) -> Caller {
        let rooms = rooms.map(|r| r.into_iter().map(str::to_owned).collect());
        Caller::Key(Arc::new(ApiKey { name: "k".into(), key: "secret".into(), permissions, rooms }))
    }

    #[test]
    fn a_scoped_admin_key_administers_its_rooms_not_the_cluster() {
        let tenant = key(vec![Action::Admin], Some(vec!["tenant-a.*"]));
        assert!(tenant.require(Action::Admin, Some("tenant-a.orders")).is_ok());
        assert!(tenant.require(Action::Admin, Some("tenant-b.orders")).is_err());
        let cluster = tenant.require(Action::Admin, None).unwrap_err();
        assert_eq!(cluster.status, StatusCode::FORBIDDEN);
        assert!(cluster.message.contains("whole cluster"), "{}", cluster.message);
        assert!(key(vec![Action::Admin], None).require(Action::Admin, None).is_ok());
    }

    #[test]
    fn kv_keys_are_scoped_by_the_same_patterns() {
        let tenant = key(vec![Action::Publish, Action::Subscribe], Some(vec!["tenant-a.*"]));
        assert!(tenant.require_kv(Action::Publish, "tenant-a.processed:1").is_ok());
        let other = tenant.require_kv(Action::Subscribe, "tenant-b.processed:1").unwrap_err();
        assert!(other.message.contains("KV key 'tenant-b.processed:1'"), "{}", other.message);
        assert!(tenant.may_some(Action::Subscribe));
        assert!(!tenant.may_some(Action::Admin));
    }

    #[test]
    fn without_keys_everyone_may_do_everything() {
        let auth = Auth::default();
        let caller = auth.authenticate(None).unwrap();
        assert!(caller.may(Action::Admin, None));
        let keyed = Auth::load(&["k".into()], None).unwrap();
        assert_eq!(keyed.authenticate(None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        let bearer = |key: &str| Credential { key: key.into(), user: None };
        assert_eq!(keyed.authenticate(Some(&bearer("wrong"))).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert!(keyed.authenticate(Some(&bearer("k"))).unwrap().may(Action::Admin, None));
    }

    fn credential_of_header(value: &str) -> Option<Credential> {
        let request = axum::http::Request::builder().uri("/x?api_key=q").header("authorization", value).body(());
        credential_of(&request.expect("request").into_parts().0)
    }

    #[test]
    fn basic_authentication_is_the_key_name_and_the_key() {
        use base64::Engine;
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        let keyed = Auth::load(&["k".into()], None).unwrap();
        let presented = credential_of_header(&basic("api-key-1:k")).expect("a credential");
        assert_eq!(presented, Credential { key: "k".into(), user: Some("api-key-1".into()) });
        assert!(keyed.authenticate(Some(&presented)).is_ok());
        let wrong_user = credential_of_header(&basic("someone:k"));
        let refused = keyed.authenticate(wrong_user.as_ref()).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert!(refused.message.contains("not the key's name"), "{}", refused.message);
        assert!(keyed.authenticate(credential_of_header(&basic("api-key-1:nope")).as_ref()).is_err());
        assert_eq!(credential_of_header("Basic !!not base64!!"), None, "undecodable: no key at all");
        assert_eq!(credential_of_header("bearer  spaced ").map(|c| c.key).as_deref(), Some("spaced"));
    }

    #[test]
    fn a_reload_reads_the_file_again_and_keeps_the_keys_when_it_cannot() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("keys.toml");
        let entry = |name: &str, key: &str| {
            format!("[[keys]]\nname = \"{name}\"\nkey = \"{key}\"\npermissions = [\"subscribe\"]\n")
        };
        std::fs::write(&file, entry("a", "key-a")).unwrap();
        let auth = Auth::load(&[], Some(&file)).unwrap();
        let bearer = |key: &str| Some(Credential { key: key.into(), user: None });
        assert!(auth.authenticate(bearer("key-b").as_ref()).is_err());
        std::fs::write(&file, entry("b", "key-b")).unwrap();
        assert_eq!(auth.reload().unwrap(), 1);
        assert!(auth.authenticate(bearer("key-b").as_ref()).is_ok(), "the new key works");
        assert!(auth.authenticate(bearer("key-a").as_ref()).is_err(), "the removed key no longer does");
        std::fs::write(&file, "not toml [").unwrap();
        assert!(auth.reload().is_err());
        std::fs::write(&file, "keys = []").unwrap();
        assert!(auth.reload().unwrap_err().to_string().contains("open the API"));
        assert!(auth.authenticate(bearer("key-b").as_ref()).is_ok(), "failed reloads kept the keys");
    }

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
