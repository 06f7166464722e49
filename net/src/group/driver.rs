//! The thin task around the group coordinator on one shard: it feeds requests and the clock
//! to the state machine, hands its replies back, and does the IO the state machine does not:
//! writing commits and tombstones to the shard's `__consumer_offsets` partitions, replaying
//! them at startup, expiring offsets and cleaning those partitions (see [`super::store`]).
//!
//! Invariants: a commit is applied to the coordinator only after its record is durable; the
//! check of a commit and the queuing of its record happen in one synchronous step (no
//! `.await` between them), so records are in the order the coordinator accepted them.
//! Expiry and cleaning run only while no commit is between check and apply.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tern_engine::Offset;
use tern_replication::replica::AckError;
use tern_tuning::GroupSettings;
use tokio::sync::oneshot;

use super::coordinator::{
    CommittedOffset, Coordinator, GroupConfig, GroupDescription, GroupListing, HeartbeatRequest,
    JoinRequest, LeaveRequest, Reply, ReqId, SyncRequest, TopicPartition,
};
use super::store::{self, OffsetRecord, RawRecord, OFFSETS_TOPIC};
use crate::error::PartitionError;
use crate::shard::ShardState;

/// Why the committed offsets could not be loaded from `__consumer_offsets` at start.
#[derive(Debug, thiserror::Error)]
pub enum GroupLoadError {
    #[error("{OFFSETS_TOPIC}-{partition}: {source}")]
    Read {
        partition: i32,
        source: tern_engine::LogError,
    },
    #[error("{OFFSETS_TOPIC}-{partition}: {source}")]
    Slice {
        partition: i32,
        source: std::io::Error,
    },
}

/// Below this many records since the log start a partition is never cleaned.
const CLEAN_RECORDS_MIN: u64 = 10_000;
/// Clean once the records since the log start exceed this many times the live commits.
const CLEAN_RATIO: u64 = 4;
/// Largest batch of offset records written at once.
const RECORDS_BATCH_BYTES_MAX: usize = 512 * 1024;
/// Bytes read per step when replaying a partition.
const LOAD_READ_BYTES: u32 = 1 << 20;
/// How long an offset commit waits for its records to reach the ISR.
const COMMIT_TIMEOUT_MS: u64 = 30_000;

/// A group operation, run on the shard that owns the group.
#[derive(Debug)]
pub enum GroupOp {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveRequest),
    Commit {
        group_id: String,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
        commits: Vec<(TopicPartition, CommittedOffset)>,
    },
    /// `None`: every committed offset of the group.
    Fetch {
        group_id: String,
        tps: Option<Vec<TopicPartition>>,
    },
    Describe(String),
    List {
        states: Vec<String>,
        types: Vec<String>,
    },
    Delete(String),
    DeleteOffsets {
        group_id: String,
        tps: Vec<TopicPartition>,
    },
}

/// The answer to a [`GroupOp`].
#[derive(Debug)]
pub enum GroupAnswer {
    Membership(Reply),
    Commit(Result<(), i16>),
    Fetch(Vec<(TopicPartition, Option<CommittedOffset>)>),
    Describe(GroupDescription),
    List(Vec<GroupListing>),
    Delete(i16),
    DeleteOffsets(Result<Vec<(TopicPartition, i16)>, i16>),
    /// The shard could not run it (stopping, or the request's partition is not here).
    Unavailable(i16),
}

#[derive(Debug, Default, Clone, Copy)]
struct PartitionRecords {
    /// Records since the log start (as far as this process knows).
    since_start: u64,
    /// Consider cleaning when `since_start` reaches this.
    check_at: u64,
}

