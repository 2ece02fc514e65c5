//! The benchmark's measurements: what a measured participant reports, how figures of several
//! runs are combined, and the performance targets, each a ratio measured in one run.
//!
//! ```text
//!  streamfleet-bench (orchestrator, not measured)
//!    ├─ dev-cluster child (embedded) or --brokers      the cluster
//!    ├─ seeds the input: N booking events (Avro, keyed by booking id)
//!    └─ per run, one participant child process, measured alone:
//!         streamfleet-bench participant   (our worker, in a mode)
//!         a peer command              (scripts/peers/copier.py, ...)
//! ```
//!
//! A participant reads its settings from the environment ([`Env`]: `BENCH_BOOTSTRAP`,
//! `BENCH_INPUT`, `BENCH_OUTPUT`, `BENCH_GROUP`, `BENCH_RECORDS`, `BENCH_COMMIT_INTERVAL_MS`,
//! `BENCH_MODE`), consumes the input from the beginning, and prints on stdout `ready` once its
//! partitions are assigned, `progress <n>` now and then, and finally `result <json>` (a
//! [`RunResult`]); our worker also reads `BENCH_TRANSACTIONAL_PRODUCERS`. Every participant
//! measures the same way:
//!
//! - the clock starts when the first input record is consumed and stops when the N-th record
//!   is done: its outputs acknowledged (at-least-once), or its transaction committed
//!   (exactly-once); the input ends at the N-th record, so an exactly-once participant
//!   commits as soon as it has processed all N (our worker stops cleanly, which commits),
//!   not when its commit interval is next up;
//! - CPU is user + system time of the whole process over that window (every librdkafka
//!   thread included); peak RSS is the process's high-water mark (`VmHWM`);
//! - end-to-end latency is, per record, its timestamp (set when it was produced) to the
//!   commit of its offset, exact (an HDR histogram, 3 significant digits), not bucketed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::BenchMode;

/// Environment variable names of the participant protocol.
pub mod vars {
    /// Bootstrap servers.
    pub const BOOTSTRAP: &str = "BENCH_BOOTSTRAP";
    /// Input topic.
    pub const INPUT: &str = "BENCH_INPUT";
    /// Output topic.
    pub const OUTPUT: &str = "BENCH_OUTPUT";
    /// Consumer group.
    pub const GROUP: &str = "BENCH_GROUP";
    /// Records to process before reporting.
    pub const RECORDS: &str = "BENCH_RECORDS";
    /// Commit interval in milliseconds.
    pub const COMMIT_INTERVAL_MS: &str = "BENCH_COMMIT_INTERVAL_MS";
    /// `passthrough`, `at-least-once` or `exactly-once`.
    pub const MODE: &str = "BENCH_MODE";
    /// When set, the consumer's `fetch.wait.max.ms` (the embedded cluster needs it, see
    /// [`super::MOCK_FETCH_WAIT_MAX_MS`]).
    pub const FETCH_WAIT_MAX_MS: &str = "BENCH_FETCH_WAIT_MAX_MS";
    /// Milliseconds after the first record before latencies count (connections, first
    /// fetches and buffers warming up); absent: 0.
    pub const WARMUP_MS: &str = "BENCH_WARMUP_MS";
    /// Exactly-once: the worker's transactional producers; absent: the worker's default.
    pub const TRANSACTIONAL_PRODUCERS: &str = "BENCH_TRANSACTIONAL_PRODUCERS";
    /// Exactly-once: the worker's `--commit-records` (a transaction commits once it holds
    /// this many records, or at the commit interval); absent: the worker's default.
    pub const COMMIT_RECORDS: &str = "BENCH_COMMIT_RECORDS";
}

