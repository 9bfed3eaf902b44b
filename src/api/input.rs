//! Validation of client input. Everything a client sends is checked here,
//! before anything is proposed, so bad input changes nothing.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::error::ApiError;
use crate::command::{ConsumerConfig, ConsumerStart, NewEvent, RoomChange, RoomConfig, MAX_REQUEST_BYTES};
use crate::filter::TypeFilter;
use crate::protocol::StartSpec;
use crate::service::Consistency;

/// Longest room name, event type or event id.
pub const MAX_NAME_LEN: usize = 255;
/// Most events in one batch publish.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Page size of reads that name none.
pub const DEFAULT_LIMIT: usize = 100;
/// Longest KV key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a room name: 1–255 characters of `[A-Za-z0-9._:-]`.
pub fn room_name(name: &str) -> Result<(), ApiError> {
    checked_name("room name", name)
}

/// Checks a durable consumer's name: the same rules as a room name.
pub fn consumer_name(name: &str) -> Result<(), ApiError> {
    checked_name("consumer name", name)
}

fn checked_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!("{what} is {} characters; the limit is {MAX_NAME_LEN}", name.len())));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))) {
        return Err(ApiError::bad_request(format!("{what} contains {bad:?}; allowed are letters, digits and . _ : -")));
    }
    Ok(())
}

/// Checks a subscriber id (Synap SDK paths): 1–255 characters.
pub fn subscriber_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!("subscriber id must be 1 to {MAX_NAME_LEN} characters")));
    }
    Ok(())
}

/// The page size a read asks for, or the default. (The store clamps it to
/// its maximum: a larger `limit` is not an error.)
pub fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT)
}

/// Parses a `types` filter (none means every type).
pub fn type_filter(types: Option<&str>) -> Result<TypeFilter, ApiError> {
    TypeFilter::parse(types.unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Parses a read's `consistency`: `local` (the default) or `strong`.
pub fn consistency(value: Option<&str>) -> Result<Consistency, ApiError> {
    match value {
        None | Some("local") => Ok(Consistency::Local),
        Some("strong") => Ok(Consistency::Strong),
        Some(other) => Err(ApiError::bad_request(format!("consistency must be 'local' or 'strong', not '{other}'"))),
    }
}

/// Checks a KV key: 1–1024 bytes, no control characters.
pub fn kv_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!("key must be 1 to {MAX_KEY_LEN} bytes")));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::bad_request("key contains a control character"));
    }
    Ok(())
}

fn event_type(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("event type is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!("event type is longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(bad) = name.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>' | ',')) {
        return Err(ApiError::bad_request(format!("event type contains {bad:?}, which is not allowed")));
    }
    Ok(())
}

/// One event in a publish or batch body, borrowing its JSON from the body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody<'a> {
    event: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<String>,
}

/// Body of a batch publish.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<EventBody<'a>>,
}

/// Parses a JSON body into `T`, with a 400 that says what is wrong.
pub fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Parses an optional JSON body: empty (or blank) means `T::default()`.
pub fn json_or_default<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json(body)
    }
}

impl EventBody<'_> {
    /// Validates the event for `room` and turns it into a [`NewEvent`],
    /// generating an id if the client gave none.
    pub fn into_new_event(self, room: &str, max_bytes: usize) -> Result<NewEvent, ApiError> {
        let event = EventParts {
            event_type: self.event,
            data: self.data.get(),
            metadata: self.metadata.map(RawValue::get),
            id: self.id,
        };
        event.into_new_event(room, max_bytes)
    }
}

/// An event as a client gave it, with its payload and metadata as JSON
/// text: what every publishing surface turns into a [`NewEvent`].
pub struct EventParts<'a> {
    /// Event type.
    pub event_type: String,
    /// JSON text of the payload.
    pub data: &'a str,
    /// JSON text of the metadata (an object, or `null`), if given.
    pub metadata: Option<&'a str>,
    /// The client's id, if given.
    pub id: Option<String>,
}

