//! Tests of the group coordinator in virtual time: every step checks the invariants and
//! that each request is answered at most once.

use super::*;
use proptest::prelude::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const G: &str = "g";
/// Initial rebalance delay of most tests: new groups form in one generation.
const DELAY_MS: u64 = 100;

/// ConsumerProtocolSubscription v0: version, topics, user_data (null).
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

fn join_req(group: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(&["t"]))],
        require_known_member_id: false,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn static_req(group: &str, member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_req(group, member_id)
    }
}

fn config(initial_delay_ms: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: initial_delay_ms,
        ..GroupConfig::default()
    }
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition {
        topic: topic.into(),
        partition,
    }
}

fn offset(offset: i64, commit_ms: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: commit_ms,
        expire_timestamp_ms: None,
    }
}

/// A coordinator, a virtual clock and the replies received so far.
struct H {
    c: Coordinator,
    base: Instant,
    now: Instant,
    next_id: ReqId,
    replies: HashMap<ReqId, Reply>,
}

impl H {
    fn new(config: GroupConfig) -> Self {
        let base = Instant::now();
        Self {
            c: Coordinator::new(config),
            base,
            now: base,
            next_id: 0,
            replies: HashMap::new(),
        }
    }

    fn ms(&self) -> u64 {
        self.now.duration_since(self.base).as_millis() as u64
    }

    /// Moves the clock to `ms` after the start, firing timers on the way as a driver would.
    fn at(&mut self, ms: u64) {
        let target = self.base + Duration::from_millis(ms);
        while let Some(t) = self.c.poll_timeout().filter(|t| *t <= target) {
            self.now = self.now.max(t);
            self.c.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.c.handle_timeout(self.now);
        self.drain();
    }

    fn after(&mut self, ms: u64) {
        self.at(self.ms() + ms);
    }

    fn drain(&mut self) {
        while let Some((id, reply)) = self.c.poll_reply() {
            assert!(id < self.next_id, "reply to a request never made");
            assert!(
                self.replies.insert(id, reply).is_none(),
                "request {id} answered twice"
            );
        }
        self.c.assert_invariants();
    }

    fn id(&mut self) -> ReqId {
        self.next_id += 1;
        self.next_id - 1
    }

    fn join(&mut self, req: JoinRequest) -> ReqId {
        let id = self.id();
        self.c.handle_join(id, req, self.now);
        self.drain();
        id
    }

    fn sync(&mut self, member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> ReqId {
        let req = SyncRequest {
            group_id: G.into(),
            generation_id: generation,
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
                .collect(),
        };
        self.sync_req(req)
    }

    fn sync_req(&mut self, req: SyncRequest) -> ReqId {
        let id = self.id();
        self.c.handle_sync(id, req, self.now);
        self.drain();
        id
    }

    fn heartbeat(&mut self, member_id: &str, generation: i32) -> i16 {
        self.heartbeat_static(member_id, None, generation)
    }

    fn heartbeat_static(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> i16 {
        let id = self.id();
        let req = HeartbeatRequest {
            group_id: G.into(),
            generation_id: generation,
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_owned),
        };
        self.c.handle_heartbeat(id, req, self.now);
        self.drain();
        match self.replies.remove(&id) {
            Some(Reply::Heartbeat(code)) => code,
            other => panic!("heartbeat {id}: {other:?}"),
        }
    }

    fn leave(&mut self, members: &[(&str, Option<&str>)]) -> LeaveResponse {
        let id = self.id();
        let req = LeaveRequest {
            group_id: G.into(),
            members: members
                .iter()
                .map(|(m, i)| (m.to_string(), i.map(str::to_owned)))
                .collect(),
        };
        self.c.handle_leave(id, req, self.now);
        self.drain();
        match self.replies.remove(&id) {
            Some(Reply::Leave(r)) => r,
            other => panic!("leave {id}: {other:?}"),
        }
    }

    fn join_reply(&mut self, id: ReqId) -> Option<JoinResponse> {
        match self.replies.remove(&id)? {
            Reply::Join(r) => Some(r),
            other => panic!("join {id}: {other:?}"),
        }
    }

    fn joined(&mut self, id: ReqId) -> JoinResponse {
        let r = self
            .join_reply(id)
            .unwrap_or_else(|| panic!("join {id} not answered"));
        assert_eq!(r.error_code, 0, "join {id}: {r:?}");
        r
    }

    fn sync_reply(&mut self, id: ReqId) -> Option<SyncResponse> {
        match self.replies.remove(&id)? {
            Reply::Sync(r) => Some(r),
            other => panic!("sync {id}: {other:?}"),
        }
    }

    fn state(&self) -> Option<GroupState> {
        self.c.group_state(G)
    }

    /// One dynamic member, joined and synced: (member id, generation).
    fn single_stable(&mut self) -> (String, i32) {
        let j = self.join(join_req(G, ""));
        self.after(DELAY_MS);
        let r = self.joined(j);
        let s = self.sync(&r.member_id, r.generation_id, &[(&r.member_id, "a0")]);
        assert_eq!(self.sync_reply(s).map(|s| s.error_code), Some(0));
        (r.member_id, r.generation_id)
    }

    /// Members `ids` rejoin (or join), then everybody syncs with the leader assigning
    /// "a-<member id>". Returns the members' replies in order.
    fn rebalance(&mut self, reqs: Vec<JoinRequest>) -> Vec<JoinResponse> {
        let ids: Vec<ReqId> = reqs.into_iter().map(|r| self.join(r)).collect();
        // Until every join is answered (at most the rebalance timeout).
        for _ in 0..=REBALANCE_MS / 100 {
            if ids.iter().all(|id| self.replies.contains_key(id)) {
                break;
            }
            self.after(100);
        }
        let replies: Vec<JoinResponse> = ids.iter().map(|id| self.joined(*id)).collect();
        let leader = replies
            .iter()
            .find(|r| r.leader == r.member_id)
            .expect("a leader");
        let assignments: Vec<(String, String)> = leader
            .members
            .iter()
            .map(|m| (m.member_id.clone(), format!("a-{}", m.member_id)))
            .collect();
        let assignments: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_str()))
            .collect();
        let syncs: Vec<ReqId> = replies
            .iter()
            .map(|r| {
                let a = if r.leader == r.member_id {
                    &assignments[..]
                } else {
                    &[][..]
                };
                self.sync(&r.member_id, r.generation_id, a)
            })
            .collect();
        for (s, r) in syncs.iter().zip(&replies) {
            let s = self.sync_reply(*s).expect("sync answered");
            assert_eq!(s.error_code, 0);
            assert_eq!(s.assignment, Bytes::from(format!("a-{}", r.member_id)));
        }
        assert_eq!(self.state(), Some(GroupState::Stable));
        replies
    }
}

