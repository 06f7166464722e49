//! The Raft quorum without IO: tikv's `RawNode` over an in-memory [`LogStore`], with its
//! `Ready` turned into three queues the driver drains in order: [`PersistBatch`]es to make
//! durable, messages to send, committed entries to apply.
//!
//! # Durability contract
//! A batch from [`Quorum::poll_persist`] must be written and synced (in the order given) before
//! [`Quorum::handle_persisted`] is called with its id. Messages that depend on it (votes,
//! append acknowledgements, anything a follower says about its log) are held until then;
//! only a leader's appends go out at once (Raft thesis 10.2.1: the leader counts itself only
//! once its own entries are durable). The in-memory store already holds the batch, because
//! Raft reads entries back before they are durable.
//!
//! # Invariants
//! * Batches are acknowledged in order; an acknowledgement covers every earlier batch.
//! * Committed entries are handed out in index order, each once per process lifetime, and
//!   only up to what is durable locally; a snapshot from the leader comes before the entries
//!   that follow it. A snapshot from the leader counts as local at once (it holds only
//!   committed state); the messages acknowledging it are still held until it is durable.
//! * The log is compacted only at an applied index; the snapshot holds the image there.
//!
//! # Determinism
//! raft-rs draws election timeouts from the thread RNG. After every call into Raft the
//! timeout is forced to a value derived from (seed, node, term, role, leader), so a quorum
//! driven by the same inputs behaves the same; the spread between nodes still breaks ties.
//!
//! Node ids: Kafka node ids start at 0 but Raft reserves 0, so Raft id = node id + 1.

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType, Snapshot};
use raft::{
    GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole, Storage, StorageError,
};
use serde::{Deserialize, Serialize};

use crate::image::BrokerId;

/// The Raft id of a node.
pub fn raft_id(node: BrokerId) -> u64 {
    u64::from(node.unsigned_abs()) + 1
}

/// The node id of a Raft id (`None` for Raft's "no node" 0 or an id out of range).
pub fn node_id(raft: u64) -> Option<BrokerId> {
    raft.checked_sub(1).and_then(|n| BrokerId::try_from(n).ok())
}

/// Why the quorum refused an input or could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("raft refused: {0}")]
    Raft(String),
    #[error("not the leader")]
    NotLeader,
    #[error("recovered log is inconsistent: {0}")]
    BadLog(String),
    #[error("bad configuration: {0}")]
    Config(String),
}

impl From<raft::Error> for QuorumError {
    fn from(e: raft::Error) -> Self {
        match e {
            raft::Error::ProposalDropped => QuorumError::NotLeader,
            e => QuorumError::Raft(e.to_string()),
        }
    }
}

/// One change to the durable log, applied by [`LogState::apply`] alike in memory and by
/// every [`QuorumLog`].
#[derive(Debug, Clone, PartialEq)]
pub enum PersistOp {
    /// Entries replace any entries at and after the first one's index.
    Append(Vec<Entry>),
    HardState(HardState),
    /// A snapshot from the leader: replaces the whole log.
    InstallSnapshot(Snapshot),
    /// A local snapshot: entries up to its index are dropped.
    Compact(Snapshot),
}

/// Ops to make durable together, then acknowledge by `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistBatch {
    pub id: u64,
    pub ops: Vec<PersistOp>,
}

/// The durable Raft state: what a [`QuorumLog`] holds and what a restart recovers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogState {
    pub hard_state: HardState,
    /// The latest snapshot (index 0 and no data when there is none).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl LogState {
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Applies one op; refuses one that would leave a gap.
    pub fn apply(&mut self, op: &PersistOp) -> Result<(), QuorumError> {
        match op {
            PersistOp::Append(ents) => {
                let Some(first) = ents.first().map(|e| e.index) else {
                    return Ok(());
                };
                if first <= self.snapshot_index() || first > self.last_index() + 1 {
                    return Err(QuorumError::BadLog(format!(
                        "append at {first} to a log of ({}, {}]",
                        self.snapshot_index(),
                        self.last_index()
                    )));
                }
                let keep = (first - self.snapshot_index() - 1) as usize;
                self.entries.truncate(keep);
                self.entries.extend_from_slice(ents);
            }
            PersistOp::HardState(hs) => self.hard_state = hs.clone(),
            PersistOp::InstallSnapshot(s) => {
                let meta = s.get_metadata();
                self.hard_state.commit = self.hard_state.commit.max(meta.index);
                self.hard_state.term = self.hard_state.term.max(meta.term);
                self.snapshot = s.clone();
                self.entries.clear();
            }
            PersistOp::Compact(s) => {
                let index = s.get_metadata().index;
                if index <= self.snapshot_index() {
                    return Ok(());
                }
                if index > self.last_index() {
                    return Err(QuorumError::BadLog(format!(
                        "compaction at {index} past the last index {}",
                        self.last_index()
                    )));
                }
                let drop = (index - self.snapshot_index()) as usize;
                self.entries.drain(..drop);
                self.snapshot = s.clone();
            }
        }
        debug_assert!(self
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == self.snapshot_index() + 1 + i as u64));
        Ok(())
    }
}