impl EventParts<'_> {
    /// Validates the event for `room` and turns it into a [`NewEvent`],
    /// generating an id if the client gave none.
    pub fn into_new_event(self, room: &str, max_bytes: usize) -> Result<NewEvent, ApiError> {
        event_type(&self.event_type)?;
        let metadata = match self.metadata {
            None | Some("null") => None,
            Some(text) if text.starts_with('{') => Some(one_line(text)),
            Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
        };
        let size = self.data.len() + metadata.as_ref().map_or(0, String::len);
        if size > max_bytes {
            return Err(ApiError::too_large(format!("event is {size} bytes; the limit is {max_bytes}")));
        }
        let (id, dedup) = match self.id {
            Some(id) if id.is_empty() || id.len() > MAX_NAME_LEN => {
                return Err(ApiError::bad_request(format!("id must be 1 to {MAX_NAME_LEN} characters")));
            }
            Some(id) => (id, true),
            None => (uuid::Uuid::new_v4().to_string(), false),
        };
        let data = one_line(self.data);
        Ok(NewEvent { room: room.to_owned(), event_type: self.event_type, data, metadata, id, dedup })
    }
}

/// The JSON text without line breaks, so that every event renders on one
/// line (SSE frames, line-oriented tools). A raw CR or LF can only be
/// insignificant whitespace in valid JSON (inside strings they are escaped),
/// so dropping them never changes the value.
fn one_line(json: &str) -> String {
    if json.contains(['\n', '\r']) {
        json.replace(['\n', '\r'], "")
    } else {
        json.to_owned()
    }
}

impl<'a> BatchBody<'a> {
    /// Validates every event of the batch for `room`.
    pub fn into_new_events(self, room: &str, max_bytes: usize) -> Result<Vec<NewEvent>, ApiError> {
        if self.events.is_empty() {
            return Err(ApiError::bad_request("events is empty"));
        }
        if self.events.len() > MAX_BATCH_EVENTS {
            return Err(ApiError::bad_request(format!(
                "{} events in one batch; the limit is {MAX_BATCH_EVENTS}",
                self.events.len()
            )));
        }
        let events: Vec<NewEvent> = self
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.into_new_event(room, max_bytes).map_err(|mut err| {
                    err.message = format!("events[{i}]: {}", err.message);
                    err
                })
            })
            .collect::<Result<_, _>>()?;
        let total: usize = events.iter().map(NewEvent::payload_bytes).sum();
        if total > MAX_REQUEST_BYTES {
            return Err(ApiError::too_large(format!(
                "the batch carries {total} bytes of events; the limit is {MAX_REQUEST_BYTES}: split it"
            )));
        }
        Ok(events)
    }
}

/// Body of `PATCH /stream/{room}` and payload of `stream.update`: each
/// setting absent (kept), `null` (no limit) or at least 1.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RoomChangeBody {
    #[serde(default, deserialize_with = "present")]
    max_events: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_age_secs: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_bytes: Option<Option<u64>>,
}

/// A field that is present, even as `null` (absent stays `None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl RoomChangeBody {
    /// Parses and checks a change of settings.
    pub fn parse(body: &[u8]) -> Result<RoomChange, ApiError> {
        let parsed: RoomChangeBody = json_or_default(body)?;
        parsed.check()
    }

    /// Parses and checks the settings of a room being created (the body
    /// may be empty): what is absent takes the node's default.
    pub fn parse_settings(body: &[u8]) -> Result<RoomChange, ApiError> {
        let parsed: RoomChangeBody = json_or_default(body)?;
        parsed.settings()
    }

    /// Checks a change of settings: something changes, and every limit set
    /// is at least 1.
    pub fn check(self) -> Result<RoomChange, ApiError> {
        if self.max_events.is_none() && self.max_age_secs.is_none() && self.max_bytes.is_none() {
            return Err(ApiError::bad_request("nothing to change: give max_events, max_age_secs and/or max_bytes"));
        }
        self.settings()
    }

    /// Checks the settings given: every limit set is at least 1.
    pub fn settings(self) -> Result<RoomChange, ApiError> {
        room_config(self.max_events.flatten(), self.max_age_secs.flatten())?;
        if self.max_bytes == Some(Some(0)) {
            return Err(ApiError::bad_request("max_bytes must be at least 1"));
        }
        Ok(RoomChange { max_events: self.max_events, max_age_secs: self.max_age_secs, max_bytes: self.max_bytes })
    }
}

/// Checks a room's retention settings: each, if set, at least 1.
pub fn room_config(max_events: Option<u64>, max_age_secs: Option<u64>) -> Result<RoomConfig, ApiError> {
    if max_events == Some(0) {
        return Err(ApiError::bad_request("max_events must be at least 1"));
    }
    if max_age_secs == Some(0) {
        return Err(ApiError::bad_request("max_age_secs must be at least 1"));
    }
    Ok(RoomConfig { max_events, max_age_secs })
}