use std::collections::HashMap;

#[test]
fn join_storm_forms_one_generation() {
    // 20 members joining at once: one generation, one leader, everybody answered and assigned.
    let mut h = H::new(config(3_000));
    let ids: Vec<ReqId> = (0..20)
        .map(|i| {
            h.now = h.base + Duration::from_millis(i);
            h.join(JoinRequest {
                client_id: format!("c{i}"),
                ..join_req(G, "")
            })
        })
        .collect();
    h.at(5_999);
    assert!(
        ids.iter().all(|id| !h.replies.contains_key(id)),
        "initial delay was extended"
    );
    h.at(6_000);
    let replies: Vec<JoinResponse> = ids.iter().map(|id| h.joined(*id)).collect();
    let leader = replies[0].member_id.clone();
    let mut member_ids = BTreeSet::new();
    for r in &replies {
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, leader);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
        assert!(
            member_ids.insert(r.member_id.clone()),
            "member ids are unique"
        );
        let expected = if r.member_id == leader { 20 } else { 0 };
        assert_eq!(r.members.len(), expected);
    }
    assert_eq!(h.state(), Some(GroupState::CompletingRebalance));
    // Followers sync first and wait for the leader.
    let syncs: Vec<ReqId> = replies[1..]
        .iter()
        .map(|r| h.sync(&r.member_id, 1, &[]))
        .collect();
    assert!(syncs.iter().all(|s| !h.replies.contains_key(s)));
    let assignments: Vec<(String, String)> = replies
        .iter()
        .map(|r| (r.member_id.clone(), format!("for {}", r.member_id)))
        .collect();
    let a: Vec<(&str, &str)> = assignments
        .iter()
        .map(|(m, a)| (m.as_str(), a.as_str()))
        .collect();
    let leader_sync = h.sync(&leader, 1, &a);
    for (s, r) in std::iter::once(&leader_sync).chain(&syncs).zip(&replies) {
        let s = h.sync_reply(*s).expect("answered");
        assert_eq!(s.error_code, 0);
        assert_eq!(s.assignment, Bytes::from(format!("for {}", r.member_id)));
    }
    assert_eq!(h.state(), Some(GroupState::Stable));
    assert_eq!(h.c.describe_group(G).members.len(), 20);
}

#[test]
fn initial_delay_extends_while_members_arrive_but_within_rebalance_timeout() {
    // Kafka's InitialDelayedJoin: +delay per arrival window, never past the rebalance timeout.
    let mut h = H::new(config(3_000));
    let req = |_| JoinRequest {
        rebalance_timeout_ms: 10_000,
        ..join_req(G, "")
    };
    let a = h.join(req(0));
    h.at(2_000);
    let b = h.join(req(1));
    h.at(3_000);
    assert!(
        h.join_reply(a).is_none(),
        "a member arrived: extended to 6000"
    );
    h.at(5_000);
    let c = h.join(req(2));
    h.at(8_999);
    assert!(h.join_reply(a).is_none(), "extended again to 9000");
    let d = h.join(req(3));
    h.at(9_999);
    assert!(
        h.join_reply(a).is_none(),
        "last extension is the 1000 ms left of 10000"
    );
    h.at(10_000);
    for id in [a, b, c, d] {
        assert_eq!(h.joined(id).generation_id, 1);
    }
}

#[test]
fn initial_delay_without_arrivals_completes_after_one_delay() {
    let mut h = H::new(config(3_000));
    let a = h.join(join_req(G, ""));
    h.at(2_999);
    assert!(h.join_reply(a).is_none());
    h.at(3_000);
    assert_eq!(h.joined(a).generation_id, 1);
}

#[test]
fn leader_that_never_syncs_is_expelled_by_its_session() {
    // CompletingRebalance: the leader neither syncs nor heartbeats; the follower's parked
    // SyncGroup gets REBALANCE_IN_PROGRESS and it becomes the leader of the next generation.
    let mut h = H::new(config(DELAY_MS));
    let (a, _) = h.single_stable();
    let b = h.join(join_req(G, ""));
    assert_eq!(h.heartbeat(&a, 1), REBALANCE_IN_PROGRESS);
    let ra = h.join(join_req(G, &a));
    let (ra, rb) = (h.joined(ra), h.joined(b));
    assert_eq!((ra.generation_id, ra.leader.as_str()), (2, a.as_str()));
    let sb = h.sync(&rb.member_id, 2, &[]);
    h.after(SESSION_MS as u64 - 1);
    assert!(h.sync_reply(sb).is_none());
    h.after(DELAY_MS);
    assert_eq!(
        h.sync_reply(sb).map(|s| s.error_code),
        Some(REBALANCE_IN_PROGRESS)
    );
    assert_eq!(h.state(), Some(GroupState::PreparingRebalance));
    let jb = h.join(join_req(G, &rb.member_id));
    let jb = h.joined(jb);
    assert_eq!(
        (jb.generation_id, jb.leader.clone()),
        (3, rb.member_id.clone())
    );
    assert_eq!(jb.members.len(), 1);
    assert_eq!(h.heartbeat(&a, 3), UNKNOWN_MEMBER_ID);
}

#[test]
fn leader_heartbeating_without_syncing_is_removed_after_rebalance_timeout() {
    // Kafka 3.x pending-sync expiry: heartbeats alone do not keep a generation open forever.
    let mut h = H::new(config(DELAY_MS));
    let j = h.join(join_req(G, ""));
    h.after(DELAY_MS);
    let a = h.joined(j).member_id;
    for _ in 0..(REBALANCE_MS / 3_000) {
        h.after(2_999);
        assert_eq!(h.heartbeat(&a, 1), 0);
    }
    h.after(11);
    assert_eq!(h.heartbeat(&a, 1), UNKNOWN_MEMBER_ID);
    assert_eq!(h.state(), Some(GroupState::Empty));
}

