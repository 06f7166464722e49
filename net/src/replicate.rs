//! Replication on a shard: roles from the image, the follower fetch loop, the leader's
//! replica stream server, ISR changes sent to the controller.
//!
//! * **Roles.** [`sync_roles`] (on every shard tick and image change) gives each partition
//!   the shard owns its role from the committed image ([`Partition::apply_image`]), once
//!   the image holds this process's own registration (never from the stale image a
//!   restarted voter rebuilds from its Raft log).
//! * **Followers pull.** For each leader node it follows partitions from, a shard runs one
//!   [`fetcher`] with one replica stream (a QUIC connection of its own, from the shard's
//!   own endpoint to the leader's shard endpoint of the same index): one fetch for all
//!   those partitions at a time, each from the follower's *durable* log end, which is its
//!   acknowledgement. The answer's partitions are appended together (one journal write)
//!   with [`tern_engine::Log::append_replicated`] (offsets and epochs kept); a diverging
//!   answer truncates the log where the epochs say (never to a high watermark).
//! * **Leaders answer.** A replica stream is served by the shard whose endpoint it reached
//!   ([`serve_streams`], [`serve_stream`]; streams that came through the node's endpoint go
//!   to the shard of the same index): partitions it owns are answered in place (from memory
//!   when the batches are hot), others through their owner's queue. With no new records
//!   the fetch is held (long poll) until a partition's log grows or `max_wait_ms` passes.
//! * **ISR changes** the leader state decides go to the controller as AlterPartition; a
//!   refusal goes back to the state.
//!
//! The frames are [`tern_replication::fetch`]'s; `replication/PROTOCOL.md` states them.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_engine::Offset;
use tern_replication::controller::BrokerRequest;
use tern_replication::decide::{AlterPartitionRequest, ControllerError};
use tern_replication::fetch::{
    FetchRefusal, FetchRequest, FetchResponse, PartitionData, PartitionFetch, FRAME_BYTES_MAX,
};
use tern_replication::image::{BrokerId, MetadataImage};
use tern_replication::node::RequestError;
use tern_replication::node::REPLICA_LISTENER_PREFIX;
use tern_replication::replica::{
    truncation_on_diverging, FetchError, FetchOutcome, FollowerFetch, IsrChange, ReplicaConfig,
};
use tern_replication::transport::{quinn, ReplicaStream, ShardEndpoint};

use crate::partition::{FollowerFetchError, Partition};
use crate::shard::{ShardMsg, ShardState, Tp};

/// How long a leader may hold a follower's fetch without new records.
const FETCH_WAIT_MS: u32 = 500;
/// Record bytes a follower asks per partition and per fetch.
const PARTITION_FETCH_BYTES: u32 = 1 << 20;
const FETCH_BYTES: u32 = 8 << 20;
/// Reconnection backoff of a fetcher.
const BACKOFF_MIN_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 1000;
/// A fetch without an answer this long after its wait is given up (the stream reopened).
const FETCH_TIMEOUT_MS: u64 = 10_000;
/// The QUIC listener name under which nodes register their replication endpoint.
const CONTROLLER_LISTENER: &str = tern_replication::node::CONTROLLER_LISTENER;

/// Milliseconds on this process's monotonic clock (the replica protocol's clock).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a partition's role was set from: topic id, leader, leader epoch, partition epoch.
type RoleKey = ([u8; 16], BrokerId, i32, i32);

/// The shard's replication bookkeeping.
#[derive(Debug, Default)]
pub struct Replication {
    /// Per partition: the image state its role was last set from (topic id, leader, leader
    /// epoch, partition epoch).
    seen: std::cell::RefCell<HashMap<Tp, RoleKey>>,
    /// Partitions whose role is being changed now.
    applying: std::cell::RefCell<std::collections::HashSet<Tp>>,
    /// Leader nodes a fetcher runs for.
    fetchers: std::cell::RefCell<std::collections::HashSet<BrokerId>>,
    /// This shard's own QUIC endpoint: its fetchers dial from it, followers' streams to it
    /// are served here.
    pub(crate) endpoint: std::cell::RefCell<Option<ShardEndpoint>>,
    /// `__consumer_offsets` partitions this broker is taking over: group requests for
    /// them are answered COORDINATOR_LOAD_IN_PROGRESS until their commits are loaded.
    pub(crate) offsets_loading: std::cell::RefCell<std::collections::HashSet<i32>>,
}

