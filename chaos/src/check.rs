//! The checker: a pure function from a run's [`History`] to a [`Verdict`], in the manner of
//! Jepsen. It owns the rules a run is judged by; nothing here talks to a broker.
//!
//! Per topic:
//!
//! - **lost**: a record with an Ack whose value is not in the final log of its partition (the
//!   partition its id names). **moved**: acknowledged at one offset, found in its partition
//!   at another. An Ack at an offset below the partition's `log_start` is not judged.
//! - Every entry of the final log is counted under at most one kind, in this order of
//!   precedence:
//!   - **phantom**: a value that is not a record value (does not parse as a [`RecordId`], or
//!     is not spelled the way [`RecordId::value`] spells it), whose record was never sent to
//!     the topic, or that sits in a partition other than its id's. A value found in two
//!     partitions is therefore a phantom in the one its id does not name.
//!   - **duplicated**: a later copy (in offset order) of a value already in the partition;
//!     each extra copy counts once.
//!   - **reordered**: a record whose seq is below the highest seq of the same producer
//!     earlier in the partition; each such record counts once (seqs 0, 1, 5, 2, 3 are two
//!     reorders). A duplicate is not also a reorder, and does not raise the highest seq.
//!     Gaps (failed sends) are fine.
//! - A Read's value is judged like a log entry for phantoms (a phantom read at the place the
//!   log holds it counts once); a read that is not a phantom is an **unstable read** when
//!   the final log does not hold that value at that offset (a read below `log_start` is not
//!   judged). Reads are judged once per distinct (partition, offset, value).
//! - **commit backwards**: per (group, topic, partition), in event order, a Commit below the
//!   highest earlier Commit. **commit past the end**: a Commit above the partition's final
//!   log end (last offset + 1, or `log_start` when empty).
//! - A partition with no [`PartitionLog`] has an empty log ending at 0.
//!
//! Failures: on an [`Acks::All`] topic every kind fails the run; on an [`Acks::One`] topic
//! lost, moved, duplicated and reordered are only counted, while phantoms, unstable reads
//! (consumers read below the high watermark whatever the producer's acks) and commit
//! violations fail on every topic. A topic missing from [`History::topics`] is
//! judged as [`Acks::All`].
//!
//! Attribution: each sent record is attributed to the fault active at its (first) Send —
//! the one that started last if several are — else to the fault that ended most recently,
//! if at most [`CheckOptions::settle_ms`] before, else to no fault ([`NO_FAULT`]). Its
//! acknowledgement, failure, loss, copies and reads count against that fault. Values that do
//! not parse or were never sent count against no fault; commits are not attributed.
//!
//! The verdict keeps the first few concrete examples of each kind, failures apart from what
//! was only counted, so that a failed run says what went wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use serde::Serialize;

use crate::history::{Acks, Event, FaultKind, History, PartitionLog, RecordId};

/// The attribution row of records sent while no fault was active or settling.
pub const NO_FAULT: &str = "none";

/// Tunables of [`check`]; `CheckOptions::default()` is what a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// A record sent while no fault is active is attributed to the fault that ended last if
    /// it ended at most this long before the send.
    pub settle_ms: u64,
    /// Examples kept per violation kind, failures and counted-only apart.
    pub examples_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            settle_ms: 5000,
            examples_max: 20,
        }
    }
}

/// What can go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// An acknowledged record missing from its partition's final log.
    Lost,
    /// An acknowledged record found in its partition at another offset.
    Moved,
    /// An extra copy of a record in its partition.
    Duplicated,
    /// A record after a higher seq of the same producer in its partition.
    Reordered,
    /// A value no producer sent there: not a record value, never sent, or in a partition
    /// its id does not name.
    Phantom,
    /// A read the final log does not hold at that offset.
    UnstableRead,
    /// A group's committed offset below one committed before.
    CommitBackwards,
    /// A group's committed offset above the end of the final log.
    CommitPastEnd,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [ViolationKind; 8] = [
        ViolationKind::Lost,
        ViolationKind::Moved,
        ViolationKind::Duplicated,
        ViolationKind::Reordered,
        ViolationKind::Phantom,
        ViolationKind::UnstableRead,
        ViolationKind::CommitBackwards,
        ViolationKind::CommitPastEnd,
    ];

    /// The words that begin each example of this kind.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Lost => "lost",
            ViolationKind::Moved => "moved",
            ViolationKind::Duplicated => "duplicated",
            ViolationKind::Reordered => "reordered",
            ViolationKind::Phantom => "phantom",
            ViolationKind::UnstableRead => "unstable read",
            ViolationKind::CommitBackwards => "commit backwards",
            ViolationKind::CommitPastEnd => "commit past the end",
        }
    }

    /// Whether one of these on a topic written with `acks` fails the run.
    ///
    /// An unstable read fails on every topic: consumers read only below the high
    /// watermark, which covers records every in-sync replica has, whatever acks the
    /// producer asked for.
    pub fn fails(self, acks: Acks) -> bool {
        match self {
            ViolationKind::Phantom
            | ViolationKind::UnstableRead
            | ViolationKind::CommitBackwards
            | ViolationKind::CommitPastEnd => true,
            ViolationKind::Lost
            | ViolationKind::Moved
            | ViolationKind::Duplicated
            | ViolationKind::Reordered => acks == Acks::All,
        }
    }
}

/// One fault from its FaultStart to its FaultEnd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultInterval {
    pub fault: FaultKind,
    /// The nodes it touches, as the FaultStart named them.
    pub target: String,
    /// When it began, since the run began.
    pub start_ms: u64,
    /// `None` when the history has no FaultEnd for it.
    pub end_ms: Option<u64>,
}

impl FaultInterval {
    /// Whether the fault was in force at `t_ms` (from its start, up to but excluding its end).
    pub fn active_at(&self, t_ms: u64) -> bool {
        self.start_ms <= t_ms && self.end_ms.is_none_or(|end_ms| end_ms > t_ms)
    }
}