#[test]
fn leader_leaving_mid_rebalance_hands_over_leadership() {
    // The leader rejoins then leaves: its parked join gets UNKNOWN_MEMBER_ID and the first
    // remaining member that rejoined leads.
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, ""), join_req(G, "")]);
    let [a, b, c] = [0, 1, 2].map(|i| gen1[i].member_id.clone());
    let leader = gen1[0].leader.clone();
    assert_eq!(leader, a);
    let ja = h.join(join_req(G, &a));
    let jb = h.join(join_req(G, &b));
    let left = h.leave(&[(&a, None)]);
    assert_eq!(left.members, vec![(a.clone(), None, 0)]);
    assert_eq!(
        h.join_reply(ja).map(|r| r.error_code),
        Some(UNKNOWN_MEMBER_ID)
    );
    assert!(h.join_reply(jb).is_none(), "c has not rejoined yet");
    let jc = h.join(join_req(G, &c));
    let (rb, rc) = (h.joined(jb), h.joined(jc));
    assert_eq!((rb.generation_id, rb.leader.as_str()), (2, b.as_str()));
    assert_eq!(rc.leader, b);
    let names: Vec<&str> = rb.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(names, vec![b.as_str(), c.as_str()]);
    assert!(rc.members.is_empty());
}

#[test]
fn leader_leaving_while_others_wait_to_sync() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, "")]);
    let (a, b) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    let ja = h.join(join_req(G, &a));
    let jb = h.join(join_req(G, &b));
    let (_, rb) = (h.joined(ja), h.joined(jb));
    let sb = h.sync(&b, rb.generation_id, &[]);
    h.leave(&[(&a, None)]);
    assert_eq!(
        h.sync_reply(sb).map(|s| s.error_code),
        Some(REBALANCE_IN_PROGRESS)
    );
    let jb = h.join(join_req(G, &b));
    let rb = h.joined(jb);
    assert_eq!(rb.leader, b);
    assert_eq!(rb.generation_id, 3);
}

#[test]
fn commit_validation() {
    // Kafka's validateOffsetCommit per state and identity.
    let mut h = H::new(config(DELAY_MS));
    let now = h.now;
    assert_eq!(h.c.validate_commit("new", -1, "", None, now), Ok(()));
    assert_eq!(
        h.c.validate_commit("new", 3, "m", None, now),
        Err(ILLEGAL_GENERATION)
    );
    assert_eq!(
        h.c.validate_commit("new", -1, "m", None, now),
        Err(UNKNOWN_MEMBER_ID)
    );
    let gen1 = h.rebalance(vec![join_req(G, ""), static_req(G, "", "i1")]);
    let (a, s) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    let now = h.now;
    assert_eq!(h.c.validate_commit(G, 1, &a, None, now), Ok(()));
    assert_eq!(h.c.validate_commit(G, 1, &s, Some("i1"), now), Ok(()));
    assert_eq!(
        h.c.validate_commit(G, 0, &a, None, now),
        Err(ILLEGAL_GENERATION)
    );
    assert_eq!(
        h.c.validate_commit(G, 1, "stranger", None, now),
        Err(UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        h.c.validate_commit(G, -1, "", None, now),
        Err(UNKNOWN_MEMBER_ID),
        "simple"
    );
    assert_eq!(
        h.c.validate_commit(G, 1, &a, Some("i1"), now),
        Err(FENCED_INSTANCE_ID)
    );
    assert_eq!(
        h.c.validate_commit(G, 1, &s, Some("i9"), now),
        Err(UNKNOWN_MEMBER_ID)
    );
    // PreparingRebalance: members of the current generation may still commit.
    let ja = h.join(join_req(G, &a));
    assert_eq!(h.state(), Some(GroupState::PreparingRebalance));
    let now = h.now;
    assert_eq!(h.c.validate_commit(G, 1, &s, Some("i1"), now), Ok(()));
    let js = h.join(static_req(G, &s, "i1"));
    assert_eq!(h.state(), Some(GroupState::CompletingRebalance));
    let (_, _) = (h.joined(ja), h.joined(js));
    let now = h.now;
    assert_eq!(
        h.c.validate_commit(G, 2, &a, None, now),
        Err(REBALANCE_IN_PROGRESS)
    );
    assert_eq!(
        h.c.validate_commit(G, 1, &a, None, now),
        Err(ILLEGAL_GENERATION)
    );
}

#[test]
fn commit_counts_as_heartbeat_and_simple_commit_on_empty_group() {
    let mut h = H::new(config(DELAY_MS));
    let (a, generation) = h.single_stable();
    h.after(9_000);
    let now = h.now;
    assert_eq!(h.c.validate_commit(G, generation, &a, None, now), Ok(()));
    h.after(9_000);
    assert_eq!(
        h.heartbeat(&a, generation),
        0,
        "the commit refreshed the session"
    );
    h.after(SESSION_MS as u64);
    assert_eq!(h.state(), Some(GroupState::Empty));
    let now = h.now;
    assert_eq!(h.c.validate_commit(G, -1, "", None, now), Ok(()));
    assert_eq!(
        h.c.validate_commit(G, generation, &a, None, now),
        Err(UNKNOWN_MEMBER_ID)
    );
    h.c.apply_commit(G, vec![(tp("t", 0), offset(5, 1))]);
    assert_eq!(h.c.committed(G, &tp("t", 0)).map(|o| o.offset), Some(5));
}

#[test]
fn heartbeat_errors_per_state() {
    let mut h = H::new(config(DELAY_MS));
    assert_eq!(h.heartbeat("m", 1), UNKNOWN_MEMBER_ID, "unknown group");
    let id = h.id();
    let req = HeartbeatRequest {
        group_id: String::new(),
        generation_id: 1,
        member_id: "m".into(),
        group_instance_id: None,
    };
    h.c.handle_heartbeat(id, req, h.now);
    assert!(matches!(
        h.c.poll_reply(),
        Some((_, Reply::Heartbeat(INVALID_GROUP_ID)))
    ));
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, "")]);
    let (a, b) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    assert_eq!(h.heartbeat(&a, 1), 0, "Stable");
    assert_eq!(h.heartbeat(&a, 2), ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat("stranger", 1), UNKNOWN_MEMBER_ID);
    let ja = h.join(join_req(G, &a));
    assert_eq!(
        h.heartbeat(&b, 1),
        REBALANCE_IN_PROGRESS,
        "PreparingRebalance"
    );
    let jb = h.join(join_req(G, &b));
    h.joined(ja);
    h.joined(jb);
    assert_eq!(h.state(), Some(GroupState::CompletingRebalance));
    assert_eq!(h.heartbeat(&b, 2), 0, "CompletingRebalance is fine");
    assert_eq!(h.heartbeat(&b, 1), ILLEGAL_GENERATION);
}