/// Where the driver keeps the Raft log durable. Write and sync are separate so that a test
/// implementation can lose what was written but not synced. Async, so that the durable log
/// runs on the engine's storage (io_uring) in the node's thread.
#[allow(async_fn_in_trait)]
pub trait QuorumLog {
    type Error: std::error::Error;
    /// Writes a batch after the ones written before (not yet durable).
    async fn write(&mut self, batch: &PersistBatch) -> Result<(), Self::Error>;
    /// Makes everything written so far durable.
    async fn sync(&mut self) -> Result<(), Self::Error>;
    /// What is durable: the state to start from.
    async fn recover(&self) -> Result<LogState, Self::Error>;
}

/// An in-memory [`QuorumLog`] for tests and the simulator: a crash loses unsynced batches.
/// Its own methods are synchronous (the simulator calls them directly); the trait's delegate
/// to them.
#[derive(Debug, Clone, Default)]
pub struct MemQuorumLog {
    durable: LogState,
    unsynced: Vec<PersistBatch>,
}

impl MemQuorumLog {
    /// Forgets what was not synced (a power loss). `keep_ops` ops of the unsynced batches
    /// survive, in order (a torn write).
    pub fn crash(&mut self, keep_ops: usize) -> Result<(), QuorumError> {
        let ops: Vec<PersistOp> = self.unsynced.drain(..).flat_map(|b| b.ops).collect();
        for op in ops.iter().take(keep_ops) {
            self.durable.apply(op)?;
        }
        Ok(())
    }

    pub fn unsynced_batches(&self) -> usize {
        self.unsynced.len()
    }

    /// [`QuorumLog::write`], synchronously.
    pub fn write(&mut self, batch: &PersistBatch) -> Result<(), QuorumError> {
        self.unsynced.push(batch.clone());
        Ok(())
    }

    /// [`QuorumLog::sync`], synchronously.
    pub fn sync(&mut self) -> Result<(), QuorumError> {
        for b in std::mem::take(&mut self.unsynced) {
            for op in &b.ops {
                self.durable.apply(op)?;
            }
        }
        Ok(())
    }

    /// [`QuorumLog::recover`], synchronously.
    pub fn recover(&self) -> Result<LogState, QuorumError> {
        Ok(self.durable.clone())
    }
}

impl QuorumLog for MemQuorumLog {
    type Error = QuorumError;

    async fn write(&mut self, batch: &PersistBatch) -> Result<(), QuorumError> {
        MemQuorumLog::write(self, batch)
    }

    async fn sync(&mut self) -> Result<(), QuorumError> {
        MemQuorumLog::sync(self)
    }

    async fn recover(&self) -> Result<LogState, QuorumError> {
        MemQuorumLog::recover(self)
    }
}

/// Raft's view of the log: the same [`LogState`], plus the fixed voter set.
#[derive(Debug, Clone)]
pub struct LogStore {
    state: LogState,
    conf_state: ConfState,
}

impl LogStore {
    fn entry_term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.state.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < snap.index {
            return Err(StorageError::Compacted.into());
        }
        let i = (idx - snap.index - 1) as usize;
        self.state
            .entries
            .get(i)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable.into())
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.state.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.state.snapshot_index() + 1;
        if low < first {
            return Err(StorageError::Compacted.into());
        }
        if high > self.state.last_index() + 1 || low > high {
            return Err(StorageError::Unavailable.into());
        }
        let lo = (low - first) as usize;
        let hi = (high - first) as usize;
        let mut out = self.state.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.entry_term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.state.snapshot_index() >= request_index && !self.state.snapshot.data.is_empty() {
            Ok(self.state.snapshot.clone())
        } else {
            Err(StorageError::SnapshotTemporarilyUnavailable.into())
        }
    }
}

/// Quorum settings, in ticks of the driver's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    pub node_id: BrokerId,
    pub voters: Vec<BrokerId>,
    /// Followers wait between `election_ticks` and twice that without a leader.
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Bytes of entries per append message.
    pub append_bytes_max: u64,
    /// Append messages in flight per follower.
    pub appends_in_flight_max: usize,
    /// Seeds the election-timeout spread.
    pub seed: u64,
}