/// The replica protocol's settings for a partition of `topic`.
pub(crate) fn replica_config(shard: &ShardState, topic: &str) -> ReplicaConfig {
    let config = &shard.router.config;
    let snap = shard.router.meta.snapshot();
    let min_isr = snap
        .topics
        .get(topic)
        .and_then(|t| crate::config_map::topic_config(config, &snap.dynamic, &t.overrides).ok())
        .map_or(config.min_insync_replicas, |t| t.min_insync_replicas);
    ReplicaConfig {
        min_insync_replicas: min_isr.max(1) as usize,
        replica_lag_time_max_ms: config.replica_lag_time_max_ms as u64,
        alter_partition_retry_ms: 1000,
    }
}

/// Whether `view`'s image holds this process's own registration (the broker epoch it was
/// registered with). Only such an image is acted on: a restarted voter first rebuilds an
/// image from its own Raft log, which may name it leader of a partition in an epoch long
/// over, and taking that role would stamp an old epoch into its log and epoch cache at the
/// wrong offset (found by the leader-kill test: the replica then refused its leader's
/// batches for good).
fn holds_own_registration(view: &tern_replication::node::NodeView, local: BrokerId) -> bool {
    view.broker_epoch
        .is_some_and(|e| view.image.broker(local).is_some_and(|b| b.epoch == e))
}