#[test]
fn session_expiry_in_stable_triggers_a_rebalance() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, "")]);
    let (a, b) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    for _ in 0..3 {
        h.after(3_000);
        assert_eq!(h.heartbeat(&a, 1), 0);
    }
    h.after(1_001);
    assert_eq!(
        h.heartbeat(&a, 1),
        REBALANCE_IN_PROGRESS,
        "b expired at 10 s"
    );
    let ja = h.join(join_req(G, &a));
    let ra = h.joined(ja);
    assert_eq!((ra.generation_id, ra.members.len()), (2, 1));
    let s = h.sync(&a, 2, &[(&a, "all")]);
    assert_eq!(
        h.sync_reply(s).map(|s| s.assignment),
        Some(Bytes::from("all"))
    );
    assert_eq!(h.heartbeat(&b, 1), UNKNOWN_MEMBER_ID);
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_rebalance_timeout() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, "")]);
    let (a, b) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    let ja = h.join(join_req(G, &a));
    // b keeps heartbeating but never rejoins.
    for _ in 0..9 {
        h.after(3_000);
        assert_eq!(h.heartbeat(&b, 1), REBALANCE_IN_PROGRESS);
    }
    h.after(3_000);
    let ra = h.joined(ja);
    assert_eq!((ra.generation_id, ra.members.len()), (2, 1));
    assert_eq!(h.heartbeat(&b, 2), UNKNOWN_MEMBER_ID);
}

#[test]
fn member_id_required_flow() {
    // JoinGroup v4+: the first join only hands out an id; the pending id blocks completion
    // until it joins or expires.
    let mut h = H::new(config(DELAY_MS));
    let req = |m: &str| JoinRequest {
        require_known_member_id: true,
        ..join_req(G, m)
    };
    let first = h.join(req(""));
    let r = h.join_reply(first).expect("answered at once");
    assert_eq!((r.error_code, r.generation_id), (MEMBER_ID_REQUIRED, -1));
    assert!(r.member_id.starts_with("client-"));
    assert_eq!(h.state(), Some(GroupState::Empty));
    let second = h.join(req(&r.member_id));
    h.after(DELAY_MS);
    let joined = h.joined(second);
    assert_eq!(
        (joined.member_id.as_str(), joined.generation_id),
        (r.member_id.as_str(), 1)
    );
    let s = h.sync(&joined.member_id, 1, &[]);
    assert_eq!(h.sync_reply(s).map(|s| s.error_code), Some(0));

    // A second consumer gets an id; the leader's rejoin waits for it.
    let other = h.join(req(""));
    let other_id = h.join_reply(other).expect("id").member_id;
    let rejoin = h.join(req(&joined.member_id));
    assert!(h.join_reply(rejoin).is_none());
    h.after(SESSION_MS as u64);
    let r = h.joined(rejoin);
    assert_eq!(
        (r.generation_id, r.members.len()),
        (2, 1),
        "pending id expired"
    );
    let late = h.join(req(&other_id));
    assert_eq!(
        h.join_reply(late).map(|r| r.error_code),
        Some(UNKNOWN_MEMBER_ID)
    );
    // A pending member may also leave.
    let third = h.join(req(""));
    let third_id = h.join_reply(third).expect("id").member_id;
    assert_eq!(h.leave(&[(&third_id, None)]).members[0].2, 0);
}

#[test]
fn static_member_restart_keeps_assignment_without_a_new_generation() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![static_req(G, "", "i1"), static_req(G, "", "i2")]);
    let (old1, m2) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    assert_eq!(gen1[0].leader, old1);
    // i1 restarts: a fresh join with its instance id and no member id.
    let j = h.join(static_req(G, "", "i1"));
    let r = h.joined(j);
    assert_ne!(r.member_id, old1);
    assert_eq!(r.generation_id, 1, "no rebalance");
    assert_eq!(
        r.leader, old1,
        "old leader id: the new incarnation does not reassign"
    );
    assert!(r.members.is_empty());
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(h.state(), Some(GroupState::Stable));
    let s = h.sync_req(SyncRequest {
        group_instance_id: Some("i1".into()),
        ..sync(&r.member_id, 1)
    });
    assert_eq!(
        h.sync_reply(s).map(|s| s.assignment),
        Some(Bytes::from(format!("a-{old1}")))
    );
    assert_eq!(h.heartbeat_static(&old1, Some("i1"), 1), FENCED_INSTANCE_ID);
    assert_eq!(h.heartbeat_static(&r.member_id, Some("i1"), 1), 0);
    assert_eq!(h.heartbeat_static(&m2, Some("i2"), 1), 0);
    let names: Vec<String> =
        h.c.describe_group(G)
            .members
            .into_iter()
            .map(|m| m.member_id)
            .collect();
    assert_eq!(names, vec![r.member_id.clone(), m2.clone()]);
    // The old incarnation's parked requests are fenced; leaving with a stale id too.
    let leave = h.leave(&[(&old1, Some("i1"))]);
    assert_eq!(leave.members[0].2, FENCED_INSTANCE_ID);
    // A later rebalance makes the new incarnation the leader.
    let ja = h.join(static_req(G, &r.member_id, "i1"));
    let jb = h.join(static_req(G, &m2, "i2"));
    let (ra, _) = (h.joined(ja), h.joined(jb));
    assert_eq!(
        (ra.generation_id, ra.leader.clone()),
        (2, r.member_id.clone())
    );
}

fn sync(member_id: &str, generation: i32) -> SyncRequest {
    SyncRequest {
        group_id: G.into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: Vec::new(),
    }
}

#[test]
fn static_member_rejoining_during_rebalance_fences_its_old_join() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![static_req(G, "", "i1"), join_req(G, "")]);
    let (s1, d) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    let old_join = h.join(static_req(G, &s1, "i1"));
    let new_join = h.join(static_req(G, "", "i1"));
    assert_eq!(
        h.join_reply(old_join).map(|r| r.error_code),
        Some(FENCED_INSTANCE_ID)
    );
    let jd = h.join(join_req(G, &d));
    let (rn, rd) = (h.joined(new_join), h.joined(jd));
    assert_eq!(rn.generation_id, 2);
    assert_eq!(
        rd.leader, rn.member_id,
        "leadership moved with the instance"
    );
}

