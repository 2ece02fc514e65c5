//! Liveness and readiness of the workers in a process, as the HTTP probes report them.
//!
//! Each worker registers a component. A process is live while no component has failed, and
//! ready once every component is ready: a worker is ready when it has joined its group and
//! received its assignment (possibly empty: the group has no partition to give it).

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
}
