//! A shard: one pinned thread with its own io_uring runtime, owning the logs of the
//! partitions placed on it.
//!
//! Other shards reach a partition only through [`ShardMsg`]s on the owner's queue; the owner
//! calls into its logs and answers on a oneshot channel. Appends are *queued* in the order
//! messages arrive (the engine assigns offsets synchronously) and completed in spawned
//! tasks, so a slow fsync never stalls the queue. Nothing here is shared between threads
//! except the queues, the published metadata and the per-partition wake-up signals.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tern_engine::{DirectIo, Journal, Log, Offset, Recovery, Slice, UringStorage};
use tokio::sync::{mpsc, oneshot};

use crate::config_map::{journal_config, journal_root, log_config};
use crate::error::{OpenError, PartitionError};

/// Kafka's COORDINATOR_LOAD_IN_PROGRESS.
const COORDINATOR_LOAD_IN_PROGRESS: i16 =
    kafka_protocol::ResponseError::CoordinatorLoadInProgress.code();
use crate::group::driver::{GroupAnswer, GroupOp, Groups};
use crate::meta::TopicMeta;
use crate::partition::Partition;
use crate::router::Router;

/// Period of the per-shard housekeeping tick (flush = interval, retention), in ms.
pub const TICK_MS: u64 = 100;

/// Partition logs a shard opens at once (at start, or when a topic gains partitions).
const OPEN_CONCURRENCY: usize = 32;

/// Bound of each shard's inbound queue.
pub const SHARD_QUEUE_MAX: usize = 4096;

/// A partition as a key.
pub type Tp = (String, i32);

/// A request for the shard that owns a partition.
#[derive(Debug)]
pub enum ShardMsg {
    /// Appends of one request to the partitions this shard owns, in request order; one
    /// reply with a result per item once all are done (one message and one wake-up per
    /// request and shard, not per partition).
    Produce {
        items: Vec<(Tp, Vec<Bytes>)>,
        /// The request's acks (-1, 0 or 1) and, for acks=all, how long it may wait.
        acks: i16,
        timeout_ms: u64,
        reply: oneshot::Sender<Vec<ProduceResult>>,
    },
    Fetch {
        tp: Tp,
        offset: i64,
        max_bytes: u32,
        reply: oneshot::Sender<FetchResult>,
    },
    ListOffsets {
        tp: Tp,
        timestamp: i64,
        reply: oneshot::Sender<ListOffsetsResult>,
    },
    /// OffsetForLeaderEpoch for a client: `(current leader epoch, epoch)`.
    OffsetForLeaderEpoch {
        tp: Tp,
        current: i32,
        epoch: i32,
        reply: oneshot::Sender<Result<(i32, i64), PartitionError>>,
    },
    /// DescribeProducers: the idempotent producers of a partition this broker leads.
    Producers {
        tp: Tp,
        reply: oneshot::Sender<Result<Vec<tern_engine::producer::ProducerState>, PartitionError>>,
    },
    DeleteRecords {
        tp: Tp,
        offset: i64,
        reply: oneshot::Sender<Result<i64, PartitionError>>,
    },
    /// Open the partitions `from..` of a topic that this shard owns.
    Open {
        topic: Arc<TopicMeta>,
        from: i32,
        reply: oneshot::Sender<Result<(), OpenError>>,
    },
    /// Apply a topic's changed configuration to the partitions this shard owns (AlterConfigs).
    Reconfigure {
        topic: Arc<TopicMeta>,
        reply: oneshot::Sender<Result<(), OpenError>>,
    },
    /// Close a topic's partitions and delete their directories.
    Drop {
        topic: String,
        reply: oneshot::Sender<()>,
    },
    /// The partitions this shard owns (for the placement view).
    Owned { reply: oneshot::Sender<Vec<Tp>> },
    /// The bytes on disk of each partition this shard has open (DescribeLogDirs).
    Sizes {
        reply: oneshot::Sender<Vec<(Tp, u64)>>,
    },
    /// A consumer group operation for a group this shard coordinates: the group's
    /// `__consumer_offsets` partition, when the operation is about one group.
    Group {
        op: GroupOp,
        partition: Option<i32>,
        reply: oneshot::Sender<GroupAnswer>,
    },
    /// One partition of a follower's fetch that another shard's replica stream received.
    FollowerFetch {
        fetch: tern_replication::fetch::PartitionFetch,
        replica: i32,
        budget: usize,
        reply: oneshot::Sender<tern_replication::fetch::PartitionData>,
    },
    /// A replica stream a follower shard opened to this node: served here.
    ReplicaStream(tern_replication::transport::ReplicaStream),
}

