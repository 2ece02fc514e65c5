//! Where a failed record goes: the next retry rung or the dead-letter topic.
//!
//! The router turns (raw record, error) into one [`OutputRecord`] that keeps the original key,
//! value and headers and adds the [failure headers](crate::headers). It is pure: the lane
//! produces the record and commits the source offset only once it is acknowledged, so a
//! failed record is never lost and never blocks its partition.

use std::collections::HashMap;

use crate::headers::{self, FailureInfo};
use crate::processor::{ErrorClass, ProcessError};
use crate::record::{OutputRecord, RawRecord};
use crate::retry::{RetryPolicy, dead_letter_topic};

/// Where a failed record was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To a retry rung.
    Retry,
    /// To the dead-letter topic.
    DeadLetter,
}

/// A failed record, routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The retry or dead-letter record to produce.
    pub record: OutputRecord,
    /// Which of the two it is.
    pub route: Route,
    /// The class written into its headers.
    pub class: ErrorClass,
    /// Attempts made so far, this one included.
    pub attempt: u32,
}

/// Routes failures of the source topics of one consumer group.
#[derive(Debug, Clone)]
pub struct FailureRouter {
    group: String,
    instance: String,
    policies: HashMap<String, RetryPolicy>,
    rung_sources: HashMap<String, String>,
}

impl FailureRouter {
    /// A router for `group`/`instance` with the retry policy of each source topic.
    pub fn new(
        group: impl Into<String>,
        instance: impl Into<String>,
        policies: impl IntoIterator<Item = (String, RetryPolicy)>,
    ) -> Self {
        let policies: HashMap<String, RetryPolicy> = policies.into_iter().collect();
        let rung_sources = policies
            .iter()
            .flat_map(|(source, p)| {
                p.rung_topics(source)
                    .into_iter()
                    .map(move |(rung, _)| (rung, source.clone()))
            })
            .collect();
        Self {
            group: group.into(),
            instance: instance.into(),
            policies,
            rung_sources,
        }
    }

    /// Every topic the group consumes: its sources and all their retry rungs.
    pub fn subscription(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.policies.keys().cloned().collect();
        topics.extend(self.rung_sources.keys().cloned());
        topics.sort();
        topics
    }

    /// Every source topic with its retry policy.
    pub fn sources(&self) -> impl Iterator<Item = (&String, &RetryPolicy)> {
        self.policies.iter()
    }

    /// Whether `topic` is a retry rung (its records wait for their due time).
    pub fn is_rung(&self, topic: &str) -> bool {
        self.rung_sources.contains_key(topic)
    }

    /// The source topic a record belongs to (itself, or the source of its rung).
    pub fn source_of<'a>(&'a self, topic: &'a str) -> &'a str {
        self.rung_sources
            .get(topic)
            .map(String::as_str)
            .unwrap_or(topic)
    }

    /// The retry policy of a source topic.
    pub fn policy(&self, source: &str) -> RetryPolicy {
        self.policies.get(source).cloned().unwrap_or_default()
    }