#[test]
fn static_member_that_does_not_rejoin_stays_until_its_session_expires() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![static_req(G, "", "i1"), join_req(G, "")]);
    let (s1, d) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    // d's subscription changes: a rebalance that s1 (gone quiet) never rejoins.
    let jd = h.join(JoinRequest {
        protocols: vec![("range".into(), subscription(&["t", "u"]))],
        ..join_req(G, &d)
    });
    h.after(SESSION_MS as u64 / 2);
    assert!(h.join_reply(jd).is_none(), "waiting for the static member");
    // s1's session (10 s) ends before the rebalance timeout: the join completes without it.
    h.after(SESSION_MS as u64 / 2 + 1);
    let rd = h.joined(jd);
    assert_eq!(rd.members.len(), 1);
    assert_eq!(h.heartbeat_static(&s1, Some("i1"), 2), UNKNOWN_MEMBER_ID);
}

#[test]
fn sync_assignments_naming_unknown_members_are_ignored() {
    let mut h = H::new(config(DELAY_MS));
    let ja = h.join(join_req(G, ""));
    h.after(DELAY_MS);
    let a = h.joined(ja).member_id;
    let jb = h.join(join_req(G, ""));
    let ja = h.join(join_req(G, &a));
    let (ra, rb) = (h.joined(ja), h.joined(jb));
    let sb = h.sync(&rb.member_id, 2, &[]);
    let sa = h.sync(
        &a,
        ra.generation_id,
        &[("ghost", "x"), (&a, "mine"), ("", "y")],
    );
    assert_eq!(
        h.sync_reply(sa).map(|s| s.assignment),
        Some(Bytes::from("mine"))
    );
    let sb = h.sync_reply(sb).expect("answered");
    assert_eq!(
        (sb.error_code, sb.assignment.len()),
        (0, 0),
        "left out: empty assignment"
    );
    // A follower's assignments are ignored too.
    let again = h.sync(&rb.member_id, 2, &[(&a, "hijack")]);
    assert_eq!(h.sync_reply(again).map(|s| s.assignment.len()), Some(0));
    let s = h.sync(&a, 2, &[]);
    assert_eq!(
        h.sync_reply(s).map(|s| s.assignment),
        Some(Bytes::from("mine"))
    );
}

#[test]
fn sync_errors() {
    let mut h = H::new(config(DELAY_MS));
    let s = h.sync("m", 1, &[]);
    assert_eq!(
        h.sync_reply(s).map(|s| s.error_code),
        Some(UNKNOWN_MEMBER_ID),
        "no group"
    );
    let (a, _) = h.single_stable();
    let s = h.sync(&a, 7, &[]);
    assert_eq!(
        h.sync_reply(s).map(|s| s.error_code),
        Some(ILLEGAL_GENERATION)
    );
    let s = h.sync_req(SyncRequest {
        protocol_name: Some("roundrobin".into()),
        ..sync(&a, 1)
    });
    assert_eq!(
        h.sync_reply(s).map(|s| s.error_code),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    let s = h.sync_req(SyncRequest {
        protocol_type: Some("connect".into()),
        ..sync(&a, 1)
    });
    assert_eq!(
        h.sync_reply(s).map(|s| s.error_code),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    let _b = h.join(join_req(G, ""));
    let s = h.sync(&a, 1, &[]);
    assert_eq!(
        h.sync_reply(s).map(|s| s.error_code),
        Some(REBALANCE_IN_PROGRESS)
    );
}

#[test]
fn inconsistent_group_protocol() {
    let mut h = H::new(config(DELAY_MS));
    let (a, _) = h.single_stable();
    let j = h.join(JoinRequest {
        protocol_type: "connect".into(),
        ..join_req(G, "")
    });
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    let other = JoinRequest {
        protocols: vec![("roundrobin".into(), subscription(&["t"]))],
        ..join_req(G, "")
    };
    let j = h.join(other);
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    let j = h.join(JoinRequest {
        protocols: vec![],
        ..join_req("fresh", "")
    });
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(INCONSISTENT_GROUP_PROTOCOL)
    );
    assert!(
        !h.c.group_exists("fresh"),
        "a refused join creates no group"
    );
    // The only member may change its protocols.
    let j = h.join(JoinRequest {
        protocols: vec![("roundrobin".into(), subscription(&["t"]))],
        ..join_req(G, &a)
    });
    assert_eq!(h.joined(j).protocol_name.as_deref(), Some("roundrobin"));
}

#[test]
fn protocol_is_chosen_by_vote_among_common_ones() {
    let mut h = H::new(config(DELAY_MS));
    let with = |protocols: &[&str]| JoinRequest {
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), subscription(&["t"])))
            .collect(),
        ..join_req(G, "")
    };
    let a = h.join(with(&["sticky", "range", "roundrobin"]));
    h.after(DELAY_MS);
    let a = h.joined(a).member_id;
    let b = h.join(with(&["roundrobin", "range"]));
    let c = h.join(with(&["roundrobin", "range"]));
    let a = h.join(JoinRequest {
        member_id: a,
        ..with(&["range", "roundrobin", "sticky"])
    });
    for id in [a, b, c] {
        assert_eq!(h.joined(id).protocol_name.as_deref(), Some("roundrobin"));
    }
}

#[test]
fn join_request_checks() {
    let mut h = H::new(config(DELAY_MS));
    let j = h.join(join_req("", ""));
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(INVALID_GROUP_ID)
    );
    let j = h.join(JoinRequest {
        session_timeout_ms: 5_999,
        ..join_req(G, "")
    });
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(INVALID_SESSION_TIMEOUT)
    );
    let j = h.join(JoinRequest {
        session_timeout_ms: 1_800_001,
        ..join_req(G, "")
    });
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(INVALID_SESSION_TIMEOUT)
    );
    let j = h.join(join_req(G, "unknown"));
    assert_eq!(
        h.join_reply(j).map(|r| r.error_code),
        Some(UNKNOWN_MEMBER_ID)
    );
    let many = (0..=JOIN_PROTOCOLS_MAX)
        .map(|i| (format!("p{i}"), Bytes::new()))
        .collect();
    let j = h.join(JoinRequest {
        protocols: many,
        ..join_req(G, "")
    });
    assert_eq!(h.join_reply(j).map(|r| r.error_code), Some(INVALID_REQUEST));
    assert_eq!(h.c.group_count(), 0);
}