/// Gives every partition this shard owns its role from the image; starts the fetchers the
/// followed partitions need.
pub fn sync_roles(shard: &Rc<ShardState>) {
    let Some(node) = shard.router.cluster.as_ref() else {
        return;
    };
    let view = node.view();
    let local = shard.router.config.node_id;
    if !holds_own_registration(&view, local) {
        return;
    }
    for (tp, p) in shard.partitions_snapshot() {
        let Some((id, ip)) = view.image.topics.get(&tp.0).and_then(|t| {
            usize::try_from(tp.1)
                .ok()
                .and_then(|i| t.partitions.get(i))
                .map(|ip| (t.id, ip))
        }) else {
            continue;
        };
        let key = (id, ip.leader, ip.leader_epoch, ip.partition_epoch);
        let r = &shard.replication;
        if r.seen.borrow().get(&tp) == Some(&key) || r.applying.borrow().contains(&tp) {
            continue;
        }
        r.applying.borrow_mut().insert(tp.clone());
        let config = replica_config(shard, &tp.0);
        let ip = ip.clone();
        let me = shard.clone();
        let before = r.seen.borrow().get(&tp).copied();
        // A coordinator taking over a `__consumer_offsets` partition replays the commits
        // replicated to it while another broker coordinated (at start, every local
        // partition was loaded already); its groups wait for that.
        let took_over = tp.0 == crate::group::store::OFFSETS_TOPIC
            && ip.leader == local
            && before.is_some_and(|b| b.1 != local);
        if took_over {
            r.offsets_loading.borrow_mut().insert(tp.1);
        }
        tokio_uring::spawn(async move {
            match p.apply_image(local, &ip, config).await {
                Ok(()) => {
                    me.replication.seen.borrow_mut().insert(tp.clone(), key);
                    if took_over {
                        if let Err(e) = me.load_offsets_partition(tp.1).await {
                            tracing::warn!(partition = tp.1, error = %e,
                                "loading the groups of a __consumer_offsets partition");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e,
                        "cannot take the partition's role from the image; retried")
                }
            }
            me.replication.applying.borrow_mut().remove(&tp);
            if took_over {
                me.replication.offsets_loading.borrow_mut().remove(&tp.1);
            }
            if let Some(f) = p.following() {
                ensure_fetcher(&me, f.leader);
            }
        });
    }
}

/// Gives partitions their roles as soon as the node publishes a new image (the shard tick
/// catches anything missed).
pub async fn follow_views(
    shard: Rc<ShardState>,
    mut views: tokio::sync::watch::Receiver<std::sync::Arc<tern_replication::node::NodeView>>,
) {
    while views.changed().await.is_ok() {
        sync_roles(&shard);
    }
}

/// Periodic duties of the partitions this shard leads: expired acks=all waits, ISR
/// shrinks, AlterPartition requests (and their refusals).
pub fn tick(shard: &Rc<ShardState>) {
    let Some(node) = shard.router.cluster.as_ref() else {
        return;
    };
    sync_roles(shard);
    for (tp, p) in shard.partitions_snapshot() {
        if let Some(f) = p.following() {
            ensure_fetcher(shard, f.leader);
        }
        let Some(change) = p.tick() else { continue };
        let Some(broker_epoch) = node.view().broker_epoch else {
            continue;
        };
        let request = BrokerRequest::AlterPartition(AlterPartitionRequest {
            broker_id: shard.router.config.node_id,
            broker_epoch,
            topic: tp.0.clone(),
            partition: tp.1,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr.clone(),
        });
        let answer = node.request(request);
        tokio_uring::spawn(async move {
            alter_partition_answered(
                &p,
                &change,
                answer.await.unwrap_or(Err(RequestError::Stopped)),
            )
        });
    }
}

fn alter_partition_answered(
    p: &Partition,
    change: &IsrChange,
    answer: Result<tern_replication::controller::BrokerResponse, RequestError>,
) {
    match answer {
        Ok(_) => {}
        Err(RequestError::Controller(ControllerError::InvalidUpdateVersion { .. })) => {
            p.on_alter_partition_refused(change, true)
        }
        Err(RequestError::Controller(e)) => {
            tracing::info!(error = %e, "ISR change refused");
            p.on_alter_partition_refused(change, false)
        }
        // No answer: sent again after the retry interval.
        Err(_) => {}
    }
}

fn ensure_fetcher(shard: &Rc<ShardState>, leader: BrokerId) {
    if leader < 0 || leader == shard.router.config.node_id {
        return;
    }
    if !shard.replication.fetchers.borrow_mut().insert(leader) {
        return;
    }
    let me = shard.clone();
    tokio_uring::spawn(async move {
        fetcher(&me, leader).await;
        me.replication.fetchers.borrow_mut().remove(&leader);
    });
}

/// Where this shard fetches from `broker`: the broker's shard endpoint of the same index
/// (modulo its shard count), or its node endpoint when it registered none.
fn replication_addr(image: &MetadataImage, broker: BrokerId, shard: usize) -> Option<SocketAddr> {
    let b = image.broker(broker)?;
    let shards: Vec<_> = b
        .endpoints
        .iter()
        .filter(|e| e.listener.starts_with(REPLICA_LISTENER_PREFIX))
        .collect();
    let e = if shards.is_empty() {
        b.endpoints
            .iter()
            .find(|e| e.listener == CONTROLLER_LISTENER)?
    } else {
        let name = format!("{REPLICA_LISTENER_PREFIX}{}", shard % shards.len());
        shards.into_iter().find(|e| e.listener == name)?
    };
    (e.host.as_str(), e.port).to_socket_addrs().ok()?.next()
}

type Stream = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

/// The follower side: fetches every partition this shard follows from `leader` until
/// there is none (or the shard stops).
async fn fetcher(shard: &Rc<ShardState>, leader: BrokerId) {
    let Some(node) = shard.router.cluster.as_ref() else {
        return;
    };
    let dialer = match &*shard.replication.endpoint.borrow() {
        Some(e) => e.dialer(),
        None => node.replica_dialer(),
    };
    let local = shard.router.config.node_id;
    let mut stream: Option<Stream> = None;
    let mut backoff_ms = BACKOFF_MIN_MS;
    loop {
        if *shard.stop.borrow() {
            return;
        }
        let followed: Vec<(Tp, Rc<Partition>, crate::partition::Following)> = shard
            .partitions_snapshot()
            .into_iter()
            .filter_map(|(tp, p)| {
                let f = p.following()?;
                (f.leader == leader).then_some((tp, p, f))
            })
            .collect();
        if followed.is_empty() {
            return;
        }
        let view = node.view();
        if stream.is_none() {
            let Some(addr) = replication_addr(&view.image, leader, shard.index) else {
                tokio::time::sleep(Duration::from_millis(BACKOFF_MAX_MS)).await;
                continue;
            };
            match dialer.open(leader, addr, shard.index as u16).await {
                Ok(s) => {
                    stream = Some(s);
                    backoff_ms = BACKOFF_MIN_MS;
                }
                Err(e) => {
                    tracing::debug!(leader, error = %e, "replica stream: dial failed");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                    continue;
                }
            }
        }
        let request = FetchRequest {
            replica_id: local,
            broker_epoch: view.broker_epoch.unwrap_or(-1),
            max_wait_ms: FETCH_WAIT_MS,
            max_bytes: FETCH_BYTES,
            partitions: followed
                .iter()
                .map(|(tp, p, f)| {
                    let (end, last) = p.fetch_position();
                    PartitionFetch {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        current_leader_epoch: f.leader_epoch,
                        fetch_offset: end.0,
                        last_fetched_epoch: last.unwrap_or(-1),
                        max_bytes: PARTITION_FETCH_BYTES,
                    }
                })
                .collect(),
        };
        let Some((_, send, recv)) = stream.as_mut() else {
            continue;
        };
        let exchanged = async {
            write_frame(send, &[request.encode()]).await?;
            let timeout = Duration::from_millis(u64::from(FETCH_WAIT_MS) + FETCH_TIMEOUT_MS);
            let body = tokio::time::timeout(timeout, read_frame(recv))
                .await
                .map_err(|_| "no answer in time".to_owned())??;
            FetchResponse::decode(body).map_err(|e| e.to_string())
        }
        .await;
        let response = match exchanged {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica stream lost; reopened");
                stream = None;
                continue;
            }
        };
        if response.partitions.len() != followed.len() {
            tracing::warn!(
                leader,
                "replica fetch answered another number of partitions"
            );
            stream = None;
            continue;
        }
        // Every partition's answer at once: their appends share the shard journal's next
        // durable write instead of waiting for one another's.
        let applying: Vec<_> = followed
            .iter()
            .zip(response.partitions)
            .filter(|((tp, p, f), data)| {
                // The role changed meanwhile, or a confused answer: fetch again.
                p.following() == Some(*f) && data.topic == tp.0 && data.partition == tp.1
            })
            .map(|((tp, p, _), data)| async move {
                let r = apply_fetched(p, &data).await;
                if let Err(e) = &r {
                    tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "replica fetch");
                }
                r.is_err()
            })
            .collect();
        let refused = join_all(applying).await.into_iter().filter(|r| *r).count();
        if refused == followed.len() {
            // Nothing to do until the image moves on: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs `futures` concurrently on this task; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Applies one partition's answer on the follower.
async fn apply_fetched(p: &Partition, data: &PartitionData) -> Result<(), String> {
    if let Err(refusal) = data.result {
        let end = p.log.next_offset().0;
        if refusal == FetchRefusal::OffsetOutOfRange && data.log_start > end {
            // The leader's log starts past this one's end (retention ran there while this
            // replica was away): nothing here can be continued; start again from there.
            tracing::info!(dir = %p.log.dir().display(), end, leader_log_start = data.log_start,
                "follower log ends below the leader's log start: reset to start there");
            p.log
                .reset_to(Offset(data.log_start))
                .await
                .map_err(|e| e.to_string())?;
            p.set_follower_high_watermark(data.log_start);
            return Ok(());
        }
        return Err(refusal.to_string());
    }
    if let Some((epoch, end)) = data.diverging {
        let log_end = p.log.next_offset().0;
        let t = truncation_on_diverging(&p.log.epochs(), log_end, epoch, end);
        tracing::info!(dir = %p.log.dir().display(), from = log_end, to = t.offset, epoch,
            "follower log diverged from the leader's: truncated");
        p.log
            .truncate(Offset(t.offset))
            .await
            .map_err(|e| e.to_string())?;
    } else if !data.records.is_empty() {
        let batches = crate::api::split_batches(data.records.clone())
            .ok_or_else(|| "the leader sent damaged batches".to_owned())?;
        let first_base = batches
            .first()
            .and_then(|b| Some(i64::from_be_bytes(b.get(..8)?.try_into().ok()?)));
        let (start, end) = (p.log.log_start_offset().0, p.log.next_offset().0);
        if let Some(base) = first_base.filter(|b| start == end && *b < end) {
            // An empty log that starts inside the leader's first batch (a reset to the
            // leader's log start): it starts at that batch instead, and the log start moves
            // up again below.
            p.log
                .reset_to(Offset(base))
                .await
                .map_err(|e| e.to_string())?;
        }
        p.log
            .append_replicated(&batches)
            .await
            .map_err(|e| e.to_string())?;
        p.on_log_end();
    }
    p.set_follower_high_watermark(data.high_watermark);
    apply_log_start(p, data.log_start).await
}

/// The leader's log starts later (retention, DeleteRecords, the offsets cleaner): so does
/// the follower's, as far as it has records.
async fn apply_log_start(p: &Partition, leader_log_start: i64) -> Result<(), String> {
    let target = leader_log_start.min(p.log.readable_end().0);
    if target > p.log.log_start_offset().0 {
        p.log
            .delete_records(Offset(target))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Writes one frame: its length, then the parts.
async fn write_frame(send: &mut quinn::SendStream, parts: &[Bytes]) -> Result<(), String> {
    let len: usize = parts.iter().map(Bytes::len).sum();
    let mut chunks = Vec::with_capacity(parts.len() + 1);
    chunks.push(Bytes::copy_from_slice(&(len as u32).to_be_bytes()));
    chunks.extend(parts.iter().filter(|p| !p.is_empty()).cloned());
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| e.to_string())
}

/// Reads one frame's body, refusing a length above [`FRAME_BYTES_MAX`].
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Bytes, String> {
    let mut head = [0u8; 4];
    recv.read_exact(&mut head)
        .await
        .map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(head) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(format!("a frame of {len} bytes"));
    }
    let mut body = BytesMut::zeroed(len);
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.freeze())
}

/// The leader side: answers a follower's fetches on its replica stream until it closes.
pub async fn serve_stream(shard: Rc<ShardState>, stream: ReplicaStream) {
    let ReplicaStream {
        peer,
        mut send,
        mut recv,
        connection,
        ..
    } = stream;
    loop {
        let body = match read_frame(&mut recv).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(peer, error = %e, "replica stream closed");
                return;
            }
        };
        let request = match FetchRequest::decode(body) {
            Ok(r) if r.replica_id == peer => r,
            Ok(r) => {
                return refuse(
                    &connection,
                    peer,
                    &format!("fetch as replica {}", r.replica_id),
                )
            }
            Err(e) => return refuse(&connection, peer, &e.to_string()),
        };
        let response = answer(&shard, &request).await;
        let mut parts = vec![response.encode_head()];
        parts.extend(response.partitions.iter().map(|p| p.records.clone()));
        if let Err(e) = write_frame(&mut send, &parts).await {
            tracing::debug!(peer, error = %e, "replica stream closed");
            return;
        }
    }
}

