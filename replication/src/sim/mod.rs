//! The seeded simulator: a controller quorum (3 or 5 nodes) and simulated brokers in
//! virtual time, no sockets, no threads. Everything random comes from one seed, so a failing
//! seed replays exactly.
//!
//! # Faults (chaos phase)
//! Message loss, random delay (so reordering), a controller cut off from everyone for a
//! while, controller crash-restarts that lose whatever was written but not synced, and
//! brokers that stop heartbeating for longer than the session timeout.
//!
//! # Invariants, checked after every step
//! * At most one leader per term.
//! * Applied logs agree: an index is applied with the same term and data on every node, in
//!   increasing order per node (so every node's applied log is a prefix of the longest).
//! * Images are equal at equal applied index and keep their own invariants (leader ∈ ISR
//!   ⊆ replicas, no fenced leader).
//! * Producer-id blocks handed to brokers never overlap.
//!
//! # Heal phase
//! Faults stop, crashed nodes restart. Every broker must be unfenced within a bound; then
//! one broker stops heartbeating: it must be fenced no earlier than its session allows and
//! no later than session timeout + one election timeout after its last heartbeat, with its
//! partitions re-led from the ISR; it resumes and must be unfenced again; finally all nodes
//! converge on the same applied index and image.

pub mod replicas;

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::controller::{BrokerRequest, BrokerResponse, Controller, ControllerConfig, RequestId};
use crate::decide::{ControllerError, CreateTopicRequest, HeartbeatRequest, RegisterBrokerRequest};
use crate::image::{BrokerId, Endpoint, MetadataImage, NO_LEADER};
use crate::quorum::MemQuorumLog;

/// One simulation's shape.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub controllers: usize,
    pub brokers: usize,
    pub chaos_ms: u64,
    pub step_ms: u64,
    /// Per mille of messages lost during chaos.
    pub loss_per_mille: u32,
    pub delay_ms_max: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_request_timeout_ms: u64,
    /// Small so that snapshots and compaction happen in every run.
    pub snapshot_interval_entries: u64,
}

impl SimConfig {
    pub fn new(seed: u64, controllers: usize) -> Self {
        Self {
            seed,
            controllers,
            brokers: 4,
            chaos_ms: 40_000,
            step_ms: 10,
            loss_per_mille: 20,
            delay_ms_max: 30,
            broker_heartbeat_interval_ms: 2000,
            broker_request_timeout_ms: 1500,
            snapshot_interval_entries: 10,
        }
    }
}

/// What a run did, for the test's report.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    pub committed_index: u64,
    pub terms: u64,
    pub crashes: u32,
    pub partitions: u32,
    pub broker_pauses: u32,
    pub messages: u64,
}

/// A broken invariant, with the seed and virtual time to replay it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("seed {seed} at {now_ms} ms: {what}")]
pub struct SimFailure {
    pub seed: u64,
    pub now_ms: u64,
    pub what: String,
}

const CONTROLLER_BASE: BrokerId = 100;

enum Payload {
    Raft(Bytes),
    Request(RequestId, BrokerRequest),
    Reply(RequestId, Result<BrokerResponse, ControllerError>),
}

struct Envelope {
    from: BrokerId,
    to: BrokerId,
    payload: Payload,
}

struct Node {
    id: BrokerId,
    controller: Option<Controller>,
    log: MemQuorumLog,
    written_up_to: u64,
    sync_at: Option<u64>,
    restart_at: u64,
    isolated_until: u64,
    last_applied: u64,
    /// Who sent each request this node has not answered yet.
    reply_to: BTreeMap<RequestId, BrokerId>,
}

struct SimBroker {
    id: BrokerId,
    incarnation: [u8; 16],
    epoch: Option<i64>,
    target: usize,
    in_flight: Option<(RequestId, u64)>,
    next_heartbeat_ms: u64,
    paused_until: u64,
}

struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    now_ms: u64,
    nodes: Vec<Node>,
    brokers: Vec<SimBroker>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    in_queue: BTreeMap<u64, Envelope>,
    seq: u64,
    next_rid: RequestId,
    client_pending: BTreeMap<RequestId, ()>,
    leaders: BTreeMap<u64, BrokerId>,
    applied_log: BTreeMap<u64, (u64, u32)>,
    image_at: BTreeMap<u64, u64>,
    pid_blocks: Vec<(i64, i32)>,
    chaos: bool,
    report: SimReport,
    logger: slog::Logger,
}

/// Runs one seeded simulation; `Err` names the first invariant broken.
pub fn run(cfg: SimConfig) -> Result<SimReport, SimFailure> {
    let mut sim = Sim::new(cfg);
    sim.run().map_err(|what| SimFailure {
        seed: sim.cfg.seed,
        now_ms: sim.now_ms,
        what,
    })?;
    Ok(sim.report.clone())
}

fn image_hash(image: &MetadataImage) -> u64 {
    let mut h = DefaultHasher::new();
    image.hash(&mut h);
    h.finish()
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let voters: Vec<BrokerId> = (0..cfg.controllers as BrokerId)
            .map(|i| CONTROLLER_BASE + i)
            .collect();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = voters
            .iter()
            .map(|&id| Node {
                id,
                controller: None,
                log: MemQuorumLog::default(),
                written_up_to: 0,
                sync_at: None,
                restart_at: 0,
                isolated_until: 0,
                last_applied: 0,
                reply_to: BTreeMap::new(),
            })
            .collect();
        let brokers = (0..cfg.brokers as BrokerId)
            .map(|id| SimBroker {
                id,
                incarnation: rng.gen(),
                epoch: None,
                target: rng.gen_range(0..cfg.controllers),
                in_flight: None,
                next_heartbeat_ms: 0,
                paused_until: 0,
            })
            .collect();
        let report = SimReport {
            seed: cfg.seed,
            ..SimReport::default()
        };
        Sim {
            cfg,
            rng,
            now_ms: 0,
            nodes,
            brokers,
            queue: BinaryHeap::new(),
            in_queue: BTreeMap::new(),
            seq: 0,
            next_rid: 1,
            client_pending: BTreeMap::new(),
            leaders: BTreeMap::new(),
            applied_log: BTreeMap::new(),
            image_at: BTreeMap::new(),
            pid_blocks: Vec::new(),
            chaos: true,
            report,
            logger,
        }
    }

    fn voters(&self) -> Vec<BrokerId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let mut config =
            ControllerConfig::new(self.nodes[i].id, self.voters(), self.cfg.seed + i as u64);
        config.trace_applied = true;
        config.snapshot_interval_entries = self.cfg.snapshot_interval_entries;
        config.default_replication_factor = 2;
        config.leader_imbalance_check_interval_ms = 20_000;
        let recovered = self.nodes[i].log.recover().map_err(|e| e.to_string())?;
        let snapshot_index = recovered.snapshot_index();
        let c = Controller::new(config, recovered, &self.logger).map_err(|e| e.to_string())?;
        let n = &mut self.nodes[i];
        n.last_applied = snapshot_index;
        n.controller = Some(c);
        n.written_up_to = 0;
        n.sync_at = None;
        n.reply_to.clear();
        Ok(())
    }

    fn run(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        let chaos_end = self.cfg.chaos_ms;
        while self.now_ms < chaos_end {
            self.inject_faults()?;
            self.step()?;
        }
        self.heal()?;
        let settle = self.now_ms + 10_000;
        self.run_until(settle)?;
        self.check_all_unfenced("after healing")?;
        self.fence_scenario()?;
        self.check_converged()
    }

    fn run_until(&mut self, t: u64) -> Result<(), String> {
        while self.now_ms < t {
            self.step()?;
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        self.chaos = false;
        for i in 0..self.nodes.len() {
            self.nodes[i].isolated_until = 0;
            if self.nodes[i].controller.is_none() {
                self.start_node(i)?;
            }
        }
        for b in &mut self.brokers {
            b.paused_until = 0;
        }
        Ok(())
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        let down = self.nodes.iter().filter(|n| n.controller.is_none()).count();
        if self.rng.gen_ratio(1, 400) && down < (n - 1) / 2 {
            let i = self.rng.gen_range(0..n);
            if self.nodes[i].controller.is_some() {
                let keep = self.rng.gen_range(0..4);
                let node = &mut self.nodes[i];
                node.controller = None;
                node.log.crash(keep).map_err(|e| e.to_string())?;
                node.restart_at = self.now_ms + self.rng.gen_range(500..4000);
                self.report.crashes += 1;
            }
        }
        if self.rng.gen_ratio(1, 500) {
            let i = self.rng.gen_range(0..n);
            self.nodes[i].isolated_until = self.now_ms + self.rng.gen_range(1000..6000);
            self.report.partitions += 1;
        }
        if self.rng.gen_ratio(1, 1500) {
            let b = self.rng.gen_range(0..self.brokers.len());
            self.brokers[b].paused_until = self.now_ms + self.rng.gen_range(5_000..15_000);
            self.report.broker_pauses += 1;
        }
        for i in 0..n {
            if self.nodes[i].controller.is_none() && self.now_ms >= self.nodes[i].restart_at {
                self.start_node(i)?;
            }
        }
        if self.rng.gen_ratio(1, 150) {
            self.client_request();
        }
        Ok(())
    }

    fn client_request(&mut self) {
        let k = self.rng.gen_range(0..10);
        let req = if k < 5 {
            BrokerRequest::CreateTopics(vec![CreateTopicRequest {
                name: format!("t{}", self.rng.gen_range(0..12)),
                num_partitions: self.rng.gen_range(1..4),
                replication_factor: self.rng.gen_range(1..4),
                configs: BTreeMap::new(),
            }])
        } else if k < 7 {
            BrokerRequest::DeleteTopics(vec![format!("t{}", self.rng.gen_range(0..12))])
        } else {
            let b = &self.brokers[self.rng.gen_range(0..self.brokers.len())];
            let Some(epoch) = b.epoch else { return };
            BrokerRequest::AllocateProducerIds {
                broker_id: b.id,
                broker_epoch: epoch,
            }
        };
        let rid = self.next_rid;
        self.next_rid += 1;
        self.client_pending.insert(rid, ());
        let leader = self
            .nodes
            .iter()
            .filter_map(|n| n.controller.as_ref())
            .find(|c| c.is_leader());
        let to = match leader {
            Some(c) if self.rng.gen_ratio(4, 5) => c.config().node_id,
            _ => self.nodes[self.rng.gen_range(0..self.nodes.len())].id,
        };
        self.send(-1, to, Payload::Request(rid, req));
    }

    fn isolated(&self, id: BrokerId) -> bool {
        self.nodes
            .iter()
            .any(|n| n.id == id && n.isolated_until > self.now_ms)
    }

    fn send(&mut self, from: BrokerId, to: BrokerId, payload: Payload) {
        self.report.messages += 1;
        if self.chaos {
            if self.isolated(from) || self.isolated(to) {
                return;
            }
            if self.rng.gen_range(0..1000) < self.cfg.loss_per_mille {
                return;
            }
        }
        let at = self.now_ms + self.rng.gen_range(1..=self.cfg.delay_ms_max);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.in_queue
            .insert(self.seq, Envelope { from, to, payload });
    }

    fn node_index(&self, id: BrokerId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn step(&mut self) -> Result<(), String> {
        self.now_ms += self.cfg.step_ms;
        let now = self.now_ms;
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            if let Some(env) = self.in_queue.remove(&seq) {
                self.deliver(env)?;
            }
        }
        for i in 0..self.nodes.len() {
            if let Some(c) = self.nodes[i].controller.as_mut() {
                if c.poll_timeout().is_none_or(|t| t <= now) {
                    c.handle_tick(now);
                }
            }
            self.flush_node(i)?;
        }
        self.brokers_act();
        self.check_invariants()
    }

    fn deliver(&mut self, env: Envelope) -> Result<(), String> {
        let now = self.now_ms;
        match env.payload {
            Payload::Raft(bytes) => {
                let Some(i) = self.node_index(env.to) else {
                    return Ok(());
                };
                if let Some(c) = self.nodes[i].controller.as_mut() {
                    if let Err(e) = c.handle_raft_message(env.from, &bytes, now) {
                        // Raft refuses stale messages from a restarted peer now and then.
                        if !matches!(e, crate::controller::InboundError::Raft { .. }) {
                            return Err(format!("frame refused: {e}"));
                        }
                    }
                }
            }
            Payload::Request(rid, req) => {
                let Some(i) = self.node_index(env.to) else {
                    return Ok(());
                };
                if let Some(c) = self.nodes[i].controller.as_mut() {
                    c.handle_request(rid, req, now);
                    // Replies go back to the sender of the request.
                    self.nodes[i].pending_reply_to(rid, env.from);
                }
            }
            Payload::Reply(rid, result) => self.on_reply(env.to, rid, result)?,
        }
        Ok(())
    }

    fn flush_node(&mut self, i: usize) -> Result<(), String> {
        let now = self.now_ms;
        let mut out = Vec::new();
        let mut replies = Vec::new();
        {
            let sync_now = self.rng.gen_ratio(4, 5);
            let delay = self.rng.gen_range(10..60);
            let node = &mut self.nodes[i];
            let Some(c) = node.controller.as_mut() else {
                return Ok(());
            };
            loop {
                let mut any = false;
                while let Some(batch) = c.poll_persist() {
                    any = true;
                    node.log.write(&batch).map_err(|e| e.to_string())?;
                    node.written_up_to = batch.id;
                    if node.sync_at.is_none() {
                        node.sync_at = Some(if sync_now { now } else { now + delay });
                    }
                }
                if node.sync_at.is_some_and(|t| t <= now) {
                    node.log.sync().map_err(|e| e.to_string())?;
                    node.sync_at = None;
                    c.handle_persisted(node.written_up_to, now);
                    any = true;
                }
                while let Some((to, bytes)) = c.poll_transmit() {
                    out.push((to, Payload::Raft(bytes)));
                }
                while let Some((rid, r)) = c.poll_reply() {
                    replies.push((rid, r));
                }
                if !any {
                    break;
                }
            }
        }
        let from = self.nodes[i].id;
        for (to, p) in out {
            self.send(from, to, p);
        }
        for (rid, r) in replies {
            let to = self.nodes[i].take_reply_to(rid);
            self.send(from, to, Payload::Reply(rid, r));
        }
        self.observe_node(i)
    }

    fn observe_node(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let Some(c) = node.controller.as_mut() else {
            return Ok(());
        };
        if let Some(f) = c.failure() {
            return Err(format!("node {} failed: {f}", node.id));
        }
        let role = c.role();
        if role.is_leader {
            let prev = *self.leaders.entry(role.term).or_insert(node.id);
            if prev != node.id {
                return Err(format!(
                    "two leaders in term {}: {prev} and {}",
                    role.term, node.id
                ));
            }
        }
        while let Some(a) = c.poll_applied() {
            if a.index <= node.last_applied && !a.from_snapshot {
                return Err(format!(
                    "node {} applied {} after {}",
                    node.id, a.index, node.last_applied
                ));
            }
            node.last_applied = a.index;
            if a.from_snapshot {
                continue;
            }
            match self.applied_log.get(&a.index) {
                Some(&(t, crc)) if (t, crc) != (a.term, a.data_crc) => {
                    return Err(format!(
                        "node {} applied index {} term {} but term {t} was applied elsewhere",
                        node.id, a.index, a.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.applied_log.insert(a.index, (a.term, a.data_crc));
                }
            }
        }
        let image = c.image();
        let idx = image.last_applied_index;
        if idx > 0 {
            let h = image_hash(image);
            match self.image_at.get(&idx) {
                Some(&other) if other != h => {
                    return Err(format!("node {} image differs at index {idx}", node.id));
                }
                Some(_) => {}
                None => {
                    image.check_invariants()?;
                    self.image_at.insert(idx, h);
                }
            }
        }
        self.report.committed_index = self.report.committed_index.max(idx);
        self.report.terms = self.report.terms.max(role.term);
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), String> {
        let mut blocks = self.pid_blocks.clone();
        blocks.sort_unstable();
        for w in blocks.windows(2) {
            if w[0].0 + i64::from(w[0].1) > w[1].0 {
                return Err(format!("producer-id blocks overlap: {w:?}"));
            }
        }
        Ok(())
    }

    fn metadata_offset(&self) -> i64 {
        let max = self
            .nodes
            .iter()
            .filter_map(|n| n.controller.as_ref())
            .map(|c| c.image().last_applied_index)
            .max()
            .unwrap_or(0);
        i64::try_from(max).unwrap_or(i64::MAX)
    }

    fn brokers_act(&mut self) {
        let now = self.now_ms;
        let offset = self.metadata_offset();
        for b in 0..self.brokers.len() {
            let br = &mut self.brokers[b];
            if br.paused_until > now {
                br.in_flight = None;
                continue;
            }
            if let Some((_, sent)) = br.in_flight {
                if now < sent + self.cfg.broker_request_timeout_ms {
                    continue;
                }
                br.target = (br.target + 1) % self.nodes.len();
            }
            let req = match br.epoch {
                None => BrokerRequest::RegisterBroker(RegisterBrokerRequest {
                    broker_id: br.id,
                    incarnation_id: br.incarnation,
                    endpoints: vec![Endpoint {
                        listener: "PLAINTEXT".into(),
                        host: format!("b{}", br.id),
                        port: 9092,
                    }],
                    rack: Some(format!("r{}", br.id % 2)),
                    previous_broker_epoch: None,
                }),
                Some(epoch) if now >= br.next_heartbeat_ms || br.in_flight.is_some() => {
                    BrokerRequest::BrokerHeartbeat(HeartbeatRequest {
                        broker_id: br.id,
                        broker_epoch: epoch,
                        current_metadata_offset: offset,
                        want_fence: false,
                        want_shutdown: false,
                    })
                }
                Some(_) => continue,
            };
            let rid = self.next_rid;
            self.next_rid += 1;
            let br = &mut self.brokers[b];
            br.in_flight = Some((rid, now));
            br.next_heartbeat_ms = now + self.cfg.broker_heartbeat_interval_ms;
            let (from, to) = (br.id, self.nodes[br.target].id);
            self.send(from, to, Payload::Request(rid, req));
        }
    }

    fn on_reply(
        &mut self,
        to: BrokerId,
        rid: RequestId,
        result: Result<BrokerResponse, ControllerError>,
    ) -> Result<(), String> {
        if to < 0 {
            if self.client_pending.remove(&rid).is_some() {
                if let Ok(BrokerResponse::AllocateProducerIds(r)) = result {
                    self.pid_blocks.push((r.first_id, r.size));
                }
            }
            return Ok(());
        }
        let n = self.nodes.len();
        let voters = self.voters();
        let Some(br) = self.brokers.iter_mut().find(|b| b.id == to) else {
            return Ok(());
        };
        if br.in_flight.map(|(r, _)| r) != Some(rid) {
            return Ok(());
        }
        br.in_flight = None;
        match result {
            Ok(BrokerResponse::RegisterBroker(r)) => br.epoch = Some(r.broker_epoch),
            Ok(_) => {}
            Err(ControllerError::NotController { leader_id }) => {
                br.target = leader_id
                    .and_then(|l| voters.iter().position(|&v| v == l))
                    .unwrap_or((br.target + 1) % n);
                br.next_heartbeat_ms = 0;
            }
            Err(ControllerError::StaleBrokerEpoch { .. })
            | Err(ControllerError::BrokerNotRegistered { .. }) => br.epoch = None,
            Err(e) => return Err(format!("broker {} got an unexpected error: {e}", br.id)),
        }
        Ok(())
    }

    fn leader_image(&self) -> Option<&MetadataImage> {
        self.nodes
            .iter()
            .filter_map(|n| n.controller.as_ref())
            .find(|c| c.is_leader())
            .map(Controller::image)
    }

    fn check_all_unfenced(&self, when: &str) -> Result<(), String> {
        let image = self.leader_image().ok_or(format!("no leader {when}"))?;
        for b in &self.brokers {
            match image.broker(b.id) {
                Some(r) if !r.fenced => {}
                other => return Err(format!("broker {} not unfenced {when}: {other:?}", b.id)),
            }
        }
        Ok(())
    }

    /// One broker stops heartbeating, then resumes: fencing and unfencing within bounds.
    fn fence_scenario(&mut self) -> Result<(), String> {
        let session = 9000;
        let election = 1000;
        let hb = self.cfg.broker_heartbeat_interval_ms;
        let x = 0usize;
        let xid = self.brokers[x].id;
        let paused_at = self.now_ms;
        let resume_at = paused_at + session + election + 4000;
        self.brokers[x].paused_until = resume_at;
        let mut fenced_at = None;
        while self.now_ms < resume_at {
            self.step()?;
            let Some(image) = self.leader_image() else {
                continue;
            };
            let fenced = image.broker(xid).is_some_and(|b| b.fenced);
            if fenced && fenced_at.is_none() {
                fenced_at = Some(self.now_ms);
                if self.now_ms + hb < paused_at + session {
                    return Err(format!(
                        "broker {xid} fenced {} ms after it stopped",
                        self.now_ms - paused_at
                    ));
                }
                for (t, i, p) in image.partitions_of(xid) {
                    let others = p
                        .isr
                        .iter()
                        .any(|&r| r != xid && image.broker(r).is_some_and(|b| b.is_active()));
                    if p.leader == xid || (others && p.leader == NO_LEADER) {
                        return Err(format!(
                            "{}-{i} not re-led after fencing {xid}: {p:?}",
                            t.name
                        ));
                    }
                }
            }
        }
        let Some(at) = fenced_at else {
            return Err(format!(
                "broker {xid} never fenced after it stopped heartbeating"
            ));
        };
        if at > paused_at + session + election {
            return Err(format!(
                "broker {xid} fenced only {} ms after it stopped",
                at - paused_at
            ));
        }
        let deadline = self.now_ms + hb + self.cfg.broker_request_timeout_ms + election;
        self.run_until(deadline)?;
        self.check_all_unfenced("after the broker resumed")
    }

    /// All nodes reach the same applied index and image (sampled until they do, for up to
    /// 5 s of quiet), and nothing applied before is lost.
    fn check_converged(&mut self) -> Result<(), String> {
        let end = self.now_ms + 5000;
        let mut last = String::new();
        while self.now_ms < end {
            self.step()?;
            let states: Vec<(u64, u64)> = self
                .nodes
                .iter()
                .filter_map(|n| n.controller.as_ref())
                .map(|c| (c.image().last_applied_index, image_hash(c.image())))
                .collect();
            let max_seen = self.applied_log.keys().next_back().copied().unwrap_or(0);
            if states.len() == self.nodes.len()
                && states.windows(2).all(|w| w[0] == w[1])
                && states[0].0 >= max_seen
            {
                return Ok(());
            }
            last =
                format!("applied (index, image hash) per node: {states:?}; max applied {max_seen}");
        }
        let quorums: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.controller.as_ref())
            .map(|c| format!("{:?}", c.quorum()))
            .collect();
        Err(format!("nodes did not converge: {last}; {quorums:#?}"))
    }
}

impl Node {
    fn pending_reply_to(&mut self, rid: RequestId, from: BrokerId) {
        self.reply_to.insert(rid, from);
    }

    fn take_reply_to(&mut self, rid: RequestId) -> BrokerId {
        self.reply_to.remove(&rid).unwrap_or(-1)
    }
}
