//! Liveness and readiness of the workers in a process, as the HTTP probes report them.
//!
//! Each worker registers a component. A process is live while no component has failed, and
//! ready once every component is ready: a worker is ready when it has joined its group,
//! received its assignment (possibly empty: the group has no partition to give it), and
//! restored the state of every assigned partition ([`Readiness`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// State of one component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentState {
    /// Ready to serve.
    pub ready: bool,
    /// Failed for good: the process should be restarted.
    pub failed: bool,
    /// What it is doing, for people.
    pub detail: String,
}

/// Health of every component of the process.
#[derive(Debug, Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, ComponentState>>>,
}

/// One component's handle on [`Health`].
#[derive(Debug, Clone)]
pub struct HealthHandle {
    health: Health,
    name: String,
}

impl Health {
    /// Registers a component, not ready yet.
    pub fn component(&self, name: &str) -> HealthHandle {
        self.components.lock().expect("health lock").insert(
            name.to_owned(),
            ComponentState {
                ready: false,
                failed: false,
                detail: "starting".into(),
            },
        );
        HealthHandle {
            health: self.clone(),
            name: name.to_owned(),
        }
    }

    /// No component has failed.
    pub fn is_live(&self) -> bool {
        self.components
            .lock()
            .expect("health lock")
            .values()
            .all(|c| !c.failed)
    }

    /// At least one component, and every component, is ready.
    pub fn is_ready(&self) -> bool {
        let c = self.components.lock().expect("health lock");
        !c.is_empty() && c.values().all(|c| c.ready && !c.failed)
    }

    /// Every component's state.
    pub fn report(&self) -> BTreeMap<String, ComponentState> {
        self.components.lock().expect("health lock").clone()
    }
}

impl HealthHandle {
    fn update(&self, f: impl FnOnce(&mut ComponentState)) {
        if let Some(c) = self
            .health
            .components
            .lock()
            .expect("health lock")
            .get_mut(&self.name)
        {
            f(c);
        }
    }

    /// Marks the component ready or not, with a reason.
    pub fn set_ready(&self, ready: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(|c| {
            c.ready = ready;
            c.detail = detail;
        });
    }

    /// Marks the component failed.
    pub fn set_failed(&self, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(|c| {
            c.failed = true;
            c.ready = false;
            c.detail = detail;
        });
    }
}

/// A worker's readiness, from what it knows: joined with an assignment, state restores in
/// progress, and state restores that failed (a partition that will not be processed).
#[derive(Debug)]
pub(crate) struct Readiness {
    handle: HealthHandle,
    inner: Mutex<ReadinessState>,
}

#[derive(Debug, Default)]
struct ReadinessState {
    /// Partitions assigned at the last rebalance; `None` until the first.
    assigned: Option<usize>,
    restoring: usize,
    /// Failed restores by changelog partition.
    failed: BTreeMap<String, String>,
}

impl Readiness {
    pub fn new(handle: HealthHandle) -> Self {
        Self {
            handle,
            inner: Mutex::new(ReadinessState::default()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReadinessState)) {
        let mut s = self.inner.lock().expect("readiness lock");
        f(&mut s);
        let (ready, detail) = match (&s.assigned, s.restoring, s.failed.first_key_value()) {
            (_, _, Some((partition, reason))) => (
                false,
                format!(
                    "state restore failed for {} partition(s), first {partition}: {reason}",
                    s.failed.len()
                ),
            ),
            (None, _, None) => (false, "joining the group".to_owned()),
            (Some(_), n, None) if n > 0 => {
                (false, format!("restoring the state of {n} partition(s)"))
            }
            (Some(0), _, None) => (
                true,
                "joined; the group has no partition for this member".to_owned(),
            ),
            (Some(n), _, None) => (true, format!("joined; {n} partitions assigned")),
        };
        self.handle.set_ready(ready, detail);
    }

    /// A rebalance ended with `partitions` assigned.
    pub fn assigned(&self, partitions: usize) {
        self.update(|s| s.assigned = Some(partitions));
    }

    /// A restore began.
    pub fn restore_started(&self) {
        self.update(|s| s.restoring += 1);
    }

    /// A restore ended; `failure` is (changelog partition, reason) when it failed.
    pub fn restore_finished(&self, failure: Option<(String, String)>) {
        self.update(|s| {
            s.restoring = s.restoring.saturating_sub(1);
            if let Some((partition, reason)) = failure {
                s.failed.insert(partition, reason);
            }
        });
    }

    /// A changelog partition's state is no longer this worker's (revoked): its failure goes.
    pub fn forget(&self, changelog_partition: &str) {
        self.update(|s| {
            s.failed.remove(changelog_partition);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let h = Health::default();
        assert!(!h.is_ready());
        let a = h.component("a");
        let b = h.component("b");
        a.set_ready(true, "assigned");
        assert!(!h.is_ready());
        b.set_ready(true, "assigned");
        assert!(h.is_ready() && h.is_live());
        b.set_failed("fenced");
        assert!(!h.is_ready() && !h.is_live());
    }

    #[test]
    fn a_worker_is_ready_once_joined_and_restored_and_never_on_a_failed_restore() {
        let h = Health::default();
        let r = Readiness::new(h.component("w"));
        r.restore_started();
        r.assigned(2);
        assert!(!h.is_ready());
        assert!(h.report()["w"].detail.contains("restoring"));
        r.restore_finished(None);
        assert!(h.is_ready());
        r.restore_started();
        r.restore_finished(Some((
            "t-changelog[1]".into(),
            "corrupt at offset 9".into(),
        )));
        assert!(
            !h.is_ready() && h.is_live(),
            "not ready, but alive: no restart loop"
        );
        assert!(h.report()["w"].detail.contains("corrupt at offset 9"));
        r.forget("t-changelog[1]");
        assert!(h.is_ready());
    }
}
