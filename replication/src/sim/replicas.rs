//! The seeded simulation of one replicated partition: three brokers running the replica
//! protocol ([`crate::replica`]) against the controller's decisions ([`crate::decide`] on a
//! [`MetadataImage`]: fencing, elections from the ISR, AlterPartition's compare-and-set),
//! an acks=all producer and a consumer, in virtual time. Raft itself is left out here (its
//! own simulation is [`crate::sim::run`]): the controller is one image that commits at once.
//!
//! # Model
//! Each broker has a log of records (epoch, unique value) of which a prefix is durable; an
//! fsync completes after a random delay. A crash loses everything not durable; a restart
//! rebuilds the epoch cache from the durable log. Followers fetch from their durable end (one
//! fetch at a time), append what they get, and fetch again once it is durable. The leader
//! serves records up to its durable end. Metadata reaches each broker after random delays,
//! and not while it is cut off; brokers heartbeat the controller, which fences them after
//! the session timeout and unfences them when they are back.
//!
//! # Faults (chaos phase)
//! Message loss and random delay (reordering), crashes with restarts after a while, one
//! broker cut off from everyone (controller included) for a while.
//!
//! # Invariants, checked after every step
//! * The leader has every acknowledged record: a broker that leads in the controller's
//!   current epoch has each acknowledged value at its offset.
//! * No two replicas diverge below their high watermarks.
//! * A leader's high watermark never goes backwards during its leadership.
//! * The leader's maximal ISR contains the controller's ISR (same leader epoch).
//! * What the consumer read (below the high watermark) never changes or disappears.
//!
//! # Heal phase
//! Faults stop and crashed brokers restart; within a bound the ISR is full again and every
//! log equals the leader's; every acknowledged value is then in it exactly once, in order.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::decide::{self, AlterPartitionRequest, ControllerError};
use crate::epoch::{Epoch, EpochCache, Offset};
use crate::image::{
    BrokerId, MetadataImage, MetadataRecord, Partition, PartitionAssignment, NO_LEADER,
};
use crate::replica::{
    self, AckResult, FetchError, FetchOutcome, FollowerFetch, IsrChange, LeaderState, ReplicaConfig,
};

const TOPIC: &str = "t";
/// Records a fetch response carries at most.
const FETCH_RECORDS_MAX: usize = 16;

/// One replica simulation's shape.
#[derive(Debug, Clone)]
pub struct ReplicaSimConfig {
    pub seed: u64,
    pub brokers: usize,
    pub min_insync_replicas: usize,
    pub chaos_ms: u64,
    pub heal_ms_max: u64,
    pub step_ms: u64,
    /// Per mille of messages lost during chaos.
    pub loss_per_mille: u32,
    pub delay_ms_max: u64,
    pub fsync_ms_max: u64,
    pub session_timeout_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub produce_interval_ms: u64,
    pub ack_timeout_ms: u64,
    /// Per mille chance per step that a live broker crashes during chaos.
    pub crash_per_mille: u32,
    /// Per mille chance per step that a broker is cut off during chaos (one at a time).
    pub isolate_per_mille: u32,
}

