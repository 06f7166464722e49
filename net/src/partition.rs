//! A partition on this broker: its log and its replica state, in one place.
//!
//! The state is a [`Role`]:
//! * `Single` — no cluster: the log is the partition, and its high watermark is the log's
//!   durable end.
//! * `Leader` — the image names this broker leader: client appends are stamped with the
//!   leader epoch, the high watermark is the replication protocol's
//!   ([`tern_replication::replica::LeaderState`]: the smallest durable log end over the
//!   maximal ISR, frozen while the ISR is below `min.insync.replicas`), and acks=all
//!   produces wait for it.
//! * `Follower` — a replica that is not the leader: the shard's fetcher
//!   ([`crate::replicate`]) copies the leader's batches; clients are refused.
//! * `Idle` — in a cluster, not (yet) a replica with a role, or between two roles (a new
//!   leadership waits for its epoch to be durable before it accepts appends).
//!
//! Consumers (`Fetch` with replica id -1) read below the high watermark only, so they never
//! see a record that could later be truncated; ListOffsets' latest is the high watermark.
//! Everything here runs on the owning shard's thread; borrows never span an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tern_engine::{Log, Offset, UringStorage};
use tern_replication::epoch::Epoch;
use tern_replication::image::{self, BrokerId};
use tern_replication::replica::{
    AckError, AckResult, FetchError, FetchOutcome, FollowerFetch, IsrChange, LeaderState,
    ReplicaConfig,
};
use tokio::sync::{oneshot, Notify};

use crate::error::PartitionError;
use crate::shard::{Appended, ProduceResult};

/// A follower's view of its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Following {
    /// The leader to fetch from (-1: none elected).
    pub leader: BrokerId,
    pub leader_epoch: Epoch,
    pub partition_epoch: Epoch,
    /// The leader's high watermark as last fetched, capped by this log's end.
    pub high_watermark: i64,
}

#[derive(Debug)]
pub(crate) struct Leading {
    state: LeaderState,
    acks: HashMap<u64, oneshot::Sender<Result<(), AckError>>>,
    next_ack: u64,
}

#[derive(Debug)]
pub(crate) enum Role {
    Single,
    Idle,
    Leader(Box<Leading>),
    Follower(Following),
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) log: Log<UringStorage>,
    /// Notified when the high watermark moves (consumers' long polls wait on it).
    pub(crate) signal: Arc<Notify>,
    /// Notified when the log end moves (followers' long polls wait on it).
    pub(crate) appended: Notify,
    role: RefCell<Role>,
    config: RefCell<ReplicaConfig>,
}

impl Partition {
    /// A partition of a single broker (`clustered = false`) or of a cluster node, where it
    /// waits for the image to give it a role.
    pub(crate) fn new(log: Log<UringStorage>, signal: Arc<Notify>, clustered: bool) -> Self {
        Partition {
            log,
            signal,
            appended: Notify::new(),
            role: RefCell::new(if clustered { Role::Idle } else { Role::Single }),
            config: RefCell::new(ReplicaConfig::default()),
        }
    }

    /// The offset below which consumers may read.
    pub(crate) fn high_watermark(&self) -> i64 {
        match &*self.role.borrow() {
            Role::Single => self.log.readable_end().0,
            Role::Leader(l) => l.state.high_watermark(),
            Role::Follower(f) => f.high_watermark,
            Role::Idle => self.log.log_start_offset().0,
        }
    }

    /// The leader epoch clients see for this partition here (0 on a single broker), or
    /// NotLeader when this broker does not lead it.
    pub(crate) fn client_leader_epoch(&self) -> Result<Epoch, PartitionError> {
        match &*self.role.borrow() {
            Role::Single => Ok(0),
            Role::Leader(l) => Ok(l.state.leader_epoch()),
            Role::Idle | Role::Follower(_) => Err(PartitionError::NotLeader),
        }
    }