/// An append done on the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    /// The broker's time stamped on the batch (`LogAppendTime` topics), if any.
    pub log_append_time_ms: Option<i64>,
    pub log_start_offset: i64,
}

/// Outcome of an append on the owner.
pub type ProduceResult = Result<Appended, PartitionError>;

/// A read done on the owner.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Vec<Slice>,
    pub bytes: u64,
}

/// Outcome of a read on the owner.
pub type FetchResult = Result<Fetched, PartitionError>;

/// An offset found by ListOffsets, with the timestamp of its record (`None` for the
/// special "latest" and "earliest" lookups, which name no record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: Option<i64>,
    /// The leader epoch of the record at `offset` (KIP-320: a consumer validates its
    /// position with it after a leader change).
    pub leader_epoch: i32,
}

/// Outcome of an offset lookup on the owner: `None` when no record has a timestamp at or
/// after the one asked.
pub type ListOffsetsResult = Result<Option<ListedOffset>, PartitionError>;

/// The logs this shard owns.
#[derive(Debug)]
pub struct ShardState {
    pub index: usize,
    pub router: Arc<Router>,
    /// Turns true when the broker is stopping (long polls answer at once).
    pub stop: tokio::sync::watch::Receiver<bool>,
    storage: UringStorage,
    partitions: RefCell<HashMap<Tp, Rc<Partition>>>,
    /// The shard journal every `flush = always` partition here writes through (unless
    /// `journal.enable = false`).
    journal: RefCell<Option<Journal<UringStorage>>>,
    /// The group coordinator of the groups whose `__consumer_offsets` partition is here.
    pub groups: Groups,
    /// Roles, fetchers and streams of the replicated partitions here.
    pub replication: crate::replicate::Replication,
}

