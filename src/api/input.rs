//! Validation of client input. Everything a client sends is checked here,
//! before anything is proposed, so bad input changes nothing.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::command::{NewEvent, RoomConfig};

/// Longest room name, event type or event id.
pub const MAX_NAME_LEN: usize = 255;
/// Most events in one batch publish.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// Checks a room name: 1–255 characters of `[A-Za-z0-9._:-]`.
pub fn room_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("room name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "room name is {} characters; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))) {
        return Err(ApiError::bad_request(format!(
            "room name contains {bad:?}; allowed are letters, digits and . _ : -"
        )));
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

impl EventBody<'_> {
    /// Validates the event for `room` and turns it into a [`NewEvent`],
    /// generating an id if the client gave none.
    pub fn into_new_event(self, room: &str, max_bytes: usize) -> Result<NewEvent, ApiError> {
        event_type(&self.event)?;
        let metadata = match self.metadata.map(RawValue::get) {
            None | Some("null") => None,
            Some(text) if text.starts_with('{') => Some(one_line(text)),
            Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
        };
        let size = self.data.get().len() + metadata.as_ref().map_or(0, String::len);
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
        Ok(NewEvent { room: room.to_owned(), event: self.event, data: one_line(self.data.get()), metadata, id, dedup })
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
        self.events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.into_new_event(room, max_bytes).map_err(|mut err| {
                    err.message = format!("events[{i}]: {}", err.message);
                    err
                })
            })
            .collect()
    }
}

/// Body of room creation: its settings, all optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RoomConfigBody {
    #[serde(default)]
    max_events: Option<u64>,
    #[serde(default)]
    max_age_secs: Option<u64>,
}

impl RoomConfigBody {
    /// Parses an optional body (empty means defaults).
    pub fn parse(body: &[u8]) -> Result<RoomConfig, ApiError> {
        let parsed: RoomConfigBody =
            if body.iter().all(u8::is_ascii_whitespace) { Self::default() } else { json(body)? };
        if parsed.max_events == Some(0) {
            return Err(ApiError::bad_request("max_events must be at least 1"));
        }
        if parsed.max_age_secs == Some(0) {
            return Err(ApiError::bad_request("max_age_secs must be at least 1"));
        }
        Ok(RoomConfig { max_events: parsed.max_events, max_age_secs: parsed.max_age_secs })
    }
}
