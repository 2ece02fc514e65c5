//! Plans as people read them.
//!
//! ```text
//!   + create booking-events (12 partitions, replication 3) retention.ms=2592000000 ...
//!   ~ payment-events partitions 6 → 12
//!   ~ inventory-events config retention.ms: 604800000 → 1209600000
//!   - delete old-topic
//!   ! error: ...
//!   · note: ...
//! ```

use std::fmt::Write;

use super::plan::{Action, Note, Plan};

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(default)")
}

/// The plan as text.
pub fn plan(p: &Plan) -> String {
    let mut out = String::new();
    for a in &p.actions {
        match a {
            Action::Create {
                topic,
                partitions,
                replication_factor,
                configs,
            } => {
                let cfg: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    out,
                    "  + create {topic} ({partitions} partitions, replication {replication_factor}) {}",
                    cfg.join(" ")
                );
            }
            Action::IncreasePartitions { topic, from, to } => {
                let _ = writeln!(
                    out,
                    "  ~ {topic} partitions {from} → {to} (new records of some keys move to new partitions)"
                );
            }
            Action::AlterConfigs { topic, changes, .. } => {
                for c in changes {
                    let _ = writeln!(
                        out,
                        "  ~ {topic} config {}: {} → {}",
                        c.key,
                        value(&c.old),
                        value(&c.new)
                    );
                }
            }
            Action::Delete { topic } => {
                let _ = writeln!(out, "  - delete {topic} (not in the file; --allow-delete)");
            }
        }
    }
    for e in &p.errors {
        let _ = writeln!(out, "  ! error: {e}");
    }
    for n in &p.notes {
        let line = match n {
            Note::NotInFile {
                topic,
                protected: true,
            } => {
                format!("{topic} is on the cluster but not in the file; protected, never deleted")
            }
            Note::NotInFile {
                topic,
                protected: false,
            } => {
                format!(
                    "{topic} is on the cluster but not in the file; kept (--allow-delete deletes it)"
                )
            }
            Note::ReplicationFactorDiffers {
                topic,
                cluster,
                desired,
            } => format!(
                "{topic} has replication factor {cluster}, the file says {desired}: not changed (replicas are moved with \
                 kafka-reassign-partitions.sh)"
            ),
            Note::Capped {
                topic,
                setting,
                from,
                to,
            } => {
                format!(
                    "{topic}: {setting} capped from {from} to {to} to fit the cluster (--cap-replication)"
                )
            }
        };
        let _ = writeln!(out, "  · {line}");
    }
    let count = |f: fn(&Action) -> bool| p.actions.iter().filter(|a| f(a)).count();
    let _ = writeln!(
        out,
        "Plan: {} to create, {} to add partitions to, {} to change configs of, {} to delete; {} errors.",
        count(|a| matches!(a, Action::Create { .. })),
        count(|a| matches!(a, Action::IncreasePartitions { .. })),
        count(|a| matches!(a, Action::AlterConfigs { .. })),
        count(|a| matches!(a, Action::Delete { .. })),
        p.errors.len()
    );
    out
}