impl ShardState {
    pub fn new(
        index: usize,
        router: Arc<Router>,
        direct: DirectIo,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Rc<ShardState> {
        let groups = Groups::new(&router.config.groups);
        Rc::new(ShardState {
            index,
            groups,
            router,
            stop,
            storage: UringStorage::new(direct),
            partitions: RefCell::new(HashMap::new()),
            journal: RefCell::new(None),
            replication: Default::default(),
        })
    }

    /// This shard's counters (written by this thread only).
    pub fn metrics(&self) -> &crate::metrics::ShardMetrics {
        &self.router.metrics.shards[self.index]
    }

    pub(crate) fn partition(&self, tp: &Tp) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    /// Waits until one of `notified` fires, `deadline` passes or the broker stops (a long
    /// poll's wait; the notifications are enabled by the caller before it looked).
    pub(crate) async fn wait_any(
        &self,
        notified: &mut [std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>],
        deadline: tokio::time::Instant,
    ) {
        let any = std::future::poll_fn(|cx| {
            for n in notified.iter_mut() {
                if std::future::Future::poll(n.as_mut(), cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        });
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = any => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// The partitions this shard has open, as they are now.
    pub(crate) fn partitions_snapshot(&self) -> Vec<(Tp, Rc<Partition>)> {
        self.partitions
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Partitions this shard has open.
    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    fn dir_of(&self, tp: &Tp) -> PathBuf {
        self.router
            .config
            .log_dir
            .join(format!("{}-{}", tp.0, tp.1))
    }

    /// Opens this shard's journal (already replayed by [`crate::server`] at start).
    pub async fn open_journal(&self) -> Result<(), OpenError> {
        let Some(config) = journal_config(&self.router.config) else {
            return Ok(());
        };
        let dir = journal_root(&self.router.config).join(self.index.to_string());
        let journal = Journal::open(self.storage.clone(), dir, config).await?;
        *self.journal.borrow_mut() = Some(journal);
        Ok(())
    }

    /// Opens every partition of the current snapshot that this shard owns, assuming what
    /// `recovery` says of how the broker last stopped.
    pub async fn open_owned(self: &Rc<Self>, recovery: Recovery) -> Result<(), OpenError> {
        let snap = self.router.meta.snapshot();
        for t in snap.topics.values() {
            self.open_topic(t, 0, recovery).await?;
        }
        Ok(())
    }

    /// Gives the open partitions of `t` on this shard the configuration its overrides make.
    async fn reconfigure_topic(&self, t: &Arc<TopicMeta>) -> Result<(), OpenError> {
        let dynamic = self.router.meta.snapshot().dynamic.clone();
        let config = log_config(&self.router.config, &dynamic, &t.overrides).map_err(|source| {
            OpenError::Config {
                topic: t.name.clone(),
                source,
            }
        })?;
        for p in 0..t.partitions {
            let Some(part) = self.partition(&(t.name.clone(), p)) else {
                continue;
            };
            let failed = |reason: String| OpenError::Reconfigure {
                topic: t.name.clone(),
                partition: p,
                reason,
            };
            let stronger = part
                .log
                .set_config(config.clone())
                .map_err(|e| failed(e.to_string()))?;
            if stronger {
                part.log.flush().await.map_err(|e| failed(e.to_string()))?;
            }
            part.set_replica_config(crate::replicate::replica_config(self, &t.name));
        }
        Ok(())
    }

    async fn open_topic(
        &self,
        t: &Arc<TopicMeta>,
        from: i32,
        recovery: Recovery,
    ) -> Result<(), OpenError> {
        let dynamic = self.router.meta.snapshot().dynamic.clone();
        let config = log_config(&self.router.config, &dynamic, &t.overrides).map_err(|source| {
            OpenError::Config {
                topic: t.name.clone(),
                source,
            }
        })?;
        let mine: Vec<i32> = (from..t.partitions)
            .filter(|p| {
                let tp = (t.name.clone(), *p);
                self.router.owner(&tp.0, *p) == self.index && self.partition(&tp).is_none()
            })
            .collect();
        // Several logs open at once: an open is a chain of small file operations (io_uring
        // hands opens and directory work to kernel threads), so their waits overlap.
        for group in mine.chunks(OPEN_CONCURRENCY) {
            let opening: Vec<_> = group
                .iter()
                .map(|p| {
                    let dir = self.dir_of(&(t.name.clone(), *p));
                    let open = Log::open_with(self.storage.clone(), dir, config.clone(), recovery);
                    (*p, tokio_uring::spawn(open))
                })
                .collect();
            for (p, task) in opening {
                let log = task
                    .await
                    .map_err(|e| OpenError::Task {
                        topic: t.name.clone(),
                        partition: p,
                        reason: e.to_string(),
                    })?
                    .map_err(|source| OpenError::Log {
                        topic: t.name.clone(),
                        partition: p,
                        source,
                    })?;
                if let Some(j) = self.journal.borrow().as_ref() {
                    log.attach_journal(j);
                }
                let signal = t.signals.get(p as usize).cloned().unwrap_or_default();
                let clustered = self.router.cluster.is_some();
                self.partitions.borrow_mut().insert(
                    (t.name.clone(), p),
                    Rc::new(Partition::new(log, signal, clustered)),
                );
            }
        }
        Ok(())
    }

    /// Serves the shard's queue until it closes.
    pub async fn serve_queue(self: Rc<Self>, mut rx: mpsc::Receiver<ShardMsg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
        }
    }

    /// Handles one message: synchronous parts now (append order), the rest in a task.
    pub fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Produce {
                items,
                acks,
                timeout_ms,
                reply,
            } => self.produce(items, acks, timeout_ms, reply),
            ShardMsg::Fetch {
                tp,
                offset,
                max_bytes,
                reply,
            } => {
                let p = self.partition(&tp);
                tokio_uring::spawn(async move {
                    let _ = reply.send(fetch(p, offset, max_bytes).await);
                });
            }
            ShardMsg::ListOffsets {
                tp,
                timestamp,
                reply,
            } => {
                let p = self.partition(&tp);
                tokio_uring::spawn(async move {
                    let _ = reply.send(list_offsets(p, timestamp).await);
                });
            }
            ShardMsg::OffsetForLeaderEpoch {
                tp,
                current,
                epoch,
                reply,
            } => {
                let r = match self.partition(&tp) {
                    Some(p) => p.offset_for_leader_epoch(current, epoch),
                    None => Err(PartitionError::Unknown),
                };
                let _ = reply.send(r);
            }
            ShardMsg::DeleteRecords { tp, offset, reply } => {
                let p = self.partition(&tp);
                tokio_uring::spawn(async move {
                    let _ = reply.send(delete_records(p, offset).await);
                });
            }
            ShardMsg::Open { topic, from, reply } => {
                let me = self.clone();
                tokio_uring::spawn(async move {
                    let opened = me.open_topic(&topic, from, Recovery::Full).await;
                    crate::replicate::sync_roles(&me);
                    let _ = reply.send(opened);
                });
            }
            ShardMsg::Reconfigure { topic, reply } => {
                let me = self.clone();
                tokio_uring::spawn(async move {
                    let _ = reply.send(me.reconfigure_topic(&topic).await);
                });
            }
            ShardMsg::Drop { topic, reply } => {
                let me = self.clone();
                tokio_uring::spawn(async move {
                    me.drop_topic(&topic).await;
                    let _ = reply.send(());
                });
            }
            ShardMsg::Group {
                op,
                partition,
                reply,
            } => {
                if let Some(p) = partition {
                    // Kafka's COORDINATOR_LOAD_IN_PROGRESS while this broker takes over the
                    // group's partition (its role, then its commits): answering from a
                    // state without them would hand a consumer no committed offset.
                    let tp = (crate::group::store::OFFSETS_TOPIC.to_string(), p);
                    let ready = self.partition(&tp).is_some_and(|x| x.serves_clients())
                        && !self.replication.offsets_loading.borrow().contains(&p);
                    if !ready {
                        let _ = reply.send(GroupAnswer::Unavailable(COORDINATOR_LOAD_IN_PROGRESS));
                        return;
                    }
                }
                let me = self.clone();
                tokio_uring::spawn(async move {
                    let _ = reply.send(me.group_op(op).await);
                });
            }
            ShardMsg::FollowerFetch {
                fetch,
                replica,
                budget,
                reply,
            } => {
                let p = self.partition(&(fetch.topic.clone(), fetch.partition));
                tokio_uring::spawn(async move {
                    let data = match p {
                        Some(p) => crate::replicate::fetch_one(&p, &fetch, replica, budget).await,
                        None => crate::replicate::not_here(&fetch),
                    };
                    let _ = reply.send(data);
                });
            }
            ShardMsg::ReplicaStream(stream) => {
                tokio_uring::spawn(crate::replicate::serve_stream(self.clone(), stream));
            }
            ShardMsg::Producers { tp, reply } => {
                let answer = match self.partition(&tp) {
                    None => Err(PartitionError::Unknown),
                    Some(p) if !p.serves_clients() => Err(PartitionError::NotLeader),
                    Some(p) => Ok(p.log.producer_states()),
                };
                let _ = reply.send(answer);
            }
            ShardMsg::Sizes { reply } => {
                let sizes = self
                    .partitions
                    .borrow()
                    .iter()
                    .map(|(tp, p)| (tp.clone(), p.log.size_bytes()))
                    .collect();
                let _ = reply.send(sizes);
            }
            ShardMsg::Owned { reply } => {
                let mut owned: Vec<Tp> = self.partitions.borrow().keys().cloned().collect();
                owned.sort();
                let _ = reply.send(owned);
            }
        }
    }

    /// Queues every item's append now (offsets follow arrival order) and answers once, in a
    /// task, when all of them are done.
    fn produce(
        &self,
        items: Vec<(Tp, Vec<Bytes>)>,
        acks: i16,
        timeout_ms: u64,
        reply: oneshot::Sender<Vec<ProduceResult>>,
    ) {
        let queued: Vec<_> = items
            .into_iter()
            .map(|(tp, batches)| {
                let pending = self
                    .partition(&tp)
                    .map(|p| p.produce(&batches, acks, timeout_ms));
                (tp, pending)
            })
            .collect();
        tokio_uring::spawn(async move {
            let mut out = Vec::with_capacity(queued.len());
            for (tp, pending) in queued {
                let r = match pending {
                    Some(pending) => pending.await,
                    None => Err(PartitionError::Unknown),
                };
                if let Err(e) = &r {
                    tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "append refused");
                }
                out.push(r);
            }
            let _ = reply.send(out);
        });
    }

    async fn drop_topic(&self, topic: &str) {
        let doomed: Vec<(Tp, Rc<Partition>)> = {
            let mut parts = self.partitions.borrow_mut();
            let keys: Vec<Tp> = parts.keys().filter(|k| k.0 == topic).cloned().collect();
            keys.into_iter()
                .filter_map(|k| parts.remove(&k).map(|p| (k, p)))
                .collect()
        };
        for (tp, p) in doomed {
            p.close_role();
            if let Err(e) = p.log.close().await {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "close on delete");
            }
            p.signal.notify_waiters();
            let dir = self.dir_of(&tp);
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            if let Ok(Err(e)) = removed {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "remove partition dir");
            }
        }
        // The deleted partitions' records must never be replayed into a topic created
        // later under the same name.
        let journal = self.journal.borrow().clone();
        if let Some(j) = journal {
            if let Err(e) = j.checkpoint().await {
                tracing::warn!(error = %e, "journal checkpoint after a topic deletion");
            }
        }
    }

    /// Periodic duties of every owned log (interval flushes, retention), every
    /// [`TICK_MS`], until the shard stops.
    pub async fn run_ticks(self: Rc<Self>) {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(TICK_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last failure of each partition's tick: logged once, not at every tick (a
        // full disk fails them all until space returns).
        let mut failing: HashMap<Tp, String> = HashMap::new();
        self.metrics().set_thread();
        let mut ticks: u64 = 0;
        loop {
            every.tick().await;
            ticks += 1;
            if ticks % crate::metrics::PUBLISH_EVERY_TICKS == 1 {
                let stats = self
                    .partitions
                    .borrow()
                    .iter()
                    .map(|((t, i), p)| p.stats(t, *i))
                    .collect();
                self.metrics().publish_partitions(stats);
                let journal = self.journal.borrow().as_ref().map(|j| {
                    let s = j.stats();
                    crate::metrics::JournalCounters {
                        records: s.records,
                        writes: s.writes,
                        bytes_written: s.bytes_written,
                        checkpoints: s.checkpoints,
                    }
                });
                self.metrics().publish_journal(journal);
                let groups = self.groups.metrics();
                self.metrics().publish_groups(groups);
            }
            self.groups_tick();
            crate::replicate::tick(&self);
            let logs: Vec<(Tp, Rc<Partition>)> = self
                .partitions
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (tp, p) in logs {
                match p.log.tick().await {
                    Err(e) => {
                        let e = e.to_string();
                        if failing.get(&tp) != Some(&e) {
                            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e,
                                "periodic flush/retention (logged once until it changes)");
                            failing.insert(tp.clone(), e);
                        }
                    }
                    Ok(()) => {
                        if failing.remove(&tp).is_some() {
                            tracing::info!(topic = %tp.0, partition = tp.1,
                                "periodic flush/retention works again");
                        }
                    }
                }
                p.on_log_start();
            }
        }
    }

    /// Closes every log and the journal (graceful shutdown); true if all closed without
    /// error (everything they hold is durable).
    pub async fn close_all(&self) -> bool {
        let all: Vec<(Tp, Rc<Partition>)> = self.partitions.borrow_mut().drain().collect();
        let (mut appended, mut segment_bytes) = (0u64, 0u64);
        let mut clean = true;
        for (tp, p) in all {
            p.close_role();
            if let Err(e) = p.log.close().await {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "close");
                clean = false;
            }
            let s = p.log.stats();
            appended += s.bytes_appended;
            segment_bytes += s.bytes_written;
        }
        let journal = self.journal.borrow_mut().take();
        let mut journal_stats = tern_engine::journal::JournalStats::default();
        if let Some(j) = journal {
            if let Err(e) = j.close().await {
                tracing::warn!(error = %e, "journal close");
                clean = false;
            }
            journal_stats = j.stats();
        }
        // What the disk wrote for what was produced, for benchmarks (partitions deleted while
        // serving are not counted).
        let written = segment_bytes + journal_stats.bytes_written;
        tracing::info!(
            shard = self.index,
            bytes_appended = appended,
            segment_bytes_written = segment_bytes,
            journal_bytes_written = journal_stats.bytes_written,
            journal_writes = journal_stats.writes,
            disk_bytes_per_byte = format!("{:.2}", written as f64 / appended.max(1) as f64),
            "shard closed"
        );
        clean
    }
}