    /// The leader epoch of the record at `offset` (of the log end for the latest offset),
    /// for ListOffsets: the epoch cache's, or the current epoch where the cache has none
    /// (an epoch that has written nothing yet starts at the log end).
    pub(crate) fn epoch_at(&self, offset: i64) -> Result<Epoch, PartitionError> {
        let current = self.client_leader_epoch()?;
        Ok(self.log.epochs().epoch_at(offset).unwrap_or(current))
    }

    /// Kafka's OffsetForLeaderEpoch for a client (KIP-320): the largest epoch at or below
    /// `epoch` and the offset where it ends. The current epoch counts as starting at the log
    /// end when it has written nothing yet (as a Kafka leader assigns its epoch when it is
    /// elected), so a consumer of a quiet partition never sees an undefined answer.
    /// `current` (-1: not checked) fences clients whose metadata is older or newer.
    pub(crate) fn offset_for_leader_epoch(
        &self,
        current: Epoch,
        epoch: Epoch,
    ) -> Result<(Epoch, i64), PartitionError> {
        let leader_epoch = self.client_leader_epoch()?;
        if current >= 0 && current < leader_epoch {
            return Err(PartitionError::FencedLeaderEpoch {
                request: current,
                current: leader_epoch,
            });
        }
        if current > leader_epoch {
            return Err(PartitionError::UnknownLeaderEpoch {
                request: current,
                current: leader_epoch,
            });
        }
        let log_end = self.log.next_offset().0;
        let mut cache = self.log.epochs();
        if cache.latest_epoch().is_none_or(|e| e < leader_epoch) {
            // Refused only for an epoch older than the cache's latest, excluded above.
            let _ = cache.assign(leader_epoch, log_end);
        }
        Ok(cache.end_offset_for(epoch, log_end).unwrap_or((-1, -1)))
    }

    /// The partition's figures for `/metrics`.
    pub(crate) fn stats(&self, topic: &str, partition: i32) -> crate::metrics::PartitionStats {
        let log = self.log.stats();
        let (leader, isr, replicas) = match &*self.role.borrow() {
            Role::Single => (true, 1, 1),
            Role::Leader(l) => (
                true,
                l.state.partition().isr.len(),
                l.state.partition().replicas.len(),
            ),
            Role::Follower(_) | Role::Idle => (false, 0, 0),
        };
        crate::metrics::PartitionStats {
            topic: topic.to_string(),
            partition,
            log_start_offset: self.log.log_start_offset().0,
            log_end_offset: self.log.next_offset().0,
            high_watermark: self.high_watermark(),
            size_bytes: self.log.size_bytes(),
            appended_bytes: log.bytes_appended,
            appended_batches: log.appends,
            leader,
            isr,
            replicas,
        }
    }

