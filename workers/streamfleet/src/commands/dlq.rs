//! `streamfleet dlq inspect` and `streamfleet dlq replay`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use streamfleet_runtime::config::ConfigError;
use streamfleet_runtime::{CancellationToken, ErrorClass};

use crate::cli::{DlqCommand, ReplayArgs};
use crate::dlq::{self, Filter, ReplayOptions};
use crate::signals;

/// Parses `2026-11-21T10:00:00Z` or `2h` (meaning two hours ago) to epoch ms.
pub fn parse_time(field: &str, s: &str) -> Result<i64, ConfigError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64));
    }
    if let Ok(ago) = humantime::parse_duration(s) {
        let t = SystemTime::now() - ago;
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64));
    }
    Err(ConfigError::Invalid {
        field: field.into(),
        message: format!("`{s}` is neither an RFC 3339 time nor a duration ago (like 2h)"),
    })
}

fn fmt_time(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".into(),
        |ms| {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        },
    )
}

/// Runs a `dlq` subcommand.
pub async fn run(cmd: DlqCommand) -> anyhow::Result<i32> {
    match cmd {
        DlqCommand::Inspect {
            kafka,
            topic,
            samples,
            json,
        } => {
            let (brokers, props) = super::connect(&kafka)?;
            let report = tokio::task::spawn_blocking(move || {
                dlq::inspect(&brokers, &props, &topic, samples)
            })
            .await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(0);
            }
            println!("{}: {} dead letters", report.topic, report.records);
            for (class, n) in &report.by_class {
                println!("  {class:<18} {n}");
            }
            if report.without_headers > 0 {
                println!(
                    "  {} records without streamfleet failure headers",
                    report.without_headers
                );
            }
            for g in &report.groups {
                println!();
                println!("{} × [{}] {}", g.count, g.error_class, g.error_message);
                println!(
                    "  oldest {}  newest {}  from {:?}",
                    fmt_time(g.oldest),
                    fmt_time(g.newest),
                    g.original_topics
                );
                for s in &g.samples {
                    println!(
                        "  - {}/{}@{} key={} ({} bytes)",
                        report.topic,
                        s.partition,
                        s.offset,
                        s.key.as_deref().unwrap_or("-"),
                        s.value_bytes
                    );
                    for (k, v) in &s.headers {
                        println!("      {k}: {v}");
                    }
                }
            }
            Ok(0)
        }
        DlqCommand::Replay(args) => replay(args).await,
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<i32> {
    let classes = args
        .error_classes
        .iter()
        .map(|c| {
            ErrorClass::parse(c).ok_or_else(|| ConfigError::Invalid {
                field: "--error-class".into(),
                message: format!(
                    "`{c}`: expected transient, permanent, malformed or retries-exhausted"
                ),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let filter = Filter {
        classes,
        since_ms: args
            .since
            .as_deref()
            .map(|s| parse_time("--since", s))
            .transpose()?,
        until_ms: args
            .until
            .as_deref()
            .map(|s| parse_time("--until", s))
            .transpose()?,
        key: args.key.as_ref().map(|k| k.clone().into_bytes()),
    };
    let (brokers, props) = super::connect(&args.kafka)?;
    let opts = ReplayOptions {
        brokers,
        props,
        topic: args.topic.clone(),
        filter,
        limit: args.limit,
        rate: args.rate,
        dry_run: args.dry_run,
        group: args.group.clone(),
        transactional: !args.no_transactions,
    };
    let stop: CancellationToken = signals::shutdown_on_signals()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying {msg} [{bar:30}] {pos}/{len} read ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(args.topic.clone());
    let progress_bar = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        dlq::replay(&opts, &stop, |done, total| {
            progress_bar.set_length(total);
            progress_bar.set_position(done);
        })
    })
    .await??;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if args.dry_run {
            "would republish"
        } else {
            "republished"
        };
        println!(
            "{}: read {}, matched {}, {verb} {} {:?}; progress group {}",
            args.topic,
            report.scanned,
            report.matched,
            if args.dry_run {
                report.matched
            } else {
                report.republished
            },
            report.by_topic,
            report.group
        );
        if report.remaining {
            println!("more matching records remain: run the same command again to continue");
        }
    }
    Ok(0)
}
