//! A test processor for runtime semantics: echoes `key:seq` records to an output topic, and
//! obeys directives written after the sequence number.
//!
//! | value                     | what happens                                            |
//! |---------------------------|---------------------------------------------------------|
//! | `k:7`                     | emits `k:7` keyed `k`                                   |
//! | `k:7:transient-until:3`   | fails transiently on attempts 1 and 2, succeeds on 3    |
//! | `k:7:transient`           | always fails transiently                                |
//! | `k:7:permanent`           | fails permanently                                       |
//! | `k:7:panic`               | panics                                                  |
//! | `k:7:while-broken`        | fails permanently while `broken` is set                 |
//! | not UTF-8 / no `:`        | malformed                                               |
//!
//! `delay` slows every record down (to build backlogs). Processing times of attempts are
//! recorded so tests can check retries never run early.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamfleet_runtime::headers;
use streamfleet_runtime::{Outcome, OutputRecord, ProcessError, Processor, RawRecord, Record};

/// One processing of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The record value.
    pub value: String,
    /// Attempt number (1 for the first).
    pub attempt: u32,
    /// When it ran (epoch ms).
    pub at_ms: i64,
    /// Its due time, for retries (epoch ms).
    pub due_ms: Option<i64>,
    /// Topic it was read from.
    pub topic: String,
}

/// The echo processor.
#[derive(Clone)]
pub struct Echo {
    /// Where outputs go.
    pub output: String,
    /// Time spent on each record.
    pub delay: Duration,
    /// Every processing, in order.
    pub attempts: Arc<Mutex<Vec<Attempt>>>,
    /// A dependency that is down: `while-broken` records fail while it is set.
    pub broken: Arc<std::sync::atomic::AtomicBool>,
    /// Records of this partition wait (a consumer held back) until it is set to -1.
    pub hold_partition: Arc<std::sync::atomic::AtomicI32>,
}

impl Echo {
    /// Echo into `output`.
    pub fn new(output: &str) -> Self {
        Self {
            output: output.to_owned(),
            delay: Duration::ZERO,
            attempts: Arc::default(),
            broken: Arc::default(),
            hold_partition: Arc::new(std::sync::atomic::AtomicI32::new(-1)),
        }
    }

    /// The same, taking `delay` per record.
    pub fn slow(output: &str, delay: Duration) -> Self {
        Self {
            delay,
            ..Self::new(output)
        }
    }
}

/// A decoded echo record.
#[derive(Debug, Clone)]
pub struct EchoInput {
    /// Key part.
    pub key: String,
    /// Sequence part.
    pub seq: u64,
    /// Directive, if any.
    pub directive: Option<String>,
}

impl Processor for Echo {
    type Input = EchoInput;
    type State = ();

    fn decode(&self, record: &RawRecord) -> Result<EchoInput, ProcessError> {
        let text = record
            .value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| ProcessError::Malformed("value is not UTF-8".into()))?;
        let mut parts = text.splitn(3, ':');
        let key = parts.next().unwrap_or_default().to_owned();
        let seq = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ProcessError::Malformed(format!("no sequence number in {text:?}")))?;
        Ok(EchoInput {
            key,
            seq,
            directive: parts.next().map(str::to_owned),
        })
    }

    async fn process(
        &self,
        _: &mut (),
        record: &Record<'_, EchoInput>,
    ) -> Result<Outcome, ProcessError> {
        let failure = headers::parse_failure(record.headers());
        let attempt = failure.as_ref().map_or(0, |f| f.attempt) + 1;
        self.attempts.lock().expect("attempts").push(Attempt {
            value: String::from_utf8_lossy(record.raw.value.as_deref().unwrap_or_default())
                .into_owned(),
            attempt,
            at_ms: streamfleet_runtime::now_ms(),
            due_ms: failure.and_then(|f| f.due_at),
            topic: record.topic().to_owned(),
        });
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        while self
            .hold_partition
            .load(std::sync::atomic::Ordering::SeqCst)
            == record.partition()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let input = &record.value;
        match input.directive.as_deref() {
            Some("permanent") => return Err(ProcessError::Permanent("told to fail".into())),
            Some("transient") => return Err(ProcessError::Transient("told to fail".into())),
            Some("panic") => panic!("told to panic"),
            Some("while-broken") if self.broken.load(std::sync::atomic::Ordering::SeqCst) => {
                return Err(ProcessError::Permanent("the dependency is broken".into()));
            }
            Some(d) if d.starts_with("transient-until:") => {
                let until: u32 = d["transient-until:".len()..].parse().unwrap_or(u32::MAX);
                if attempt < until {
                    return Err(ProcessError::Transient(format!(
                        "attempt {attempt} of {until}"
                    )));
                }
            }
            _ => {}
        }
        Ok(Outcome::Emit(vec![OutputRecord::keyed(
            &self.output,
            input.key.as_bytes(),
            format!("{}:{}", input.key, input.seq).into_bytes(),
        )]))
    }
}

impl Echo {
    /// Every recorded processing of records whose value starts with `prefix`.
    pub fn attempts_of(&self, prefix: &str) -> Vec<Attempt> {
        self.attempts
            .lock()
            .expect("attempts")
            .iter()
            .filter(|a| a.value.starts_with(prefix))
            .cloned()
            .collect()
    }
}