fn refuse(connection: &quinn::Connection, peer: BrokerId, why: &str) {
    tracing::warn!(peer, reason = why, "replica stream refused");
    connection.close(quinn::VarInt::from_u32(1), why.as_bytes());
}

/// Answers a fetch, holding it until a partition has records or the wait ends.
async fn answer(shard: &Rc<ShardState>, request: &FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(u64::from(request.max_wait_ms.min(FETCH_WAIT_MS * 20)));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let local: Vec<Option<Rc<Partition>>> = request
            .partitions
            .iter()
            .map(|f| shard.partition(&(f.topic.clone(), f.partition)))
            .collect();
        let mut grown: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = local
            .iter()
            .flatten()
            .map(|p| Box::pin(p.appended.notified()))
            .collect();
        for n in grown.iter_mut() {
            n.as_mut().enable();
        }
        let mut budget = request.max_bytes as usize;
        let mut partitions = Vec::with_capacity(request.partitions.len());
        for (f, p) in request.partitions.iter().zip(&local) {
            let data = match p {
                Some(p) => fetch_one(p, f, request.replica_id, budget).await,
                None => fetch_elsewhere(shard, f, request.replica_id, budget).await,
            };
            budget = budget.saturating_sub(data.records.len());
            partitions.push(data);
        }
        let done = partitions
            .iter()
            .any(|d| !d.records.is_empty() || d.result.is_err() || d.diverging.is_some());
        if done || tokio::time::Instant::now() >= deadline || *shard.stop.borrow() {
            return FetchResponse { partitions };
        }
        shard.wait_any(&mut grown, deadline).await;
    }
}