/// A consumer's read: only below the high watermark, and only where clients are served.
async fn fetch(p: Option<Rc<Partition>>, offset: i64, max_bytes: u32) -> FetchResult {
    let p = p.ok_or(PartitionError::Unknown)?;
    if !p.serves_clients() {
        return Err(PartitionError::NotLeader);
    }
    let high_watermark = p.high_watermark();
    if offset > high_watermark && offset <= p.log.next_offset().0 {
        // Written here but not yet replicated: nothing to read yet (Kafka answers empty).
        return Ok(Fetched {
            high_watermark,
            log_start_offset: p.log.log_start_offset().0,
            records: Vec::new(),
            bytes: 0,
        });
    }
    let r = p
        .log
        .read(Offset(offset), max_bytes, Offset(high_watermark))
        .await?;
    Ok(Fetched {
        high_watermark,
        log_start_offset: r.log_start.0,
        records: r.slices,
        bytes: r.bytes,
    })
}

/// Kafka's special ListOffsets timestamps (the request's version has been checked).
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// The start of the log on local disk: all of it, as Tern has no tiered storage.
const EARLIEST_LOCAL: i64 = -4;
/// The last offset in tiered storage: none here, answered with offset -1 as Kafka does for a
/// topic without remote storage.
const LATEST_TIERED: i64 = -5;

