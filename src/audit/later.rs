//! A field of a record that another producer publishes after the record itself: the shadow
//! policy set's decision, which may come in after the response went out. The record's
//! producer queues it with a [`Later`]; the other producer publishes the field through the
//! matching [`LaterField`]; the writer thread writes the record once the field is in, with
//! it (or without it, when the producer publishes nothing or goes away).
//!
//! Neither producer waits for the other, and neither writes the other's part: the join is the
//! writer's, which also bounds how long a record may wait at exit.

use serde::Serialize;
use tokio::sync::oneshot;

/// The field a queued record waits for.
pub struct Later {
    name: &'static str,
    value: oneshot::Receiver<Option<serde_json::Value>>,
}

/// Where the other producer publishes the field.
pub struct LaterField {
    value: oneshot::Sender<Option<serde_json::Value>>,
}

/// A field `name`, to be published later.
pub fn later(name: &'static str) -> (Later, LaterField) {
    let (tx, rx) = oneshot::channel();
    (Later { name, value: rx }, LaterField { value: tx })
}

impl LaterField {
    /// Publish the field's value; `None` leaves the field out of the record.
    pub fn publish(self, value: Option<impl Serialize>) {
        let json = value.and_then(|v| serde_json::to_value(v).ok());
        let _ = self.value.send(json);
    }
}

impl Later {
    /// The field's value once it is published (`None`: left out, or its producer went
    /// away). For a producer's own tests; the writer never waits.
    pub async fn wait(self) -> Option<serde_json::Value> {
        self.value.await.ok().flatten()
    }
}

/// Whether the fields are in yet.
pub(super) enum Polled {
    /// The record, with each field that was published.
    Ready(Vec<u8>),
    /// Not yet: the record with the fields in so far, and the waits left, given back.
    Waiting(Vec<u8>, Vec<Later>),
}

/// `record` (one JSON object, no newline) with each of `fields` that is in; the others still
/// waited for. A record may wait for several producers (the shadow set, a response's
/// filtering), each publishing its own field.
pub(super) fn poll(fields: Vec<Later>, mut record: Vec<u8>) -> Polled {
    let mut waiting = Vec::new();
    for mut field in fields {
        match field.value.try_recv() {
            Ok(value) => record = with_field(record, field.name, value),
            Err(oneshot::error::TryRecvError::Empty) => waiting.push(field),
            // The producer went away without a word: the record goes without the field.
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
    }
    match waiting.is_empty() {
        true => Polled::Ready(record),
        false => Polled::Waiting(record, waiting),
    }
}

/// `record` with `"name": value` added before its closing brace.
pub(super) fn with_field(
    mut record: Vec<u8>,
    name: &str,
    value: Option<serde_json::Value>,
) -> Vec<u8> {
    let Some(value) = value else {
        return record;
    };
    let (Some(b'}'), Ok(value), Ok(name)) = (
        record.last(),
        serde_json::to_vec(&value),
        serde_json::to_vec(name),
    ) else {
        return record;
    };
    record.pop();
    if record.len() > 1 {
        record.push(b',');
    }
    record.extend_from_slice(&name);
    record.push(b':');
    record.extend_from_slice(&value);
    record.push(b'}');
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_field_joins_its_record_and_none_leaves_it_out() {
        let (later, field) = later("shadow");
        let Polled::Waiting(record, later) = poll(vec![later], br#"{"a":1}"#.to_vec()) else {
            panic!("ready before anything was published");
        };
        field.publish(Some(serde_json::json!({"allowed": false})));
        let Polled::Ready(joined) = poll(later, record) else {
            panic!("not ready once published");
        };
        assert_eq!(joined, br#"{"a":1,"shadow":{"allowed":false}}"#);

        let (later, field) = self::later("shadow");
        field.publish(None::<()>);
        let Polled::Ready(plain) = poll(vec![later], br#"{"a":1}"#.to_vec()) else {
            panic!("not ready");
        };
        assert_eq!(plain, br#"{"a":1}"#);

        let (later, field) = self::later("shadow");
        drop(field);
        let Polled::Ready(gone) = poll(vec![later], br#"{"a":1}"#.to_vec()) else {
            panic!("a producer that went away holds its record");
        };
        assert_eq!(gone, br#"{"a":1}"#);
    }

    #[test]
    fn a_record_waits_for_each_of_its_fields() {
        let (shadow, shadow_field) = later("shadow");
        let (tools, tools_field) = later("tools_list");
        tools_field.publish(Some(serde_json::json!({"hidden": 1})));
        let Polled::Waiting(record, left) = poll(vec![shadow, tools], br#"{"a":1}"#.to_vec())
        else {
            panic!("ready with the shadow field still out");
        };
        assert_eq!(left.len(), 1);
        shadow_field.publish(Some(false));
        let Polled::Ready(joined) = poll(left, record) else {
            panic!("not ready once both are in");
        };
        assert_eq!(
            joined,
            br#"{"a":1,"tools_list":{"hidden":1},"shadow":false}"#
        );
    }
}