/// `fetch.wait.max.ms` of every participant on the embedded cluster. librdkafka's mock
/// broker answers a fetch that finds no data only after the full `fetch.wait.max.ms`, and
/// never earlier when data arrives (a real broker answers as soon as data arrives), so with
/// the default 500 ms a caught-up consumer sees each new record up to 500 ms late. Measured
/// at 50,000 records/s: p50 284 ms with the default, 21 ms with 10 ms. At 250,000 records/s
/// 10 ms still added its own polling period: p50 25 ms and p99
/// 43-46 ms with 10 ms, p50 19 ms and p99 29-43 ms with 1 ms, for about 6 % more worker CPU
/// per record in the live run (the empty fetches a real broker would not answer).
pub const MOCK_FETCH_WAIT_MAX_MS: u64 = 1;

/// A participant's settings.
#[derive(Debug, Clone)]
pub struct Env {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Input topic.
    pub input: String,
    /// Output topic.
    pub output: String,
    /// Consumer group.
    pub group: String,
    /// Records to process.
    pub records: u64,
    /// Commit interval.
    pub commit_interval: Duration,
    /// Mode.
    pub mode: BenchMode,
    /// The consumer's `fetch.wait.max.ms`, if it must be set.
    pub fetch_wait_max_ms: Option<u64>,
    /// Latencies count from this long after the first record.
    pub warmup: Duration,
    /// Exactly-once: transactional producers of the worker.
    pub transactional_producers: usize,
    /// Exactly-once: records after which a transaction commits before its interval is up.
    pub commit_records: u64,
}

impl Env {
    /// The variables of this run, to set on the participant's process.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (vars::BOOTSTRAP, self.bootstrap.clone()),
            (vars::INPUT, self.input.clone()),
            (vars::OUTPUT, self.output.clone()),
            (vars::GROUP, self.group.clone()),
            (vars::RECORDS, self.records.to_string()),
            (
                vars::COMMIT_INTERVAL_MS,
                self.commit_interval.as_millis().to_string(),
            ),
            (vars::MODE, self.mode.name().to_owned()),
            (vars::WARMUP_MS, self.warmup.as_millis().to_string()),
            (
                vars::TRANSACTIONAL_PRODUCERS,
                self.transactional_producers.to_string(),
            ),
            (vars::COMMIT_RECORDS, self.commit_records.to_string()),
        ]
        .into_iter()
        .chain(
            self.fetch_wait_max_ms
                .map(|ms| (vars::FETCH_WAIT_MAX_MS, ms.to_string())),
        )
        .collect()
    }

    /// Reads the variables of this process.
    pub fn from_process() -> anyhow::Result<Self> {
        use clap::ValueEnum as _;
        let get = |name: &str| {
            std::env::var(name)
                .map_err(|_| anyhow::anyhow!("{name} is not set (started by `streamfleet-bench`?)"))
        };
        fn parsed<T: std::str::FromStr>(name: &str, value: &str) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e| anyhow::anyhow!("{name}: {e}"))
        }
        /// An optional variable: absent is `None`, present must parse.
        fn optional<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            std::env::var(name)
                .ok()
                .map(|v| parsed(name, &v))
                .transpose()
        }
        let number = |name: &str| -> anyhow::Result<u64> { parsed(name, &get(name)?) };
        let mode = get(vars::MODE)?;
        Ok(Self {
            bootstrap: get(vars::BOOTSTRAP)?,
            input: get(vars::INPUT)?,
            output: get(vars::OUTPUT)?,
            group: get(vars::GROUP)?,
            records: number(vars::RECORDS)?,
            commit_interval: Duration::from_millis(number(vars::COMMIT_INTERVAL_MS)?),
            mode: BenchMode::from_str(&mode, false)
                .map_err(|e| anyhow::anyhow!("{}: {e}", vars::MODE))?,
            warmup: Duration::from_millis(optional(vars::WARMUP_MS)?.unwrap_or(0)),
            transactional_producers: optional(vars::TRANSACTIONAL_PRODUCERS)?.unwrap_or(
                streamfleet_runtime::config::WorkerConfig::DEFAULT_TRANSACTIONAL_PRODUCERS,
            ),
            commit_records: optional(vars::COMMIT_RECORDS)?
                .unwrap_or(streamfleet_runtime::config::WorkerConfig::DEFAULT_COMMIT_RECORDS),
            fetch_wait_max_ms: optional(vars::FETCH_WAIT_MAX_MS)?,
        })
    }
}