    /// Routes one failed record at time `now_ms` (epoch ms).
    pub fn route(&self, raw: &RawRecord, error: &ProcessError, now_ms: i64) -> Routed {
        let source = self.source_of(&raw.topic).to_owned();
        let policy = self.policy(&source);
        // Failure headers are trusted only on records read from our own rungs; anything else
        // is a fresh record, whatever its headers say.
        let prior = if self.is_rung(&raw.topic) {
            headers::parse_failure(&raw.headers)
        } else {
            None
        };
        let attempt = prior.as_ref().map_or(0, |p| p.attempt) + 1;
        let (route, class, topic, due_at) = match error.class() {
            ErrorClass::Transient if attempt < policy.attempts => {
                let delay = policy.delay(attempt);
                (
                    Route::Retry,
                    ErrorClass::Transient,
                    policy.rung_topic(&source, attempt),
                    Some(now_ms + delay.as_millis() as i64),
                )
            }
            ErrorClass::Transient => (
                Route::DeadLetter,
                ErrorClass::RetriesExhausted,
                dead_letter_topic(&source),
                None,
            ),
            class => (Route::DeadLetter, class, dead_letter_topic(&source), None),
        };
        let info = FailureInfo {
            original_topic: prior
                .as_ref()
                .map_or_else(|| raw.topic.to_string(), |p| p.original_topic.clone()),
            original_partition: prior
                .as_ref()
                .map_or(raw.partition, |p| p.original_partition),
            original_offset: prior.as_ref().map_or(raw.offset, |p| p.original_offset),
            original_timestamp: prior
                .as_ref()
                .map_or(raw.timestamp, |p| p.original_timestamp),
            attempt,
            due_at,
            error_class: class,
            error_message: error.message().to_owned(),
            group: self.group.clone(),
            instance: self.instance.clone(),
            first_failure_at: prior.as_ref().map_or(now_ms, |p| p.first_failure_at),
        };
        Routed {
            record: OutputRecord {
                topic,
                key: raw.key.clone(),
                value: raw.value.clone(),
                headers: headers::with_failure(&raw.headers, &info),
                partition: Some(raw.partition),
            },
            route,
            class,
            attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::parse_failure;

    fn router() -> FailureRouter {
        FailureRouter::new("g", "i-1", [("orders".to_owned(), RetryPolicy::default())])
    }

    fn raw(topic: &str, headers: crate::record::Headers) -> RawRecord {
        RawRecord {
            topic: topic.into(),
            partition: 3,
            offset: 17,
            timestamp: Some(1000),
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers,
        }
    }

    #[test]
    fn subscription_covers_sources_and_rungs() {
        assert_eq!(
            router().subscription(),
            vec!["orders", "orders-retry-1000", "orders-retry-2000"]
        );
    }

    #[test]
    fn transient_failures_climb_the_ladder_then_exhaust() {
        let r = router();
        let err = ProcessError::Transient("timeout".into());
        let first = r.route(&raw("orders", vec![]), &err, 10_000);
        assert_eq!(first.route, Route::Retry);
        assert_eq!(first.record.topic, "orders-retry-1000");
        assert_eq!(first.record.partition, Some(3));
        let h = parse_failure(&first.record.headers).unwrap();
        assert_eq!(
            (h.attempt, h.due_at, h.first_failure_at),
            (1, Some(11_000), 10_000)
        );

        let mut again = raw("orders-retry-1000", first.record.headers.clone());
        again.offset = 5;
        let second = r.route(&again, &err, 12_000);
        assert_eq!(second.record.topic, "orders-retry-2000");
        let h = parse_failure(&second.record.headers).unwrap();
        assert_eq!(h.attempt, 2);
        assert_eq!(
            (h.original_topic.as_str(), h.original_offset),
            ("orders", 17)
        );
        assert_eq!(h.first_failure_at, 10_000);
        assert_eq!(h.due_at, Some(14_000));

        let third = r.route(
            &raw("orders-retry-2000", second.record.headers),
            &err,
            15_000,
        );
        assert_eq!(third.route, Route::DeadLetter);
        assert_eq!(third.record.topic, "orders-dlt");
        assert_eq!(third.class, ErrorClass::RetriesExhausted);
        assert_eq!(third.attempt, 3);
        assert_eq!(parse_failure(&third.record.headers).unwrap().due_at, None);
    }

    #[test]
    fn permanent_and_malformed_go_straight_to_the_dead_letter_topic() {
        let r = router();
        for err in [
            ProcessError::Permanent("rule".into()),
            ProcessError::Malformed("bytes".into()),
        ] {
            let routed = r.route(&raw("orders", vec![]), &err, 1);
            assert_eq!(routed.record.topic, "orders-dlt");
            assert_eq!(routed.class, err.class());
            assert_eq!(routed.record.key.as_deref(), Some(&b"k"[..]));
            assert_eq!(routed.record.value.as_deref(), Some(&b"v"[..]));
        }
    }

    #[test]
    fn failure_headers_on_a_source_record_are_not_trusted() {
        let r = router();
        let forged = crate::headers::with_failure(
            &vec![],
            &FailureInfo {
                original_topic: "elsewhere".into(),
                original_partition: 0,
                original_offset: 0,
                original_timestamp: None,
                attempt: 9,
                due_at: None,
                error_class: ErrorClass::Transient,
                error_message: String::new(),
                group: String::new(),
                instance: String::new(),
                first_failure_at: 0,
            },
        );
        let routed = r.route(
            &raw("orders", forged),
            &ProcessError::Transient("t".into()),
            5,
        );
        assert_eq!(routed.attempt, 1);
        assert_eq!(routed.record.topic, "orders-retry-1000");
    }
}