/// A partition another shard owns: asked through its queue, answered without waiting.
async fn fetch_elsewhere(
    shard: &Rc<ShardState>,
    f: &PartitionFetch,
    replica: BrokerId,
    budget: usize,
) -> PartitionData {
    let owner = shard.router.owner(&f.topic, f.partition);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let msg = ShardMsg::FollowerFetch {
        fetch: f.clone(),
        replica,
        budget,
        reply: tx,
    };
    if owner == shard.index || shard.router.dispatch(shard, owner, msg).await.is_err() {
        return refusal(f, FetchRefusal::NotLeader);
    }
    rx.await
        .unwrap_or_else(|_| refusal(f, FetchRefusal::NotLeader))
}

fn refusal(f: &PartitionFetch, why: FetchRefusal) -> PartitionData {
    PartitionData {
        topic: f.topic.clone(),
        partition: f.partition,
        result: Err(why),
        high_watermark: -1,
        log_start: -1,
        diverging: None,
        records: Bytes::new(),
    }
}

/// One partition of a follower's fetch, on the shard that owns it.
pub(crate) async fn fetch_one(
    p: &Partition,
    f: &PartitionFetch,
    replica: BrokerId,
    budget: usize,
) -> PartitionData {
    let fetch = FollowerFetch {
        replica,
        fetch_offset: f.fetch_offset,
        current_leader_epoch: f.current_leader_epoch,
        last_fetched_epoch: (f.last_fetched_epoch >= 0).then_some(f.last_fetched_epoch),
    };
    let mut data = refusal(f, FetchRefusal::NotLeader);
    data.log_start = p.log.log_start_offset().0;
    match p.on_follower_fetch(&fetch) {
        Err(FollowerFetchError::NotLeader) => data,
        Err(FollowerFetchError::Protocol(e)) => {
            data.result = Err(match e {
                FetchError::FencedLeaderEpoch { .. } => FetchRefusal::FencedLeaderEpoch,
                FetchError::UnknownLeaderEpoch { .. } => FetchRefusal::UnknownLeaderEpoch,
                FetchError::NotReplica(_) => FetchRefusal::NotReplica,
                FetchError::OffsetOutOfRange { .. } => FetchRefusal::OffsetOutOfRange,
            });
            data
        }
        Ok(FetchOutcome::Diverging {
            epoch,
            end_offset,
            high_watermark,
        }) => {
            data.result = Ok(());
            data.high_watermark = high_watermark;
            data.diverging = Some((epoch, end_offset));
            data
        }
        Ok(FetchOutcome::Read {
            from,
            high_watermark,
        }) => {
            data.high_watermark = high_watermark;
            let max = (f.max_bytes as usize).min(budget).max(1) as u32;
            match read_records(p, from, max).await {
                Ok(records) => {
                    data.result = Ok(());
                    data.records = records;
                }
                Err(e) => {
                    tracing::warn!(dir = %p.log.dir().display(), error = %e, "replica read");
                    data.result = Err(FetchRefusal::Storage);
                }
            }
            data
        }
    }
}