/// End-to-end latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Records observed.
    pub samples: u64,
}

impl Latency {
    /// The percentiles of an HDR histogram of milliseconds; `None` when it is empty.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50: h.value_at_quantile(0.50) as f64,
            p95: h.value_at_quantile(0.95) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            max: h.max() as f64,
            mean: h.mean(),
            samples: h.len(),
        })
    }
}

/// What one participant reports for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Records processed.
    pub records: u64,
    /// First record consumed → N-th record done.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_sec: f64,
    /// End-to-end latency (peers may not measure it).
    #[serde(default)]
    pub latency_ms: Option<Latency>,
    /// CPU seconds (user + system) over the measured window.
    pub cpu_seconds: f64,
    /// Peak resident set size of the process.
    pub peak_rss_bytes: u64,
    /// Exactly-once: transactions the worker committed from its start to its exit, whether
    /// the record cap or the interval ended them (peers and the other modes report none).
    #[serde(default)]
    pub transactions: Option<u64>,
}

impl RunResult {
    /// CPU seconds per million records.
    pub fn cpu_per_million(&self) -> f64 {
        if self.records == 0 {
            return 0.0;
        }
        self.cpu_seconds / self.records as f64 * 1e6
    }

    /// Cores the process kept busy on average over the measured window: CPU seconds per
    /// second. Throughput is cores over CPU per record, so of two runs that differ in
    /// throughput, the one with fewer cores waited more (commits, stalls), the one with more
    /// CPU per record did more work or ran on a slower machine.
    pub fn cores(&self) -> f64 {
        if self.seconds <= 0.0 {
            return 0.0;
        }
        self.cpu_seconds / self.seconds
    }
}

/// CPU time (user + system) of this process so far.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident set size of this process (`VmHWM`), bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The median of each figure over several runs of one participant.
pub fn median_result(runs: &[RunResult]) -> RunResult {
    let pick = |f: &dyn Fn(&RunResult) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let latencies: Vec<Latency> = runs.iter().filter_map(|r| r.latency_ms).collect();
    let lat =
        |f: &dyn Fn(&Latency) -> f64| median(&mut latencies.iter().map(f).collect::<Vec<_>>());
    RunResult {
        records: runs.first().map_or(0, |r| r.records),
        seconds: pick(&|r| r.seconds),
        records_per_sec: pick(&|r| r.records_per_sec),
        latency_ms: (!latencies.is_empty()).then(|| Latency {
            p50: lat(&|l| l.p50),
            p95: lat(&|l| l.p95),
            p99: lat(&|l| l.p99),
            max: lat(&|l| l.max),
            mean: lat(&|l| l.mean),
            samples: latencies.iter().map(|l| l.samples).min().unwrap_or(0),
        }),
        cpu_seconds: pick(&|r| r.cpu_seconds),
        peak_rss_bytes: pick(&|r| r.peak_rss_bytes as f64) as u64,
        transactions: {
            let mut counts: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.transactions.map(|t| t as f64))
                .collect();
            (!counts.is_empty()).then(|| median(&mut counts) as u64)
        },
    }
}

/// One performance target, evaluated on figures of one benchmark invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What it asks, in words.
    pub goal: String,
    /// The measured value (a ratio, milliseconds or MiB, as `goal` says).
    pub measured: f64,
    /// The bound.
    pub bound: f64,
    /// Whether it is met.
    pub met: bool,
}

impl Target {
    /// `measured ≥ bound`.
    pub fn at_least(goal: impl Into<String>, measured: f64, bound: f64) -> Self {
        Self {
            goal: goal.into(),
            measured,
            bound,
            met: measured >= bound,
        }
    }