/// Every fault of `h` in FaultStart order. A FaultEnd closes the open interval with the same
/// kind and target that started last; a FaultEnd that matches none is ignored.
pub fn fault_intervals(h: &History) -> Vec<FaultInterval> {
    let mut out: Vec<FaultInterval> = Vec::new();
    for e in &h.events {
        match e {
            Event::FaultStart {
                t_ms,
                fault,
                target,
            } => out.push(FaultInterval {
                fault: *fault,
                target: target.clone(),
                start_ms: *t_ms,
                end_ms: None,
            }),
            Event::FaultEnd {
                t_ms,
                fault,
                target,
            } => {
                let open = out
                    .iter_mut()
                    .rev()
                    .find(|i| i.end_ms.is_none() && i.fault == *fault && i.target == *target);
                if let Some(open) = open {
                    open.end_ms = Some(*t_ms);
                }
            }
            _ => {}
        }
    }
    out
}

/// The fault something that happened at `t_ms` is attributed to: the active one that
/// started last, else the one that ended last if at most `settle_ms` before, else `None`.
pub fn fault_at(intervals: &[FaultInterval], t_ms: u64, settle_ms: u64) -> Option<FaultKind> {
    let active = intervals
        .iter()
        .filter(|i| i.active_at(t_ms))
        .max_by_key(|i| i.start_ms);
    if let Some(i) = active {
        return Some(i.fault);
    }
    intervals
        .iter()
        .filter_map(|i| i.end_ms.map(|end_ms| (end_ms, i.fault)))
        .filter(|(end_ms, _)| *end_ms <= t_ms && t_ms - end_ms <= settle_ms)
        .max_by_key(|(end_ms, _)| *end_ms)
        .map(|(_, fault)| fault)
}

/// The attribution row name of `fault`.
pub fn fault_name(fault: Option<FaultKind>) -> &'static str {
    fault.map_or(NO_FAULT, FaultKind::name)
}

/// One topic's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicCounts {
    /// Distinct records sent.
    pub sent: u64,
    /// Distinct records acknowledged.
    pub acknowledged: u64,
    /// Distinct records the producer gave up on.
    pub failed: u64,
    /// Records sent, never acknowledged, and found in their partition (fine, counted).
    pub unacknowledged_present: u64,
    /// Distinct (partition, offset) read.
    pub read: u64,
    /// Violations of each kind (see [`ViolationKind`]); phantoms and unstable reads are
    /// counted once per distinct (partition, offset, value).
    pub lost: u64,
    pub moved: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub phantom: u64,
    pub unstable_reads: u64,
    pub commits_backwards: u64,
    pub commits_past_end: u64,
}

/// One topic's counts for the records attributed to one fault kind (or to none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// As in [`TopicCounts`], for these records only.
    pub sent: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub lost: u64,
    pub moved: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub phantom: u64,
    pub unstable_reads: u64,
}

/// One topic's judgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicReport {
    /// The guarantee it was judged by.
    pub acks: Acks,
    /// Its totals.
    pub counts: TopicCounts,
    /// Fault kind name (or [`NO_FAULT`]) → the counts of the records attributed to it; only
    /// rows with records appear.
    pub by_fault: BTreeMap<String, FaultCounts>,
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True when nothing that fails a run happened (`failures == 0`).
    pub ok: bool,
    /// How many violations fail the run, over every topic and kind.
    pub failures: u64,
    /// The [`CheckOptions::settle_ms`] it was judged with.
    pub settle_ms: u64,
    /// The faults of the run, in start order.
    pub faults: Vec<FaultInterval>,
    /// Topic name → its judgement.
    pub topics: BTreeMap<String, TopicReport>,
    /// The first examples of each kind of violation that fails the run.
    pub violations: BTreeMap<ViolationKind, Vec<String>>,
    /// The first examples of each kind that was only counted (acks=1 topics).
    pub tolerated: BTreeMap<ViolationKind, Vec<String>>,
}

/// Judges `h` by the rules of this module.
pub fn check(h: &History, opts: &CheckOptions) -> Verdict {
    let faults = fault_intervals(h);
    let facts = Facts::gather(h, &faults, opts.settle_ms);
    let mut tally = Tally::new(h, *opts);
    count_records(&facts, &mut tally);
    judge_acks(&facts, &mut tally);
    let mut phantoms = HashSet::new();
    judge_logs(&facts, &mut tally, &mut phantoms);
    judge_reads(h, &facts, &mut tally, &mut phantoms);
    judge_commits(h, &facts, &mut tally);
    tally.finish(opts.settle_ms, faults)
}

/// A place in a topic's log holding a value: (topic, partition, offset, value).
type Spot<'a> = (&'a str, i32, i64, &'a str);

/// One partition's final log, indexed.
struct PartIndex<'a> {
    log_start: i64,
    /// Last offset + 1, or `log_start` when empty.
    end: i64,
    /// Offset → value (the first entry, should the log list an offset twice).
    at: HashMap<i64, &'a str>,
    /// Value → its offsets, in log order.
    offsets_of: HashMap<&'a str, Vec<i64>>,
    records: &'a [(i64, String)],
}

impl<'a> PartIndex<'a> {
    fn new(log: &'a PartitionLog) -> Self {
        let mut at = HashMap::new();
        let mut offsets_of: HashMap<&str, Vec<i64>> = HashMap::new();
        for (offset, value) in &log.records {
            at.entry(*offset).or_insert(value.as_str());
            offsets_of.entry(value.as_str()).or_default().push(*offset);
        }
        let end = log
            .records
            .iter()
            .map(|(offset, _)| offset + 1)
            .max()
            .unwrap_or(log.log_start);
        PartIndex {
            log_start: log.log_start,
            end,
            at,
            offsets_of,
            records: &log.records,
        }
    }

    fn holds(&self, offset: i64, value: &str) -> bool {
        self.at.get(&offset) == Some(&value)
    }
}

/// A record that was acknowledged: its topic, id and every offset it was acknowledged at.
struct Acked<'a> {
    topic: &'a str,
    id: RecordId,
    offsets: Vec<i64>,
}

