//! The header contract of retry and dead-letter records.
//!
//! A retry or dead-letter record keeps the original key, value and headers, and carries UTF-8
//! headers under one prefix, `streamfleet.`, that say where it came from and why it failed.
//! A reader needs nothing else to reconstruct the record's history:
//!
//! | header                          | value                                                     |
//! |---------------------------------|-----------------------------------------------------------|
//! | `streamfleet.original.topic`    | topic the record was first consumed from                  |
//! | `streamfleet.original.partition`| its partition                                             |
//! | `streamfleet.original.offset`   | its offset                                                |
//! | `streamfleet.original.timestamp`| its timestamp, epoch milliseconds (absent if it had none) |
//! | `streamfleet.attempt`           | attempts made so far (1 after the first failure)          |
//! | `streamfleet.due.at`            | retry records: not to be processed before, epoch ms       |
//! | `streamfleet.error.class`       | `transient`, `permanent`, `malformed`, `retries-exhausted`|
//! | `streamfleet.error.message`     | the error, at most [`MAX_ERROR_MESSAGE_BYTES`] bytes      |
//! | `streamfleet.group`             | consumer group that failed it                             |
//! | `streamfleet.instance`          | worker instance that failed it                            |
//! | `streamfleet.first.failure.at`  | time of the first failure, epoch milliseconds             |
//!
//! Records republished by `dlq replay` carry `streamfleet.replay.source`
//! (`<topic>/<partition>/<offset>` of the dead-letter record) and `streamfleet.replayed.at`
//! instead of the failure headers, so they start again at attempt 1.

use crate::processor::ErrorClass;
use crate::record::{Headers, header};

/// Prefix of every header the runtime writes.
pub const PREFIX: &str = "streamfleet.";
/// Topic the record was first consumed from.
pub const ORIGINAL_TOPIC: &str = "streamfleet.original.topic";
/// Partition the record was first consumed from.
pub const ORIGINAL_PARTITION: &str = "streamfleet.original.partition";
/// Offset the record had in its original topic.
pub const ORIGINAL_OFFSET: &str = "streamfleet.original.offset";
/// Timestamp the record had in its original topic (epoch ms).
pub const ORIGINAL_TIMESTAMP: &str = "streamfleet.original.timestamp";
/// Attempts made so far.
pub const ATTEMPT: &str = "streamfleet.attempt";
/// Earliest time a retry record may be processed (epoch ms).
pub const DUE_AT: &str = "streamfleet.due.at";
/// Error class.
pub const ERROR_CLASS: &str = "streamfleet.error.class";
/// Error message, truncated.
pub const ERROR_MESSAGE: &str = "streamfleet.error.message";
/// Consumer group that failed the record.
pub const GROUP: &str = "streamfleet.group";
/// Worker instance that failed the record.
pub const INSTANCE: &str = "streamfleet.instance";
/// Time of the first failure (epoch ms).
pub const FIRST_FAILURE_AT: &str = "streamfleet.first.failure.at";
/// Dead-letter record a replayed record came from (`topic/partition/offset`).
pub const REPLAY_SOURCE: &str = "streamfleet.replay.source";
/// When a replayed record was republished (epoch ms).
pub const REPLAYED_AT: &str = "streamfleet.replayed.at";

/// Longest error message kept, in bytes of UTF-8; longer ones are cut at a character
/// boundary and end with [`TRUNCATION_MARK`].
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Appended to a truncated error message (counted in the limit).
pub const TRUNCATION_MARK: &str = "…[truncated]";

/// Everything the failure headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureInfo {
    /// Topic the record was first consumed from.
    pub original_topic: String,
    /// Its partition.
    pub original_partition: i32,
    /// Its offset.
    pub original_offset: i64,
    /// Its timestamp (epoch ms).
    pub original_timestamp: Option<i64>,
    /// Attempts made so far.
    pub attempt: u32,
    /// Retry records: earliest processing time (epoch ms).
    pub due_at: Option<i64>,
    /// Why it failed.
    pub error_class: ErrorClass,
    /// The error message (already truncated).
    pub error_message: String,
    /// Consumer group.
    pub group: String,
    /// Worker instance.
    pub instance: String,
    /// Time of the first failure (epoch ms).
    pub first_failure_at: i64,
}

/// Cuts an error message to [`MAX_ERROR_MESSAGE_BYTES`] at a character boundary.
pub fn truncate_message(message: &str) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut cut = MAX_ERROR_MESSAGE_BYTES - TRUNCATION_MARK.len();
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATION_MARK}", &message[..cut])
}

/// The headers without any `streamfleet.` header: the record's own headers.
pub fn user_headers(headers: &Headers) -> Headers {
    headers
        .iter()
        .filter(|(k, _)| !k.starts_with(PREFIX))
        .cloned()
        .collect()
}