/// Whole batches from `from`, at most about `max_bytes` (at least one batch); past the
/// leader's durable end, what it has appended and not yet made durable (tail reads).
async fn read_records(p: &Partition, from: i64, max_bytes: u32) -> Result<Bytes, String> {
    if from >= p.log.readable_end().0 {
        return Ok(p
            .log
            .read_tail(Offset(from), max_bytes)
            .map(|(b, _)| b)
            .unwrap_or_default());
    }
    let r = p
        .log
        .read(Offset(from), max_bytes, Offset(i64::MAX))
        .await
        .map_err(|e| e.to_string())?;
    match r.slices.as_slice() {
        [] => Ok(Bytes::new()),
        [one] => one.to_bytes().map_err(|e| e.to_string()),
        many => {
            let mut out = BytesMut::with_capacity(r.bytes as usize);
            for s in many {
                out.extend_from_slice(&s.to_bytes().map_err(|e| e.to_string())?);
            }
            Ok(out.freeze())
        }
    }
}

/// The answer for a partition that is not open here.
pub(crate) fn not_here(f: &PartitionFetch) -> PartitionData {
    refusal(f, FetchRefusal::NotLeader)
}

/// Serves the replica streams that followers open to this shard's own endpoint.
pub async fn serve_streams(
    shard: Rc<ShardState>,
    mut streams: tokio::sync::mpsc::Receiver<ReplicaStream>,
) {
    while let Some(s) = streams.recv().await {
        tokio_uring::spawn(serve_stream(shard.clone(), s));
    }
}