#[test]
fn group_max_size() {
    let mut h = H::new(GroupConfig {
        max_size: 2,
        ..config(DELAY_MS)
    });
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, "")]);
    let j = h.join(join_req(G, ""));
    let r = h.join_reply(j).expect("answered");
    assert_eq!(
        (r.error_code, r.member_id.as_str()),
        (GROUP_MAX_SIZE_REACHED, "")
    );
    // Known members may rejoin.
    let a = h.join(join_req(G, &gen1[0].member_id));
    let b = h.join(join_req(G, &gen1[1].member_id));
    assert_eq!(h.joined(a).generation_id, 2);
    assert_eq!(h.joined(b).generation_id, 2);
}

#[test]
fn duplicate_join_supersedes_and_cancel_drops_the_reply() {
    let mut h = H::new(config(DELAY_MS));
    let gen1 = h.rebalance(vec![join_req(G, ""), join_req(G, "")]);
    let (a, b) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    let first = h.join(join_req(G, &a));
    let second = h.join(join_req(G, &a));
    assert_eq!(
        h.join_reply(first).map(|r| r.error_code),
        Some(REBALANCE_IN_PROGRESS)
    );
    assert!(h.join_reply(second).is_none());
    h.c.cancel(second);
    let jb = h.join(join_req(G, &b));
    // a still counts as joined (its connection went away; Kafka would not notice either).
    let rb = h.joined(jb);
    assert_eq!(rb.generation_id, 2);
    assert!(h.join_reply(second).is_none(), "cancelled: never delivered");
    // Cancelling an answered but unpolled reply drops it as well.
    let id = h.id();
    h.c.handle_heartbeat(
        id,
        HeartbeatRequest {
            group_id: G.into(),
            generation_id: 2,
            member_id: b.clone(),
            group_instance_id: None,
        },
        h.now,
    );
    h.c.cancel(id);
    assert!(h.c.poll_reply().is_none());
    // a never syncs or heartbeats: it is expelled.
    let sb = h.sync(&b, 2, &[]);
    h.after(SESSION_MS as u64);
    assert_eq!(
        h.sync_reply(sb).map(|s| s.error_code),
        Some(REBALANCE_IN_PROGRESS)
    );
}

#[test]
fn leave_group_cases() {
    let mut h = H::new(config(DELAY_MS));
    let r = h.leave(&[("x", None)]);
    assert_eq!(
        (r.error_code, r.members[0].2),
        (0, UNKNOWN_MEMBER_ID),
        "unknown group"
    );
    let gen1 = h.rebalance(vec![static_req(G, "", "i1"), join_req(G, "")]);
    let (s, d) = (gen1[0].member_id.clone(), gen1[1].member_id.clone());
    let r = h.leave(&[("", Some("i9")), (&d, Some("i1")), ("", Some("i1"))]);
    let codes: Vec<i16> = r.members.iter().map(|m| m.2).collect();
    assert_eq!(codes, vec![UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, 0]);
    assert_eq!(h.heartbeat(&s, 1), UNKNOWN_MEMBER_ID);
    assert_eq!(h.heartbeat(&d, 1), REBALANCE_IN_PROGRESS);
    let r = h.leave(&[(&d, None)]);
    assert_eq!(r.members[0].2, 0);
    assert_eq!(h.state(), Some(GroupState::Empty), "the last member left");
    assert_eq!(h.c.describe_group(G).state, "Empty");
}

#[test]
fn delete_group_and_describe() {
    let mut h = H::new(config(DELAY_MS));
    assert_eq!(h.c.delete_group("nope"), Err(GROUP_ID_NOT_FOUND));
    let unknown = h.c.describe_group("nope");
    assert_eq!(
        (unknown.error_code, unknown.state, unknown.members.len()),
        (0, "Dead", 0)
    );
    let (a, _) = h.single_stable();
    h.c.apply_commit(
        G,
        vec![(tp("t", 1), offset(1, 0)), (tp("t", 0), offset(2, 0))],
    );
    let d = h.c.describe_group(G);
    assert_eq!(
        (d.state, d.protocol_type.as_str(), d.protocol_name.as_str()),
        ("Stable", "consumer", "range")
    );
    assert_eq!(d.members[0].assignment, Bytes::from("a0"));
    assert_eq!(d.members[0].metadata, subscription(&["t"]));
    assert_eq!(h.c.delete_group(G), Err(NON_EMPTY_GROUP));
    let listed = h.c.list_groups(&["stable".into()], &[]);
    assert_eq!(listed.len(), 1);
    assert!(h.c.list_groups(&["Empty".into()], &[]).is_empty());
    assert!(
        h.c.list_groups(&[], &["consumer".into()]).is_empty(),
        "KIP-848 type filter"
    );
    assert_eq!(h.c.list_groups(&[], &["Classic".into()]).len(), 1);
    h.leave(&[(&a, None)]);
    assert_eq!(h.c.delete_group(G), Ok(vec![tp("t", 0), tp("t", 1)]));
    assert!(!h.c.group_exists(G));
    assert_eq!(h.c.group_count(), 0);
}

#[test]
fn delete_offsets_refuses_subscribed_topics() {
    let mut h = H::new(config(DELAY_MS));
    assert_eq!(
        h.c.delete_offsets(G, &[tp("t", 0)]),
        Err(GROUP_ID_NOT_FOUND)
    );
    let garbage = JoinRequest {
        protocols: vec![("range".into(), Bytes::from_static(b"\x00\x00\x7f"))],
        ..join_req(G, "")
    };
    h.rebalance(vec![join_req(G, ""), garbage]);
    h.c.apply_commit(
        G,
        vec![(tp("t", 0), offset(1, 0)), (tp("u", 0), offset(1, 0))],
    );
    let result = h.c.delete_offsets(G, &[tp("t", 0), tp("u", 0), tp("v", 3)]);
    assert_eq!(
        result,
        Ok(vec![
            (tp("t", 0), GROUP_SUBSCRIBED_TO_TOPIC),
            (tp("u", 0), 0),
            (tp("v", 3), 0)
        ])
    );
    assert_eq!(h.c.committed_all(G), vec![(tp("t", 0), offset(1, 0))]);
}