/// Body of `POST /kv/set` and payload of `kv.set`.
#[derive(Debug, Deserialize)]
pub struct KvSetBody {
    key: String,
    value: Value,
    /// Seconds; `null` means no expiry.
    #[serde(default)]
    ttl: Option<u64>,
    /// Only set if absent (or expired).
    #[serde(default)]
    nx: Option<bool>,
}

/// A validated KV write.
#[derive(Debug, PartialEq, Eq)]
pub struct KvSet {
    /// The key.
    pub key: String,
    /// The value: a string as given, any other JSON as its compact text.
    pub value: String,
    /// When it expires, counted from the write.
    pub ttl: Option<Duration>,
    /// Only if absent.
    pub nx: bool,
}

impl KvSetBody {
    /// Validates the write; values are bounded like events.
    pub fn validate(self, max_bytes: usize) -> Result<KvSet, ApiError> {
        kv_key(&self.key)?;
        let value = match self.value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if value.len() > max_bytes {
            return Err(ApiError::too_large(format!("value is {} bytes; the limit is {max_bytes}", value.len())));
        }
        if self.ttl == Some(0) {
            return Err(ApiError::bad_request("ttl must be at least 1 second"));
        }
        let ttl = self.ttl.map(|secs| Duration::from_secs(secs.min(u64::MAX / 1000)));
        Ok(KvSet { key: self.key, value, ttl, nx: self.nx.unwrap_or(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(event_type: &str, data: &'a str, metadata: Option<&'a str>, id: Option<&str>) -> EventParts<'a> {
        EventParts { event_type: event_type.into(), data, metadata, id: id.map(str::to_owned) }
    }

    #[test]
    fn room_names_are_short_and_plain() {
        assert!(room_name("orders.eu-west_1:a").is_ok());
        assert!(room_name("").is_err());
        assert!(room_name(&"r".repeat(256)).is_err());
        assert!(room_name(&"r".repeat(255)).is_ok());
        let error = room_name("a/b").unwrap_err();
        assert!(error.message.contains("'/'"), "{}", error.message);
    }

    #[test]
    fn event_types_refuse_wildcards_separators_and_spaces() {
        for bad in ["", "a b", "a*", "a>", "a,b", "tab\t"] {
            assert!(parts(bad, "1", None, None).into_new_event("r", 100).is_err(), "{bad:?}");
        }
        let event = parts("user.registered", "{\"a\":1}", None, None).into_new_event("r", 100).unwrap();
        assert_eq!((event.room.as_str(), event.event_type.as_str()), ("r", "user.registered"));
    }

    #[test]
    fn metadata_must_be_an_object_and_null_means_none() {
        assert!(parts("t", "1", Some("[1]"), None).into_new_event("r", 100).is_err());
        assert_eq!(parts("t", "1", Some("null"), None).into_new_event("r", 100).unwrap().metadata, None);
        let with = parts("t", "1", Some("{\"k\":\n1}"), None).into_new_event("r", 100).unwrap();
        assert_eq!(with.metadata.as_deref(), Some("{\"k\":1}"), "line breaks are dropped");
    }

    #[test]
    fn the_size_limit_counts_data_and_metadata() {
        let error = parts("t", "\"12345\"", Some("{}"), None).into_new_event("r", 8).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(parts("t", "\"12345\"", Some("{}"), None).into_new_event("r", 9).is_ok());
    }

    #[test]
    fn client_ids_are_deduplicated_and_generated_ones_are_not() {
        let given = parts("t", "1", None, Some("order-7")).into_new_event("r", 100).unwrap();
        assert_eq!((given.id.as_str(), given.dedup), ("order-7", true));
        let generated = parts("t", "1", None, None).into_new_event("r", 100).unwrap();
        assert!(!generated.dedup);
        assert_eq!(generated.id.len(), 36, "a UUID");
        assert!(parts("t", "1", None, Some("")).into_new_event("r", 100).is_err());
    }

    #[test]
    fn a_batch_names_the_event_that_is_wrong() {
        let batch: BatchBody = json(br#"{"events":[{"event":"ok","data":1},{"event":"","data":2}]}"#).unwrap();
        let error = batch.into_new_events("r", 100).unwrap_err();
        assert!(error.message.starts_with("events[1]: "), "{}", error.message);
        let big = format!(
            r#"{{"events":[{}]}}"#,
            vec![format!(r#"{{"event":"e","data":"{}"}}"#, "x".repeat(1 << 20)); 5].join(",")
        );
        let error = json::<BatchBody>(big.as_bytes()).unwrap().into_new_events("r", 2 << 20).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE, "5 MiB in one batch");
        let empty: BatchBody = json(br#"{"events":[]}"#).unwrap();
        assert!(empty.into_new_events("r", 100).is_err());
        assert!(json::<BatchBody>(br#"{"events":[],"extra":1}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn room_settings_must_be_positive() {
        assert_eq!(RoomChangeBody::parse_settings(b"  ").unwrap(), RoomChange::default());
        let config = RoomChangeBody::parse_settings(br#"{"max_events":10}"#).unwrap();
        assert_eq!(config.max_events, Some(Some(10)));
        let config = RoomChangeBody::parse_settings(br#"{"max_events":null,"max_bytes":64}"#).unwrap();
        assert_eq!((config.max_events, config.max_age_secs, config.max_bytes), (Some(None), None, Some(Some(64))));
        assert!(RoomChangeBody::parse_settings(br#"{"max_events":0}"#).is_err());
        assert!(RoomChangeBody::parse_settings(br#"{"max_age_secs":0}"#).is_err());
        assert!(RoomChangeBody::parse_settings(br#"{"max_bytes":0}"#).is_err());
        assert!(RoomChangeBody::parse_settings(br#"{"retention":1}"#).is_err());
    }

    #[test]
    fn reads_default_their_limit_and_check_consistency_and_types() {
        assert_eq!(page_limit(None), DEFAULT_LIMIT);
        assert_eq!(page_limit(Some(1_000_000)), 1_000_000, "clamped by the store, not refused");
        assert_eq!(consistency(Some("strong")).unwrap(), Consistency::Strong);
        assert_eq!(consistency(None).unwrap(), Consistency::Local);
        assert!(consistency(Some("eventual")).is_err());
        assert!(type_filter(Some("a.*")).unwrap().matches("a.b"));
        assert!(type_filter(Some("a.>.b")).is_err());
    }

    #[test]
    fn kv_writes_are_checked() {
        let set: KvSetBody = json(br#"{"key":"k","value":{"a":1},"ttl":5,"nx":true}"#).unwrap();
        let set = set.validate(100).unwrap();
        assert_eq!(
            set,
            KvSet { key: "k".into(), value: "{\"a\":1}".into(), ttl: Some(Duration::from_secs(5)), nx: true }
        );
        let zero_ttl: KvSetBody = json(br#"{"key":"k","value":"v","ttl":0}"#).unwrap();
        assert!(zero_ttl.validate(100).is_err());
        let big: KvSetBody = json(br#"{"key":"k","value":"0123456789"}"#).unwrap();
        assert_eq!(big.validate(5).unwrap_err().status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(kv_key("").is_err());
        assert!(kv_key("a\u{7}b").is_err());
        assert!(kv_key(&"k".repeat(1025)).is_err());
    }
}

/// The query of a route that takes nothing but the key (`api_key`, read
/// by the `Caller` extractor): anything else is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOnlyQuery {
    #[serde(rename = "api_key")]
    _api_key: Option<String>,
}

/// Most messages one fetch may ask for.
pub const MAX_FETCH: u32 = 1000;
/// Longest a fetch may wait for messages, in milliseconds.
pub const MAX_FETCH_WAIT_MS: u64 = 30_000;
/// Most offsets one ack or nak may carry.
pub const MAX_SETTLE_OFFSETS: usize = 10_000;
/// Most unacked messages a consumer may allow: its record holds them all.
pub const MAX_ACK_PENDING: u32 = 10_000;
/// Longest lease or nak delay, in milliseconds (a day).
pub const MAX_ACK_WAIT_MS: u64 = 24 * 60 * 60 * 1000;

/// Body of `PUT /stream/{room}/consumers/{name}`, all optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConsumerBody {
    start: Option<Value>,
    types: Option<String>,
    ack_wait_ms: Option<u64>,
    max_deliver: Option<u32>,
    dead_letter: Option<String>,
    max_ack_pending: Option<u32>,
}

impl ConsumerBody {
    /// Parses an optional body (empty means defaults).
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        json_or_default(body)
    }

    /// The settings for a consumer of `room`, defaults filled in
    /// (`docs/api.md`).
    pub fn into_config(self, room: &str) -> Result<ConsumerConfig, ApiError> {
        if let Some(types) = &self.types {
            type_filter(Some(types))?;
        }
        let ack_wait_ms = self.ack_wait_ms.unwrap_or(30_000);
        if !(1..=MAX_ACK_WAIT_MS).contains(&ack_wait_ms) {
            return Err(ApiError::bad_request(format!("ack_wait_ms must be 1 to {MAX_ACK_WAIT_MS}")));
        }
        let max_ack_pending = self.max_ack_pending.unwrap_or(1000);
        if !(1..=MAX_ACK_PENDING).contains(&max_ack_pending) {
            return Err(ApiError::bad_request(format!("max_ack_pending must be 1 to {MAX_ACK_PENDING}")));
        }
        if let Some(target) = &self.dead_letter {
            room_name(target).map_err(|e| ApiError::bad_request(format!("dead_letter: {}", e.message)))?;
            if target == room {
                return Err(ApiError::bad_request("dead_letter must be another room than the consumer's"));
            }
        }
        let start = match self.start {
            None => ConsumerStart::Earliest,
            Some(value) => serde_json::from_value::<StartSpec>(value)
                .map_err(|_| ApiError::bad_request("start must be \"earliest\", \"latest\" or an offset"))?
                .into(),
        };
        Ok(ConsumerConfig {
            start,
            types: self.types.filter(|t| !t.trim().is_empty()),
            ack_wait_ms,
            max_deliver: self.max_deliver.unwrap_or(5),
            dead_letter: self.dead_letter,
            max_ack_pending,
        })
    }

    /// The dead-letter room, if any (the caller must be allowed to publish
    /// to it).
    pub fn dead_letter(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }
}

/// Body of `POST .../fetch`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FetchBody {
    max: Option<u32>,
    wait_ms: Option<u64>,
}

impl FetchBody {
    /// Parses an optional body; answers (max messages, wait).
    pub fn parse(body: &[u8]) -> Result<(u32, Duration), ApiError> {
        json_or_default::<FetchBody>(body)?.limits()
    }

    /// Checks `max` (default 1) and `wait_ms` (default 0).
    pub fn limits(self) -> Result<(u32, Duration), ApiError> {
        fetch_limits(self.max, self.wait_ms)
    }
}

fn fetch_limits(max: Option<u32>, wait_ms: Option<u64>) -> Result<(u32, Duration), ApiError> {
    let max = max.unwrap_or(1);
    if !(1..=MAX_FETCH).contains(&max) {
        return Err(ApiError::bad_request(format!("max must be 1 to {MAX_FETCH}")));
    }
    let wait_ms = wait_ms.unwrap_or(0);
    if wait_ms > MAX_FETCH_WAIT_MS {
        return Err(ApiError::bad_request(format!("wait_ms must be at most {MAX_FETCH_WAIT_MS}")));
    }
    Ok((max, Duration::from_millis(wait_ms)))
}

/// Body of `POST .../ack` and `POST .../nak`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    offsets: Vec<u64>,
    delay_ms: Option<u64>,
}

impl SettleBody {
    /// The offsets, checked; and the nak delay (refused on an ack).
    pub fn validate(self, nak: bool) -> Result<(Vec<u64>, Duration), ApiError> {
        let delay = settle_delay(nak, self.delay_ms)?;
        Ok((settle_offsets(self.offsets)?, delay))
    }
}

/// Checks the offsets of an ack or nak: 1 to [`MAX_SETTLE_OFFSETS`].
fn settle_offsets(offsets: Vec<u64>) -> Result<Vec<u64>, ApiError> {
    if offsets.is_empty() || offsets.len() > MAX_SETTLE_OFFSETS {
        return Err(ApiError::bad_request(format!("offsets must hold 1 to {MAX_SETTLE_OFFSETS} offsets")));
    }
    Ok(offsets)
}

/// Checks a nak's `delay_ms` (an ack has none).
fn settle_delay(nak: bool, delay_ms: Option<u64>) -> Result<Duration, ApiError> {
    match (nak, delay_ms) {
        (false, Some(_)) => Err(ApiError::bad_request("delay_ms belongs to nak, not ack")),
        (_, Some(ms)) if ms > MAX_ACK_WAIT_MS => {
            Err(ApiError::bad_request(format!("delay_ms must be at most {MAX_ACK_WAIT_MS}")))
        }
        (_, ms) => Ok(Duration::from_millis(ms.unwrap_or(0))),
    }
}