/// What the judges look up, gathered in one pass.
struct Facts<'a> {
    /// (topic, id) → the fault its first Send is attributed to.
    sends: HashMap<(&'a str, RecordId), Option<FaultKind>>,
    /// Acknowledged records in the order of their first Ack.
    acked: Vec<Acked<'a>>,
    acked_index: HashMap<(&'a str, RecordId), usize>,
    failed: HashSet<(&'a str, RecordId)>,
    /// (topic, partition) → its final log; the first, should a partition be listed twice.
    logs: BTreeMap<(&'a str, i32), PartIndex<'a>>,
}

impl<'a> Facts<'a> {
    fn gather(h: &'a History, faults: &[FaultInterval], settle_ms: u64) -> Self {
        let mut facts = Facts {
            sends: HashMap::new(),
            acked: Vec::new(),
            acked_index: HashMap::new(),
            failed: HashSet::new(),
            logs: BTreeMap::new(),
        };
        for e in &h.events {
            match e {
                Event::Send { t_ms, topic, id } => {
                    facts
                        .sends
                        .entry((topic.as_str(), *id))
                        .or_insert_with(|| fault_at(faults, *t_ms, settle_ms));
                }
                Event::Ack {
                    topic, id, offset, ..
                } => facts.add_ack(topic, *id, *offset),
                Event::Fail { topic, id, .. } => {
                    facts.failed.insert((topic.as_str(), *id));
                }
                _ => {}
            }
        }
        for log in &h.final_log {
            facts
                .logs
                .entry((log.topic.as_str(), log.partition))
                .or_insert_with(|| PartIndex::new(log));
        }
        facts
    }

    fn add_ack(&mut self, topic: &'a str, id: RecordId, offset: i64) {
        match self.acked_index.get(&(topic, id)) {
            Some(i) => {
                if let Some(a) = self.acked.get_mut(*i) {
                    if !a.offsets.contains(&offset) {
                        a.offsets.push(offset);
                    }
                }
            }
            None => {
                self.acked_index.insert((topic, id), self.acked.len());
                self.acked.push(Acked {
                    topic,
                    id,
                    offsets: vec![offset],
                });
            }
        }
    }

    /// The fault a record is attributed to (none when it was never sent).
    fn cause(&self, topic: &str, id: RecordId) -> Option<FaultKind> {
        self.sends.get(&(topic, id)).copied().flatten()
    }

    /// `value` as the record id it names when it may be at `partition` of `topic`; else why
    /// it is a phantom, and the fault it is attributed to.
    fn classify(
        &self,
        topic: &str,
        partition: i32,
        value: &str,
    ) -> Result<RecordId, (String, Option<FaultKind>)> {
        let Some(id) = RecordId::parse(value).filter(|id| id.value() == value) else {
            return Err(("not a record value".to_string(), None));
        };
        let Some(cause) = self.sends.get(&(topic, id)) else {
            return Err(("never sent".to_string(), None));
        };
        if id.partition != partition {
            return Err((format!("its id names partition {}", id.partition), *cause));
        }
        Ok(id)
    }
}

/// Who a violation counts against.
#[derive(Debug, Clone, Copy)]
enum Blame {
    /// A record attributed to this fault (or none).
    Record(Option<FaultKind>),
    /// The topic alone (commits).
    Topic,
}

/// The verdict under construction.
struct Tally {
    opts: CheckOptions,
    topics: BTreeMap<String, TopicReport>,
    violations: BTreeMap<ViolationKind, Vec<String>>,
    tolerated: BTreeMap<ViolationKind, Vec<String>>,
    failures: u64,
}

impl Tally {
    fn new(h: &History, opts: CheckOptions) -> Self {
        let topics = h
            .topics
            .iter()
            .map(|(name, acks)| (name.clone(), new_report(*acks)))
            .collect();
        Tally {
            opts,
            topics,
            violations: BTreeMap::new(),
            tolerated: BTreeMap::new(),
            failures: 0,
        }
    }

    fn topic(&mut self, topic: &str) -> &mut TopicReport {
        self.topics
            .entry(topic.to_string())
            .or_insert_with(|| new_report(Acks::All))
    }

    fn row(&mut self, topic: &str, fault: Option<FaultKind>) -> &mut FaultCounts {
        self.topic(topic)
            .by_fault
            .entry(fault_name(fault).to_string())
            .or_default()
    }

    /// Counts one violation of `kind` on `topic`, keeping `text()` as an example while there
    /// is room.
    fn violation(
        &mut self,
        topic: &str,
        kind: ViolationKind,
        blame: Blame,
        text: impl FnOnce() -> String,
    ) {
        let report = self.topic(topic);
        bump_topic(&mut report.counts, kind);
        let fails = kind.fails(report.acks);
        if let Blame::Record(fault) = blame {
            bump_fault(self.row(topic, fault), kind);
        }
        let examples = if fails {
            self.failures += 1;
            &mut self.violations
        } else {
            &mut self.tolerated
        };
        let kept = examples.entry(kind).or_default();
        if kept.len() < self.opts.examples_max {
            kept.push(text());
        }
    }

    fn finish(self, settle_ms: u64, faults: Vec<FaultInterval>) -> Verdict {
        Verdict {
            ok: self.failures == 0,
            failures: self.failures,
            settle_ms,
            faults,
            topics: self.topics,
            violations: self.violations,
            tolerated: self.tolerated,
        }
    }
}

fn new_report(acks: Acks) -> TopicReport {
    TopicReport {
        acks,
        counts: TopicCounts::default(),
        by_fault: BTreeMap::new(),
    }
}

fn bump_topic(c: &mut TopicCounts, kind: ViolationKind) {
    let field = match kind {
        ViolationKind::Lost => &mut c.lost,
        ViolationKind::Moved => &mut c.moved,
        ViolationKind::Duplicated => &mut c.duplicated,
        ViolationKind::Reordered => &mut c.reordered,
        ViolationKind::Phantom => &mut c.phantom,
        ViolationKind::UnstableRead => &mut c.unstable_reads,
        ViolationKind::CommitBackwards => &mut c.commits_backwards,
        ViolationKind::CommitPastEnd => &mut c.commits_past_end,
    };
    *field += 1;
}

fn bump_fault(c: &mut FaultCounts, kind: ViolationKind) {
    let field = match kind {
        ViolationKind::Lost => &mut c.lost,
        ViolationKind::Moved => &mut c.moved,
        ViolationKind::Duplicated => &mut c.duplicated,
        ViolationKind::Reordered => &mut c.reordered,
        ViolationKind::Phantom => &mut c.phantom,
        ViolationKind::UnstableRead => &mut c.unstable_reads,
        ViolationKind::CommitBackwards | ViolationKind::CommitPastEnd => return,
    };
    *field += 1;
}

/// Sent, acknowledged and failed records, per topic and per fault.
fn count_records(f: &Facts<'_>, t: &mut Tally) {
    for ((topic, _), fault) in &f.sends {
        t.topic(topic).counts.sent += 1;
        t.row(topic, *fault).sent += 1;
    }
    for a in &f.acked {
        let fault = f.cause(a.topic, a.id);
        t.topic(a.topic).counts.acknowledged += 1;
        t.row(a.topic, fault).acknowledged += 1;
    }
    for (topic, id) in &f.failed {
        let fault = f.cause(topic, *id);
        t.topic(topic).counts.failed += 1;
        t.row(topic, fault).failed += 1;
    }
}

/// Lost and moved acknowledged records.
fn judge_acks(f: &Facts<'_>, t: &mut Tally) {
    for a in &f.acked {
        judge_ack(f, t, a);
    }
}

fn judge_ack(f: &Facts<'_>, t: &mut Tally, a: &Acked<'_>) {
    let (topic, partition, value) = (a.topic, a.id.partition, a.id.value());
    let blame = Blame::Record(f.cause(topic, a.id));
    let first = a.offsets.first().copied().unwrap_or_default();
    let Some(part) = f.logs.get(&(topic, partition)) else {
        t.violation(topic, ViolationKind::Lost, blame, || {
            format!(
                "lost: {topic} {value} acknowledged at {partition}/{first}, no log was read for \
                 partition {partition}"
            )
        });
        return;
    };
    let judged: Vec<i64> = a
        .offsets
        .iter()
        .copied()
        .filter(|offset| *offset >= part.log_start)
        .collect();
    let Some(&offset) = judged.first() else {
        return;
    };
    let Some(found) = part.offsets_of.get(value.as_str()) else {
        t.violation(topic, ViolationKind::Lost, blame, || {
            format!("lost: {topic} {value} acknowledged at {partition}/{offset}, not in the log")
        });
        return;
    };
    if let Some(offset) = judged.iter().find(|o| !part.holds(**o, &value)) {
        t.violation(topic, ViolationKind::Moved, blame, || {
            format!(
                "moved: {topic} {value} acknowledged at {partition}/{offset}, in the log at {}",
                places(partition, found)
            )
        });
    }
}

/// "3/412, 3/415"
fn places(partition: i32, offsets: &[i64]) -> String {
    let all: Vec<String> = offsets.iter().map(|o| format!("{partition}/{o}")).collect();
    all.join(", ")
}

/// Phantoms, duplicates, reorders and unacknowledged records in the final logs.
fn judge_logs<'a>(f: &Facts<'a>, t: &mut Tally, phantoms: &mut HashSet<Spot<'a>>) {
    for (&(topic, partition), part) in &f.logs {
        let mut scan = PartScan::default();
        for (offset, value) in part.records {
            let spot = (topic, partition, *offset, value.as_str());
            judge_entry(f, t, phantoms, &mut scan, spot);
        }
    }
}

/// What a walk through one partition's log has seen so far.
#[derive(Default)]
struct PartScan<'a> {
    /// Value → the offset of its first copy.
    first_at: HashMap<&'a str, i64>,
    /// Producer → (highest seq so far, its offset).
    top_seq: HashMap<u32, (u64, i64)>,
}

fn judge_entry<'a>(
    f: &Facts<'a>,
    t: &mut Tally,
    phantoms: &mut HashSet<Spot<'a>>,
    scan: &mut PartScan<'a>,
    spot: Spot<'a>,
) {
    let (topic, partition, offset, value) = spot;
    let id = match f.classify(topic, partition, value) {
        Ok(id) => id,
        Err((why, fault)) => {
            phantoms.insert(spot);
            t.violation(topic, ViolationKind::Phantom, Blame::Record(fault), || {
                format!("phantom: {topic} {value:?} at {partition}/{offset} in the log: {why}")
            });
            return;
        }
    };
    let blame = Blame::Record(f.cause(topic, id));
    if let Some(first) = scan.first_at.get(value) {
        t.violation(topic, ViolationKind::Duplicated, blame, || {
            format!("duplicated: {topic} {value} at {partition}/{offset}, already at {partition}/{first}")
        });
        return;
    }
    scan.first_at.insert(value, offset);
    if !f.acked_index.contains_key(&(topic, id)) {
        t.topic(topic).counts.unacknowledged_present += 1;
    }
    match scan.top_seq.get(&id.producer) {
        Some(&(top, top_offset)) if top > id.seq => {
            t.violation(topic, ViolationKind::Reordered, blame, || {
                let earlier = RecordId { seq: top, ..id }.value();
                format!(
                    "reordered: {topic} {value} at {partition}/{offset} after {earlier} at \
                     {partition}/{top_offset}"
                )
            });
        }
        _ => {
            scan.top_seq.insert(id.producer, (id.seq, offset));
        }
    }
}