/// One shard's coordinator and its bookkeeping.
#[derive(Debug)]
pub struct Groups {
    coord: RefCell<Coordinator>,
    waiting: RefCell<HashMap<ReqId, oneshot::Sender<Reply>>>,
    next_id: Cell<ReqId>,
    commits_in_flight: Cell<usize>,
    records: RefCell<HashMap<i32, PartitionRecords>>,
    cleaning: Cell<bool>,
    expiring: Cell<bool>,
    next_expiry: Cell<Instant>,
    settings: GroupSettings,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Groups {
    /// The groups this shard coordinates, for `/metrics`.
    pub fn metrics(&self) -> Vec<crate::metrics::GroupStats> {
        self.coord.borrow().metrics()
    }

    pub fn new(settings: &GroupSettings) -> Groups {
        let config = GroupConfig {
            initial_rebalance_delay_ms: settings.initial_rebalance_delay_ms.max(0) as u64,
            min_session_timeout_ms: settings.min_session_timeout_ms,
            max_session_timeout_ms: settings.max_session_timeout_ms,
            max_size: settings.max_size.max(0) as usize,
            offsets_retention_ms: settings.offsets_retention_ms,
        };
        // Member ids must not repeat across restarts: seed them with the clock.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Groups {
            coord: RefCell::new(Coordinator::new(config).with_member_id_seed(seed)),
            waiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            commits_in_flight: Cell::new(0),
            records: RefCell::new(HashMap::new()),
            cleaning: Cell::new(false),
            expiring: Cell::new(false),
            next_expiry: Cell::new(
                Instant::now()
                    + Duration::from_millis(settings.offsets_retention_check_interval_ms as u64),
            ),
            settings: settings.clone(),
        }
    }