/// What the controller applies, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    Entry(Entry),
    Snapshot(Snapshot),
}

/// The role as seen after the last input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleState {
    pub term: u64,
    pub is_leader: bool,
    pub leader: Option<BrokerId>,
}

/// Raft glue; see the module doc.
pub struct Quorum {
    raw: RawNode<LogStore>,
    config: QuorumConfig,
    outbox: VecDeque<Message>,
    held: VecDeque<(u64, Vec<Message>)>,
    persist: VecDeque<PersistBatch>,
    /// Batches handed out and not acknowledged: (batch id, last ready number it covers).
    unacked: VecDeque<(u64, Option<u64>)>,
    next_batch_id: u64,
    committed: VecDeque<Committed>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", &self.config.node_id)
            .field("role", &self.role())
            .field("last_index", &self.last_index())
            .field("committed", &self.raw.raft.raft_log.committed)
            .field("persisted", &self.raw.raft.raft_log.persisted)
            .field("applied", &self.raw.raft.raft_log.applied())
            .field("snapshot_index", &self.snapshot_index())
            .field("unacked", &self.unacked)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Quorum {
    /// Starts from the durable state (`LogState::default()` for a new node).
    pub fn new(
        config: QuorumConfig,
        recovered: LogState,
        logger: &slog::Logger,
    ) -> Result<Self, QuorumError> {
        if config.voters.is_empty() || !config.voters.contains(&config.node_id) {
            return Err(QuorumError::Config(
                "the node must be one of a non-empty voter set".into(),
            ));
        }
        let mut state = recovered;
        for (i, e) in state.entries.iter().enumerate() {
            if e.index != state.snapshot_index() + 1 + i as u64 {
                return Err(QuorumError::BadLog(format!(
                    "entry {} out of place",
                    e.index
                )));
            }
        }
        let commit = state
            .hard_state
            .commit
            .clamp(state.snapshot_index(), state.last_index());
        state.hard_state.commit = commit;
        let conf_state = ConfState {
            voters: config.voters.iter().map(|&v| raft_id(v)).collect(),
            ..Default::default()
        };
        let applied = state.snapshot_index();
        let store = LogStore { state, conf_state };
        let raft_config = raft::Config {
            id: raft_id(config.node_id),
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks * 2,
            applied,
            max_size_per_msg: config.append_bytes_max,
            max_inflight_msgs: config.appends_in_flight_max,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&raft_config, store, logger)?;
        let mut q = Quorum {
            raw,
            config,
            outbox: VecDeque::new(),
            held: VecDeque::new(),
            persist: VecDeque::new(),
            unacked: VecDeque::new(),
            next_batch_id: 1,
            committed: VecDeque::new(),
        };
        q.after_input();
        Ok(q)
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    pub fn role(&self) -> RoleState {
        let r = &self.raw.raft;
        RoleState {
            term: r.term,
            is_leader: r.state == StateRole::Leader,
            leader: node_id(r.leader_id),
        }
    }

    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The highest index known committed.
    pub fn committed_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// On the leader, each voter's highest log index known to match the leader's log (the
    /// leader itself: its last index); empty on a follower, which does not track them.
    pub fn voter_progress(&self) -> Vec<(BrokerId, u64)> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            return Vec::new();
        }
        let mut out: Vec<(BrokerId, u64)> = r
            .prs()
            .iter()
            .filter_map(|(id, p)| {
                let matched = if *id == r.id {
                    self.last_index()
                } else {
                    p.matched
                };
                node_id(*id).map(|b| (b, matched))
            })
            .collect();
        out.sort();
        out
    }