/// Phantom and unstable reads, and the distinct offsets read.
fn judge_reads<'a>(h: &'a History, f: &Facts<'a>, t: &mut Tally, phantoms: &mut HashSet<Spot<'a>>) {
    let mut offsets_read: HashSet<(&str, i32, i64)> = HashSet::new();
    let mut judged: HashSet<Spot<'a>> = HashSet::new();
    for e in &h.events {
        let Event::Read {
            t_ms,
            consumer,
            topic,
            partition,
            offset,
            value,
        } = e
        else {
            continue;
        };
        let spot = (topic.as_str(), *partition, *offset, value.as_str());
        if offsets_read.insert((topic.as_str(), *partition, *offset)) {
            t.topic(topic).counts.read += 1;
        }
        if judged.insert(spot) {
            let by = format!("by consumer {consumer} at {}", seconds(*t_ms));
            judge_read(f, t, phantoms, spot, &by);
        }
    }
}

fn judge_read<'a>(
    f: &Facts<'a>,
    t: &mut Tally,
    phantoms: &mut HashSet<Spot<'a>>,
    spot: Spot<'a>,
    by: &str,
) {
    let (topic, partition, offset, value) = spot;
    let id = match f.classify(topic, partition, value) {
        Ok(id) => id,
        Err((why, fault)) => {
            if phantoms.insert(spot) {
                t.violation(topic, ViolationKind::Phantom, Blame::Record(fault), || {
                    format!("phantom: {topic} {value:?} read at {partition}/{offset} {by}: {why}")
                });
            }
            return;
        }
    };
    let held = match f.logs.get(&(topic, partition)) {
        None => Some(format!("no log was read for partition {partition}")),
        Some(part) if offset < part.log_start || part.holds(offset, value) => None,
        Some(part) => Some(match part.at.get(&offset) {
            Some(other) => format!("the log holds {other:?} there"),
            None => format!("the log has no offset {offset}"),
        }),
    };
    if let Some(held) = held {
        let blame = Blame::Record(f.cause(topic, id));
        t.violation(topic, ViolationKind::UnstableRead, blame, || {
            format!("unstable read: {topic} {value} read at {partition}/{offset} {by}, {held}")
        });
    }
}

