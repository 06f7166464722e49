//! What a chaos run records: every send, acknowledgement, failure, read, commit and fault,
//! with the time it happened (milliseconds since the run began), and the log as read back
//! after healing. The checker ([`crate::check`]) is a pure function of this.
//!
//! Record values are unique and self-describing: `<producer>-<partition>-<seq>`, where `seq`
//! counts from 0 per producer and partition in send order (see [`RecordId`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A record's identity, parsed from its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordId {
    pub producer: u32,
    pub partition: i32,
    pub seq: u64,
}

impl RecordId {
    /// The value written for this record.
    pub fn value(&self) -> String {
        format!("{}-{}-{}", self.producer, self.partition, self.seq)
    }

    /// Parses a value written by [`RecordId::value`]; `None` for anything else.
    pub fn parse(value: &str) -> Option<RecordId> {
        let mut it = value.split('-');
        let producer = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let seq = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(RecordId {
            producer,
            partition,
            seq,
        })
    }
}

/// The kinds of fault a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of a random node, restarted after the fault's duration.
    KillNode,
    /// SIGKILL of the leader of a chosen partition, restarted after the fault's duration.
    KillLeader,
    /// SIGKILL of the controller quorum's leader, restarted after the fault's duration.
    KillController,
    /// SIGSTOP, then SIGCONT after the fault's duration.
    Pause,
    /// One node cut off from every other node and from clients.
    Isolate,
    /// Two nodes and one: the nodes cannot reach each other across the split; clients
    /// reach all.
    Split,
    /// One node drops what another sends it (one direction only).
    OneWay,
    /// A node's link limited to a low bandwidth (`tc tbf`).
    Bandwidth,
    /// A node's data filesystem filled until no space is left.
    DiskFull,
    /// A node's link delays packets (50 ± 20 ms) and drops 5% of them (`tc netem`; skipped
    /// on kernels without it).
    Delay,
}

impl FaultKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillNode,
        FaultKind::KillLeader,
        FaultKind::KillController,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Bandwidth,
        FaultKind::DiskFull,
        FaultKind::Delay,
    ];

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-node",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillController => "kill-controller",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Delay => "delay",
        }
    }
}

/// Which producer guarantee a topic is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acks {
    /// acks=all with idempotence: nothing acknowledged may be lost, duplicated or reordered.
    All,
    /// acks=1: acknowledged by the leader alone; losses on a leader change are expected and
    /// only counted.
    One,
}

/// One thing that happened, at `t_ms` after the run began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// A record handed to a producer.
    Send {
        t_ms: u64,
        topic: String,
        id: RecordId,
    },
    /// The broker acknowledged the record at `offset`.
    Ack {
        t_ms: u64,
        topic: String,
        id: RecordId,
        offset: i64,
    },
    /// The producer gave up on the record (it may or may not be in the log).
    Fail {
        t_ms: u64,
        topic: String,
        id: RecordId,
        error: String,
    },
    /// A group consumer read `value` at `partition`/`offset` (the value need not parse: a
    /// phantom is recorded as read).
    Read {
        t_ms: u64,
        consumer: u32,
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// A group's committed offset for a partition, as acknowledged by the coordinator
    /// (a successful commit) or read back from it (OffsetFetch).
    Commit {
        t_ms: u64,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A fault began.
    FaultStart {
        t_ms: u64,
        fault: FaultKind,
        /// The nodes it touches, e.g. "node 2" or "1,2 | 3".
        target: String,
    },
    /// The fault that began last with this kind and target was healed.
    FaultEnd {
        t_ms: u64,
        fault: FaultKind,
        target: String,
    },
}

impl Event {
    pub fn t_ms(&self) -> u64 {
        match self {
            Event::Send { t_ms, .. }
            | Event::Ack { t_ms, .. }
            | Event::Fail { t_ms, .. }
            | Event::Read { t_ms, .. }
            | Event::Commit { t_ms, .. }
            | Event::FaultStart { t_ms, .. }
            | Event::FaultEnd { t_ms, .. } => *t_ms,
        }
    }
}

/// A whole run: the events in time order, each topic's guarantee, and each partition's log
/// read from its start to its end after every fault was healed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<Event>,
    /// Topic name → the acks its producers used.
    pub topics: BTreeMap<String, Acks>,
    /// Every partition of those topics, read from its log start to its end.
    pub final_log: Vec<PartitionLog>,
}

/// One partition's log as read back after healing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLog {
    pub topic: String,
    pub partition: i32,
    /// The log start offset when it was read (records below it were deleted by retention,
    /// which a chaos run does not configure: it is 0).
    pub log_start: i64,
    /// (offset, value) in offset order.
    pub records: Vec<(i64, String)>,
}