    /// `measured ≤ bound`.
    pub fn at_most(goal: impl Into<String>, measured: f64, bound: f64) -> Self {
        Self {
            goal: goal.into(),
            measured,
            bound,
            met: measured <= bound,
        }
    }
}

/// Peak RSS allowed, bytes.
pub const RSS_BOUND: u64 = 256 * 1024 * 1024;
/// End-to-end p99 allowed at half of the maximum rate, milliseconds.
pub const P99_BOUND_MS: f64 = 50.0;

/// Share of its offered rate a live run must process to count as keeping up.
pub const KEEPING_UP: f64 = 0.97;

/// Whether a live run offered `offered` records/s processed less than [`KEEPING_UP`] of it:
/// the run fell behind, records queued (inside the worker, or before it fetched them: both
/// were measured), and its latency measures that queue rather than a record's path. (On a
/// small machine the load generator and the embedded cluster share the worker's cores, so
/// half of the backlog maximum can already be too much.)
pub fn saturated(run: &RunResult, offered: u64) -> bool {
    run.records_per_sec < KEEPING_UP * offered as f64
}

/// Slowest over fastest CPU per record among a participant's runs above which the benchmark
/// notes that the machine's speed moved during the invocation. The same work costs the same
/// CPU, so runs that disagree measured the machine too. On the 2-vCPU VM of the README,
/// runs of one mode outside its slow spells stayed within about 15 % of each other (3.3-3.8
/// CPU s per million records); runs in a slow spell took 4.3-5.0.
pub const CPU_SPREAD_NOTED: f64 = 1.2;

/// CPU per record of the slowest run over that of the fastest: 1.0 when they agree (or with
/// fewer than two runs).
pub fn cpu_spread(runs: &[RunResult]) -> f64 {
    let per_record: Vec<f64> = runs
        .iter()
        .filter(|r| r.records > 0 && r.cpu_seconds > 0.0)
        .map(RunResult::cpu_per_million)
        .collect();
    let min = per_record.iter().copied().fold(f64::INFINITY, f64::min);
    let max = per_record.iter().copied().fold(0.0, f64::max);
    if per_record.len() < 2 { 1.0 } else { max / min }
}

/// The medians a target needs.
#[derive(Debug, Default)]
pub struct Figures<'a> {
    /// Per mode, ours (backlog runs).
    pub ours: Vec<(BenchMode, &'a RunResult)>,
    /// Peers': name, mode, figures.
    pub peers: Vec<(&'a str, BenchMode, &'a RunResult)>,
    /// The at-least-once latency run (or --rate runs), if any.
    pub latency: Option<&'a RunResult>,
    /// Largest peak RSS of any of our runs, and the backlog it had.
    pub peak_rss: Option<(u64, u64)>,
}