    /// Whether clients may produce to and consume from this partition here.
    pub(crate) fn serves_clients(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Single | Role::Leader(_))
    }

    /// The follower's state, when this broker follows the partition.
    pub(crate) fn following(&self) -> Option<Following> {
        match &*self.role.borrow() {
            Role::Follower(f) => Some(*f),
            _ => None,
        }
    }

    /// A client's append: refused now unless this broker serves the partition (and, for
    /// acks=all, unless the ISR is too small); otherwise queued now (offsets follow call
    /// order) and answered by the returned future: at once when durable for acks 0 and 1,
    /// when the high watermark covers it for acks=all, or with the wait's failure.
    pub(crate) fn produce(
        self: &Rc<Self>,
        batches: &[Bytes],
        acks: i16,
        timeout_ms: u64,
    ) -> impl std::future::Future<Output = ProduceResult> + 'static {
        let queued = (|| {
            match &*self.role.borrow() {
                Role::Single => {}
                Role::Leader(l) if acks == -1 => l.state.check_append()?,
                Role::Leader(_) => {}
                Role::Idle | Role::Follower(_) => return Err(PartitionError::NotLeader),
            }
            let appended = self.log.append(batches);
            if let Role::Leader(l) = &mut *self.role.borrow_mut() {
                // Followers' long polls may take these records now (tail reads).
                l.state.on_log_appended(self.log.next_offset().0);
                self.appended.notify_waiters();
            }
            Ok(appended)
        })();
        let me = self.clone();
        async move {
            let info = queued?.await?;
            me.on_log_end();
            if acks == -1 {
                let end = info.last_offset.0 + 1;
                if let Some(wait) = me.await_ack(end, timeout_ms) {
                    wait.await.unwrap_or(Err(AckError::NotLeader))?;
                }
            }
            Ok(Appended {
                base_offset: info.first_offset.0,
                log_append_time_ms: (info.log_append_time_ms >= 0)
                    .then_some(info.log_append_time_ms),
                log_start_offset: me.log.log_start_offset().0,
            })
        }
    }

    /// Registers an acks=all wait for the high watermark to reach `end`; `None` when it has.
    fn await_ack(
        &self,
        end: i64,
        timeout_ms: u64,
    ) -> Option<oneshot::Receiver<Result<(), AckError>>> {
        let mut role = self.role.borrow_mut();
        let l = match &mut *role {
            Role::Leader(l) => l,
            Role::Single => return None,
            // The leadership ended between the append and now.
            Role::Idle | Role::Follower(_) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(AckError::NotLeader));
                return Some(rx);
            }
        };
        let id = l.next_ack;
        l.next_ack += 1;
        let deadline = crate::replicate::now_ms() + timeout_ms;
        match l.state.await_ack(id, end, deadline) {
            Some(r) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(r.result);
                Some(rx)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                l.acks.insert(id, tx);
                Some(rx)
            }
        }
    }

    /// The log's durable end moved (an append completed): the leader's high watermark may
    /// move; followers' and consumers' long polls wake.
    pub(crate) fn on_log_end(&self) {
        let moved = {
            let mut role = self.role.borrow_mut();
            match &mut *role {
                Role::Leader(l) => {
                    let before = l.state.high_watermark();
                    let done = l.state.on_log_end(self.log.readable_end().0);
                    complete(l, done);
                    l.state.high_watermark() != before
                }
                Role::Single => true,
                Role::Idle | Role::Follower(_) => false,
            }
        };
        self.appended.notify_waiters();
        if moved {
            self.signal.notify_waiters();
        }
    }

    /// Takes the topic's changed replica settings (AlterConfigs of `min.insync.replicas`),
    /// the running leadership included.
    pub(crate) fn set_replica_config(&self, config: ReplicaConfig) {
        *self.config.borrow_mut() = config;
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.state.set_config(config);
        }
    }

    /// Brings the role in line with the image's state of the partition. A new leadership
    /// makes its epoch durable in the log before it accepts appends.
    pub(crate) async fn apply_image(
        &self,
        local: BrokerId,
        p: &image::Partition,
        config: ReplicaConfig,
    ) -> Result<(), tern_engine::LogError> {
        *self.config.borrow_mut() = config;
        let now = crate::replicate::now_ms();
        let known_hw = self.high_watermark();
        if p.leader == local {
            {
                let mut role = self.role.borrow_mut();
                if let Role::Leader(l) = &mut *role {
                    if l.state.leader_epoch() == p.leader_epoch {
                        l.state.set_config(config);
                        let before = l.state.high_watermark();
                        let done = l.state.update_partition(p, now);
                        complete(l, done);
                        let moved = l.state.high_watermark() != before;
                        drop(role);
                        if moved {
                            self.signal.notify_waiters();
                        }
                        return Ok(());
                    }
                }
            }
            self.set_role(Role::Idle);
            self.log.become_leader(p.leader_epoch).await?;
            let state = LeaderState::new(
                local,
                p,
                self.log.log_start_offset().0,
                self.log.readable_end().0,
                known_hw,
                now,
                config,
            );
            self.set_role(Role::Leader(Box::new(Leading {
                state,
                acks: HashMap::new(),
                next_ack: 0,
            })));
            // Followers are sent what is appended before it is durable here, so that their
            // durable writes overlap the leader's (the high watermark still waits for both).
            self.log.set_tail_reads(p.replicas.len() > 1);
            self.signal.notify_waiters();
            return Ok(());
        }
        if p.replicas.contains(&local) {
            let f = Following {
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                high_watermark: known_hw.min(self.log.readable_end().0),
            };
            if self.following() != Some(f) {
                self.set_role(Role::Follower(f));
            }
            return Ok(());
        }
        if !matches!(&*self.role.borrow(), Role::Idle) {
            self.set_role(Role::Idle);
        }
        Ok(())
    }

    /// Replaces the role; a leadership that ends fails its acks=all waits.
    fn set_role(&self, role: Role) {
        let old = std::mem::replace(&mut *self.role.borrow_mut(), role);
        if let Role::Leader(l) = old {
            self.log.stop_leading();
            self.log.set_tail_reads(false);
            let Leading {
                state, mut acks, ..
            } = *l;
            for r in state.stop() {
                if let Some(tx) = acks.remove(&r.id) {
                    let _ = tx.send(r.result);
                }
            }
        }
        self.appended.notify_waiters();
    }

    /// The follower learnt the leader's high watermark.
    pub(crate) fn set_follower_high_watermark(&self, leader_hw: i64) {
        let end = self.log.readable_end().0;
        let moved = match &mut *self.role.borrow_mut() {
            Role::Follower(f) => {
                let hw = tern_replication::replica::follower_high_watermark(leader_hw, end);
                let moved = hw != f.high_watermark;
                f.high_watermark = hw;
                moved
            }
            _ => false,
        };
        if moved {
            self.signal.notify_waiters();
        }
    }

    /// A follower's fetch, on the leader: the protocol's outcome (its offset counts as its
    /// acknowledgement), acks=all waits it completes.
    pub(crate) fn on_follower_fetch(
        &self,
        fetch: &FollowerFetch,
    ) -> Result<FetchOutcome, FollowerFetchError> {
        let now = crate::replicate::now_ms();
        let cache = self.log.epochs();
        let (outcome, moved) = {
            let mut role = self.role.borrow_mut();
            let Role::Leader(l) = &mut *role else {
                return Err(FollowerFetchError::NotLeader);
            };
            let before = l.state.high_watermark();
            let (outcome, done) = l.state.on_follower_fetch(fetch, &cache, now);
            complete(l, done);
            (outcome, l.state.high_watermark() != before)
        };
        if moved {
            self.signal.notify_waiters();
        }
        outcome.map_err(FollowerFetchError::Protocol)
    }

    /// Time passed: expired acks=all waits fail, lagging followers leave the ISR. Returns
    /// the ISR change to send to the controller, if one is due.
    pub(crate) fn tick(&self) -> Option<IsrChange> {
        let now = crate::replicate::now_ms();
        let mut role = self.role.borrow_mut();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        let done = l.state.tick(now);
        complete(l, done);
        l.state.poll_alter_partition(now)
    }

    /// The controller refused an ISR change (`stale`: its epochs were outdated).
    pub(crate) fn on_alter_partition_refused(&self, change: &IsrChange, stale: bool) {
        let moved = {
            let mut role = self.role.borrow_mut();
            let Role::Leader(l) = &mut *role else {
                return;
            };
            let before = l.state.high_watermark();
            let done = l.state.on_alter_partition_refused(change, stale);
            complete(l, done);
            l.state.high_watermark() != before
        };
        if moved {
            self.signal.notify_waiters();
        }
    }

    /// The log's start moved (retention, DeleteRecords).
    pub(crate) fn on_log_start(&self) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.state.on_log_start(self.log.log_start_offset().0);
        }
    }

    /// The partition goes away (deleted, shutdown): acks=all waits fail.
    pub(crate) fn close_role(&self) {
        self.set_role(Role::Idle);
    }

    /// The durable end a follower fetches from, and the epoch of its last batch.
    pub(crate) fn fetch_position(&self) -> (Offset, Option<Epoch>) {
        (self.log.readable_end(), self.log.latest_epoch())
    }
}

/// Why a follower's fetch of one partition was refused on this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowerFetchError {
    NotLeader,
    Protocol(FetchError),
}

fn complete(l: &mut Leading, done: Vec<AckResult>) {
    for r in done {
        if let Some(tx) = l.acks.remove(&r.id) {
            let _ = tx.send(r.result);
        }
    }
}
