//! JSON rendering of stored events and pages of them. The payload and
//! metadata are written as the raw JSON text they were stored as, never
//! re-parsed.

use crate::command::RoomInfo;
use crate::service::consumers::Fetched;
use crate::store::{EventRecord, Page, StoredEvent};

/// Appends the event object (`docs/api.md`, "Events") for `record` of
/// `room` to `out`.
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
    push_str_json(out, &e.event_type);
    out.push_str(",\"data\":");
    out.push_str(&e.data);
    out.push_str(",\"metadata\":");
    out.push_str(e.metadata.as_deref().unwrap_or("{}"));
    out.push_str(",\"timestamp\":");
    out.push_str(&e.timestamp.to_string());
    out.push_str(",\"id\":");
    push_str_json(out, &e.id);
}

fn write_events(out: &mut String, room: &str, page: &Page) {
    out.push_str("{\"events\":[");
    for (i, record) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_event(out, room, record);
    }
    out.push(']');
}

/// A history page: `{"events","next_offset","min_offset","max_offset"}`,
/// where `max_offset` is null for a room that holds no event.
pub fn page_json(room: &str, info: &RoomInfo, page: &Page) -> String {
    let mut body = String::with_capacity(128 + page.events.len() * 256);
    write_events(&mut body, room, page);
    let max_offset = info.next_offset.checked_sub(1).filter(|_| info.next_offset > info.min_offset);
    body.push_str(&format!(
        ",\"next_offset\":{},\"min_offset\":{},\"max_offset\":{}}}",
        page.next_offset,
        info.min_offset,
        max_offset.map_or("null".to_owned(), |m| m.to_string())
    ));
    body
}

/// A polling read's page (the SDKs' `consume`): `{"events","next_offset",
/// "min_offset"}`.
pub fn consume_json(room: &str, info: &RoomInfo, page: &Page) -> String {
    let mut body = String::with_capacity(64 + page.events.len() * 256);
    write_events(&mut body, room, page);
    body.push_str(&format!(",\"next_offset\":{},\"min_offset\":{}}}", page.next_offset, info.min_offset));
    body
}

/// A consumer fetch: `{"messages":[event fields + "delivery"],
/// "missed":[{"from","to"}]}`.
pub fn fetched_json(room: &str, fetched: &Fetched) -> String {
    let mut body = String::with_capacity(64 + fetched.messages.len() * 256);
    body.push_str("{\"messages\":[");
    for (i, message) in fetched.messages.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push('{');
        write_event_fields(&mut body, room, message.lease.offset, &message.event);
        body.push_str(",\"delivery\":");
        body.push_str(&message.lease.delivery.to_string());
        body.push('}');
    }
    body.push_str("],\"missed\":");
    // Plain numbers in a list of objects: serialising cannot fail.
    body.push_str(&serde_json::to_string(&fetched.missed).unwrap_or_else(|_| "[]".into()));
    body.push('}');
    body
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
                event_type: "user.\"quoted\"".into(),
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

    fn info(min_offset: u64, next_offset: u64) -> RoomInfo {
        RoomInfo {
            name: "r".into(),
            generation: 1,
            next_offset,
            min_offset,
            config: Default::default(),
            created_at: 0,
            last_event_at: 0,
            published_total: next_offset,
            bytes_total: 0,
        }
    }

    fn event(offset: u64) -> EventRecord {
        let event = StoredEvent {
            event_type: "t".into(),
            data: offset.to_string(),
            metadata: Some(r#"{"k":"v"}"#.into()),
            timestamp: 1,
            id: format!("id-{offset}"),
        };
        EventRecord { offset, event }
    }

    #[test]
    fn a_page_names_its_range_and_a_room_without_events_has_no_max_offset() {
        let page = Page { events: vec![event(3), event(4)], next_offset: 5 };
        let value: serde_json::Value = serde_json::from_str(&page_json("r", &info(3, 5), &page)).unwrap();
        assert_eq!(value["events"].as_array().map(Vec::len), Some(2));
        assert_eq!(value["events"][1]["metadata"]["k"], "v");
        assert_eq!((value["next_offset"].as_u64(), value["min_offset"].as_u64()), (Some(5), Some(3)));
        assert_eq!(value["max_offset"], 4);
        let empty = Page { events: Vec::new(), next_offset: 7 };
        let value: serde_json::Value = serde_json::from_str(&page_json("r", &info(7, 7), &empty)).unwrap();
        assert_eq!(value["max_offset"], serde_json::Value::Null);
    }

    #[test]
    fn a_consume_page_has_no_max_offset() {
        let page = Page { events: vec![event(0)], next_offset: 1 };
        let value: serde_json::Value = serde_json::from_str(&consume_json("r", &info(0, 1), &page)).unwrap();
        let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["events", "min_offset", "next_offset"]);
    }
}