async fn list_offsets(p: Option<Rc<Partition>>, timestamp: i64) -> ListOffsetsResult {
    let p = p.ok_or(PartitionError::Unknown)?;
    if !p.serves_clients() {
        return Err(PartitionError::NotLeader);
    }
    let high_watermark = p.high_watermark();
    let at = |offset: Offset| -> ListOffsetsResult {
        Ok(Some(ListedOffset {
            offset: offset.0,
            timestamp: None,
            leader_epoch: p.epoch_at(offset.0)?,
        }))
    };
    let by_time = |found: Option<(Offset, i64)>| -> ListOffsetsResult {
        match found.filter(|(o, _)| o.0 < high_watermark) {
            Some((o, ts)) => Ok(Some(ListedOffset {
                offset: o.0,
                timestamp: Some(ts),
                leader_epoch: p.epoch_at(o.0)?,
            })),
            None => Ok(None),
        }
    };
    match timestamp {
        LATEST => at(Offset(high_watermark)),
        EARLIEST | EARLIEST_LOCAL => at(p.log.log_start_offset()),
        LATEST_TIERED => Ok(None),
        MAX_TIMESTAMP => match p.log.max_timestamp(Offset(high_watermark)) {
            // The first record that carries the greatest timestamp below the high watermark.
            Some(ts) => by_time(p.log.offset_for_timestamp(ts).await?),
            None => Ok(None),
        },
        t if t < 0 => Err(PartitionError::InvalidTimestamp(t)),
        t => by_time(p.log.offset_for_timestamp(t).await?),
    }
}

async fn delete_records(p: Option<Rc<Partition>>, offset: i64) -> Result<i64, PartitionError> {
    let p = p.ok_or(PartitionError::Unknown)?;
    if !p.serves_clients() {
        return Err(PartitionError::NotLeader);
    }
    let high_watermark = p.high_watermark();
    let target = if offset == -1 { high_watermark } else { offset };
    if target > high_watermark {
        return Err(PartitionError::Read(
            tern_engine::LogError::OffsetOutOfRange {
                offset: target,
                log_start: p.log.log_start_offset().0,
                log_end: high_watermark,
            },
        ));
    }
    let start = p.log.delete_records(Offset(target)).await?.0;
    p.on_log_start();
    Ok(start)
}