/// Commits that went backwards or past the end of the log.
fn judge_commits(h: &History, f: &Facts<'_>, t: &mut Tally) {
    let mut highest: HashMap<(&str, &str, i32), i64> = HashMap::new();
    for e in &h.events {
        let Event::Commit {
            t_ms,
            group,
            topic,
            partition,
            offset,
        } = e
        else {
            continue;
        };
        let (topic, partition, offset) = (topic.as_str(), *partition, *offset);
        let at = seconds(*t_ms);
        let key = (group.as_str(), topic, partition);
        match highest.get(&key) {
            Some(&top) if offset < top => {
                t.violation(topic, ViolationKind::CommitBackwards, Blame::Topic, || {
                    format!(
                        "commit backwards: group {group} committed {topic} {partition}/{offset} \
                         at {at}, after {partition}/{top}"
                    )
                });
            }
            _ => {
                highest.insert(key, offset);
            }
        }
        let end = f.logs.get(&(topic, partition)).map_or(0, |p| p.end);
        if offset > end {
            t.violation(topic, ViolationKind::CommitPastEnd, Blame::Topic, || {
                format!(
                    "commit past the end: group {group} committed {topic} {partition}/{offset} \
                     at {at}, the log ends at {partition}/{end}"
                )
            });
        }
    }
}

/// "12.345 s"
fn seconds(t_ms: u64) -> String {
    format!("{}.{:03} s", t_ms / 1000, t_ms % 1000)
}

impl Verdict {
    /// A short text report: the verdict, per topic its totals and a table per fault kind,
    /// then the examples of violations and of what was only counted.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if self.ok {
            out.push_str("verdict: ok\n");
        } else {
            let _ = writeln!(out, "verdict: FAILED ({} violations)", self.failures);
        }
        let _ = writeln!(
            out,
            "faults: {} (attributed while active, or up to {} ms after)",
            self.faults.len(),
            self.settle_ms
        );
        for (name, report) in &self.topics {
            topic_summary(&mut out, name, report);
        }
        examples_summary(&mut out, "violations", &self.violations);
        examples_summary(&mut out, "counted only (acks=1)", &self.tolerated);
        out
    }
}

fn topic_summary(out: &mut String, name: &str, r: &TopicReport) {
    let c = &r.counts;
    let acks = match r.acks {
        Acks::All => "all",
        Acks::One => "1",
    };
    let _ = writeln!(
        out,
        "topic {name} (acks={acks}): sent {}, acknowledged {}, failed {}, unacknowledged but \
         present {}, offsets read {}, commits backwards {}, commits past the end {}",
        c.sent,
        c.acknowledged,
        c.failed,
        c.unacknowledged_present,
        c.read,
        c.commits_backwards,
        c.commits_past_end
    );
    let _ = writeln!(
        out,
        "  {:<16}{:>9}{:>9}{:>8}{:>7}{:>7}{:>7}{:>7}{:>8}{:>9}",
        "fault", "sent", "acked", "failed", "lost", "moved", "dup", "reord", "phantom", "unstable"
    );
    let names = FaultKind::ALL
        .iter()
        .map(|k| k.name())
        .chain(std::iter::once(NO_FAULT));
    for fault in names {
        if let Some(f) = r.by_fault.get(fault) {
            let _ = writeln!(
                out,
                "  {:<16}{:>9}{:>9}{:>8}{:>7}{:>7}{:>7}{:>7}{:>8}{:>9}",
                fault,
                f.sent,
                f.acknowledged,
                f.failed,
                f.lost,
                f.moved,
                f.duplicated,
                f.reordered,
                f.phantom,
                f.unstable_reads
            );
        }
    }
}