#[test]
fn delete_offsets_of_an_empty_group_removes_it_when_nothing_is_left() {
    let mut h = H::new(config(DELAY_MS));
    h.c.apply_commit(G, vec![(tp("t", 0), offset(1, 0))]);
    assert_eq!(
        h.c.delete_offsets(G, &[tp("t", 0)]),
        Ok(vec![(tp("t", 0), 0)])
    );
    assert!(!h.c.group_exists(G));
}

#[test]
fn delete_offsets_of_a_non_consumer_group_is_refused() {
    let mut h = H::new(config(DELAY_MS));
    let j = h.join(JoinRequest {
        protocol_type: "connect".into(),
        ..join_req(G, "")
    });
    h.after(DELAY_MS);
    h.joined(j);
    assert_eq!(h.c.delete_offsets(G, &[tp("t", 0)]), Err(NON_EMPTY_GROUP));
}

#[test]
fn standalone_offsets_expire_one_by_one() {
    let day_ms = 24 * 60 * 60 * 1000;
    let mut h = H::new(GroupConfig {
        offsets_retention_ms: day_ms,
        ..config(DELAY_MS)
    });
    h.c.apply_commit(
        "s",
        vec![(tp("t", 0), offset(1, 0)), (tp("t", 1), offset(1, 500))],
    );
    let explicit = CommittedOffset {
        expire_timestamp_ms: Some(100),
        ..offset(1, 0)
    };
    h.c.apply_commit("s", vec![(tp("t", 2), explicit)]);
    assert_eq!(h.c.expire_offsets(h.now, 99), vec![]);
    assert_eq!(
        h.c.expire_offsets(h.now, 100),
        vec![("s".to_string(), tp("t", 2))]
    );
    assert_eq!(
        h.c.expire_offsets(h.now, day_ms),
        vec![("s".to_string(), tp("t", 0))]
    );
    assert!(h.c.group_exists("s"));
    assert_eq!(
        h.c.expire_offsets(h.now, day_ms + 500),
        vec![("s".to_string(), tp("t", 1))]
    );
    assert!(
        !h.c.group_exists("s"),
        "an Empty group without offsets is removed"
    );
}

#[test]
fn offsets_of_an_empty_group_expire_together_after_it_became_empty() {
    let retention_ms = 60_000;
    let mut h = H::new(GroupConfig {
        offsets_retention_ms: retention_ms,
        ..config(DELAY_MS)
    });
    let (a, _) = h.single_stable();
    let wall_start_ms = 1_000_000;
    h.c.apply_commit(
        G,
        vec![
            (tp("t", 0), offset(1, wall_start_ms)),
            (tp("u", 0), offset(1, wall_start_ms)),
        ],
    );
    // Members alive: nothing expires (u is not subscribed but was committed recently).
    for _ in 0..10 {
        h.after(5_000);
        assert_eq!(h.heartbeat(&a, 1), 0);
    }
    assert_eq!(h.c.expire_offsets(h.now, wall_start_ms + 50_000), vec![]);
    // The group becomes Empty at wall time start + 50 s.
    h.leave(&[(&a, None)]);
    h.after(59_999);
    assert_eq!(h.c.expire_offsets(h.now, wall_start_ms + 109_999), vec![]);
    h.after(DELAY_MS);
    let expired = h.c.expire_offsets(h.now, wall_start_ms + 110_000);
    assert_eq!(
        expired,
        vec![(G.to_string(), tp("t", 0)), (G.to_string(), tp("u", 0))]
    );
    assert!(!h.c.group_exists(G));
}

#[test]
fn a_late_commit_to_an_empty_group_delays_expiry() {
    let retention_ms = 60_000;
    let mut h = H::new(GroupConfig {
        offsets_retention_ms: retention_ms,
        ..config(DELAY_MS)
    });
    let (a, _) = h.single_stable();
    // Empty at wall time 0; commits at 0 and 30 s: all expire at 30 s + retention.
    h.leave(&[(&a, None)]);
    h.c.apply_commit(
        G,
        vec![(tp("t", 0), offset(1, 0)), (tp("t", 1), offset(1, 30_000))],
    );
    h.after(89_999);
    assert_eq!(h.c.expire_offsets(h.now, 89_999), vec![]);
    h.after(1);
    assert_eq!(h.c.expire_offsets(h.now, 90_000).len(), 2);
}

#[test]
fn stable_consumer_group_expires_offsets_of_unsubscribed_topics() {
    let retention_ms = 60_000;
    let mut h = H::new(GroupConfig {
        offsets_retention_ms: retention_ms,
        ..config(DELAY_MS)
    });
    h.single_stable();
    h.c.apply_commit(
        G,
        vec![(tp("t", 0), offset(1, 0)), (tp("old", 0), offset(1, 0))],
    );
    assert_eq!(
        h.c.expire_offsets(h.now, 60_000),
        vec![(G.to_string(), tp("old", 0))]
    );
    assert_eq!(h.c.committed_all(G).len(), 1);
}

#[test]
fn load_offsets_replays_commits_and_tombstones() {
    let mut h = H::new(config(DELAY_MS));
    h.c.load_offset(G, tp("t", 0), Some(offset(1, 0)));
    h.c.load_offset(G, tp("t", 0), Some(offset(2, 0)));
    h.c.load_offset(G, tp("t", 1), Some(offset(3, 0)));
    h.c.load_offset(G, tp("t", 1), None);
    assert_eq!(h.c.committed_all(G), vec![(tp("t", 0), offset(2, 0))]);
    assert_eq!(h.c.list_groups(&[], &[])[0].state, "Empty");
    h.c.load_offset(G, tp("t", 0), None);
    assert!(!h.c.group_exists(G));
    h.c.load_offset("other", tp("t", 0), None);
    assert_eq!(h.c.group_count(), 0);
}

