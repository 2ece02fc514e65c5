//! Exactly-once: the transactions of a worker, one open at a time per transaction group.
//!
//! ```text
//!   lanes of group g ──(g's read gate)──► process record, enqueue outputs + retry/dead-letter
//!                                         + changelog on g's producer; committable = offset + 1
//!   fetcher, for each group whose transaction is due, one group at a time:               ─┐
//!     (g's write gate: no record of g in flight) ─────────────────────────────────────────┘
//!     send_offsets_to_transaction(g's committable offsets, group metadata)
//!     await g's deliveries ─► commit_transaction ─► begin_transaction
//! ```
//!
//! A worker has `--transactional-producers` producers (2 by default), each with its own
//! transactional id ([`crate::config::WorkerConfig::transactional_id`]) and its own
//! transaction; partition `p` of every source (and of its retry rungs and changelog) belongs
//! to group `p mod n`. The gate makes a commit a cut of its group: every output enqueued
//! before it belongs to a record whose offset the same transaction commits, and no record of
//! the group starts while it commits. The other groups' lanes go on meanwhile, so a commit
//! (its cut, the last deliveries and two round trips to the coordinator, a few milliseconds
//! every 100 ms) does not stop the whole worker. Order per key holds: a key's records come from
//! one source partition, whose outputs all go through one producer.
//!
//! Errors follow librdkafka's classes:
//! - retriable: the call is retried (with a backoff, a few times, then treated as abortable);
//! - abortable: the transaction is aborted and [`Finished::Aborted`] returned; the caller
//!   rewinds every partition of the group to its last committed offset and drops its
//!   uncommitted state (the other groups are not touched);
//! - fatal (a fenced producer among them): [`Fatal`], for every group from then on; the worker
//!   stops and exits non-zero, and its orchestrator restarts it.
//!
//! Every commit, abort and fencing is counted (`streamfleet_transactions_total`,
//! `streamfleet_transaction_duration_seconds`, `streamfleet_producer_fenced_total`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;

use crate::events;
use crate::metrics::Metrics;
use crate::producer::OutputProducer;
use std::sync::Arc;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: u32 = 8;

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Committed; a new transaction is open.
    Committed,
    /// Aborted (why); a new transaction is open; the caller must rewind.
    Aborted(String),
    /// Nothing to commit.
    Empty,
}

/// The worker cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fatal(pub String);

/// The first fatal error of a worker's transactional producers, shared by all of them.
pub(crate) type SharedFailure = Arc<Mutex<Option<Fatal>>>;

enum Class {
    Retry,
    Abort,
    Fatal,
}

fn is_fenced(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        )
    )
}

/// One transaction group's open transaction and the gate around it.
pub(crate) struct Transactions {
    producer: Arc<OutputProducer>,
    /// Lanes hold it shared while a record is in flight; a commit holds it exclusively.
    pub gate: tokio::sync::RwLock<()>,
    records: AtomicU64,
    opened: Mutex<Option<Instant>>,
    worker: String,
    metrics: Metrics,
    fault_abort_probability: f64,
    rng: AtomicU64,
    /// Set by the first fatal error of any of the worker's transactional producers; every
    /// later call of each repeats it (a fenced instance is a zombie with all its producers,
    /// and a worker with a fatal producer stops, leaving its open transactions to be aborted
    /// by its successor).
    failed: SharedFailure,
    /// A lane found the transaction failed: abort it at the next opportunity.
    abort_requested: std::sync::atomic::AtomicBool,
    /// When the transactional call in progress began (epoch ms); 0 when none is.
    call_started: std::sync::atomic::AtomicI64,
}

/// A transactional call this long is nudged (see [`Transactions::watch`]).
const NUDGE_AFTER: Duration = Duration::from_secs(3);

/// Between two nudges of one call: longer than the transactional producer's
/// `connections.max.idle.ms` (`clients::TRANSACTIONAL_PRODUCER_DEFAULTS`), so that its idle
/// connections close between them; each close and each reconnection is a broker state change
/// that makes librdkafka look for the coordinator again.
const NUDGE_EVERY: Duration = Duration::from_secs(7);

