//! The retry ladder: how many attempts a record gets, how long each retry waits, and which
//! topics hold the waiting records.
//!
//! A transient failure of attempt *n* sends the record to rung *n*, the topic
//! `<source>-retry-<delay ms>`, with a due time of now + delay; the same worker consumes the
//! rung and retries the record no earlier than its due time. When the attempts are used up the
//! record goes to `<source>-dlt`. The names are the ones Spring Kafka users know; rungs whose
//! delay is capped by `max_backoff` share one topic.

use std::time::Duration;

use serde::Deserialize;

use crate::durations;

/// Retry policy of one source topic (`retry:` in `topics.yaml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts including the first one. `1` disables retries: transient failures are
    /// dead-lettered at once.
    #[serde(default = "RetryPolicy::default_attempts")]
    pub attempts: u32,
    /// Delay before the first retry (`1s`, `500ms`, or milliseconds as a number).
    #[serde(
        default = "RetryPolicy::default_initial_backoff",
        deserialize_with = "durations::deserialize"
    )]
    pub initial_backoff: Duration,
    /// Factor applied to the delay of each further retry.
    #[serde(default = "RetryPolicy::default_multiplier")]
    pub multiplier: f64,
    /// Upper bound of any single delay.
    #[serde(
        default = "RetryPolicy::default_max_backoff",
        deserialize_with = "durations::deserialize"
    )]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: Self::default_attempts(),
            initial_backoff: Self::default_initial_backoff(),
            multiplier: Self::default_multiplier(),
            max_backoff: Self::default_max_backoff(),
        }
    }
}

impl RetryPolicy {
    const fn default_attempts() -> u32 {
        3
    }
    const fn default_initial_backoff() -> Duration {
        Duration::from_millis(1000)
    }
    const fn default_multiplier() -> f64 {
        2.0
    }
    const fn default_max_backoff() -> Duration {
        Duration::from_secs(30)
    }

    /// Checks the policy; the error names the offending field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.attempts == 0 {
            return Err(("attempts", "must be at least 1 (the first attempt)".into()));
        }
        if self.initial_backoff.is_zero() {
            return Err(("initial_backoff", "must be greater than zero".into()));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(("multiplier", "must be a finite number >= 1.0".into()));
        }
        if self.max_backoff < self.initial_backoff {
            return Err((
                "max_backoff",
                "must not be smaller than initial_backoff".into(),
            ));
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1-based): `initial × multiplier^(retry-1)`,
    /// capped at `max_backoff`, in whole milliseconds.
    pub fn delay(&self, retry: u32) -> Duration {
        let ms = self.initial_backoff.as_millis() as f64
            * self.multiplier.powi(retry.saturating_sub(1) as i32);
        let capped = ms.min(self.max_backoff.as_millis() as f64);
        Duration::from_millis(capped.round() as u64)
    }

    /// How long a record can spend in the retry path when every attempt fails: the sum of
    /// the delays before each retry.
    pub fn schedule(&self) -> Duration {
        (1..self.attempts).map(|r| self.delay(r)).sum()
    }

    /// The retry topic for retry number `retry` (1-based) of `source`.
    pub fn rung_topic(&self, source: &str, retry: u32) -> String {
        format!("{source}-retry-{}", self.delay(retry).as_millis())
    }

    /// Every distinct retry topic of `source`, shortest delay first.
    pub fn rung_topics(&self, source: &str) -> Vec<(String, Duration)> {
        let mut rungs: Vec<(String, Duration)> = Vec::new();
        for retry in 1..self.attempts {
            let topic = self.rung_topic(source, retry);
            if rungs.last().map(|(t, _)| t) != Some(&topic) {
                rungs.push((topic, self.delay(retry)));
            }
        }
        rungs
    }
}

/// The dead-letter topic of a source topic.
pub fn dead_letter_topic(source: &str) -> String {
    format!("{source}-dlt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ladder_is_two_rungs_then_the_dead_letter_topic() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.rung_topics("booking-events"),
            vec![
                (
                    "booking-events-retry-1000".to_owned(),
                    Duration::from_secs(1)
                ),
                (
                    "booking-events-retry-2000".to_owned(),
                    Duration::from_secs(2)
                ),
            ]
        );
        assert_eq!(dead_letter_topic("booking-events"), "booking-events-dlt");
        assert_eq!(p.schedule(), Duration::from_secs(3));
    }

    #[test]
    fn capped_delays_share_one_topic() {
        let p = RetryPolicy {
            attempts: 6,
            initial_backoff: Duration::from_millis(500),
            multiplier: 3.0,
            max_backoff: Duration::from_secs(5),
        };
        let delays: Vec<u64> = (1..6).map(|r| p.delay(r).as_millis() as u64).collect();
        assert_eq!(delays, vec![500, 1500, 4500, 5000, 5000]);
        let topics: Vec<String> = p.rung_topics("t").into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            topics,
            vec![
                "t-retry-500",
                "t-retry-1500",
                "t-retry-4500",
                "t-retry-5000"
            ]
        );
        assert_eq!(p.rung_topic("t", 5), "t-retry-5000");
    }

    #[test]
    fn one_attempt_means_no_rungs() {
        let p = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        assert!(p.rung_topics("t").is_empty());
    }

    #[test]
    fn validation_names_the_field() {
        let p = RetryPolicy {
            multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert_eq!(p.validate().unwrap_err().0, "multiplier");
        let p = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.validate().unwrap_err().0, "attempts");
    }
}