/// The targets these figures can decide.
pub fn targets(f: &Figures<'_>) -> Vec<Target> {
    let ours = |m: BenchMode| f.ours.iter().find(|(x, _)| *x == m).map(|(_, r)| *r);
    let mut out = Vec::new();
    let rate = |r: &RunResult| r.records_per_sec;
    if let (Some(alo), Some(pt)) = (ours(BenchMode::AtLeastOnce), ours(BenchMode::Passthrough)) {
        out.push(Target::at_least(
            "at-least-once (real processing) / passthrough throughput ≥ 0.8",
            rate(alo) / rate(pt),
            0.8,
        ));
    }
    if let (Some(eos), Some(alo)) = (ours(BenchMode::ExactlyOnce), ours(BenchMode::AtLeastOnce)) {
        out.push(Target::at_least(
            "exactly-once / at-least-once throughput ≥ 0.9",
            rate(eos) / rate(alo),
            0.9,
        ));
    }
    // Against independent copiers on the same librdkafka (Python) and on the Java client:
    // passthrough is the same job as their at-least-once copy, so it is held to it, in
    // throughput and in CPU per record (with the broker on the same cores, the CPU a client
    // spends per record is taken from the broker).
    let pt = ours(BenchMode::Passthrough);
    for (name, mode, peer) in &f.peers {
        let java = *name == "java";
        let (faster, cpu) = if java { (1.1, 1.0) } else { (1.25, 0.5) };
        match (mode, pt, ours(BenchMode::ExactlyOnce)) {
            (BenchMode::AtLeastOnce, Some(pt), _) => {
                out.push(Target::at_least(
                    format!("passthrough / {name} at-least-once throughput ≥ {faster}"),
                    rate(pt) / rate(peer),
                    faster,
                ));
                out.push(Target::at_most(
                    format!("passthrough / {name} at-least-once CPU per record ≤ {cpu}"),
                    pt.cpu_per_million() / peer.cpu_per_million().max(f64::MIN_POSITIVE),
                    cpu,
                ));
            }
            (BenchMode::ExactlyOnce, _, Some(eos)) if java => out.push(Target::at_least(
                format!("exactly-once / {name} exactly-once throughput ≥ 1.1"),
                rate(eos) / rate(peer),
                1.1,
            )),
            _ => {}
        }
    }
    if let Some(l) = f.latency.and_then(|r| r.latency_ms) {
        out.push(Target::at_most(
            "at-least-once end-to-end p99 at half the maximum rate ≤ 50 ms",
            l.p99,
            P99_BOUND_MS,
        ));
    }
    if let Some((rss, backlog)) = f.peak_rss {
        out.push(Target::at_most(
            format!("peak RSS with a {backlog}-record backlog ≤ 256 MiB"),
            rss as f64 / (1024.0 * 1024.0),
            (RSS_BOUND / (1024 * 1024)) as f64,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_run_behind_its_offered_rate_is_saturated() {
        let offered = 220_000;
        assert!(saturated(&run(209_433.0, Some(1003.0), 0), offered));
        assert!(saturated(&run(212_811.0, Some(331.0), 0), offered));
        assert!(!saturated(&run(219_125.0, Some(175.0), 0), offered));
        assert!(!saturated(&run(223_900.0, Some(47.0), 0), offered));
    }

    #[test]
    fn cores_are_cpu_seconds_per_second_of_the_window() {
        let r = RunResult {
            cpu_seconds: 3.6,
            ..run(500_000.0, None, 0)
        };
        assert!((r.cores() - 3.6 / r.seconds).abs() < 1e-9, "{}", r.cores());
        let none = RunResult {
            seconds: 0.0,
            ..r.clone()
        };
        assert_eq!(none.cores(), 0.0);
    }

    #[test]
    fn cpu_spread_is_the_slowest_run_over_the_fastest() {
        let with_cpu = |cpu_seconds| RunResult {
            cpu_seconds,
            ..run(400_000.0, None, 0)
        };
        let runs = [with_cpu(3.4e-3), with_cpu(4.76e-3), with_cpu(3.5e-3)];
        assert!(
            (cpu_spread(&runs) - 1.4).abs() < 1e-9,
            "{}",
            cpu_spread(&runs)
        );
        assert!(cpu_spread(&runs) > CPU_SPREAD_NOTED);
        let steady = [with_cpu(3.4e-3), with_cpu(3.6e-3), with_cpu(3.5e-3)];
        assert!(cpu_spread(&steady) < CPU_SPREAD_NOTED);
        assert_eq!(cpu_spread(&runs[..1]), 1.0);
        assert_eq!(cpu_spread(&[]), 1.0);
        // A run that reported no CPU time is left out.
        assert_eq!(cpu_spread(&[with_cpu(3.4e-3), with_cpu(0.0)]), 1.0);
    }

    fn run(rate: f64, p99: Option<f64>, rss: u64) -> RunResult {
        RunResult {
            records: 1000,
            seconds: 1000.0 / rate,
            records_per_sec: rate,
            latency_ms: p99.map(|p99| Latency {
                p50: p99 / 2.0,
                p95: p99 * 0.9,
                p99,
                max: p99 * 2.0,
                mean: p99 / 2.0,
                samples: 1000,
            }),
            cpu_seconds: 0.5,
            peak_rss_bytes: rss,
            transactions: None,
        }
    }

    #[test]
    fn medians_are_per_figure() {
        let with_txns = |r: RunResult, n| RunResult {
            transactions: Some(n),
            ..r
        };
        let m = median_result(&[
            with_txns(run(100.0, Some(10.0), 3), 40),
            run(300.0, Some(30.0), 1),
            with_txns(run(200.0, None, 2), 10),
        ]);
        assert_eq!(m.records_per_sec, 200.0);
        assert_eq!(m.peak_rss_bytes, 2);
        // Latency and transactions: the median of the runs that report them.
        assert_eq!(m.latency_ms.unwrap().p99, 20.0);
        assert_eq!(m.transactions, Some(25));
        assert_eq!(median_result(&[run(1.0, None, 1)]).transactions, None);
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn targets_are_ratios_within_one_invocation() {
        let (pt, alo, eos) = (run(100.0, None, 1), run(85.0, None, 1), run(70.0, None, 1));
        let (peer_alo, peer_eos) = (run(40.0, None, 1), run(40.0, None, 1));
        let java_alo = run(95.0, None, 1);
        let java_alo = RunResult {
            cpu_seconds: 0.6,
            ..java_alo
        };
        let java_eos = run(60.0, None, 1);
        let lat = run(40.0, Some(51.0), 1);
        let t = targets(&Figures {
            ours: vec![
                (BenchMode::Passthrough, &pt),
                (BenchMode::AtLeastOnce, &alo),
                (BenchMode::ExactlyOnce, &eos),
            ],
            peers: vec![
                ("python", BenchMode::AtLeastOnce, &peer_alo),
                ("python", BenchMode::ExactlyOnce, &peer_eos),
                ("java", BenchMode::AtLeastOnce, &java_alo),
                ("java", BenchMode::ExactlyOnce, &java_eos),
            ],
            latency: Some(&lat),
            peak_rss: Some((300 * 1024 * 1024, 5_000_000)),
        });
        let met: Vec<(&str, bool, f64)> = t
            .iter()
            .map(|t| (t.goal.as_str(), t.met, t.measured))
            .collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(met[0].1);
        assert!(!met[1].1 && close(met[1].2, 70.0 / 85.0));
        // Python: passthrough 100/s against 40/s, CPU 0.5 s each per 1000 records.
        assert!(
            met[2]
                .0
                .starts_with("passthrough / python at-least-once throughput")
        );
        assert!(met[2].1 && close(met[2].2, 2.5));
        assert!(
            !met[3].1 && close(met[3].2, 1.0),
            "same CPU per record is not half"
        );
        // Java: 95/s against 100/s at-least-once, 60/s exactly-once against 70/s.
        assert!(!met[4].1 && close(met[4].2, 100.0 / 95.0));
        assert!(met[5].0.contains("java at-least-once CPU per record ≤ 1"));
        assert!(met[5].1 && close(met[5].2, 0.5 / 0.6));
        assert!(met[6].1 && close(met[6].2, 70.0 / 60.0));
        assert_eq!((met[7].1, met[7].2), (false, 51.0));
        assert_eq!((met[8].1, met[8].2), (false, 300.0));
        assert_eq!(t.len(), 9);
    }

    #[test]
    fn latency_percentiles_come_from_every_sample() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let l = Latency::of(&h).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (500.0, 990.0, 1000.0));
        assert!(Latency::of(&hdrhistogram::Histogram::<u64>::new(3).unwrap()).is_none());
    }

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
        assert!(peak_rss() > 1024 * 1024);
    }
}