fn examples_summary(
    out: &mut String,
    title: &str,
    examples: &BTreeMap<ViolationKind, Vec<String>>,
) {
    if examples.values().all(Vec::is_empty) {
        return;
    }
    let _ = writeln!(out, "{title} (first examples of each kind):");
    for kind in ViolationKind::ALL {
        for text in examples.get(&kind).into_iter().flatten() {
            let _ = writeln!(out, "  {text}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T: &str = "orders";

    fn id(value: &str) -> RecordId {
        RecordId::parse(value).unwrap()
    }

    fn send(t_ms: u64, value: &str) -> Event {
        Event::Send {
            t_ms,
            topic: T.to_string(),
            id: id(value),
        }
    }

    fn ack(t_ms: u64, value: &str, offset: i64) -> Event {
        Event::Ack {
            t_ms,
            topic: T.to_string(),
            id: id(value),
            offset,
        }
    }

    fn fail(t_ms: u64, value: &str) -> Event {
        Event::Fail {
            t_ms,
            topic: T.to_string(),
            id: id(value),
            error: "timed out".to_string(),
        }
    }

    fn read(t_ms: u64, partition: i32, offset: i64, value: &str) -> Event {
        Event::Read {
            t_ms,
            consumer: 1,
            topic: T.to_string(),
            partition,
            offset,
            value: value.to_string(),
        }
    }

    fn commit(t_ms: u64, partition: i32, offset: i64) -> Event {
        Event::Commit {
            t_ms,
            group: "g".to_string(),
            topic: T.to_string(),
            partition,
            offset,
        }
    }

    fn start(t_ms: u64, fault: FaultKind, target: &str) -> Event {
        Event::FaultStart {
            t_ms,
            fault,
            target: target.to_string(),
        }
    }

    fn end(t_ms: u64, fault: FaultKind, target: &str) -> Event {
        Event::FaultEnd {
            t_ms,
            fault,
            target: target.to_string(),
        }
    }

    fn log(partition: i32, records: &[(i64, &str)]) -> PartitionLog {
        PartitionLog {
            topic: T.to_string(),
            partition,
            log_start: 0,
            records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
        }
    }

    fn history(acks: Acks, events: Vec<Event>, final_log: Vec<PartitionLog>) -> History {
        History {
            events,
            topics: BTreeMap::from([(T.to_string(), acks)]),
            final_log,
        }
    }

    /// Producer 0 sends seqs 0..n to partition 0, each acknowledged at offset = seq.
    fn sent_and_acked(n: u64) -> Vec<Event> {
        (0..n)
            .flat_map(|seq| {
                let v = format!("0-0-{seq}");
                [send(seq * 10, &v), ack(seq * 10 + 5, &v, seq as i64)]
            })
            .collect()
    }

    fn clean_log(n: u64) -> PartitionLog {
        let values: Vec<String> = (0..n).map(|seq| format!("0-0-{seq}")).collect();
        let records: Vec<(i64, &str)> = values
            .iter()
            .enumerate()
            .map(|(o, v)| (o as i64, v.as_str()))
            .collect();
        log(0, &records)
    }

    fn verdict(h: &History) -> Verdict {
        check(h, &CheckOptions::default())
    }

    fn counts(v: &Verdict) -> &TopicCounts {
        &v.topics[T].counts
    }

    fn examples(v: &Verdict, kind: ViolationKind) -> Vec<String> {
        v.violations.get(&kind).cloned().unwrap_or_default()
    }

    #[test]
    fn clean_history_passes() {
        let mut events = sent_and_acked(4);
        events.extend([
            read(100, 0, 0, "0-0-0"),
            read(101, 0, 1, "0-0-1"),
            read(102, 0, 1, "0-0-1"),
            commit(103, 0, 2),
            commit(104, 0, 4),
        ]);
        let v = verdict(&history(Acks::All, events, vec![clean_log(4)]));
        assert!(v.ok, "{}", v.summary());
        assert_eq!(v.failures, 0);
        let c = counts(&v);
        assert_eq!((c.sent, c.acknowledged, c.failed, c.read), (4, 4, 0, 2));
        assert_eq!(c.unacknowledged_present, 0);
        assert_eq!(
            c.lost + c.moved + c.duplicated + c.reordered + c.phantom + c.unstable_reads,
            0
        );
        assert!(v.violations.is_empty() && v.tolerated.is_empty());
        assert_eq!(v.topics[T].by_fault[NO_FAULT].sent, 4);
    }

    #[test]
    fn lost_acknowledged_record_fails() {
        let events = sent_and_acked(3);
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(0, &[(0, "0-0-0"), (2, "0-0-2")])],
        ));
        assert!(!v.ok);
        assert_eq!(counts(&v).lost, 1);
        assert_eq!(
            examples(&v, ViolationKind::Lost),
            ["lost: orders 0-0-1 acknowledged at 0/1, not in the log"]
        );
        assert_eq!(v.topics[T].by_fault[NO_FAULT].lost, 1);
    }

    #[test]
    fn acknowledged_record_of_an_unread_partition_is_lost() {
        let v = verdict(&history(Acks::All, sent_and_acked(1), vec![]));
        assert_eq!(counts(&v).lost, 1);
        assert!(examples(&v, ViolationKind::Lost)[0].contains("no log was read"));
    }

    #[test]
    fn moved_record_fails() {
        let events = sent_and_acked(2);
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(0, &[(0, "0-0-0"), (2, "0-0-1")])],
        ));
        assert!(!v.ok);
        let c = counts(&v);
        assert_eq!((c.moved, c.lost), (1, 0));
        assert_eq!(
            examples(&v, ViolationKind::Moved),
            ["moved: orders 0-0-1 acknowledged at 0/1, in the log at 0/2"]
        );
    }

    #[test]
    fn ack_below_log_start_is_not_judged() {
        let mut l = log(0, &[(5, "0-0-5")]);
        l.log_start = 5;
        let mut events = sent_and_acked(6);
        events.push(read(100, 0, 2, "0-0-2"));
        let v = verdict(&history(Acks::All, events, vec![l]));
        assert!(v.ok, "{}", v.summary());
    }

    #[test]
    fn duplicate_in_a_partition_fails() {
        let v = verdict(&history(
            Acks::All,
            sent_and_acked(2),
            vec![log(
                0,
                &[(0, "0-0-0"), (1, "0-0-1"), (2, "0-0-1"), (3, "0-0-1")],
            )],
        ));
        assert!(!v.ok);
        let c = counts(&v);
        assert_eq!((c.duplicated, c.reordered, c.moved), (2, 0, 0));
        assert_eq!(
            examples(&v, ViolationKind::Duplicated)[0],
            "duplicated: orders 0-0-1 at 0/2, already at 0/1"
        );
    }

    #[test]
    fn copy_in_another_partition_is_a_phantom_there() {
        let v = verdict(&history(
            Acks::All,
            sent_and_acked(1),
            vec![log(0, &[(0, "0-0-0")]), log(1, &[(0, "0-0-0")])],
        ));
        assert!(!v.ok);
        let c = counts(&v);
        assert_eq!((c.phantom, c.duplicated, c.lost), (1, 0, 0));
        assert_eq!(
            examples(&v, ViolationKind::Phantom),
            ["phantom: orders \"0-0-0\" at 1/0 in the log: its id names partition 0"]
        );
    }

    #[test]
    fn reorder_fails_once_per_record_below_an_earlier_seq() {
        let events: Vec<Event> = (0..5).map(|s| send(s, &format!("0-0-{s}"))).collect();
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(
                0,
                &[
                    (0, "0-0-0"),
                    (1, "0-0-1"),
                    (2, "0-0-4"),
                    (3, "0-0-2"),
                    (4, "0-0-3"),
                ],
            )],
        ));
        assert!(!v.ok);
        assert_eq!(counts(&v).reordered, 2);
        assert_eq!(
            examples(&v, ViolationKind::Reordered)[0],
            "reordered: orders 0-0-2 at 0/3 after 0-0-4 at 0/2"
        );
    }

    #[test]
    fn reorder_is_per_producer_and_gaps_are_fine() {
        let events: Vec<Event> = ["0-0-0", "0-0-3", "1-0-0", "1-0-1"]
            .iter()
            .map(|v| send(1, v))
            .collect();
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(
                0,
                &[(0, "1-0-0"), (1, "0-0-0"), (2, "0-0-3"), (3, "1-0-1")],
            )],
        ));
        assert!(v.ok, "{}", v.summary());
    }

    #[test]
    fn duplicate_is_not_also_a_reorder() {
        let v = verdict(&history(
            Acks::All,
            sent_and_acked(3),
            vec![log(
                0,
                &[(0, "0-0-0"), (1, "0-0-1"), (2, "0-0-2"), (3, "0-0-1")],
            )],
        ));
        let c = counts(&v);
        assert_eq!((c.duplicated, c.reordered), (1, 0));
    }

    #[test]
    fn never_sent_value_is_a_phantom() {
        let v = verdict(&history(
            Acks::All,
            sent_and_acked(1),
            vec![log(0, &[(0, "0-0-0"), (1, "7-0-0")])],
        ));
        assert!(!v.ok);
        assert_eq!(counts(&v).phantom, 1);
        assert_eq!(
            examples(&v, ViolationKind::Phantom),
            ["phantom: orders \"7-0-0\" at 0/1 in the log: never sent"]
        );
        assert_eq!(v.topics[T].by_fault[NO_FAULT].phantom, 1);
    }

    #[test]
    fn unparseable_values_are_phantoms() {
        let mut events = sent_and_acked(1);
        events.push(read(50, 0, 2, "garbage"));
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(0, &[(0, "0-0-0"), (1, "00-0-0"), (2, "garbage")])],
        ));
        assert!(!v.ok);
        let c = counts(&v);
        // "garbage" is read where the log holds it: one phantom, not also an unstable read.
        assert_eq!((c.phantom, c.unstable_reads, c.duplicated), (2, 0, 0));
        assert!(examples(&v, ViolationKind::Phantom)[0].contains("not a record value"));
    }

    #[test]
    fn phantom_read_alone_is_counted() {
        let mut events = sent_and_acked(1);
        events.push(read(50, 0, 1, "boo"));
        let v = verdict(&history(Acks::All, events, vec![clean_log(1)]));
        let c = counts(&v);
        assert_eq!((c.phantom, c.unstable_reads), (1, 0));
        assert_eq!(
            examples(&v, ViolationKind::Phantom),
            ["phantom: orders \"boo\" read at 0/1 by consumer 1 at 0.050 s: not a record value"]
        );
    }

    #[test]
    fn value_in_the_wrong_partition_is_a_phantom() {
        let events = vec![send(0, "0-1-0"), send(1, "0-0-0"), ack(2, "0-0-0", 0)];
        let v = verdict(&history(
            Acks::One,
            events,
            vec![log(0, &[(0, "0-0-0"), (1, "0-1-0")]), log(1, &[])],
        ));
        assert!(!v.ok, "a phantom fails even an acks=1 topic");
        assert_eq!(counts(&v).phantom, 1);
        assert!(examples(&v, ViolationKind::Phantom)[0].contains("names partition 1"));
    }

    #[test]
    fn read_of_a_different_value_is_unstable() {
        let mut events = sent_and_acked(2);
        events.push(send(30, "0-0-2"));
        events.push(read(40, 0, 1, "0-0-2"));
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(0, &[(0, "0-0-0"), (1, "0-0-1")])],
        ));
        assert!(!v.ok);
        assert_eq!(counts(&v).unstable_reads, 1);
        assert_eq!(
            examples(&v, ViolationKind::UnstableRead),
            ["unstable read: orders 0-0-2 read at 0/1 by consumer 1 at 0.040 s, the log holds \"0-0-1\" there"]
        );
    }

    #[test]
    fn read_of_a_vanished_offset_is_unstable() {
        let mut events = sent_and_acked(2);
        events.push(read(40, 0, 1, "0-0-1"));
        events.push(read(41, 0, 1, "0-0-1"));
        let v = verdict(&history(Acks::All, events, vec![clean_log(1)]));
        let c = counts(&v);
        assert_eq!((c.unstable_reads, c.lost, c.read), (1, 1, 1));
        assert!(examples(&v, ViolationKind::UnstableRead)[0].contains("no offset 1"));
    }

    #[test]
    fn read_below_log_start_is_not_judged() {
        let mut l = clean_log(3);
        l.log_start = 2;
        l.records.retain(|(o, _)| *o >= 2);
        let mut events = sent_and_acked(3);
        events.push(read(40, 0, 0, "0-0-0"));
        let v = verdict(&history(Acks::All, events, vec![l]));
        assert!(v.ok, "{}", v.summary());
    }

    #[test]
    fn commit_going_backwards_fails() {
        let mut events = sent_and_acked(4);
        events.extend([commit(50, 0, 3), commit(51, 0, 1), commit(52, 0, 2)]);
        events.push(Event::Commit {
            t_ms: 53,
            group: "other".to_string(),
            topic: T.to_string(),
            partition: 0,
            offset: 0,
        });
        let v = verdict(&history(Acks::One, events, vec![clean_log(4)]));
        assert!(!v.ok, "commits fail on acks=1 topics too");
        assert_eq!(counts(&v).commits_backwards, 2);
        assert_eq!(
            examples(&v, ViolationKind::CommitBackwards)[0],
            "commit backwards: group g committed orders 0/1 at 0.051 s, after 0/3"
        );
    }

    #[test]
    fn commit_past_the_end_fails() {
        let mut events = sent_and_acked(4);
        events.extend([commit(50, 0, 4), commit(51, 0, 5)]);
        let v = verdict(&history(Acks::All, events, vec![clean_log(4)]));
        assert!(!v.ok);
        assert_eq!(counts(&v).commits_past_end, 1);
        assert_eq!(
            examples(&v, ViolationKind::CommitPastEnd),
            ["commit past the end: group g committed orders 0/5 at 0.051 s, the log ends at 0/4"]
        );
    }

    #[test]
    fn commit_on_an_empty_log_ends_at_its_start() {
        let mut l = log(0, &[]);
        l.log_start = 7;
        let events = vec![commit(1, 0, 7), commit(2, 0, 8)];
        let v = verdict(&history(Acks::All, events, vec![l]));
        assert_eq!(counts(&v).commits_past_end, 1);
    }

    #[test]
    fn acks_one_losses_and_duplicates_are_counted_only() {
        let v = verdict(&history(
            Acks::One,
            sent_and_acked(3),
            vec![log(0, &[(0, "0-0-0"), (1, "0-0-1"), (2, "0-0-1")])],
        ));
        assert!(v.ok, "{}", v.summary());
        let c = counts(&v);
        assert_eq!((c.lost, c.duplicated), (1, 1));
        assert!(v.violations.is_empty());
        assert_eq!(v.tolerated[&ViolationKind::Lost].len(), 1);
        assert!(v.summary().contains("counted only (acks=1)"));
    }

    #[test]
    fn attribution_goes_to_the_active_fault() {
        let events = vec![
            send(0, "0-0-0"),
            start(100, FaultKind::Pause, "node 2"),
            send(150, "0-0-1"),
            ack(160, "0-0-1", 1),
            end(200, FaultKind::Pause, "node 2"),
        ];
        let v = check(
            &history(Acks::All, events, vec![log(0, &[(0, "0-0-0")])]),
            &CheckOptions {
                settle_ms: 0,
                ..CheckOptions::default()
            },
        );
        let by = &v.topics[T].by_fault;
        assert_eq!(by[NO_FAULT].sent, 1);
        let pause = &by["pause"];
        assert_eq!((pause.sent, pause.acknowledged, pause.lost), (1, 1, 1));
    }

    #[test]
    fn attribution_goes_to_the_latest_of_overlapping_faults() {
        let events = vec![
            start(0, FaultKind::Isolate, "node 1"),
            start(10, FaultKind::KillLeader, "node 3"),
            send(20, "0-0-0"),
            end(30, FaultKind::KillLeader, "node 3"),
            send(40, "0-0-1"),
        ];
        let v = check(
            &history(Acks::All, events, vec![]),
            &CheckOptions {
                settle_ms: 0,
                ..CheckOptions::default()
            },
        );
        let by = &v.topics[T].by_fault;
        assert_eq!(by["kill-leader"].sent, 1);
        assert_eq!(
            by["isolate"].sent, 1,
            "isolate is still active after kill-leader ends"
        );
        assert!(!by.contains_key(NO_FAULT));
    }

    #[test]
    fn attribution_goes_to_a_recently_ended_fault() {
        let events = vec![
            start(0, FaultKind::Split, "1 | 2,3"),
            end(1000, FaultKind::Split, "1 | 2,3"),
            start(1500, FaultKind::DiskFull, "node 1"),
            end(2000, FaultKind::DiskFull, "node 1"),
            send(6000, "0-0-0"),
            send(7001, "0-0-1"),
        ];
        let v = verdict(&history(Acks::All, events, vec![]));
        let by = &v.topics[T].by_fault;
        assert_eq!(by["disk-full"].sent, 1);
        assert_eq!(by[NO_FAULT].sent, 1);
        assert!(!by.contains_key("split"));
    }

    #[test]
    fn attribution_goes_to_none_without_faults() {
        let events = vec![send(0, "0-0-0"), fail(5, "0-0-0")];
        let v = verdict(&history(Acks::All, events, vec![]));
        let row = &v.topics[T].by_fault[NO_FAULT];
        assert_eq!((row.sent, row.failed), (1, 1));
    }

    #[test]
    fn fault_end_closes_the_fault_of_the_same_kind_and_target() {
        let h = history(
            Acks::All,
            vec![
                start(0, FaultKind::KillNode, "node 1"),
                start(5, FaultKind::KillNode, "node 2"),
                end(10, FaultKind::KillNode, "node 1"),
                end(11, FaultKind::Pause, "node 2"),
            ],
            vec![],
        );
        let faults = fault_intervals(&h);
        assert_eq!(faults.len(), 2);
        assert_eq!(faults[0].end_ms, Some(10));
        assert_eq!(faults[1].end_ms, None);
        assert_eq!(fault_at(&faults, 100, 0), Some(FaultKind::KillNode));
        assert_eq!(fault_at(&faults[..1], 16, 5), None);
        assert_eq!(fault_at(&faults[..1], 15, 5), Some(FaultKind::KillNode));
    }

    #[test]
    fn unacknowledged_record_present_is_fine() {
        let mut events = sent_and_acked(1);
        events.push(send(20, "0-0-1"));
        events.push(fail(30, "0-0-1"));
        events.push(send(40, "0-0-2"));
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(0, &[(0, "0-0-0"), (1, "0-0-1"), (2, "0-0-2")])],
        ));
        assert!(v.ok, "{}", v.summary());
        let c = counts(&v);
        assert_eq!((c.sent, c.acknowledged, c.failed), (3, 1, 1));
        assert_eq!(c.unacknowledged_present, 2);
    }

    #[test]
    fn failed_send_absent_is_fine() {
        let mut events = sent_and_acked(1);
        events.push(send(20, "0-0-1"));
        events.push(fail(30, "0-0-1"));
        events.push(send(40, "0-0-2"));
        events.push(ack(50, "0-0-2", 1));
        let v = verdict(&history(
            Acks::All,
            events,
            vec![log(0, &[(0, "0-0-0"), (1, "0-0-2")])],
        ));
        assert!(v.ok, "{}", v.summary());
        assert_eq!(counts(&v).unacknowledged_present, 0);
    }

    #[test]
    fn topic_missing_from_the_topics_map_is_judged_as_acks_all() {
        let mut h = history(Acks::One, sent_and_acked(1), vec![]);
        h.topics.clear();
        let v = verdict(&h);
        assert!(!v.ok);
        assert_eq!(v.topics[T].acks, Acks::All);
    }

    #[test]
    fn examples_are_capped_but_counts_are_not() {
        let v = check(
            &history(Acks::All, sent_and_acked(30), vec![]),
            &CheckOptions {
                examples_max: 5,
                ..CheckOptions::default()
            },
        );
        assert_eq!(counts(&v).lost, 30);
        assert_eq!(v.failures, 30);
        assert_eq!(examples(&v, ViolationKind::Lost).len(), 5);
    }

    #[test]
    fn summary_and_json_carry_the_counts_and_examples() {
        let mut events = vec![start(0, FaultKind::OneWay, "2 -> 3")];
        events.extend(sent_and_acked(2));
        let v = verdict(&history(Acks::All, events, vec![clean_log(1)]));
        let text = v.summary();
        assert!(text.starts_with("verdict: FAILED (1 violations)"), "{text}");
        assert!(text.contains("topic orders (acks=all): sent 2"), "{text}");
        assert!(text.contains("one-way"), "{text}");
        assert!(
            text.contains("lost: orders 0-0-1 acknowledged at 0/1"),
            "{text}"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["topics"]["orders"]["by_fault"]["one-way"]["lost"], 1);
        assert_eq!(json["violations"]["lost"].as_array().unwrap().len(), 1);
    }
}