/// Hands each replica stream a follower opens to this node to the shard of the same index
/// (modulo the shard count): with the same placement on both nodes, the partitions a
/// follower shard fetches are the ones that shard owns here.
pub async fn route_streams(
    shard: Rc<ShardState>,
    mut streams: tokio::sync::mpsc::Receiver<ReplicaStream>,
) {
    let shards = shard.router.shard_count().max(1);
    while let Some(s) = streams.recv().await {
        let to = usize::from(s.shard) % shards;
        if shard
            .router
            .dispatch(&shard, to, ShardMsg::ReplicaStream(s))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tern_replication::image::MetadataRecord;
    use tern_replication::node::NodeView;

    fn registered(image: &mut MetadataImage, index: u64, broker: BrokerId) {
        let r = MetadataRecord::RegisterBroker {
            broker_id: broker,
            incarnation_id: [index as u8; 16],
            endpoints: Vec::new(),
            rack: None,
        };
        image.apply(index, &r).unwrap();
    }

    /// Guards the rule that a restarted node acts only on an image holding its own
    /// registration: not before it registered, not on an image that holds its previous
    /// process's registration, and only for its own id.
    #[test]
    fn only_an_image_with_this_process_registration_is_acted_on() {
        let mut image = MetadataImage::default();
        registered(&mut image, 5, 1);
        let view = |image: &MetadataImage, epoch: Option<i64>| NodeView {
            image: Arc::new(image.clone()),
            controller_leader: Some(1),
            broker_epoch: epoch,
        };
        let old = image.broker(1).unwrap().epoch;
        assert!(holds_own_registration(&view(&image, Some(old)), 1));
        assert!(
            !holds_own_registration(&view(&image, None), 1),
            "not registered yet"
        );
        assert!(
            !holds_own_registration(&view(&image, Some(old + 9)), 1),
            "a stale image"
        );
        assert!(
            !holds_own_registration(&view(&image, Some(old)), 2),
            "another broker's"
        );
        registered(&mut image, 14, 1);
        let new = image.broker(1).unwrap().epoch;
        assert_ne!(new, old);
        assert!(holds_own_registration(&view(&image, Some(new)), 1));
        assert!(
            !holds_own_registration(&view(&image, Some(old)), 1),
            "the previous process's"
        );
    }
}