impl ReplicaSimConfig {
    pub fn new(seed: u64) -> Self {
        ReplicaSimConfig {
            seed,
            brokers: 3,
            min_insync_replicas: 2,
            chaos_ms: 20_000,
            heal_ms_max: 20_000,
            step_ms: 2,
            loss_per_mille: 20,
            delay_ms_max: 6,
            fsync_ms_max: 5,
            session_timeout_ms: 600,
            replica_lag_time_max_ms: 300,
            produce_interval_ms: 4,
            ack_timeout_ms: 1_500,
            crash_per_mille: 2,
            isolate_per_mille: 1,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct ReplicaSimReport {
    pub produced: u64,
    pub acknowledged: u64,
    pub refused_not_enough_replicas: u64,
    pub failed_after_append: u64,
    pub timed_out: u64,
    pub crashes: u64,
    pub isolations: u64,
    pub leader_epochs: i32,
    pub truncations: u64,
    pub isr_changes: u64,
    pub consumer_reads: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    epoch: Epoch,
    value: u64,
}

#[derive(Debug)]
struct Broker {
    id: BrokerId,
    alive: bool,
    restart_at: u64,
    log: Vec<Rec>,
    durable: usize,
    /// An fsync in flight: (log length it covers, completion time).
    syncing: Option<(usize, u64)>,
    cache: EpochCache,
    /// Follower's high watermark (a leader's is in `leader`).
    hw: Offset,
    view: Option<Partition>,
    leader: Option<LeaderState>,
    /// Increments with each leadership (to check the high watermark per leadership).
    tenure: u64,
    fetching: Option<u64>,
}

impl Broker {
    fn durable_end(&self) -> Offset {
        self.durable as Offset
    }

    fn high_watermark(&self) -> Offset {
        self.leader
            .as_ref()
            .map_or(self.hw, LeaderState::high_watermark)
    }

    fn append(&mut self, recs: &[Rec]) -> Result<(), String> {
        for r in recs {
            let offset = self.log.len() as Offset;
            self.cache
                .assign(r.epoch, offset)
                .map_err(|e| format!("broker {}: epoch cache: {e}", self.id))?;
            self.log.push(*r);
        }
        Ok(())
    }

    fn truncate(&mut self, to: Offset) {
        let to = usize::try_from(to.max(0)).unwrap_or(0).min(self.log.len());
        self.log.truncate(to);
        self.durable = self.durable.min(to);
        self.cache.truncate_from_end(to as Offset);
        self.hw = self.hw.min(to as Offset);
        if let Some((target, at)) = self.syncing {
            self.syncing = Some((target.min(to), at));
        }
    }

    fn rebuild_cache(&mut self) {
        self.cache = EpochCache::default();
        for (i, r) in self.log.iter().enumerate() {
            // Epochs only grow along a log this model built.
            let _ = self.cache.assign(r.epoch, i as Offset);
        }
    }
}

#[derive(Debug, Clone)]
enum Msg {
    Fetch {
        fetch: FollowerFetch,
    },
    FetchReply {
        leader_epoch: Epoch,
        result: Result<FetchOutcome, FetchError>,
        records: Vec<Rec>,
    },
    Alter {
        change: IsrChange,
    },
    AlterReply {
        change: IsrChange,
        refused: Option<bool>,
    },
}

/// The controller's node id in the network model.
const CONTROLLER: BrokerId = 0;

struct World {
    cfg: ReplicaSimConfig,
    rng: StdRng,
    now: u64,
    chaos: bool,
    image: MetadataImage,
    next_index: u64,
    last_heartbeat: BTreeMap<BrokerId, u64>,
    brokers: Vec<Broker>,
    isolated: Option<(BrokerId, u64)>,
    /// (delivery time, sequence, from, to, message)
    queue: Vec<(u64, u64, BrokerId, BrokerId, Msg)>,
    seq: u64,
    next_value: u64,
    next_produce: u64,
    /// value → offset of every acknowledged record.
    acked: BTreeMap<u64, Offset>,
    /// value → offset of every record waiting for its acks=all answer.
    pending_offsets: BTreeMap<u64, Offset>,
    /// offset → value read by the consumer.
    read: BTreeMap<Offset, u64>,
    /// (broker, tenure) → last high watermark seen.
    marks: BTreeMap<(BrokerId, u64), Offset>,
    report: ReplicaSimReport,
    trace: bool,
}

/// Runs one seeded simulation; `Err` names the violated invariant and the time.
pub fn run(cfg: ReplicaSimConfig) -> Result<ReplicaSimReport, String> {
    let mut w = World::new(cfg)?;
    let chaos_end = w.cfg.chaos_ms;
    while w.now < chaos_end {
        w.step()?;
    }
    w.chaos = false;
    w.isolated = None;
    let deadline = w.now + w.cfg.heal_ms_max;
    loop {
        for b in &mut w.brokers {
            if !b.alive {
                b.restart_at = b.restart_at.min(w.now);
            }
        }
        w.step()?;
        if w.healed() {
            break;
        }
        if w.now >= deadline {
            return Err(format!(
                "not healed {} ms after the faults stopped: {}",
                w.cfg.heal_ms_max,
                w.describe()
            ));
        }
    }
    w.final_checks()?;
    w.report.leader_epochs = w.partition().leader_epoch;
    Ok(w.report)
}

impl World {
    fn new(cfg: ReplicaSimConfig) -> Result<Self, String> {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let ids: Vec<BrokerId> = (1..=cfg.brokers as BrokerId).collect();
        let mut w = World {
            rng,
            now: 0,
            chaos: true,
            image: MetadataImage::default(),
            next_index: 1,
            last_heartbeat: BTreeMap::new(),
            brokers: ids
                .iter()
                .map(|&id| Broker {
                    id,
                    alive: true,
                    restart_at: 0,
                    log: Vec::new(),
                    durable: 0,
                    syncing: None,
                    cache: EpochCache::default(),
                    hw: 0,
                    view: None,
                    leader: None,
                    tenure: 0,
                    fetching: None,
                })
                .collect(),
            isolated: None,
            queue: Vec::new(),
            seq: 0,
            next_value: 1,
            next_produce: 0,
            acked: BTreeMap::new(),
            pending_offsets: BTreeMap::new(),
            read: BTreeMap::new(),
            marks: BTreeMap::new(),
            report: ReplicaSimReport::default(),
            trace: std::env::var_os("TERN_SIM_TRACE").is_some(),
            cfg,
        };
        for &id in &ids {
            w.commit(vec![MetadataRecord::RegisterBroker {
                broker_id: id,
                incarnation_id: [id as u8; 16],
                endpoints: Vec::new(),
                rack: None,
            }])?;
            let epoch = w.image.broker(id).map_or(0, |b| b.epoch);
            w.commit(vec![MetadataRecord::UnfenceBroker {
                broker_id: id,
                broker_epoch: epoch,
            }])?;
            w.last_heartbeat.insert(id, 0);
        }
        w.commit(vec![MetadataRecord::CreateTopic {
            topic_id: [7; 16],
            name: TOPIC.into(),
            configs: BTreeMap::new(),
            partitions: vec![PartitionAssignment {
                replicas: ids.clone(),
                isr: ids.clone(),
                leader: ids[0],
            }],
        }])?;
        Ok(w)
    }

    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        if self.trace {
            eprintln!("t={} commit {records:?}", self.now);
        }
        let index = self.next_index;
        self.next_index += 1;
        self.image
            .apply_entry(index, 1, &records)
            .map_err(|e| format!("t={} the image refused {records:?}: {e}", self.now))
    }

    fn partition(&self) -> Partition {
        self.image.topics[TOPIC].partitions[0].clone()
    }

    fn config(&self) -> ReplicaConfig {
        ReplicaConfig {
            min_insync_replicas: self.cfg.min_insync_replicas,
            replica_lag_time_max_ms: self.cfg.replica_lag_time_max_ms,
            alter_partition_retry_ms: 50,
        }
    }

    fn idx(id: BrokerId) -> usize {
        (id - 1) as usize
    }

    /// Whether broker `id` is up and not cut off (a client can reach it).
    fn reachable(&self, id: BrokerId) -> bool {
        self.connected(id, id)
    }

    /// Whether a message can go from `a` to `b` now (the controller is node 0).
    fn connected(&self, a: BrokerId, b: BrokerId) -> bool {
        let up = |x: BrokerId| x == CONTROLLER || self.brokers[Self::idx(x)].alive;
        let cut = |x: BrokerId| self.isolated.is_some_and(|(i, _)| i == x);
        up(a) && up(b) && !cut(a) && !cut(b)
    }

    fn send(&mut self, from: BrokerId, to: BrokerId, msg: Msg) {
        if !self.connected(from, to) {
            return;
        }
        if self.chaos && self.rng.gen_range(0..1000) < self.cfg.loss_per_mille {
            return;
        }
        let at = self.now + self.rng.gen_range(0..=self.cfg.delay_ms_max);
        self.seq += 1;
        self.queue.push((at, self.seq, from, to, msg));
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += self.cfg.step_ms;
        if self.chaos {
            self.faults();
        }
        self.restarts();
        self.syncs();
        self.controller();
        self.metadata();
        self.deliver()?;
        self.leaders();
        self.fetches();
        self.produce()?;
        self.consume();
        self.check()
    }

    fn faults(&mut self) {
        let n = self.brokers.len();
        for i in 0..n {
            if self.brokers[i].alive && self.rng.gen_range(0..1000) < self.cfg.crash_per_mille {
                let down_ms = self.rng.gen_range(50..2_000);
                self.crash(i, down_ms);
            }
        }
        if let Some((_, until)) = self.isolated {
            if self.now >= until {
                self.isolated = None;
            }
        } else if self.rng.gen_range(0..1000) < self.cfg.isolate_per_mille {
            let id = self.rng.gen_range(1..=n as BrokerId);
            let until = self.now + self.rng.gen_range(100..2_500);
            self.isolated = Some((id, until));
            self.report.isolations += 1;
        }
    }

    fn crash(&mut self, i: usize, down_ms: u64) {
        let now = self.now;
        if self.trace {
            eprintln!("t={now} crash broker {} for {down_ms} ms", i + 1);
        }
        let b = &mut self.brokers[i];
        b.alive = false;
        b.restart_at = now + down_ms;
        let durable = b.durable;
        b.log.truncate(durable);
        b.syncing = None;
        b.rebuild_cache();
        b.hw = 0;
        b.view = None;
        b.fetching = None;
        if let Some(l) = b.leader.take() {
            let _ = l.stop();
        }
        self.report.crashes += 1;
    }

    fn restarts(&mut self) {
        let now = self.now;
        for b in &mut self.brokers {
            if !b.alive && now >= b.restart_at {
                b.alive = true;
            }
        }
    }

    fn syncs(&mut self) {
        let now = self.now;
        let fsync_max = self.cfg.fsync_ms_max;
        for i in 0..self.brokers.len() {
            let b = &mut self.brokers[i];
            if !b.alive {
                continue;
            }
            if let Some((target, at)) = b.syncing {
                if now >= at {
                    b.durable = b.durable.max(target.min(b.log.len()));
                    b.syncing = None;
                    let end = b.durable_end();
                    if let Some(l) = b.leader.as_mut() {
                        let acks = l.on_log_end(end);
                        self.on_acks(acks);
                    }
                }
            }
            let b = &mut self.brokers[i];
            if b.syncing.is_none() && b.durable < b.log.len() {
                let at = now + self.rng.gen_range(1..=fsync_max);
                b.syncing = Some((b.log.len(), at));
            }
        }
    }

    fn controller(&mut self) {
        let ids: Vec<BrokerId> = self.brokers.iter().map(|b| b.id).collect();
        for id in ids {
            if self.connected(id, CONTROLLER) {
                self.last_heartbeat.insert(id, self.now);
            }
            let last = self.last_heartbeat.get(&id).copied().unwrap_or(0);
            let fenced = self.image.broker(id).is_some_and(|b| b.fenced);
            let records = if !fenced && self.now.saturating_sub(last) > self.cfg.session_timeout_ms
            {
                decide::fence_broker(&self.image, id)
            } else if fenced && last == self.now {
                decide::unfence_broker(&self.image, id)
            } else {
                Vec::new()
            };
            // Decisions of the image itself: failures are bugs.
            if let Err(e) = self.commit(records) {
                panic!("{e}");
            }
        }
    }

    fn metadata(&mut self) {
        let current = self.partition();
        for i in 0..self.brokers.len() {
            let id = self.brokers[i].id;
            if !self.connected(id, CONTROLLER) || self.brokers[i].view.as_ref() == Some(&current) {
                continue;
            }
            if self.rng.gen_ratio(1, 4) {
                self.brokers[i].view = Some(current.clone());
                self.apply_view(i);
            }
        }
    }

    /// Acts on a new partition state in broker `i`'s view.
    fn apply_view(&mut self, i: usize) {
        let now = self.now;
        let config = self.config();
        let b = &mut self.brokers[i];
        let Some(view) = b.view.clone() else {
            return;
        };
        let mut results = Vec::new();
        match b.leader.as_mut() {
            Some(l) if view.leader == b.id && view.leader_epoch == l.leader_epoch() => {
                results.extend(l.update_partition(&view, now));
            }
            _ => {
                if let Some(l) = b.leader.take() {
                    results.extend(l.stop());
                }
                if view.leader == b.id {
                    let hw = b.hw.min(b.durable_end());
                    if std::env::var_os("TERN_SIM_TRACE").is_some() {
                        eprintln!(
                            "t={now} broker {} leads epoch {} with log {} durable {} hw {hw}",
                            b.id,
                            view.leader_epoch,
                            b.log.len(),
                            b.durable
                        );
                    }
                    b.leader = Some(LeaderState::new(
                        b.id,
                        &view,
                        0,
                        b.durable_end(),
                        hw,
                        now,
                        config,
                    ));
                    b.tenure += 1;
                }
                b.fetching = None;
            }
        }
        self.on_acks(results);
    }

    fn on_acks(&mut self, results: Vec<AckResult>) {
        for r in results {
            match r.result {
                Ok(()) => {
                    // The waiter's id is the value; its offset is where it was appended.
                    if let Some(offset) = self.pending_offsets.remove(&r.id) {
                        self.acked.insert(r.id, offset);
                        self.report.acknowledged += 1;
                    }
                }
                Err(e) => {
                    self.pending_offsets.remove(&r.id);
                    match e {
                        replica::AckError::NotEnoughReplicasAfterAppend => {
                            self.report.failed_after_append += 1
                        }
                        replica::AckError::Timeout => self.report.timed_out += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut due: Vec<(u64, u64, BrokerId, BrokerId, Msg)> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].0 <= now {
                due.push(self.queue.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| (m.0, m.1));
        for (_, _, from, to, msg) in due {
            if !self.connected(from, to) {
                continue;
            }
            match msg {
                Msg::Fetch { fetch } => self.on_fetch(to, &fetch),
                Msg::FetchReply {
                    leader_epoch,
                    result,
                    records,
                } => self.on_fetch_reply(to, leader_epoch, result, records)?,
                Msg::Alter { change } => self.on_alter(from, change),
                Msg::AlterReply { change, refused } => {
                    let b = &mut self.brokers[Self::idx(to)];
                    if let (Some(l), Some(stale)) = (b.leader.as_mut(), refused) {
                        let acks = l.on_alter_partition_refused(&change, stale);
                        self.on_acks(acks);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_fetch(&mut self, at: BrokerId, fetch: &FollowerFetch) {
        let now = self.now;
        let b = &mut self.brokers[Self::idx(at)];
        let Some(l) = b.leader.as_mut() else {
            return;
        };
        let (result, acks) = l.on_follower_fetch(fetch, &b.cache, now);
        let leader_epoch = l.leader_epoch();
        let records = match result {
            Ok(FetchOutcome::Read { from, .. }) => {
                let from = from as usize;
                let end = b.durable.min(from + FETCH_RECORDS_MAX);
                b.log
                    .get(from..end)
                    .map(<[Rec]>::to_vec)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        self.on_acks(acks);
        let reply = Msg::FetchReply {
            leader_epoch,
            result,
            records,
        };
        self.send(at, fetch.replica, reply);
    }

    fn on_fetch_reply(
        &mut self,
        at: BrokerId,
        leader_epoch: Epoch,
        result: Result<FetchOutcome, FetchError>,
        records: Vec<Rec>,
    ) -> Result<(), String> {
        let b = &mut self.brokers[Self::idx(at)];
        b.fetching = None;
        let current = b
            .view
            .as_ref()
            .is_some_and(|v| v.leader_epoch == leader_epoch && v.leader != b.id);
        if !current || b.leader.is_some() {
            return Ok(());
        }
        match result {
            Ok(FetchOutcome::Read {
                from,
                high_watermark,
            }) => {
                // Only what follows the log as it is now (it is durable: see `fetches`).
                if from == b.log.len() as Offset {
                    b.append(&records)?;
                }
                let hw = replica::follower_high_watermark(high_watermark, b.durable_end());
                b.hw = b.hw.max(hw);
            }
            Ok(FetchOutcome::Diverging {
                epoch, end_offset, ..
            }) => {
                let t = replica::truncation_on_diverging(
                    &b.cache,
                    b.log.len() as Offset,
                    epoch,
                    end_offset,
                );
                if self.trace {
                    eprintln!(
                        "t={} broker {at} truncates to {t:?} (log {}, diverging {epoch}/{end_offset})",
                        self.now,
                        b.log.len()
                    );
                }
                b.truncate(t.offset);
                self.report.truncations += 1;
            }
            // The follower's log runs past the leader's, which has no epochs to compare
            // (an empty log): what is past the leader's end was never committed.
            Err(FetchError::OffsetOutOfRange {
                offset, log_end, ..
            }) if offset > log_end => {
                b.truncate(log_end);
                self.report.truncations += 1;
            }
            Err(_) => {}
        }
        Ok(())
    }

    fn on_alter(&mut self, from: BrokerId, change: IsrChange) {
        let broker_epoch = self.image.broker(from).map_or(-1, |b| b.epoch);
        let req = AlterPartitionRequest {
            broker_id: from,
            broker_epoch,
            topic: TOPIC.into(),
            partition: 0,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.new_isr.clone(),
        };
        let refused = match decide::alter_partition(&self.image, &req) {
            Ok((records, ())) => {
                if !records.is_empty() {
                    self.report.isr_changes += 1;
                }
                if let Err(e) = self.commit(records) {
                    panic!("{e}");
                }
                None
            }
            Err(ControllerError::InvalidUpdateVersion { .. }) => Some(true),
            Err(_) => Some(false),
        };
        self.send(CONTROLLER, from, Msg::AlterReply { change, refused });
    }

    fn leaders(&mut self) {
        let now = self.now;
        for i in 0..self.brokers.len() {
            let b = &mut self.brokers[i];
            if !b.alive {
                continue;
            }
            let Some(l) = b.leader.as_mut() else {
                continue;
            };
            let acks = l.tick(now);
            let change = l.poll_alter_partition(now);
            let id = b.id;
            self.on_acks(acks);
            if let Some(change) = change {
                self.send(id, CONTROLLER, Msg::Alter { change });
            }
        }
    }

    fn fetches(&mut self) {
        let now = self.now;
        for i in 0..self.brokers.len() {
            let b = &mut self.brokers[i];
            if !b.alive || b.leader.is_some() {
                continue;
            }
            let Some(view) = b.view.clone() else {
                continue;
            };
            if view.leader == NO_LEADER || view.leader == b.id {
                continue;
            }
            if b.fetching.is_some_and(|sent| now < sent + 200) {
                continue;
            }
            // One fetch at a time, from the durable end: the offset acknowledges it.
            if b.durable < b.log.len() {
                continue;
            }
            let fetch = replica::fetch_request(b.id, view.leader_epoch, b.durable_end(), &b.cache);
            b.fetching = Some(now);
            let id = b.id;
            self.send(id, view.leader, Msg::Fetch { fetch });
        }
    }

    fn produce(&mut self) -> Result<(), String> {
        if !self.chaos || self.now < self.next_produce {
            return Ok(());
        }
        self.next_produce = self.now + self.cfg.produce_interval_ms;
        // The client sends to the leader the controller names (its metadata is fresh here).
        let p = self.partition();
        if p.leader == NO_LEADER || !self.reachable(p.leader) {
            return Ok(());
        }
        let deadline = self.now + self.cfg.ack_timeout_ms;
        let b = &mut self.brokers[Self::idx(p.leader)];
        let Some(l) = b.leader.as_mut() else {
            return Ok(());
        };
        self.report.produced += 1;
        if l.check_append().is_err() {
            self.report.refused_not_enough_replicas += 1;
            return Ok(());
        }
        let value = self.next_value;
        self.next_value += 1;
        let epoch = l.leader_epoch();
        let offset = b.log.len() as Offset;
        b.append(&[Rec { epoch, value }])?;
        let b = &mut self.brokers[Self::idx(p.leader)];
        let done = b
            .leader
            .as_mut()
            .and_then(|l| l.await_ack(value, offset + 1, deadline));
        self.pending_offsets.insert(value, offset);
        self.on_acks(done.into_iter().collect());
        Ok(())
    }

    fn consume(&mut self) {
        let p = self.partition();
        if p.leader == NO_LEADER || !self.reachable(p.leader) {
            return;
        }
        let b = &self.brokers[Self::idx(p.leader)];
        let Some(l) = b.leader.as_ref() else {
            return;
        };
        let hw = l.high_watermark();
        let from = self.read.keys().next_back().map_or(0, |o| o + 1);
        for o in from..hw {
            if let Some(r) = b.log.get(o as usize) {
                self.read.insert(o, r.value);
                self.report.consumer_reads += 1;
            }
        }
    }

    fn check(&mut self) -> Result<(), String> {
        let now = self.now;
        let p = self.partition();
        let fail = |what: String| Err(format!("t={now}: {what}"));
        for b in &self.brokers {
            if !b.alive {
                continue;
            }
            if let Some(l) = &b.leader {
                let hw = l.high_watermark();
                let mark = self.marks.entry((b.id, b.tenure)).or_insert(hw);
                if hw < *mark {
                    return fail(format!(
                        "broker {}: high watermark went back from {} to {hw}",
                        b.id, mark
                    ));
                }
                *mark = hw;
                if p.leader == b.id && p.leader_epoch == l.leader_epoch() {
                    for (value, offset) in &self.acked {
                        if b.log.get(*offset as usize).map(|r| r.value) != Some(*value) {
                            return fail(format!(
                                "leader {} (epoch {}) lacks acknowledged value {value} at \
                                 offset {offset}: {}",
                                b.id,
                                l.leader_epoch(),
                                self.describe()
                            ));
                        }
                    }
                    for (offset, value) in &self.read {
                        if b.log.get(*offset as usize).map(|r| r.value) != Some(*value) {
                            return fail(format!(
                                "leader {} no longer has value {value} that was read at \
                                 offset {offset}",
                                b.id
                            ));
                        }
                    }
                    let maximal: BTreeSet<BrokerId> = l.maximal_isr().into_iter().collect();
                    if !p.isr.iter().all(|r| maximal.contains(r)) {
                        return fail(format!(
                            "leader {} maximal ISR {maximal:?} lacks a member of the \
                             controller's ISR {:?}",
                            b.id, p.isr
                        ));
                    }
                }
            }
        }
        for a in self.brokers.iter().filter(|b| b.alive) {
            for b in self.brokers.iter().filter(|b| b.alive && b.id > a.id) {
                let below = a.high_watermark().min(b.high_watermark()).max(0) as usize;
                let n = below.min(a.log.len()).min(b.log.len());
                if let Some(o) = (0..n).find(|&o| a.log[o] != b.log[o]) {
                    return fail(format!(
                        "brokers {} and {} diverge at offset {o}, below their high \
                         watermarks ({} and {}): {}",
                        a.id,
                        b.id,
                        a.high_watermark(),
                        b.high_watermark(),
                        self.describe()
                    ));
                }
            }
        }
        Ok(())
    }

    fn healed(&self) -> bool {
        let p = self.partition();
        if p.leader == NO_LEADER || p.isr.len() != self.brokers.len() {
            return false;
        }
        let leader = &self.brokers[Self::idx(p.leader)];
        let Some(l) = &leader.leader else {
            return false;
        };
        leader.durable == leader.log.len()
            && l.high_watermark() == leader.durable_end()
            && self.brokers.iter().all(|b| {
                b.alive
                    && b.log == leader.log
                    && b.view.as_ref() == Some(&p)
                    && b.durable == b.log.len()
            })
    }

    fn final_checks(&self) -> Result<(), String> {
        let p = self.partition();
        let log = &self.brokers[Self::idx(p.leader)].log;
        let mut seen = BTreeSet::new();
        for r in log {
            if !seen.insert(r.value) {
                return Err(format!("value {} is in the log twice", r.value));
            }
        }
        for (value, offset) in &self.acked {
            if log.get(*offset as usize).map(|r| r.value) != Some(*value) {
                return Err(format!(
                    "acknowledged value {value} is not at offset {offset} after healing"
                ));
            }
        }
        for (offset, value) in &self.read {
            if log.get(*offset as usize).map(|r| r.value) != Some(*value) {
                return Err(format!(
                    "value {value} read at {offset} is gone after healing"
                ));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let p = self.partition();
        let mut s = format!(
            "controller: leader {} epoch {}/{} isr {:?};",
            p.leader, p.leader_epoch, p.partition_epoch, p.isr
        );
        for b in &self.brokers {
            s.push_str(&format!(
                " broker {}: {} log {} durable {} hw {} view {:?} leader {:?} cache {:?};",
                b.id,
                if b.alive { "up" } else { "down" },
                b.log.len(),
                b.durable,
                b.high_watermark(),
                b.view
                    .as_ref()
                    .map(|v| (v.leader, v.leader_epoch, v.isr.clone())),
                b.leader
                    .as_ref()
                    .map(|l| (l.leader_epoch(), l.maximal_isr())),
                b.cache.entries()
            ));
        }
        s
    }
}