    /// Hands every reply the coordinator has to its waiter.
    fn pump(&self) {
        loop {
            let Some((id, reply)) = self.coord.borrow_mut().poll_reply() else {
                return;
            };
            if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Runs a membership request and waits for its reply.
    async fn membership(&self, run: impl FnOnce(&mut Coordinator, ReqId, Instant)) -> Reply {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        run(&mut self.coord.borrow_mut(), id, Instant::now());
        self.pump();
        match rx.await {
            Ok(r) => r,
            // Invariant: the coordinator answers every request id it was given; a lost
            // waiter would mean the shard is going away.
            Err(_) => Reply::Heartbeat(ResponseError::CoordinatorNotAvailable.code()),
        }
    }

    /// Advances the coordinator's timers.
    pub fn tick(&self, now: Instant) {
        let due = self.coord.borrow().poll_timeout().is_some_and(|t| t <= now);
        if due {
            self.coord.borrow_mut().handle_timeout(now);
        }
        self.pump();
    }

    fn count_records(&self, partition: i32, n: u64) {
        let mut r = self.records.borrow_mut();
        let e = r.entry(partition).or_insert(PartitionRecords {
            since_start: 0,
            check_at: CLEAN_RECORDS_MIN,
        });
        e.since_start += n;
    }

    /// Number of groups on this shard (tests and metrics).
    pub fn group_count(&self) -> usize {
        self.coord.borrow().group_count()
    }
}

/// Offset records in batches of at most [`RECORDS_BATCH_BYTES_MAX`].
fn batches_of(records: &[RawRecord], now_ms: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (k, v)) in records.iter().enumerate() {
        let len = k.len() + v.as_ref().map_or(0, Vec::len) + 32;
        if bytes + len > RECORDS_BATCH_BYTES_MAX && i > start {
            out.push(store::encode_batch(&records[start..i], now_ms));
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < records.len() {
        out.push(store::encode_batch(&records[start..], now_ms));
    }
    out
}

fn tombstones(group_id: &str, tps: &[TopicPartition]) -> Vec<RawRecord> {
    tps.iter()
        .map(|tp| (store::encode_key(group_id, tp), None))
        .collect()
}

impl ShardState {
    fn offsets_partition_count(&self) -> Option<i32> {
        self.router
            .meta
            .snapshot()
            .topics
            .get(OFFSETS_TOPIC)
            .map(|t| t.partitions)
    }

    fn offsets_partition_of(&self, group_id: &str) -> i32 {
        store::partition_for(group_id, self.offsets_partition_count().unwrap_or(1))
    }

    /// Queues offset records on a local `__consumer_offsets` partition (synchronously) and
    /// returns what completes when they are durable and, in a cluster, replicated to the
    /// partition's ISR (acks=all: a commit survives the loss of the coordinator).
    fn write_offsets(
        &self,
        partition: i32,
        records: &[RawRecord],
    ) -> impl std::future::Future<Output = Result<Offset, i16>> + 'static {
        let p = self.partition(&(OFFSETS_TOPIC.to_string(), partition));
        let n = records.len() as u64;
        let pending = p.map(|p| {
            if n == 0 {
                return None;
            }
            let batches: Vec<bytes::Bytes> = batches_of(records, now_ms())
                .into_iter()
                .map(bytes::Bytes::from)
                .collect();
            Some(p.produce(&batches, -1, COMMIT_TIMEOUT_MS))
        });
        if pending.as_ref().is_some_and(Option::is_some) {
            self.groups.count_records(partition, n);
        }
        async move {
            match pending {
                None => Err(ResponseError::NotCoordinator.code()),
                Some(None) => Ok(Offset(-1)),
                Some(Some(f)) => match f.await {
                    Ok(a) => Ok(Offset(a.base_offset)),
                    Err(e) => {
                        tracing::warn!(error = %e, "writing to {OFFSETS_TOPIC}");
                        Err(match e {
                            PartitionError::Append(tern_engine::AppendError::BatchTooLarge {
                                ..
                            }) => ResponseError::InvalidCommitOffsetSize.code(),
                            PartitionError::NotLeader => ResponseError::NotCoordinator.code(),
                            PartitionError::Ack(AckError::Timeout) => {
                                ResponseError::RequestTimedOut.code()
                            }
                            _ => ResponseError::CoordinatorNotAvailable.code(),
                        })
                    }
                },
            }
        }
    }

    /// Runs one group operation on this (the owning) shard.
    pub async fn group_op(self: &Rc<Self>, op: GroupOp) -> GroupAnswer {
        let g = &self.groups;
        match op {
            GroupOp::Join(req) => GroupAnswer::Membership(
                g.membership(|c, id, now| c.handle_join(id, req, now)).await,
            ),
            GroupOp::Sync(req) => GroupAnswer::Membership(
                g.membership(|c, id, now| c.handle_sync(id, req, now)).await,
            ),
            GroupOp::Heartbeat(req) => GroupAnswer::Membership(
                g.membership(|c, id, now| c.handle_heartbeat(id, req, now))
                    .await,
            ),
            GroupOp::Leave(req) => GroupAnswer::Membership(
                g.membership(|c, id, now| c.handle_leave(id, req, now))
                    .await,
            ),
            GroupOp::Commit {
                group_id,
                generation_id,
                member_id,
                group_instance_id,
                commits,
            } => GroupAnswer::Commit(
                self.commit(
                    group_id,
                    generation_id,
                    member_id,
                    group_instance_id,
                    commits,
                )
                .await,
            ),
            GroupOp::Fetch { group_id, tps } => {
                let c = g.coord.borrow();
                GroupAnswer::Fetch(match tps {
                    None => c
                        .committed_all(&group_id)
                        .into_iter()
                        .map(|(tp, v)| (tp, Some(v)))
                        .collect(),
                    Some(tps) => tps
                        .into_iter()
                        .map(|tp| {
                            let v = c.committed(&group_id, &tp).cloned();
                            (tp, v)
                        })
                        .collect(),
                })
            }
            GroupOp::Describe(group_id) => {
                GroupAnswer::Describe(g.coord.borrow().describe_group(&group_id))
            }
            GroupOp::List { states, types } => {
                GroupAnswer::List(g.coord.borrow().list_groups(&states, &types))
            }
            GroupOp::Delete(group_id) => {
                let removed = g.coord.borrow_mut().delete_group(&group_id);
                match removed {
                    Err(code) => GroupAnswer::Delete(code),
                    Ok(tps) => {
                        let p = self.offsets_partition_of(&group_id);
                        let w = self.write_offsets(p, &tombstones(&group_id, &tps));
                        GroupAnswer::Delete(w.await.err().unwrap_or(0))
                    }
                }
            }
            GroupOp::DeleteOffsets { group_id, tps } => {
                let r = g.coord.borrow_mut().delete_offsets(&group_id, &tps);
                match r {
                    Err(code) => GroupAnswer::DeleteOffsets(Err(code)),
                    Ok(results) => {
                        let gone: Vec<TopicPartition> = results
                            .iter()
                            .filter(|(_, code)| *code == 0)
                            .map(|(tp, _)| tp.clone())
                            .collect();
                        let p = self.offsets_partition_of(&group_id);
                        match self.write_offsets(p, &tombstones(&group_id, &gone)).await {
                            Ok(_) => GroupAnswer::DeleteOffsets(Ok(results)),
                            Err(code) => GroupAnswer::DeleteOffsets(Err(code)),
                        }
                    }
                }
            }
        }
    }

    async fn commit(
        &self,
        group_id: String,
        generation_id: i32,
        member_id: String,
        instance_id: Option<String>,
        commits: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), i16> {
        let g = &self.groups;
        g.coord.borrow_mut().validate_commit(
            &group_id,
            generation_id,
            &member_id,
            instance_id.as_deref(),
            Instant::now(),
        )?;
        let records: Vec<RawRecord> = commits
            .iter()
            .map(|(tp, v)| {
                (
                    store::encode_key(&group_id, tp),
                    Some(store::encode_value(v)),
                )
            })
            .collect();
        let partition = self.offsets_partition_of(&group_id);
        // Check and queue in one synchronous step (module invariant).
        let written = self.write_offsets(partition, &records);
        g.commits_in_flight.set(g.commits_in_flight.get() + 1);
        let r = written.await;
        g.commits_in_flight.set(g.commits_in_flight.get() - 1);
        r?;
        g.coord.borrow_mut().apply_commit(&group_id, commits);
        Ok(())
    }

    /// Replays this shard's `__consumer_offsets` partitions into the coordinator.
    pub async fn load_groups(&self) -> Result<(), GroupLoadError> {
        let Some(count) = self.offsets_partition_count() else {
            return Ok(());
        };
        for partition in 0..count {
            self.load_offsets_partition(partition).await?;
        }
        tracing::debug!(
            shard = self.index,
            groups = self.groups.group_count(),
            "consumer groups loaded"
        );
        Ok(())
    }

    /// Replays one `__consumer_offsets` partition into the coordinator (at start, and when
    /// this broker becomes its leader: the commits replicated here while another broker
    /// coordinated its groups). Replaying a whole log is idempotent: its last record per
    /// group and partition wins.
    pub async fn load_offsets_partition(&self, partition: i32) -> Result<(), GroupLoadError> {
        {
            let Some(p) = self.partition(&(OFFSETS_TOPIC.to_string(), partition)) else {
                return Ok(());
            };
            let mut at = p.log.log_start_offset().0;
            let end = p.log.readable_end().0;
            let mut n = 0u64;
            while at < end {
                let r = p
                    .log
                    .read(Offset(at), LOAD_READ_BYTES, Offset(end))
                    .await
                    .map_err(|source| GroupLoadError::Read { partition, source })?;
                if r.next_offset.0 <= at {
                    break;
                }
                for s in &r.slices {
                    let bytes = s
                        .to_bytes()
                        .map_err(|source| GroupLoadError::Slice { partition, source })?;
                    for rec in store::decode_batches(bytes) {
                        n += 1;
                        let mut c = self.groups.coord.borrow_mut();
                        match rec {
                            OffsetRecord::Commit {
                                group_id,
                                tp,
                                value,
                            } => c.load_offset(&group_id, tp, Some(value)),
                            OffsetRecord::Tombstone { group_id, tp } => {
                                c.load_offset(&group_id, tp, None)
                            }
                        }
                    }
                }
                at = r.next_offset.0;
            }
            self.groups.count_records(partition, n);
        }
        Ok(())
    }

    /// The coordinator's periodic duties: timers now; offset expiry and cleaning when due.
    pub fn groups_tick(self: &Rc<Self>) {
        let g = &self.groups;
        let now = Instant::now();
        g.tick(now);
        if g.commits_in_flight.get() > 0 {
            return;
        }
        if now >= g.next_expiry.get() && !g.expiring.get() {
            let interval = g.settings.offsets_retention_check_interval_ms as u64;
            g.next_expiry.set(now + Duration::from_millis(interval));
            self.expire_offsets(now);
        }
        if !g.cleaning.get() {
            let due: Vec<i32> = g
                .records
                .borrow()
                .iter()
                .filter(|(_, r)| r.since_start >= r.check_at)
                .map(|(p, _)| *p)
                .collect();
            if let Some(p) = due.first() {
                self.clean(*p);
            }
        }
    }

    fn expire_offsets(self: &Rc<Self>, now: Instant) {
        let removed = self.groups.coord.borrow_mut().expire_offsets(now, now_ms());
        if removed.is_empty() {
            return;
        }
        let mut by_partition: HashMap<i32, Vec<RawRecord>> = HashMap::new();
        for (group_id, tp) in &removed {
            by_partition
                .entry(self.offsets_partition_of(group_id))
                .or_default()
                .push((store::encode_key(group_id, tp), None));
        }
        let writes: Vec<_> = by_partition
            .iter()
            .map(|(p, recs)| self.write_offsets(*p, recs))
            .collect();
        tracing::info!(offsets = removed.len(), "expired committed offsets");
        let me = self.clone();
        me.groups.expiring.set(true);
        tokio_uring::spawn(async move {
            for w in writes {
                if let Err(code) = w.await {
                    tracing::warn!(code, "writing expired offsets' tombstones");
                }
            }
            me.groups.expiring.set(false);
        });
    }

    /// Rewrites partition `p`'s live commits at its end, then moves its log start there.
    fn clean(self: &Rc<Self>, partition: i32) {
        let g = &self.groups;
        let live: Vec<RawRecord> = {
            let c = g.coord.borrow();
            let groups = c.list_groups(&[], &[]);
            groups
                .iter()
                .filter(|l| self.offsets_partition_of(&l.group_id) == partition)
                .flat_map(|l| {
                    c.committed_all(&l.group_id)
                        .into_iter()
                        .map(|(tp, v)| {
                            (
                                store::encode_key(&l.group_id, &tp),
                                Some(store::encode_value(&v)),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let live_n = live.len() as u64;
        {
            let mut r = g.records.borrow_mut();
            let e = r.entry(partition).or_default();
            if e.since_start < CLEAN_RATIO * live_n.max(1) {
                e.check_at = (CLEAN_RATIO * live_n).max(e.since_start + CLEAN_RECORDS_MIN);
                return;
            }
        }
        let Some(p) = self.partition(&(OFFSETS_TOPIC.to_string(), partition)) else {
            return;
        };
        let before = p.log.next_offset();
        let written = self.write_offsets(partition, &live);
        g.cleaning.set(true);
        let me = self.clone();
        tokio_uring::spawn(async move {
            let start = match written.await {
                Ok(first) if first.0 >= 0 => first,
                Ok(_) => before,
                Err(code) => {
                    tracing::warn!(code, partition, "cleaning {OFFSETS_TOPIC}: rewrite failed");
                    me.groups.cleaning.set(false);
                    return;
                }
            };
            match p.log.delete_records(start).await {
                Ok(_) => {
                    let mut r = me.groups.records.borrow_mut();
                    let e = r.entry(partition).or_default();
                    // Records written since the rewrite stay counted.
                    e.since_start = (p.log.next_offset().0 - start.0).max(0) as u64;
                    e.check_at = (CLEAN_RATIO * live_n).max(e.since_start + CLEAN_RECORDS_MIN);
                    tracing::info!(partition, live = live_n, "cleaned {OFFSETS_TOPIC}");
                }
                Err(e) => tracing::warn!(error = %e, partition, "cleaning {OFFSETS_TOPIC}"),
            }
            me.groups.cleaning.set(false);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Guards the batch split: every record lands in exactly one batch, in order.
    #[test]
    fn batches_split_by_size() {
        let tp = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        let value = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: "x".repeat(4000),
            commit_timestamp_ms: 0,
            expire_timestamp_ms: None,
        };
        let recs: Vec<_> = (0..400)
            .map(|i| {
                let tp = TopicPartition {
                    partition: i,
                    ..tp.clone()
                };
                (
                    store::encode_key("g", &tp),
                    Some(store::encode_value(&value)),
                )
            })
            .collect();
        let batches = batches_of(&recs, 0);
        assert!(batches.len() > 1);
        let decoded: Vec<_> = batches
            .into_iter()
            .flat_map(|b| store::decode_batches(bytes::Bytes::from(b)))
            .collect();
        assert_eq!(decoded.len(), 400);
        assert!(batches_of(&[], 0).is_empty());
    }
}