/// The record's own headers followed by the failure headers of `info`.
pub fn with_failure(headers: &Headers, info: &FailureInfo) -> Headers {
    let mut out = user_headers(headers);
    let mut put = |k: &str, v: String| out.push((k.to_owned(), v.into_bytes()));
    put(ORIGINAL_TOPIC, info.original_topic.clone());
    put(ORIGINAL_PARTITION, info.original_partition.to_string());
    put(ORIGINAL_OFFSET, info.original_offset.to_string());
    if let Some(ts) = info.original_timestamp {
        put(ORIGINAL_TIMESTAMP, ts.to_string());
    }
    put(ATTEMPT, info.attempt.to_string());
    if let Some(due) = info.due_at {
        put(DUE_AT, due.to_string());
    }
    put(ERROR_CLASS, info.error_class.as_str().to_owned());
    put(ERROR_MESSAGE, truncate_message(&info.error_message));
    put(GROUP, info.group.clone());
    put(INSTANCE, info.instance.clone());
    put(FIRST_FAILURE_AT, info.first_failure_at.to_string());
    out
}

fn text<'h>(headers: &'h Headers, key: &str) -> Option<&'h str> {
    header(headers, key).and_then(|v| std::str::from_utf8(v).ok())
}

fn number<T: std::str::FromStr>(headers: &Headers, key: &str) -> Option<T> {
    text(headers, key).and_then(|v| v.parse().ok())
}

/// Reads the failure headers back; `None` when the record carries none (or they are
/// incomplete: a record is either a complete retry/dead-letter record or a fresh one).
pub fn parse_failure(headers: &Headers) -> Option<FailureInfo> {
    Some(FailureInfo {
        original_topic: text(headers, ORIGINAL_TOPIC)?.to_owned(),
        original_partition: number(headers, ORIGINAL_PARTITION)?,
        original_offset: number(headers, ORIGINAL_OFFSET)?,
        original_timestamp: number(headers, ORIGINAL_TIMESTAMP),
        attempt: number(headers, ATTEMPT)?,
        due_at: number(headers, DUE_AT),
        error_class: ErrorClass::parse(text(headers, ERROR_CLASS)?)?,
        error_message: text(headers, ERROR_MESSAGE).unwrap_or_default().to_owned(),
        group: text(headers, GROUP).unwrap_or_default().to_owned(),
        instance: text(headers, INSTANCE).unwrap_or_default().to_owned(),
        first_failure_at: number(headers, FIRST_FAILURE_AT)?,
    })
}

/// The due time of a retry record, if it has one.
pub fn due_at(headers: &Headers) -> Option<i64> {
    number(headers, DUE_AT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info() -> FailureInfo {
        FailureInfo {
            original_topic: "booking-events".into(),
            original_partition: 7,
            original_offset: 42,
            original_timestamp: Some(1_700_000_000_000),
            attempt: 2,
            due_at: Some(1_700_000_002_000),
            error_class: ErrorClass::Transient,
            error_message: "gateway timeout".into(),
            group: "streamfleet-booking".into(),
            instance: "pod-1".into(),
            first_failure_at: 1_700_000_001_000,
        }
    }

    #[test]
    fn failure_headers_round_trip_and_keep_user_headers_first() {
        let user: Headers = vec![("traceparent".into(), b"00-abc".to_vec())];
        let h = with_failure(&user, &info());
        assert_eq!(h[0], ("traceparent".to_owned(), b"00-abc".to_vec()));
        assert!(h[1..].iter().all(|(k, _)| k.starts_with(PREFIX)));
        assert_eq!(parse_failure(&h), Some(info()));
    }

    #[test]
    fn rewriting_failure_headers_replaces_the_old_ones() {
        let first = with_failure(&vec![], &info());
        let mut second = info();
        second.attempt = 3;
        second.error_class = ErrorClass::RetriesExhausted;
        second.due_at = None;
        let h = with_failure(&first, &second);
        assert_eq!(h.iter().filter(|(k, _)| k == ATTEMPT).count(), 1);
        assert_eq!(parse_failure(&h), Some(second));
    }

    #[test]
    fn a_record_without_failure_headers_parses_to_none() {
        assert_eq!(parse_failure(&vec![("x".into(), b"1".to_vec())]), None);
    }

    proptest! {
        #[test]
        fn truncation_keeps_valid_utf8_within_the_limit(s in "\\PC{0,2000}") {
            let t = truncate_message(&s);
            prop_assert!(t.len() <= MAX_ERROR_MESSAGE_BYTES);
            if s.len() <= MAX_ERROR_MESSAGE_BYTES {
                prop_assert_eq!(t, s);
            } else {
                prop_assert!(t.ends_with(TRUNCATION_MARK));
                prop_assert!(s.starts_with(t.trim_end_matches(TRUNCATION_MARK)));
            }
        }
    }
}
