//! Topic provisioning: plan and apply `topics.yaml` against a cluster, the way an operator
//! would run it from a pipeline against production.
//!
//! ```text
//!  topics.yaml ─► Topology ─┐
//!                           ├─► plan (pure) ─► Plan { actions, notes, errors } ─► render
//!  cluster ─► describe ─────┘                         │ apply (confirmed / --yes)
//!                                                     ▼
//!                                            AdminClient: create, add partitions,
//!                                            alter configs, delete ─► settle ─► re-plan
//! ```
//!
//! [`plan`] holds the rules (what is created, increased, changed, refused, reported);
//! [`cluster`] talks to Kafka; [`render`] prints plans for people and for scripts.

pub mod cluster;
pub mod plan;
pub mod render;