    /// The term of a log entry still in the log (not compacted).
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.raw.raft.raft_log.term(index).ok()
    }

    /// The entries after `after` up to the last index, as the store holds them.
    pub fn entries_after(&self, after: u64) -> Result<Vec<Entry>, QuorumError> {
        let store = self.raw.store();
        let high = store.state.last_index() + 1;
        if after + 1 >= high {
            return Ok(Vec::new());
        }
        Ok(store.entries(after + 1, high, None, GetEntriesContext::empty(false))?)
    }

    /// A message from the network. The caller has checked the sender is a voter.
    pub fn step(&mut self, msg: Message) -> Result<(), QuorumError> {
        let r = self.raw.step(msg);
        self.after_input();
        r.map_err(Into::into)
    }

    /// One tick of the driver's clock.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.after_input();
    }

    /// Appends `data` as a new entry if this node leads; returns its (index, term).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), QuorumError> {
        let r = self.raw.propose(Vec::new(), data);
        let at = (self.last_index(), self.raw.raft.term);
        self.after_input();
        r?;
        Ok(at)
    }

    /// The driver made every batch up to `batch_id` durable.
    pub fn handle_persisted(&mut self, batch_id: u64) {
        let mut covers = None;
        while let Some(&(id, c)) = self.unacked.front() {
            if id > batch_id {
                break;
            }
            self.unacked.pop_front();
            covers = c.or(covers);
        }
        if let Some(number) = covers {
            self.raw.on_persist_ready(number);
            while self.held.front().is_some_and(|(n, _)| *n <= number) {
                if let Some((_, msgs)) = self.held.pop_front() {
                    self.outbox.extend(msgs);
                }
            }
        }
        self.after_input();
    }

    /// The controller applied everything up to `index`.
    pub fn advance_applied(&mut self, index: u64) {
        if index > self.raw.raft.raft_log.applied() {
            self.raw.advance_apply_to(index);
        }
        self.after_input();
    }

    /// Compacts the log at `index` (applied) with `data` (the image there).
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), QuorumError> {
        let term = self
            .raw
            .raft
            .raft_log
            .term(index)
            .map_err(|e| QuorumError::BadLog(format!("no term at {index}: {e}")))?;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.raw.store().conf_state.clone());
        let op = PersistOp::Compact(snap);
        self.raw.mut_store().state.apply(&op)?;
        self.push_batch(vec![op], None);
        Ok(())
    }

    /// The snapshot index of the in-memory log.
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().state.snapshot_index()
    }

    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        self.persist.pop_front()
    }

    /// The next message to send. A snapshot counts as delivered once handed out: if it is
    /// lost, the leader's next probe finds the gap and sends it again (raft-rs would wait
    /// for a report forever otherwise).
    pub fn poll_message(&mut self) -> Option<Message> {
        let m = self.outbox.pop_front()?;
        if m.get_msg_type() == MessageType::MsgSnapshot {
            self.raw.report_snapshot(m.to, SnapshotStatus::Finish);
            self.after_input();
        }
        Some(m)
    }

    pub fn poll_committed(&mut self) -> Option<Committed> {
        self.committed.pop_front()
    }

    fn push_batch(&mut self, ops: Vec<PersistOp>, covers: Option<u64>) {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.persist.push_back(PersistBatch { id, ops });
        self.unacked.push_back((id, covers));
    }

    fn after_input(&mut self) {
        self.process_ready();
        self.fix_election_timeout();
    }

    fn fix_election_timeout(&mut self) {
        let e = self.config.election_ticks as u64;
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Follower => 1,
            StateRole::Candidate => 2,
            StateRole::Leader => 3,
            StateRole::PreCandidate => 4,
        };
        let mut h = self.config.seed ^ r.id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for v in [r.term, role, r.leader_id] {
            h = splitmix64(h ^ v);
        }
        let t = (e + h % e.max(1)) as usize;
        if self.raw.raft.randomized_election_timeout() != t {
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }

    fn process_ready(&mut self) {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            let number = rd.number();
            self.outbox.extend(rd.take_messages());
            let mut ops = Vec::new();
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                ops.push(PersistOp::InstallSnapshot(snap.clone()));
                self.committed.push_back(Committed::Snapshot(snap));
            }
            self.committed.extend(
                rd.take_committed_entries()
                    .into_iter()
                    .map(Committed::Entry),
            );
            let entries = rd.take_entries();
            if !entries.is_empty() {
                ops.push(PersistOp::Append(entries));
            }
            if let Some(hs) = rd.hs() {
                ops.push(PersistOp::HardState(hs.clone()));
            }
            for op in &ops {
                // Raft hands out only appends that fit the log it reads from this store.
                if let Err(e) = self.raw.mut_store().state.apply(op) {
                    panic!("raft produced an op that does not fit its own log: {e}");
                }
            }
            let msgs = rd.take_persisted_messages();
            let snapshot_index =
                (!rd.snapshot().is_empty()).then(|| rd.snapshot().get_metadata().index);
            self.raw.advance_append_async(rd);
            if let Some(index) = snapshot_index {
                // A snapshot from the leader holds only committed state: Raft may count it as
                // local at once (it must, or a campaign before the batch is durable would read
                // below the new first index). What acknowledges it stays held until durable.
                self.raw.on_persist_ready(number);
                self.raw.advance_apply_to(index);
            }
            if ops.is_empty() {
                match self.unacked.back_mut() {
                    Some(last) => {
                        last.1 = Some(number);
                        self.held.push_back((number, msgs));
                    }
                    None => {
                        self.raw.on_persist_ready(number);
                        self.outbox.extend(msgs);
                    }
                }
            } else {
                self.push_batch(ops, Some(number));
                self.held.push_back((number, msgs));
            }
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