/// A transactional call this long is wedged in librdkafka: twice its own timeout, and past
/// the broker's default transaction timeout, so the transaction is lost anyway.
const WEDGED_AFTER: Duration = Duration::from_secs(2 * CALL_TIMEOUT.as_secs());

/// The exit code of a worker whose transactional call hung in librdkafka past
/// [`WEDGED_AFTER`] (EX_TEMPFAIL): restarting the process is the only way out, and a safe one,
/// since its successor aborts the open transaction when it takes the same transactional id.
pub const EXIT_WEDGED: i32 = 75;

impl Transactions {
    pub fn new(
        producer: Arc<OutputProducer>,
        worker: &str,
        metrics: Metrics,
        fault_abort_probability: f64,
        failed: SharedFailure,
    ) -> Self {
        Self {
            producer,
            gate: tokio::sync::RwLock::new(()),
            records: AtomicU64::new(0),
            opened: Mutex::new(None),
            worker: worker.to_owned(),
            metrics,
            fault_abort_probability,
            rng: AtomicU64::new(crate::now_ms() as u64 | 1),
            failed,
            abort_requested: std::sync::atomic::AtomicBool::new(false),
            call_started: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Watches this group's transactional calls from a thread of its own, for as long as the
    /// transactions exist.
    ///
    /// `send_offsets_to_transaction` needs the group coordinator, and librdkafka looks for a
    /// new one only when one of the producer's broker connections comes up or goes down: when
    /// the coordinator dies during the call and the connections settle before it is back, the
    /// call waits forever, its timeout notwithstanding (confluentinc/librdkafka#5456 and
    /// #5511, open in 2.12). Seen here: a worker frozen for minutes after the coordinator's
    /// node was killed and restarted, in about one drill in three. Two things make those
    /// state changes happen while a call waits:
    /// - after [`NUDGE_AFTER`], and then every [`NUDGE_EVERY`], a ListGroups request to every
    ///   broker makes the producer connect to those it is not connected to;
    /// - a transactional producer closes connections idle for 5 s
    ///   (`clients::TRANSACTIONAL_PRODUCER_DEFAULTS`), and a producer stuck in the call sends
    ///   nothing, so between two nudges its connections close, and the next nudge reopens
    ///   them.
    ///
    /// With the nudge alone about one leader drill in seven still hung past a minute; with
    /// both, in 20 leader drills every waiting call returned, after 4 to 21 s. A call still
    /// waiting after [`WEDGED_AFTER`] cannot be cancelled and its thread cannot be freed: the
    /// worker then exits with [`EXIT_WEDGED`] for its orchestrator to restart it. Nothing is
    /// lost: the transaction was never committed, and the restarted instance aborts it and
    /// resumes from the committed offsets.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("sf-txn-watch".into())
            .spawn(move || {
                let mut nudged_call = 0;
                let mut last_nudge = 0;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(txns) = weak.upgrade() else { return };
                    let started = txns.call_started.load(Ordering::Acquire);
                    let waited = crate::now_ms() - started;
                    if started == 0 || waited < NUDGE_AFTER.as_millis() as i64 {
                        continue;
                    }
                    if waited > WEDGED_AFTER.as_millis() as i64 {
                        events::TransactionCallWedged {
                            worker: &txns.worker,
                            waited_ms: waited,
                            exit_code: EXIT_WEDGED,
                        }
                        .emit();
                        std::process::exit(EXIT_WEDGED);
                    }
                    if nudged_call != started {
                        nudged_call = started;
                        events::TransactionCallWaiting {
                            worker: &txns.worker,
                            waited_ms: waited,
                        }
                        .emit();
                    } else if crate::now_ms() - last_nudge < NUDGE_EVERY.as_millis() as i64 {
                        continue;
                    }
                    last_nudge = crate::now_ms();
                    let _ = txns
                        .producer
                        .inner()
                        .client()
                        .fetch_group_list(None, Duration::from_secs(2));
                }
            });
        if let Err(e) = spawned {
            events::ThreadNotStarted {
                worker: &self.worker,
                thread: "sf-txn-watch",
                without: "a transaction call stuck on a lost coordinator may wait until the \
                          worker is restarted",
                error: &e,
            }
            .emit();
        }
    }

