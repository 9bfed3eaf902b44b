//! JSON rendering of stored events. The payload and metadata are written
//! as the raw JSON text they were stored as, never re-parsed.

use crate::store::{EventRecord, StoredEvent};

/// Appends the event object of DESIGN §4 for `record` of `room` to `out`.
pub fn write_event(out: &mut String, room: &str, record: &EventRecord) {
    out.push('{');
    write_event_fields(out, room, record.offset, &record.event);
    out.push('}');
}

/// Appends the fields of the event object, without the braces, so that
/// callers can add fields of their own (`"type":"event"` on streams).
pub fn write_event_fields(out: &mut String, room: &str, offset: u64, e: &StoredEvent) {
    out.push_str("\"offset\":");
    out.push_str(&offset.to_string());
    out.push_str(",\"room\":");
    push_str_json(out, room);
    out.push_str(",\"event\":");
    push_str_json(out, &e.event);
    out.push_str(",\"data\":");
    out.push_str(&e.data);
    out.push_str(",\"metadata\":");
    out.push_str(e.metadata.as_deref().unwrap_or("{}"));
    out.push_str(",\"timestamp\":");
    out.push_str(&e.timestamp.to_string());
    out.push_str(",\"id\":");
    push_str_json(out, &e.id);
}

fn push_str_json(out: &mut String, s: &str) {
    // Serialising a &str to JSON cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredEvent;

    #[test]
    fn renders_valid_json_with_raw_payload() {
        let record = EventRecord {
            offset: 7,
            event: StoredEvent {
                event: "user.\"quoted\"".into(),
                data: r#"{"a":[1,2]}"#.into(),
                metadata: None,
                timestamp: 42,
                id: "x".into(),
            },
        };
        let mut out = String::new();
        write_event(&mut out, "room-1", &record);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["offset"], 7);
        assert_eq!(value["event"], "user.\"quoted\"");
        assert_eq!(value["data"]["a"][1], 2);
        assert_eq!(value["metadata"], serde_json::json!({}));
    }
}
