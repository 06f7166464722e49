//! `tern chaos`: a cluster of real `tern serve` processes under injected faults, real
//! librdkafka clients recording what they were told, and a checker that judges the record.
//!
//! What it owns:
//! - [`net`]: per-node network namespaces on a bridge, nftables partitions, `tc` limits;
//! - [`disk`]: loop-mounted ext4 data filesystems that the disk-full fault fills;
//! - [`nodes`]: the broker processes (kill, pause, restart);
//! - [`schedule`]: the seeded fault plan; [`workload`]: the clients and the final read;
//! - [`history`], [`check`]: the recorded history and the pure checker;
//! - [`timeline`]: the SVG timeline; [`run`]: one run end to end.
//!
//! Invariants: a run leaves no namespace, link, rule or mount behind (teardown runs on drop
//! and before setup); every fault is healed before the next one begins; the checker sees
//! only the history, never the cluster.

pub mod admin;
pub mod check;
pub mod disk;
pub mod error;
pub mod history;
pub mod net;
pub mod nodes;
pub mod run;
pub mod schedule;
pub mod timeline;
pub mod workload;

pub use error::ChaosError;
pub use run::{run, Options, Outcome};