    /// Registers the transactional id (aborting what a predecessor with the same id left
    /// open, fencing it) and opens the first transaction.
    pub fn start(&self) -> Result<(), Fatal> {
        self.call("init_transactions", || {
            self.producer.inner().init_transactions(CALL_TIMEOUT)
        })
        .map_err(|e| Fatal(format!("cannot start transactions: {e}")))?;
        self.producer
            .inner()
            .begin_transaction()
            .map_err(|e| Fatal(format!("cannot begin a transaction: {e}")))
    }

    /// A record joined the open transaction.
    pub fn note_record(&self) {
        if self.records.fetch_add(1, Ordering::AcqRel) == 0 {
            self.opened
                .lock()
                .expect("txn lock")
                .get_or_insert_with(Instant::now);
        }
    }

    /// A lane could not enqueue into the failed transaction: abort it now.
    pub fn request_abort(&self) {
        self.abort_requested.store(true, Ordering::Release);
    }

    /// Whether the open transaction should commit (or abort) now.
    pub fn due(&self, interval: Duration, max_records: u64) -> bool {
        if self.abort_requested.load(Ordering::Acquire) {
            return true;
        }
        let n = self.records.load(Ordering::Acquire);
        n > 0
            && (n >= max_records
                || self
                    .opened
                    .lock()
                    .expect("txn lock")
                    .is_some_and(|t| t.elapsed() >= interval))
    }

    fn classify(&self, e: &KafkaError) -> Class {
        if self.producer.inner().client().fatal_error().is_some() {
            return Class::Fatal;
        }
        match e {
            KafkaError::Transaction(re) if re.is_fatal() => Class::Fatal,
            KafkaError::Transaction(re) if re.txn_requires_abort() => Class::Abort,
            KafkaError::Transaction(re) if re.is_retriable() => Class::Retry,
            _ if is_fenced(e.rdkafka_error_code()) => Class::Fatal,
            _ => Class::Abort,
        }
    }