#[test]
fn a_one_megabyte_member_id_is_just_unknown() {
    let mut h = H::new(config(DELAY_MS));
    let (a, _) = h.single_stable();
    let huge = "m".repeat(1 << 20);
    let j = h.join(join_req(G, &huge));
    let r = h.join_reply(j).expect("answered");
    assert_eq!((r.error_code, r.member_id.len()), (UNKNOWN_MEMBER_ID, 0));
    assert_eq!(h.heartbeat(&huge, 1), UNKNOWN_MEMBER_ID);
    let s = h.sync(&huge, 1, &[]);
    assert_eq!(
        h.sync_reply(s).map(|s| s.error_code),
        Some(UNKNOWN_MEMBER_ID)
    );
    assert_eq!(h.leave(&[(&huge, None)]).members[0].2, UNKNOWN_MEMBER_ID);
    let now = h.now;
    assert_eq!(
        h.c.validate_commit(G, 1, &huge, None, now),
        Err(UNKNOWN_MEMBER_ID)
    );
    let j = h.join(JoinRequest {
        group_instance_id: Some(huge.clone()),
        ..join_req(G, "")
    });
    assert_eq!(h.join_reply(j).map(|r| r.error_code), Some(INVALID_REQUEST));
    // A huge client id only contributes a bounded prefix to the member id.
    let j = h.join(JoinRequest {
        client_id: huge.clone(),
        ..join_req(G, &a)
    });
    let r = h.joined(j);
    assert_eq!(r.member_id, a);
    let j = h.join(JoinRequest {
        client_id: "é".repeat(1 << 19),
        ..join_req(G, "")
    });
    h.after(REBALANCE_MS as u64 + 1);
    let r = h.joined(j);
    assert!(r.member_id.len() <= MEMBER_ID_BYTES_MAX);
    assert_eq!(h.c.group_count(), 1);
}

#[test]
fn member_ids_are_unique_and_seeded() {
    let mut ids = MemberIds::default();
    let a: BTreeSet<String> = (0..10_000).map(|_| ids.next("c")).collect();
    assert_eq!(a.len(), 10_000);
    let mut seeded = MemberIds {
        seed: 42,
        issued: 0,
    };
    assert!(!a.contains(&seeded.next("c")));
    assert_eq!(ids.next("c").len(), "c-".len() + 36);
}

/// A deterministic random walk over joins, syncs, heartbeats, leaves, commits and time:
/// the invariants hold at every step and every parked request is answered in the end.
#[test]
fn random_walk_keeps_invariants_and_answers_everything() {
    let (mut joins_ok, mut syncs_ok) = (0, 0);
    for seed in 0..40u64 {
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng = mix64(rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
            rng % n
        };
        let mut h = H::new(GroupConfig {
            max_size: 5,
            ..config(next(2) * 1_000)
        });
        let mut known: Vec<(String, Option<String>)> = Vec::new();
        let mut generation = 0;
        for _ in 0..300 {
            let pick = |known: &Vec<(String, Option<String>)>, k: u64| {
                known.get(k as usize).cloned().unwrap_or_default()
            };
            let (member, instance) = pick(&known, next(known.len() as u64 + 1));
            match next(9) {
                0 | 1 => {
                    let instance = if next(3) == 0 {
                        Some(format!("i{}", next(3)))
                    } else {
                        instance
                    };
                    let req = JoinRequest {
                        group_instance_id: instance.clone(),
                        require_known_member_id: next(2) == 0,
                        rebalance_timeout_ms: 5_000 + next(20_000) as i32,
                        ..join_req(G, if next(4) == 0 { "" } else { &member })
                    };
                    let id = h.join(req);
                    if let Some(Reply::Join(r)) = h.replies.get(&id) {
                        if !r.member_id.is_empty() {
                            known.push((r.member_id.clone(), instance));
                        }
                    }
                }
                2 => {
                    let leader = next(2) == 0;
                    let a: Vec<(&str, &str)> = if leader {
                        known.iter().map(|(m, _)| (m.as_str(), "x")).collect()
                    } else {
                        vec![]
                    };
                    h.sync_req(SyncRequest {
                        group_instance_id: instance,
                        assignments: a
                            .iter()
                            .map(|(m, x)| (m.to_string(), Bytes::from(*x)))
                            .collect(),
                        ..sync(&member, generation)
                    });
                }
                3 | 4 => {
                    h.heartbeat_static(&member, instance.as_deref(), generation);
                }
                5 => {
                    h.leave(&[(&member, instance.as_deref())]);
                }
                6 => {
                    let now = h.now;
                    if h.c
                        .validate_commit(G, generation, &member, instance.as_deref(), now)
                        .is_ok()
                    {
                        h.c.apply_commit(G, vec![(tp("t", 0), offset(1, h.ms() as i64))]);
                    }
                }
                7 => {
                    let id = next(h.next_id.max(1));
                    h.c.cancel(id);
                }
                _ => h.after(next(8_000)),
            }
            // Learn the generation from any join reply.
            for r in h.replies.values() {
                if let Reply::Join(r) = r {
                    generation = generation.max(r.generation_id);
                    if r.error_code == 0 && !known.iter().any(|(m, _)| *m == r.member_id) {
                        known.push((r.member_id.clone(), None));
                    }
                }
            }
            if next(50) == 0 {
                let ms = h.ms() as i64;
                h.c.expire_offsets(h.now, ms);
                let _ = h.c.delete_group(G);
                h.drain();
            }
        }
        // Everybody goes quiet: all members expire and every parked request is answered.
        h.after(10 * 60 * 1000);
        h.after(10 * 60 * 1000);
        assert!(
            h.c.out.parked.is_empty(),
            "seed {seed}: parked {:?}",
            h.c.out.parked
        );
        assert!(
            h.state().is_none_or(|s| s == GroupState::Empty),
            "seed {seed}"
        );
        for reply in h.replies.values() {
            match reply {
                Reply::Join(r) if r.error_code == 0 => joins_ok += 1,
                Reply::Sync(r) if r.error_code == 0 && !r.assignment.is_empty() => syncs_ok += 1,
                _ => {}
            }
        }
    }
    assert!(
        joins_ok > 100 && syncs_ok > 5,
        "the walk got somewhere: {joins_ok} {syncs_ok}"
    );
}

proptest! {
    /// Decoding arbitrary bytes never panics, and encoded subscriptions round-trip.
    #[test]
    fn subscription_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                             topics in proptest::collection::vec("[a-z]{0,8}", 0..5)) {
        let _ = subscription_topics(&bytes);
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let encoded = subscription(&names);
        prop_assert_eq!(subscription_topics(&encoded), Some(names));
    }
}