    /// Runs a transactional call, retrying retriable errors.
    fn call(&self, what: &str, f: impl Fn() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1.. {
            let started = crate::now_ms().max(1);
            self.call_started.store(started, Ordering::Release);
            let result = f();
            self.call_started.store(0, Ordering::Release);
            let waited_ms = crate::now_ms() - started;
            if waited_ms >= NUDGE_AFTER.as_millis() as i64 {
                events::TransactionCallReturned {
                    worker: &self.worker,
                    call: what,
                    waited_ms,
                    ok: result.is_ok(),
                }
                .emit();
            }
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < RETRIES && matches!(self.classify(&e), Class::Retry) => {
                    events::TransactionCallRetried {
                        worker: &self.worker,
                        call: what,
                        attempt,
                        error: &e,
                    }
                    .emit(&self.metrics);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Waits until every record in flight is delivered (or failed), so that the commit finds
    /// nothing to flush. rust-rdkafka's `commit_transaction` flushes by polling in 100 ms
    /// steps, and its `poll` always waits out its timeout, so a commit with anything in flight
    /// took 100 ms however fast the broker answered. Here the delivery reports are served by
    /// the producer's own polling thread, and this only watches the count, in small steps;
    /// `flush(0)` also tells librdkafka to send what lingers at once. Gives up after the call
    /// timeout: `commit_transaction` then meets the stuck record and classifies its error.
    fn await_deliveries(&self) {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut pause = Duration::from_micros(50);
        while self.producer.inner().flush(Duration::ZERO).is_err() && Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    fn fatal(&self, e: &KafkaError) -> Fatal {
        self.metrics.transaction_error(&self.worker, "fatal");
        let fatal = self.classify_fatal(e);
        *self.failed.lock().expect("txn lock") = Some(fatal.clone());
        fatal
    }

    fn already_failed(&self) -> Result<(), Fatal> {
        match self.failed.lock().expect("txn lock").clone() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    fn classify_fatal(&self, e: &KafkaError) -> Fatal {
        let code = e.rdkafka_error_code();
        if is_fenced(code)
            || self
                .producer
                .inner()
                .client()
                .fatal_error()
                .is_some_and(|(c, _)| is_fenced(Some(c)))
        {
            self.metrics.fenced(&self.worker);
            return Fatal(format!(
                "transactional producer fenced ({e}): another instance uses this transactional id, or this one was \
                 a zombie; exiting"
            ));
        }
        Fatal(format!("fatal transaction error: {e}"))
    }

    fn injected_fault(&self) -> bool {
        if self.fault_abort_probability <= 0.0 {
            return false;
        }
        // xorshift64: good enough for fault injection, no shared generator needed.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= self.fault_abort_probability
    }

    /// Ends the open transaction's bookkeeping: returns when it opened, counts no records.
    fn close_bookkeeping(&self) -> Instant {
        let started = self
            .opened
            .lock()
            .expect("txn lock")
            .take()
            .unwrap_or_else(Instant::now);
        self.records.store(0, Ordering::Release);
        started
    }

    /// Commits the open transaction with `offsets` (the caller holds the write gate).
    pub fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<Finished, Fatal> {
        self.already_failed()?;
        if self.abort_requested.swap(false, Ordering::AcqRel) {
            let started = self.close_bookkeeping();
            return self.abort_and_restart(
                started,
                "a record could not join the failed transaction".into(),
            );
        }
        if self.records.load(Ordering::Acquire) == 0 && offsets.count() == 0 {
            return Ok(Finished::Empty);
        }
        let started = self.close_bookkeeping();
        if self.injected_fault() {
            return self
                .abort_and_restart(started, "fault injected (--fault-abort-probability)".into());
        }
        if offsets.count() > 0 {
            let Some(cgm) = consumer.group_metadata() else {
                return Err(Fatal("the consumer has no group metadata".into()));
            };
            let sent = self.call("send_offsets_to_transaction", || {
                self.producer
                    .inner()
                    .send_offsets_to_transaction(offsets, &cgm, CALL_TIMEOUT)
            });
            if let Err(e) = sent {
                return match self.classify(&e) {
                    Class::Fatal => Err(self.fatal(&e)),
                    _ => self.abort_and_restart(started, format!("sending offsets failed: {e}")),
                };
            }
        }
        self.await_deliveries();
        match self.call("commit_transaction", || {
            self.producer.inner().commit_transaction(CALL_TIMEOUT)
        }) {
            Ok(()) => {
                self.metrics
                    .transaction(&self.worker, true, started.elapsed().as_secs_f64());
                self.producer
                    .inner()
                    .begin_transaction()
                    .map_err(|e| Fatal(format!("cannot begin a transaction: {e}")))?;
                Ok(Finished::Committed)
            }
            Err(e) => match self.classify(&e) {
                Class::Fatal => Err(self.fatal(&e)),
                _ => self.abort_and_restart(started, format!("commit failed: {e}")),
            },
        }
    }

    fn abort_and_restart(&self, started: Instant, reason: String) -> Result<Finished, Fatal> {
        events::TransactionAborting {
            worker: &self.worker,
            reason: &reason,
        }
        .emit(&self.metrics);
        match self.call("abort_transaction", || {
            self.producer.inner().abort_transaction(CALL_TIMEOUT)
        }) {
            Ok(()) => {}
            Err(e) => {
                return Err(match self.classify(&e) {
                    Class::Fatal => self.fatal(&e),
                    _ => Fatal(format!("cannot abort the transaction: {e}")),
                });
            }
        }
        self.metrics
            .transaction(&self.worker, false, started.elapsed().as_secs_f64());
        self.producer
            .inner()
            .begin_transaction()
            .map_err(|e| Fatal(format!("cannot begin a transaction: {e}")))?;
        Ok(Finished::Aborted(reason))
    }

    /// Aborts the open transaction (lost partitions); a new one is open afterwards.
    pub fn abort(&self, reason: &str) -> Result<Finished, Fatal> {
        self.already_failed()?;
        let started = self.close_bookkeeping();
        self.abort_and_restart(started, reason.to_owned())
    }
}
