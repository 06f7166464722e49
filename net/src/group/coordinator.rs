//! The classic consumer-group coordinator (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! committed offsets, list/describe/delete) as an IO-free, deterministic state machine.
//!
//! The shard's task feeds requests in with `handle_*(…, now)`, drains answers with
//! [`Coordinator::poll_reply`] and sleeps until [`Coordinator::poll_timeout`], then calls
//! [`Coordinator::handle_timeout`]. Nothing here reads a clock, spawns, or touches a socket
//! or a file, so the tests drive it in virtual time.
//!
//! # What it owns
//! Every group of its shard: membership, generation, chosen protocol, leader, assignments,
//! and the committed offsets (already durable: the driver writes `__consumer_offsets` records
//! first and applies them here after). Group membership itself is not persisted; after a
//! restart a group comes back from its offsets only (state Empty, no protocol type), and its
//! consumers rejoin, as they would after a coordinator move in Kafka.
//!
//! # States (Kafka's `GroupState`)
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all rejoined / timeout──▶ CompletingRebalance
//!    ▲                 ▲        │ (nobody left)                        │ leader's SyncGroup
//!    └─────────────────┼────────┘                                      ▼
//!                      └──── join / leave / expiry / protocol change ─ Stable
//! ```
//! `Dead` is never stored: a deleted or expired group is removed, and an unknown group
//! describes as Dead like Kafka's.
//!
//! # Invariants (checked by `assert_invariants` in the tests)
//! * `PreparingRebalance` ⇔ a join timer is armed; `CompletingRebalance` ⇒ a sync timer is
//!   armed and the leader has not sent its SyncGroup yet.
//! * `Empty` ⇒ no members. A non-empty group has a leader that is a member.
//! * A member has at most one pending JoinGroup and one pending SyncGroup. Its session timer
//!   runs only while it has neither (a parked request keeps it alive; it restarts when the
//!   request is answered), like Kafka's heartbeat purgatory.
//! * Every `handle_*` produces exactly one reply with its `ReqId`, unless the driver cancels it.
//!
//! # Timers
//! Session expiry (per member), MEMBER_ID_REQUIRED pending members (session timeout), the
//! join phase (initial delay, extended while new members arrive, bounded by the rebalance
//! timeout; otherwise the max rebalance timeout of the members), and the sync phase (members
//! of a new generation that send no SyncGroup within the rebalance timeout are removed,
//! Kafka 3.x `pendingSyncMembers`). All live in one ordered map; re-arming removes the old
//! entry, so the map holds at most one entry per member, pending member and phase.
//!
//! # Wall clock
//! Protocol timers use `Instant`. Offsets carry wall-clock millis given by the driver. The
//! time a group became Empty is kept as an `Instant` and turned into wall millis in
//! [`Coordinator::expire_offsets`], which receives both clocks.
//!
//! # Simplified or different from Kafka
//! * No "new member join timeout" (5 min) for members waiting in a join: the rebalance
//!   timeout bounds that phase already.
//! * A second JoinGroup (or SyncGroup) from a member whose previous one is still parked
//!   supersedes it; the superseded request is answered REBALANCE_IN_PROGRESS (Kafka
//!   overwrote the callback and left the old request unanswered).
//! * [`Coordinator::cancel`] only drops the reply: the member still counts as joined/synced,
//!   as in Kafka, which does not notice disconnects. Its session then expires as usual.
//! * A static member that rejoins a Stable group is swapped in without a rebalance when the
//!   protocol the group would select is unchanged (Kafka's rule; new metadata is stored).
//!   Its reply names the old leader id, so a former leader does not reassign (Kafka 2.4+
//!   before KIP-814 `skip_assignment`).
//! * ListGroups' `types_filter` is the group type of KIP-848: all groups here are "classic".
//! * DeleteOffsets: a member whose subscription cannot be decoded subscribes to nothing
//!   (Kafka assumes everything). Offset expiry for a Stable consumer group still requires all
//!   subscriptions to decode, like Kafka.
//! * Offsets of an Empty group expire together once retention has passed since the later of
//!   "became Empty" and its latest commit (Kafka uses only "became Empty").
//! * Kafka keeps offsets with an in-flight commit from expiring; here the driver must not
//!   run [`Coordinator::expire_offsets`] for a group between `validate_commit` and
//!   `apply_commit`, or must re-apply the commit after writing the tombstone.
//! * Bounds Kafka does not have: ids longer than [`MEMBER_ID_BYTES_MAX`] are unknown,
//!   instance ids longer than [`GROUP_INSTANCE_ID_BYTES_MAX`] and joins with more than
//!   [`JOIN_PROTOCOLS_MAX`] protocols get INVALID_REQUEST, and a group holds at most
//!   [`PENDING_MEMBERS_PER_GROUP_MAX`] MEMBER_ID_REQUIRED members.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// The driver's handle for one request; its reply carries the same id.
pub type ReqId = u64;

/// Member ids longer than this are never ours: they are unknown without a lookup.
pub const MEMBER_ID_BYTES_MAX: usize = 1024;
/// Longest `group.instance.id` accepted in a JoinGroup (Kafka clients allow 249 chars).
pub const GROUP_INSTANCE_ID_BYTES_MAX: usize = 1024;
/// Most protocols (assignors) one JoinGroup may offer; real clients send a handful.
pub const JOIN_PROTOCOLS_MAX: usize = 64;
/// Most members waiting in one group after MEMBER_ID_REQUIRED.
pub const PENDING_MEMBERS_PER_GROUP_MAX: usize = 10_000;
/// Bytes of the client id kept as the prefix of a generated member id.
const MEMBER_ID_CLIENT_PREFIX_BYTES_MAX: usize = 256;
/// Longest timer we arm (≈ 24.8 days), so that `Instant + Duration` cannot overflow.
const TIMER_MS_MAX: u64 = i32::MAX as u64;
/// The protocol type of Kafka consumers, whose metadata is a ConsumerProtocolSubscription.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = ResponseError::IllegalGeneration.code();
const INCONSISTENT_GROUP_PROTOCOL: i16 = ResponseError::InconsistentGroupProtocol.code();
const INVALID_GROUP_ID: i16 = ResponseError::InvalidGroupId.code();
const UNKNOWN_MEMBER_ID: i16 = ResponseError::UnknownMemberId.code();
const INVALID_SESSION_TIMEOUT: i16 = ResponseError::InvalidSessionTimeout.code();
const REBALANCE_IN_PROGRESS: i16 = ResponseError::RebalanceInProgress.code();
const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
const NON_EMPTY_GROUP: i16 = ResponseError::NonEmptyGroup.code();
const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
const MEMBER_ID_REQUIRED: i16 = ResponseError::MemberIdRequired.code();
const GROUP_MAX_SIZE_REACHED: i16 = ResponseError::GroupMaxSizeReached.code();
const FENCED_INSTANCE_ID: i16 = ResponseError::FencedInstanceId.code();
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = ResponseError::GroupSubscribedToTopic.code();

/// Group settings, named as in Kafka's broker config.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
    /// `offsets.retention.minutes` × 60 000
    pub offsets_retention_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Explicit retention (OffsetCommit v1..4 `retention_time`); None = the default policy.
    pub expire_timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub session_timeout_ms: i32,
    /// v0 requests: the driver passes `session_timeout_ms`.
    pub rebalance_timeout_ms: i32,
    /// "" on the first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    /// (name, metadata), in the client's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// True for JoinGroup v4+ (the MEMBER_ID_REQUIRED exchange).
    pub require_known_member_id: bool,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, Default)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResponse {
    pub error_code: i16,
    /// -1 on error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Non-empty only for the leader.
    pub members: Vec<JoinMember>,
    /// Always false: assignment is never done on the server.
    pub skip_assignment: bool,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// (member_id, assignment); only the leader sends them.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResponse {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// `members`: (member_id, group_instance_id); v0-2 sends one with a member id.
#[derive(Debug, Clone)]
pub struct LeaveRequest {
    pub group_id: String,
    pub members: Vec<(String, Option<String>)>,
}

/// Kafka's shape: the top-level error is for the group (INVALID_GROUP_ID), each member has
/// its own. For LeaveGroup v0-2 the driver answers the first non-zero of them (as Kafka's
/// `LeaveGroupResponse` does).
#[derive(Debug, Clone, Default)]
pub struct LeaveResponse {
    pub error_code: i16,
    pub members: Vec<(String, Option<String>, i16)>,
}

#[derive(Debug, Clone)]
pub enum Reply {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(i16),
    Leave(LeaveResponse),
}

#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct GroupDescription {
    pub error_code: i16,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// Kafka's classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in ListGroups/DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plumbing: timers, the reply queue, member ids.

/// Deadline plus a sequence number: unique, ordered by time then by arming order.
type TimerKey = (Instant, u64);

#[derive(Debug)]
enum Timer {
    Session { group_id: String, member_id: String },
    PendingMember { group_id: String, member_id: String },
    Join { group_id: String },
    Sync { group_id: String },
}

#[derive(Debug, Default)]
struct Timers {
    queue: BTreeMap<TimerKey, Timer>,
    next_seq: u64,
}

impl Timers {
    fn schedule(&mut self, at: Instant, timer: Timer) -> TimerKey {
        self.next_seq += 1;
        let key = (at, self.next_seq);
        self.queue.insert(key, timer);
        key
    }

    fn cancel(&mut self, key: Option<TimerKey>) {
        if let Some(key) = key {
            self.queue.remove(&key);
        }
    }

    /// Moves an armed timer (keeping its target, so a heartbeat allocates nothing) or arms
    /// a new one built by `make`.
    fn reschedule(
        &mut self,
        old: Option<TimerKey>,
        at: Instant,
        make: impl FnOnce() -> Timer,
    ) -> TimerKey {
        let timer = old.and_then(|k| self.queue.remove(&k)).unwrap_or_else(make);
        self.schedule(at, timer)
    }
}

fn deadline(base: Instant, ms: u64) -> Instant {
    base.checked_add(Duration::from_millis(ms.min(TIMER_MS_MAX)))
        .unwrap_or(base)
}

fn ms_u64(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// Replies ready for the driver, and the requests still parked in a group.
#[derive(Debug, Default)]
struct Outbox {
    ready: VecDeque<(ReqId, Reply)>,
    parked: HashSet<ReqId>,
    /// Parked requests whose reply the driver no longer wants.
    unwanted: HashSet<ReqId>,
}

impl Outbox {
    fn park(&mut self, id: ReqId) {
        self.parked.insert(id);
    }

    fn send(&mut self, id: ReqId, reply: Reply) {
        self.parked.remove(&id);
        if !self.unwanted.remove(&id) {
            self.ready.push_back((id, reply));
        }
    }

    fn cancel(&mut self, id: ReqId) {
        if self.parked.contains(&id) {
            self.unwanted.insert(id);
        } else {
            self.ready.retain(|(r, _)| *r != id);
        }
    }
}

fn join_error(code: i16, member_id: String) -> Reply {
    Reply::Join(JoinResponse {
        error_code: code,
        generation_id: -1,
        member_id,
        ..Default::default()
    })
}

fn sync_error(code: i16) -> Reply {
    Reply::Sync(SyncResponse {
        error_code: code,
        ..Default::default()
    })
}

/// Member ids `{client_id}-{uuid-like}`: the low 64 bits are a bijection of a counter, so
/// ids never repeat within one coordinator; the high 64 bits come from a seed the driver
/// should vary across restarts ([`Coordinator::with_member_id_seed`]), so a client holding
/// an id from before a restart cannot collide with a fresh one.
#[derive(Debug, Default)]
struct MemberIds {
    seed: u64,
    issued: u64,
}

fn mix64(mut z: u64) -> u64 {
    // splitmix64's finalizer: a bijection on u64.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MemberIds {
    fn next(&mut self, client_id: &str) -> String {
        self.issued += 1;
        let hi = mix64(self.seed ^ 0x7465_726e_6772_6f75);
        let lo = mix64(self.issued ^ hi);
        let mut end = client_id.len().min(MEMBER_ID_CLIENT_PREFIX_BYTES_MAX);
        while !client_id.is_char_boundary(end) {
            end -= 1;
        }
        format!(
            "{}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            &client_id[..end],
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

/// What group operations need besides the group itself.
struct Ctx<'a> {
    config: &'a GroupConfig,
    timers: &'a mut Timers,
    out: &'a mut Outbox,
    ids: &'a mut MemberIds,
}

/// The topics of a ConsumerProtocolSubscription (any version: `version: i16`, then
/// `topics: [string]` come first and are not flexible). None if the bytes are malformed.
fn subscription_topics(metadata: &[u8]) -> Option<Vec<&str>> {
    fn take<'b>(buf: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Some(head)
    }
    let mut buf = metadata;
    let version = i16::from_be_bytes(take(&mut buf, 2)?.try_into().ok()?);
    let count = i32::from_be_bytes(take(&mut buf, 4)?.try_into().ok()?);
    let count = usize::try_from(count).ok().filter(|_| version >= 0)?;
    // Each topic takes at least its two length bytes: bound the count by the input.
    if count > buf.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut buf, 2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        topics.push(std::str::from_utf8(take(&mut buf, len)?).ok()?);
    }
    Some(topics)
}

// ---------------------------------------------------------------------------------------
// Members and groups.

#[derive(Debug)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    /// Distinct names, in the client's order of preference.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Order of arrival: the first member leads, and the leader sees members in this order.
    join_seq: u64,
    pending_join: Option<ReqId>,
    pending_sync: Option<ReqId>,
    last_heard: Instant,
    session_timer: Option<TimerKey>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m)
    }

    fn supports(&self, protocol: &str) -> bool {
        self.metadata(protocol).is_some()
    }

    /// Arms the session timer from `last_heard`, or disarms it while a request is parked.
    fn touch(&mut self, group_id: &str, timers: &mut Timers) {
        if self.pending_join.is_none() && self.pending_sync.is_none() {
            let at = deadline(self.last_heard, ms_u64(self.session_timeout_ms));
            let member_id = &self.member_id;
            self.session_timer =
                Some(
                    timers.reschedule(self.session_timer, at, || Timer::Session {
                        group_id: group_id.to_owned(),
                        member_id: member_id.clone(),
                    }),
                );
        } else {
            timers.cancel(self.session_timer.take());
        }
    }
}

/// A JoinGroup after the checks that need no group, with its protocols owned and deduped.
#[derive(Debug)]
struct Join {
    id: ReqId,
    member_id: String,
    group_instance_id: Option<String>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    require_known_member_id: bool,
    client_id: String,
    client_host: String,
    now: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinWait {
    /// The first rebalance of an Empty group (Kafka's InitialDelayedJoin): waits for more
    /// members; `remaining_ms` of the rebalance timeout is left for extensions.
    InitialDelay { remaining_ms: u64 },
    /// Completes when every member has rejoined, or at the deadline.
    Rebalance,
}

type JoinResult = Result<(), (i16, String)>;

#[derive(Debug)]
struct Group {
    group_id: String,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry timers.
    pending_members: BTreeMap<String, TimerKey>,
    /// Protocol name → how many members support it.
    protocol_support: HashMap<String, usize>,
    awaiting_join: usize,
    next_join_seq: u64,
    /// A member joined during the first rebalance's initial delay (extend it).
    new_member_added: bool,
    join_timer: Option<TimerKey>,
    join_wait: JoinWait,
    sync_timer: Option<TimerKey>,
    /// Members of the current generation that have not sent a SyncGroup yet.
    awaiting_sync: BTreeSet<String>,
    empty_since: Option<Instant>,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl Group {
    fn new(group_id: String, empty_since: Option<Instant>) -> Self {
        Self {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            protocol_support: HashMap::new(),
            awaiting_join: 0,
            next_join_seq: 0,
            new_member_added: false,
            join_timer: None,
            join_wait: JoinWait::Rebalance,
            sync_timer: None,
            awaiting_sync: BTreeSet::new(),
            empty_since,
            offsets: BTreeMap::new(),
        }
    }

    /// Nothing left worth keeping: removed by expiry and offset deletion (Kafka's cleanup).
    fn is_removable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }

    fn drop_timers(&self, timers: &mut Timers) {
        for m in self.members.values() {
            timers.cancel(m.session_timer);
        }
        for key in self.pending_members.values() {
            timers.cancel(Some(*key));
        }
        timers.cancel(self.join_timer);
        timers.cancel(self.sync_timer);
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    fn max_rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| ms_u64(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn first_member_by_seq(&self, eligible: impl Fn(&Member) -> bool) -> Option<String> {
        self.members
            .values()
            .filter(|m| eligible(m))
            .min_by_key(|m| m.join_seq)
            .map(|m| m.member_id.clone())
    }

    fn members_by_seq(&self) -> Vec<&Member> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.join_seq);
        members
    }

    fn support_add(&mut self, protocols: &[(String, Bytes)]) {
        for (name, _) in protocols {
            *self.protocol_support.entry(name.clone()).or_insert(0) += 1;
        }
    }

    fn support_remove(&mut self, protocols: &[(String, Bytes)]) {
        for (name, _) in protocols {
            if let Some(count) = self.protocol_support.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.protocol_support.remove(name);
                }
            }
        }
    }

    /// Kafka's `supportsProtocols`, leaving out `exclude` (the member being replaced or
    /// updated): the type matches and one offered protocol is supported by all others.
    fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        exclude: Option<&str>,
    ) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let excluded = exclude.and_then(|id| self.members.get(id));
        let others = self.members.len() - usize::from(excluded.is_some());
        protocols.iter().any(|(name, _)| {
            let count = self.protocol_support.get(name).copied().unwrap_or(0);
            let own = usize::from(excluded.is_some_and(|m| m.supports(name)));
            count - own == others
        })
    }

    /// The protocol supported by every member that most members prefer; ties go to the
    /// protocol of the earliest member. None only when no protocol is common (a bug).
    fn select_protocol(&self) -> Option<String> {
        let all = self.members.len();
        let mut votes: Vec<(&str, usize, u64)> = Vec::new();
        for m in self.members.values() {
            let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(p, _)| self.protocol_support.get(p) == Some(&all))
            else {
                continue;
            };
            match votes.iter_mut().find(|(n, _, _)| *n == name.as_str()) {
                Some(vote) => {
                    vote.1 += 1;
                    vote.2 = vote.2.min(m.join_seq);
                }
                None => votes.push((name, 1, m.join_seq)),
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(name, _, _)| name.to_owned())
    }

    /// Kafka's `validateCurrentMember`: a given instance id must map to this member id.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if member_id.len() > MEMBER_ID_BYTES_MAX {
            return Err(UNKNOWN_MEMBER_ID);
        }
        if let Some(instance_id) = instance_id {
            match self.static_members.get(instance_id) {
                Some(current) if current != member_id => return Err(FENCED_INSTANCE_ID),
                Some(_) => {}
                None => return Err(UNKNOWN_MEMBER_ID),
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(UNKNOWN_MEMBER_ID)
        }
    }

    /// A sign of life from a member (heartbeat, commit).
    fn refresh(&mut self, member_id: &str, timers: &mut Timers, now: Instant) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heard = now;
            m.touch(&self.group_id, timers);
        }
    }

    // --- parked requests ------------------------------------------------------------

    fn park_join(&mut self, cx: &mut Ctx<'_>, member_id: &str, id: ReqId) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        match m.pending_join.replace(id) {
            Some(old) => cx
                .out
                .send(old, join_error(REBALANCE_IN_PROGRESS, member_id.to_owned())),
            None => self.awaiting_join += 1,
        }
        cx.out.park(id);
        m.touch(&self.group_id, cx.timers);
    }

    fn answer_join(
        &mut self,
        cx: &mut Ctx<'_>,
        member_id: &str,
        reply: JoinResponse,
        now: Instant,
    ) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        if let Some(id) = m.pending_join.take() {
            self.awaiting_join -= 1;
            m.last_heard = now;
            m.touch(&self.group_id, cx.timers);
            cx.out.send(id, Reply::Join(reply));
        }
    }

    fn answer_sync(&mut self, cx: &mut Ctx<'_>, member_id: &str, reply: Reply, now: Instant) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        if let Some(id) = m.pending_sync.take() {
            m.last_heard = now;
            m.touch(&self.group_id, cx.timers);
            cx.out.send(id, reply);
        }
    }

    /// The current generation as a member that missed its JoinGroup reply sees it.
    fn current_generation(&self, member_id: &str, with_members: bool) -> JoinResponse {
        let members = match (&self.protocol_name, with_members) {
            (Some(protocol), true) => self
                .members_by_seq()
                .into_iter()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(protocol).cloned().unwrap_or_default(),
                })
                .collect(),
            _ => Vec::new(),
        };
        JoinResponse {
            error_code: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members,
            skip_assignment: false,
        }
    }

    // --- JoinGroup ------------------------------------------------------------------

    /// Kafka's `acceptJoiningMember`: `group.max.size` counts the members that will be in
    /// the next generation.
    fn accepts_joining(&self, member_id: &str, max_size: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|m| m.pending_join.is_some())
                    || self.awaiting_join < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < max_size
            }
        }
    }

    fn join(&mut self, cx: &mut Ctx<'_>, j: Join) -> JoinResult {
        if !self.accepts_joining(&j.member_id, cx.config.max_size) {
            if self.members.contains_key(&j.member_id) {
                self.remove_member(cx, &j.member_id, j.now);
            }
            return Err((GROUP_MAX_SIZE_REACHED, String::new()));
        }
        if j.member_id.is_empty() {
            self.join_new(cx, j)
        } else {
            self.join_known(cx, j)
        }
    }

    fn join_new(&mut self, cx: &mut Ctx<'_>, j: Join) -> JoinResult {
        let replaced = j
            .group_instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i));
        if !self.supports_protocols(&j.protocol_type, &j.protocols, replaced.map(String::as_str)) {
            return Err((INCONSISTENT_GROUP_PROTOCOL, j.member_id));
        }
        let replaced = replaced.cloned();
        let new_id = cx.ids.next(&j.client_id);
        if let Some(old_id) = replaced {
            self.replace_static_member(cx, old_id, new_id, j);
        } else if j.group_instance_id.is_none() && j.require_known_member_id {
            if self.pending_members.len() >= PENDING_MEMBERS_PER_GROUP_MAX {
                return Err((GROUP_MAX_SIZE_REACHED, String::new()));
            }
            let at = deadline(j.now, ms_u64(j.session_timeout_ms));
            let timer = Timer::PendingMember {
                group_id: self.group_id.clone(),
                member_id: new_id.clone(),
            };
            let key = cx.timers.schedule(at, timer);
            self.pending_members.insert(new_id.clone(), key);
            cx.out.send(j.id, join_error(MEMBER_ID_REQUIRED, new_id));
        } else {
            self.add_member(cx, new_id, j);
        }
        Ok(())
    }

    fn join_known(&mut self, cx: &mut Ctx<'_>, j: Join) -> JoinResult {
        if !self.supports_protocols(&j.protocol_type, &j.protocols, Some(j.member_id.as_str())) {
            return Err((INCONSISTENT_GROUP_PROTOCOL, j.member_id));
        }
        if let Some(key) = self.pending_members.remove(&j.member_id) {
            cx.timers.cancel(Some(key));
            let member_id = j.member_id.clone();
            let replaced = j
                .group_instance_id
                .as_ref()
                .and_then(|i| self.static_members.get(i));
            match replaced.cloned() {
                Some(old_id) => self.replace_static_member(cx, old_id, member_id, j),
                None => self.add_member(cx, member_id, j),
            }
            return Ok(());
        }
        if let Err(code) = self.validate_member(&j.member_id, j.group_instance_id.as_deref()) {
            return Err((code, j.member_id));
        }
        let unchanged = self
            .members
            .get(&j.member_id)
            .is_some_and(|m| m.protocols == j.protocols);
        match self.state {
            GroupState::Empty | GroupState::Dead => Err((UNKNOWN_MEMBER_ID, j.member_id)),
            GroupState::PreparingRebalance => {
                self.update_member(cx, j);
                Ok(())
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if !unchanged
                    || (self.state == GroupState::Stable && self.is_leader(&j.member_id)) =>
            {
                self.update_member(cx, j);
                Ok(())
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // It lost the reply of the current generation: send it again.
                let leader_view =
                    self.state == GroupState::CompletingRebalance && self.is_leader(&j.member_id);
                let reply = self.current_generation(&j.member_id, leader_view);
                self.refresh(&j.member_id, cx.timers, j.now);
                cx.out.send(j.id, Reply::Join(reply));
                Ok(())
            }
        }
    }

    fn add_member(&mut self, cx: &mut Ctx<'_>, member_id: String, j: Join) {
        if self.state == GroupState::PreparingRebalance && self.generation_id == 0 {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(j.protocol_type);
        }
        self.next_join_seq += 1;
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: j.group_instance_id,
            client_id: j.client_id,
            client_host: j.client_host,
            session_timeout_ms: j.session_timeout_ms,
            rebalance_timeout_ms: j.rebalance_timeout_ms,
            protocols: j.protocols,
            assignment: Bytes::new(),
            join_seq: self.next_join_seq,
            pending_join: None,
            pending_sync: None,
            last_heard: j.now,
            session_timer: None,
        };
        self.support_add(&member.protocols);
        if let Some(instance_id) = &member.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), member_id.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        self.members.insert(member_id.clone(), member);
        self.park_join(cx, &member_id, j.id);
        self.rebalance_or_complete(cx, j.now);
    }

    /// A known member rejoins with (maybe) new protocols and waits for the next generation.
    fn update_member(&mut self, cx: &mut Ctx<'_>, j: Join) {
        let Some(m) = self.members.get_mut(&j.member_id) else {
            return;
        };
        let old = std::mem::replace(&mut m.protocols, j.protocols);
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.last_heard = j.now;
        let new = m.protocols.clone();
        self.support_remove(&old);
        self.support_add(&new);
        if self.members.len() == 1 {
            self.protocol_type = Some(j.protocol_type);
        }
        self.park_join(cx, &j.member_id, j.id);
        self.rebalance_or_complete(cx, j.now);
    }

    /// A static member restarted: its new member id takes over the old one, whose parked
    /// requests are fenced. A Stable group keeps its generation when the protocol it would
    /// select is unchanged; otherwise the group rebalances.
    fn replace_static_member(&mut self, cx: &mut Ctx<'_>, old_id: String, new_id: String, j: Join) {
        let now = j.now;
        let current_leader = self.leader_id.clone().unwrap_or_default();
        let Some(mut m) = self.members.remove(&old_id) else {
            debug_assert!(false, "static member {old_id} is not a member");
            return self.add_member(cx, new_id, j);
        };
        if let Some(id) = m.pending_join.take() {
            self.awaiting_join -= 1;
            cx.out
                .send(id, join_error(FENCED_INSTANCE_ID, old_id.clone()));
        }
        if let Some(id) = m.pending_sync.take() {
            cx.out.send(id, sync_error(FENCED_INSTANCE_ID));
        }
        cx.timers.cancel(m.session_timer.take());
        self.support_remove(&m.protocols);
        self.support_add(&j.protocols);
        m.member_id = new_id.clone();
        m.protocols = j.protocols;
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.client_id = j.client_id;
        m.client_host = j.client_host;
        m.last_heard = now;
        if let Some(instance_id) = &m.group_instance_id {
            self.static_members
                .insert(instance_id.clone(), new_id.clone());
        }
        if self.is_leader(&old_id) {
            self.leader_id = Some(new_id.clone());
        }
        if self.awaiting_sync.remove(&old_id) {
            self.awaiting_sync.insert(new_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(j.protocol_type);
        }
        self.members.insert(new_id.clone(), m);

        if self.state == GroupState::Stable && self.select_protocol() == self.protocol_name {
            let mut reply = self.current_generation(&new_id, false);
            reply.leader = current_leader;
            self.refresh(&new_id, cx.timers, now);
            cx.out.send(j.id, Reply::Join(reply));
        } else {
            self.park_join(cx, &new_id, j.id);
            self.rebalance_or_complete(cx, now);
        }
    }

    // --- rebalancing ----------------------------------------------------------------

    fn rebalance_or_complete(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        match self.state {
            GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(cx, now)
            }
            GroupState::PreparingRebalance => self.try_complete_join(cx, now),
            GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment of this generation will never come: release the followers.
            let waiting: Vec<String> = self.members.keys().cloned().collect();
            for member_id in waiting {
                if let Some(m) = self.members.get_mut(&member_id) {
                    m.assignment = Bytes::new();
                }
                self.answer_sync(cx, &member_id, sync_error(REBALANCE_IN_PROGRESS), now);
            }
        }
        cx.timers.cancel(self.sync_timer.take());
        self.awaiting_sync.clear();
        let delay_ms = cx.config.initial_rebalance_delay_ms;
        let rebalance_ms = self.max_rebalance_timeout_ms();
        let (wait, wait_ms) = if self.state == GroupState::Empty && delay_ms > 0 {
            let remaining_ms = rebalance_ms.saturating_sub(delay_ms);
            (JoinWait::InitialDelay { remaining_ms }, delay_ms)
        } else {
            (JoinWait::Rebalance, rebalance_ms)
        };
        self.state = GroupState::PreparingRebalance;
        self.empty_since = None;
        self.arm_join_timer(cx, wait, deadline(now, wait_ms));
        self.try_complete_join(cx, now);
    }

    fn arm_join_timer(&mut self, cx: &mut Ctx<'_>, wait: JoinWait, at: Instant) {
        self.join_wait = wait;
        let group_id = &self.group_id;
        self.join_timer = Some(cx.timers.reschedule(self.join_timer, at, || Timer::Join {
            group_id: group_id.clone(),
        }));
    }

    fn try_complete_join(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let all_joined =
            self.awaiting_join == self.members.len() && self.pending_members.is_empty();
        if self.state == GroupState::PreparingRebalance
            && self.join_wait == JoinWait::Rebalance
            && all_joined
        {
            self.complete_join(cx, now);
        }
    }

    fn join_timer_fired(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        self.join_timer = None;
        match self.join_wait {
            JoinWait::InitialDelay { remaining_ms }
                if self.new_member_added && remaining_ms > 0 =>
            {
                self.new_member_added = false;
                let delay_ms = cx.config.initial_rebalance_delay_ms.min(remaining_ms);
                let wait = JoinWait::InitialDelay {
                    remaining_ms: remaining_ms - delay_ms,
                };
                self.arm_join_timer(cx, wait, deadline(now, delay_ms));
            }
            _ => self.complete_join(cx, now),
        }
    }

    /// Ends the join phase: members that did not rejoin leave (static members stay until
    /// their session expires), the generation advances and every joined member is answered.
    fn complete_join(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.pending_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in gone {
            self.detach_member(cx, &member_id);
        }
        if !self.members.is_empty() && self.awaiting_join == 0 {
            // Only static members that have not rejoined: wait for them or their expiry.
            let at = deadline(now, self.max_rebalance_timeout_ms());
            self.arm_join_timer(cx, JoinWait::Rebalance, at);
            return;
        }
        cx.timers.cancel(self.join_timer.take());
        self.new_member_added = false;
        let leader_rejoined = self
            .leader_id
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.pending_join.is_some());
        if !leader_rejoined {
            self.leader_id = self.first_member_by_seq(|m| m.pending_join.is_some());
        }
        self.generation_id = self.generation_id.checked_add(1).unwrap_or(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.empty_since = Some(now);
            return;
        }
        let selected = self.select_protocol();
        debug_assert!(
            selected.is_some(),
            "members of {} share no protocol",
            self.group_id
        );
        self.protocol_name = selected.or_else(|| {
            let first = self.members_by_seq().into_iter().next()?;
            first.protocols.first().map(|(name, _)| name.clone())
        });
        self.state = GroupState::CompletingRebalance;
        self.awaiting_sync = self.members.keys().cloned().collect();
        let at = deadline(now, self.max_rebalance_timeout_ms());
        let group_id = &self.group_id;
        self.sync_timer = Some(cx.timers.schedule(
            at,
            Timer::Sync {
                group_id: group_id.clone(),
            },
        ));

        let leader = self.leader_id.clone().unwrap_or_default();
        let joined: Vec<String> = self
            .members_by_seq()
            .into_iter()
            .filter(|m| m.pending_join.is_some())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in joined {
            let reply = self.current_generation(&member_id, member_id == leader);
            self.answer_join(cx, &member_id, reply, now);
        }
    }

    /// Takes a member out without changing the state; its parked requests are answered
    /// UNKNOWN_MEMBER_ID (it may still be alive and should join again).
    fn detach_member(&mut self, cx: &mut Ctx<'_>, member_id: &str) -> bool {
        let Some(m) = self.members.remove(member_id) else {
            return false;
        };
        if let Some(id) = m.pending_join {
            self.awaiting_join -= 1;
            cx.out
                .send(id, join_error(UNKNOWN_MEMBER_ID, String::new()));
        }
        if let Some(id) = m.pending_sync {
            cx.out.send(id, sync_error(UNKNOWN_MEMBER_ID));
        }
        cx.timers.cancel(m.session_timer);
        self.support_remove(&m.protocols);
        if let Some(instance_id) = &m.group_instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance_id);
            }
        }
        if self.awaiting_sync.remove(member_id) && self.awaiting_sync.is_empty() {
            cx.timers.cancel(self.sync_timer.take());
        }
        if self.is_leader(member_id) {
            self.leader_id = self.first_member_by_seq(|_| true);
        }
        true
    }

    /// Kafka's `removeMemberAndUpdateGroup`.
    fn remove_member(&mut self, cx: &mut Ctx<'_>, member_id: &str, now: Instant) {
        if !self.detach_member(cx, member_id) {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(cx, now),
            GroupState::PreparingRebalance => self.try_complete_join(cx, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn remove_pending_member(&mut self, cx: &mut Ctx<'_>, member_id: &str, now: Instant) {
        if let Some(key) = self.pending_members.remove(member_id) {
            cx.timers.cancel(Some(key));
            self.try_complete_join(cx, now);
        }
    }

    /// Members of the generation that never sent SyncGroup within the rebalance timeout.
    fn sync_timer_fired(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        self.sync_timer = None;
        let late: Vec<String> = std::mem::take(&mut self.awaiting_sync)
            .into_iter()
            .collect();
        for member_id in &late {
            self.detach_member(cx, member_id);
        }
        if !late.is_empty()
            && matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
        {
            self.prepare_rebalance(cx, now);
        }
    }

    // --- SyncGroup ------------------------------------------------------------------

    fn sync(
        &mut self,
        cx: &mut Ctx<'_>,
        id: ReqId,
        req: SyncRequest,
        now: Instant,
    ) -> Result<(), i16> {
        self.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation_id {
            return Err(ILLEGAL_GENERATION);
        }
        let type_differs = req.protocol_type.is_some() && req.protocol_type != self.protocol_type;
        let name_differs = req.protocol_name.is_some() && req.protocol_name != self.protocol_name;
        if type_differs || name_differs {
            return Err(INCONSISTENT_GROUP_PROTOCOL);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => return Err(UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => return Err(REBALANCE_IN_PROGRESS),
            GroupState::CompletingRebalance => {
                let Some(m) = self.members.get_mut(&req.member_id) else {
                    return Err(UNKNOWN_MEMBER_ID);
                };
                if let Some(old) = m.pending_sync.replace(id) {
                    cx.out.send(old, sync_error(REBALANCE_IN_PROGRESS));
                }
                m.last_heard = now;
                m.touch(&self.group_id, cx.timers);
                cx.out.park(id);
                if self.is_leader(&req.member_id) {
                    self.store_assignments(req.assignments);
                    self.state = GroupState::Stable;
                    self.propagate_assignments(cx, now);
                }
            }
            GroupState::Stable => {
                let Some(m) = self.members.get(&req.member_id) else {
                    return Err(UNKNOWN_MEMBER_ID);
                };
                let reply = self.sync_reply(m.assignment.clone());
                self.refresh(&req.member_id, cx.timers, now);
                cx.out.send(id, reply);
            }
        }
        if self.awaiting_sync.remove(&req.member_id) && self.awaiting_sync.is_empty() {
            cx.timers.cancel(self.sync_timer.take());
        }
        Ok(())
    }

    fn sync_reply(&self, assignment: Bytes) -> Reply {
        Reply::Sync(SyncResponse {
            error_code: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        })
    }

    /// The leader's assignments; members it left out get an empty one, unknown ids are
    /// ignored. Stored as our own copy so the request's buffer is not kept alive.
    fn store_assignments(&mut self, assignments: Vec<(String, Bytes)>) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
        }
        for (member_id, assignment) in assignments {
            if let Some(m) = self.members.get_mut(&member_id) {
                m.assignment = Bytes::copy_from_slice(&assignment);
            }
        }
    }

    fn propagate_assignments(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let waiting: Vec<(String, Bytes)> = self
            .members
            .values()
            .filter(|m| m.pending_sync.is_some())
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect();
        for (member_id, assignment) in waiting {
            let reply = self.sync_reply(assignment);
            self.answer_sync(cx, &member_id, reply, now);
        }
    }

    // --- Heartbeat, LeaveGroup ------------------------------------------------------

    fn heartbeat(&mut self, timers: &mut Timers, req: &HeartbeatRequest, now: Instant) -> i16 {
        if let Err(code) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return code;
        }
        if req.generation_id != self.generation_id {
            return ILLEGAL_GENERATION;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => {
                self.refresh(&req.member_id, timers, now);
                REBALANCE_IN_PROGRESS
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.refresh(&req.member_id, timers, now);
                NONE
            }
        }
    }

    fn leave_one(
        &mut self,
        cx: &mut Ctx<'_>,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        if member_id.is_empty() {
            // Administrative removal by instance id (KIP-345).
            let current = instance_id
                .and_then(|i| self.static_members.get(i))
                .cloned();
            return match current {
                Some(current) => {
                    self.remove_member(cx, &current, now);
                    NONE
                }
                None => UNKNOWN_MEMBER_ID,
            };
        }
        if self.pending_members.contains_key(member_id) {
            self.remove_pending_member(cx, member_id, now);
            return NONE;
        }
        match self.validate_member(member_id, instance_id) {
            Ok(()) => {
                self.remove_member(cx, member_id, now);
                NONE
            }
            Err(code) => code,
        }
    }

    // --- offsets --------------------------------------------------------------------

    /// Topics named by the members' subscriptions (the selected protocol's metadata, or
    /// every protocol's before one is selected), and whether all of them decoded.
    fn subscribed_topics(&self) -> (BTreeSet<&str>, bool) {
        let mut topics = BTreeSet::new();
        let mut all_decoded = true;
        for m in self.members.values() {
            let selected = self.protocol_name.as_deref().and_then(|p| m.metadata(p));
            let metadata: Vec<&Bytes> = match selected {
                Some(metadata) => vec![metadata],
                None => m.protocols.iter().map(|(_, metadata)| metadata).collect(),
            };
            for metadata in metadata {
                match subscription_topics(metadata) {
                    Some(names) => topics.extend(names),
                    None => all_decoded = false,
                }
            }
        }
        (topics, all_decoded)
    }

    fn expired_offsets(&self, now: Instant, now_ms: i64, retention_ms: i64) -> Vec<TopicPartition> {
        let expired = |o: &CommittedOffset, base_ms: i64| match o.expire_timestamp_ms {
            Some(expire_ms) => now_ms >= expire_ms,
            None => now_ms.saturating_sub(base_ms) >= retention_ms,
        };
        let pick = |keep: &dyn Fn(&TopicPartition, &CommittedOffset) -> bool| -> Vec<_> {
            self.offsets
                .iter()
                .filter(|(tp, o)| keep(tp, o))
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        match (&self.protocol_type, self.state) {
            (None, _) => pick(&|_, o| expired(o, o.commit_timestamp_ms)),
            (Some(_), GroupState::Empty) => {
                let empty_ms = self.empty_since.map(|since| {
                    let elapsed = now.saturating_duration_since(since).as_millis();
                    now_ms.saturating_sub(i64::try_from(elapsed).unwrap_or(i64::MAX))
                });
                let latest_ms = self.offsets.values().map(|o| o.commit_timestamp_ms).max();
                let base_ms = empty_ms.max(latest_ms).unwrap_or(i64::MIN);
                pick(&|_, o| expired(o, base_ms))
            }
            (Some(t), GroupState::Stable) if t == CONSUMER_PROTOCOL_TYPE => {
                let (subscribed, all_decoded) = self.subscribed_topics();
                if !all_decoded {
                    return Vec::new();
                }
                pick(&|tp, o| {
                    !subscribed.contains(tp.topic.as_str()) && expired(o, o.commit_timestamp_ms)
                })
            }
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The coordinator.

/// All groups of one shard. See the module documentation.
#[derive(Debug)]
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    timers: Timers,
    out: Outbox,
    ids: MemberIds,
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            timers: Timers::default(),
            out: Outbox::default(),
            ids: MemberIds::default(),
        }
    }

    /// Seeds the high half of generated member ids. The driver should pass something that
    /// differs across restarts (e.g. wall-clock nanos), so that a client still holding a
    /// member id from before the restart cannot match a newly issued one. Tests keep 0.
    pub fn with_member_id_seed(mut self, seed: u64) -> Self {
        self.ids.seed = seed;
        self
    }

    fn parts(&mut self) -> (&mut BTreeMap<String, Group>, Ctx<'_>) {
        let cx = Ctx {
            config: &self.config,
            timers: &mut self.timers,
            out: &mut self.out,
            ids: &mut self.ids,
        };
        (&mut self.groups, cx)
    }

    // --- membership -----------------------------------------------------------------

    pub fn handle_join(&mut self, id: ReqId, req: JoinRequest, now: Instant) {
        if let Err((code, member_id)) = self.join(id, req, now) {
            self.out.send(id, join_error(code, member_id));
        }
    }

    fn join(&mut self, id: ReqId, req: JoinRequest, now: Instant) -> JoinResult {
        let JoinRequest {
            group_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            member_id,
            group_instance_id,
            protocol_type,
            protocols,
            require_known_member_id,
            client_id,
            client_host,
        } = req;
        if member_id.len() > MEMBER_ID_BYTES_MAX {
            return Err((UNKNOWN_MEMBER_ID, String::new()));
        }
        if group_id.is_empty() {
            return Err((INVALID_GROUP_ID, member_id));
        }
        let instance_too_long = group_instance_id
            .as_ref()
            .is_some_and(|i| i.len() > GROUP_INSTANCE_ID_BYTES_MAX);
        if instance_too_long || protocols.len() > JOIN_PROTOCOLS_MAX {
            return Err((INVALID_REQUEST, member_id));
        }
        let timeouts = self.config.min_session_timeout_ms..=self.config.max_session_timeout_ms;
        if !timeouts.contains(&session_timeout_ms) {
            return Err((INVALID_SESSION_TIMEOUT, member_id));
        }
        if protocol_type.is_empty() || protocols.is_empty() {
            return Err((INCONSISTENT_GROUP_PROTOCOL, member_id));
        }
        if !self.groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                return Err((UNKNOWN_MEMBER_ID, member_id));
            }
            self.groups
                .insert(group_id.clone(), Group::new(group_id.clone(), Some(now)));
        }
        let mut distinct: Vec<(String, Bytes)> = Vec::with_capacity(protocols.len());
        for (name, metadata) in protocols {
            if !distinct.iter().any(|(n, _)| *n == name) {
                distinct.push((name, Bytes::copy_from_slice(&metadata)));
            }
        }
        let join = Join {
            id,
            member_id,
            group_instance_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type,
            protocols: distinct,
            require_known_member_id,
            client_id,
            client_host,
            now,
        };
        let (groups, mut cx) = self.parts();
        match groups.get_mut(&group_id) {
            Some(group) => group.join(&mut cx, join),
            None => Err((UNKNOWN_MEMBER_ID, join.member_id)),
        }
    }

    pub fn handle_sync(&mut self, id: ReqId, req: SyncRequest, now: Instant) {
        let result = if req.group_id.is_empty() {
            Err(INVALID_GROUP_ID)
        } else {
            let (groups, mut cx) = self.parts();
            match groups.get_mut(&req.group_id) {
                Some(group) => group.sync(&mut cx, id, req, now),
                None => Err(UNKNOWN_MEMBER_ID),
            }
        };
        if let Err(code) = result {
            self.out.send(id, sync_error(code));
        }
    }

    pub fn handle_heartbeat(&mut self, id: ReqId, req: HeartbeatRequest, now: Instant) {
        let code = if req.group_id.is_empty() {
            INVALID_GROUP_ID
        } else {
            match self.groups.get_mut(&req.group_id) {
                Some(group) => group.heartbeat(&mut self.timers, &req, now),
                None => UNKNOWN_MEMBER_ID,
            }
        };
        self.out.send(id, Reply::Heartbeat(code));
    }

    pub fn handle_leave(&mut self, id: ReqId, req: LeaveRequest, now: Instant) {
        let response = self.leave(req, now);
        self.out.send(id, Reply::Leave(response));
    }

    fn leave(&mut self, req: LeaveRequest, now: Instant) -> LeaveResponse {
        if req.group_id.is_empty() {
            return LeaveResponse {
                error_code: INVALID_GROUP_ID,
                members: Vec::new(),
            };
        }
        let (groups, mut cx) = self.parts();
        let mut group = groups.get_mut(&req.group_id);
        let members = req
            .members
            .into_iter()
            .map(|(member_id, instance_id)| {
                let code = match group.as_deref_mut() {
                    Some(g) => g.leave_one(&mut cx, &member_id, instance_id.as_deref(), now),
                    None => UNKNOWN_MEMBER_ID,
                };
                (member_id, instance_id, code)
            })
            .collect();
        LeaveResponse {
            error_code: NONE,
            members,
        }
    }

    /// Fires every timer due at `now`. Timers armed while firing (even for `now`) wait for
    /// the next call, so one call always ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TimerKey> = self
            .timers
            .queue
            .range(..=(now, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let Some(timer) = self.timers.queue.remove(&key) else {
                continue;
            };
            let (groups, mut cx) = self.parts();
            match timer {
                Timer::Session {
                    group_id,
                    member_id,
                } => {
                    let Some(g) = groups.get_mut(&group_id) else {
                        continue;
                    };
                    let Some(m) = g.members.get_mut(&member_id) else {
                        continue;
                    };
                    if m.session_timer != Some(key) {
                        continue;
                    }
                    m.session_timer = None;
                    if m.pending_join.is_none() && m.pending_sync.is_none() {
                        g.remove_member(&mut cx, &member_id, now);
                    }
                }
                Timer::PendingMember {
                    group_id,
                    member_id,
                } => {
                    let Some(g) = groups.get_mut(&group_id) else {
                        continue;
                    };
                    if g.pending_members.get(&member_id) == Some(&key) {
                        g.remove_pending_member(&mut cx, &member_id, now);
                    }
                }
                Timer::Join { group_id } => {
                    let Some(g) = groups.get_mut(&group_id) else {
                        continue;
                    };
                    if g.join_timer == Some(key) {
                        g.join_timer_fired(&mut cx, now);
                    }
                }
                Timer::Sync { group_id } => {
                    let Some(g) = groups.get_mut(&group_id) else {
                        continue;
                    };
                    if g.sync_timer == Some(key) {
                        g.sync_timer_fired(&mut cx, now);
                    }
                }
            }
        }
    }

    pub fn poll_reply(&mut self) -> Option<(ReqId, Reply)> {
        self.out.ready.pop_front()
    }

    /// The earliest armed timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Forget a pending request whose connection went away (its reply is no longer wanted).
    /// The member keeps its place (still joined / synced, as in Kafka, which does not see
    /// the disconnect) until its session times out.
    pub fn cancel(&mut self, id: ReqId) {
        self.out.cancel(id);
    }

    // --- committed offsets ----------------------------------------------------------

    /// Whether an OffsetCommit from this member may be applied (Kafka's
    /// `validateOffsetCommit`). Generation -1 with no member id and no instance id is a
    /// "simple" commit, allowed only while the group does not exist or is Empty. A member of
    /// the current generation may commit while the group prepares a rebalance, not while it
    /// completes one (REBALANCE_IN_PROGRESS). A valid member commit counts as a heartbeat.
    pub fn validate_commit(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), i16> {
        let simple = generation_id < 0 && member_id.is_empty() && group_instance_id.is_none();
        let Some(group) = self.groups.get_mut(group_id) else {
            return match (simple, generation_id < 0) {
                (true, _) => Ok(()),
                (false, true) => Err(UNKNOWN_MEMBER_ID),
                (false, false) => Err(ILLEGAL_GENERATION),
            };
        };
        if simple {
            return if group.state == GroupState::Empty {
                Ok(())
            } else {
                Err(UNKNOWN_MEMBER_ID)
            };
        }
        group.validate_member(member_id, group_instance_id)?;
        if generation_id != group.generation_id {
            return Err(ILLEGAL_GENERATION);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(REBALANCE_IN_PROGRESS);
        }
        group.refresh(member_id, &mut self.timers, now);
        Ok(())
    }

    /// Stores commits (after the driver has made them durable). Creates the group (state
    /// Empty, no protocol type) if it does not exist.
    pub fn apply_commit(
        &mut self,
        group_id: &str,
        commits: Vec<(TopicPartition, CommittedOffset)>,
    ) {
        let group = self
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id.to_owned(), None));
        group.offsets.extend(commits);
    }

    /// Replay of persisted state at startup: Some = commit, None = tombstone (delete).
    pub fn load_offset(
        &mut self,
        group_id: &str,
        tp: TopicPartition,
        value: Option<CommittedOffset>,
    ) {
        match value {
            Some(offset) => self.apply_commit(group_id, vec![(tp, offset)]),
            None => {
                let Some(group) = self.groups.get_mut(group_id) else {
                    return;
                };
                group.offsets.remove(&tp);
                if group.is_removable() {
                    self.remove_group(group_id);
                }
            }
        }
    }

    pub fn committed(&self, group_id: &str, tp: &TopicPartition) -> Option<&CommittedOffset> {
        self.groups.get(group_id)?.offsets.get(tp)
    }

    /// Every committed offset of the group, sorted by topic and partition.
    pub fn committed_all(&self, group_id: &str) -> Vec<(TopicPartition, CommittedOffset)> {
        match self.groups.get(group_id) {
            Some(g) => g
                .offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), o.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn group_exists(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// The group's state; None for an unknown group.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    fn remove_group(&mut self, group_id: &str) -> Option<Group> {
        let group = self.groups.remove(group_id)?;
        group.drop_timers(&mut self.timers);
        Some(group)
    }

    // --- administration -------------------------------------------------------------

    /// Filters empty = all; state names compare case-insensitively; `types_filter` is the
    /// KIP-848 group type, and every group here is "classic".
    pub fn list_groups(
        &self,
        states_filter: &[String],
        types_filter: &[String],
    ) -> Vec<GroupListing> {
        let classic = types_filter.is_empty()
            || types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case("classic"));
        if !classic {
            return Vec::new();
        }
        self.groups
            .values()
            .filter(|g| {
                states_filter.is_empty()
                    || states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
            })
            .collect()
    }

    /// Every group's figures for `/metrics`: state, members and committed offsets.
    pub fn metrics(&self) -> Vec<crate::metrics::GroupStats> {
        self.groups
            .values()
            .map(|g| crate::metrics::GroupStats {
                group: g.group_id.clone(),
                state: g.state.name(),
                members: g.members.len(),
                committed: g
                    .offsets
                    .iter()
                    .map(|(tp, c)| ((tp.topic.clone(), tp.partition), c.offset))
                    .collect(),
            })
            .collect()
    }

    /// Kafka's `describeGroup`: the protocol, metadata and assignments only when Stable; an
    /// unknown group is Dead with no error.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(g) = self.groups.get(group_id) else {
            return GroupDescription {
                state: GroupState::Dead.name(),
                ..Default::default()
            };
        };
        let stable_protocol = if g.state == GroupState::Stable {
            g.protocol_name.as_deref()
        } else {
            None
        };
        let members = g
            .members_by_seq()
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: stable_protocol
                    .and_then(|p| m.metadata(p))
                    .cloned()
                    .unwrap_or_default(),
                assignment: if stable_protocol.is_some() {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            error_code: NONE,
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: stable_protocol.unwrap_or_default().to_owned(),
            members,
        }
    }

    /// DeleteGroups: NON_EMPTY_GROUP unless Empty (Kafka: any other state), GROUP_ID_NOT_FOUND
    /// if unknown. Ok = the offsets removed (the driver writes tombstones).
    pub fn delete_group(&mut self, group_id: &str) -> Result<Vec<TopicPartition>, i16> {
        match self.groups.get(group_id).map(|g| g.state) {
            None | Some(GroupState::Dead) => Err(GROUP_ID_NOT_FOUND),
            Some(GroupState::Empty) => {
                let group = self.remove_group(group_id).ok_or(GROUP_ID_NOT_FOUND)?;
                Ok(group.offsets.into_keys().collect())
            }
            Some(_) => Err(NON_EMPTY_GROUP),
        }
    }

    /// OffsetDelete: GROUP_ID_NOT_FOUND if unknown; a non-empty consumer group keeps the
    /// offsets of topics a member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC); a non-empty
    /// group of another protocol type refuses with NON_EMPTY_GROUP (Kafka). Code 0 = removed.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        tps: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i16)>, i16> {
        let group = self.groups.get_mut(group_id).ok_or(GROUP_ID_NOT_FOUND)?;
        let subscribed: BTreeSet<String> = match group.state {
            GroupState::Dead => return Err(GROUP_ID_NOT_FOUND),
            GroupState::Empty => BTreeSet::new(),
            _ if group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => group
                .subscribed_topics()
                .0
                .into_iter()
                .map(str::to_owned)
                .collect(),
            _ => return Err(NON_EMPTY_GROUP),
        };
        let results = tps
            .iter()
            .map(|tp| {
                if subscribed.contains(&tp.topic) {
                    (tp.clone(), GROUP_SUBSCRIBED_TO_TOPIC)
                } else {
                    group.offsets.remove(tp);
                    (tp.clone(), NONE)
                }
            })
            .collect();
        if group.is_removable() {
            self.remove_group(group_id);
        }
        Ok(results)
    }

    /// Expires offsets (Kafka 2.1+ semantics): an Empty group with a protocol type loses all
    /// its offsets once `now_ms - max(time it became Empty, latest commit) >= retention`; a
    /// group without protocol type (standalone commits only) loses each offset by its own
    /// commit time; a Stable consumer group loses offsets of topics nobody subscribes to by
    /// their commit time; an explicit `expire_timestamp_ms` replaces the retention rule in
    /// all three cases. Groups left Empty without offsets are removed. Returns what was
    /// removed, for tombstones.
    pub fn expire_offsets(&mut self, now: Instant, now_ms: i64) -> Vec<(String, TopicPartition)> {
        let retention_ms = self.config.offsets_retention_ms;
        let mut removed = Vec::new();
        let mut dead = Vec::new();
        for (group_id, group) in self.groups.iter_mut() {
            for tp in group.expired_offsets(now, now_ms, retention_ms) {
                group.offsets.remove(&tp);
                removed.push((group_id.clone(), tp));
            }
            if group.is_removable() {
                dead.push(group_id.clone());
            }
        }
        for group_id in dead {
            self.remove_group(&group_id);
        }
        removed
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Checks the invariants of the module documentation; tests call it after every step.
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        let mut owned_timers = BTreeSet::new();
        for (group_id, g) in &self.groups {
            assert_eq!(&g.group_id, group_id);
            let awaiting = g
                .members
                .values()
                .filter(|m| m.pending_join.is_some())
                .count();
            assert_eq!(g.awaiting_join, awaiting, "{group_id}: awaiting_join");
            assert_eq!(
                g.state == GroupState::PreparingRebalance,
                g.join_timer.is_some(),
                "{group_id}: join timer in {:?}",
                g.state
            );
            if g.state == GroupState::CompletingRebalance {
                assert!(g.sync_timer.is_some(), "{group_id}: sync timer");
                let leader = g.leader_id.as_ref().expect("leader");
                assert!(
                    g.awaiting_sync.contains(leader),
                    "{group_id}: leader synced"
                );
            }
            if g.state == GroupState::Empty {
                assert!(g.members.is_empty(), "{group_id}: Empty with members");
            }
            if !g.members.is_empty() {
                let leader = g
                    .leader_id
                    .as_ref()
                    .expect("a non-empty group has a leader");
                assert!(
                    g.members.contains_key(leader),
                    "{group_id}: leader is a member"
                );
            }
            for id in &g.awaiting_sync {
                assert!(g.members.contains_key(id), "{group_id}: awaiting_sync {id}");
            }
            let mut support: HashMap<String, usize> = HashMap::new();
            for (id, m) in &g.members {
                assert_eq!(&m.member_id, id);
                for (name, _) in &m.protocols {
                    *support.entry(name.clone()).or_insert(0) += 1;
                }
                if let Some(instance_id) = &m.group_instance_id {
                    assert_eq!(g.static_members.get(instance_id), Some(id));
                }
                let parked = m.pending_join.is_some() || m.pending_sync.is_some();
                assert_eq!(
                    m.session_timer.is_none(),
                    parked,
                    "{group_id}/{id}: session timer"
                );
                owned_timers.extend(m.session_timer);
            }
            assert_eq!(support, g.protocol_support, "{group_id}: protocol support");
            for member_id in g.static_members.values() {
                assert!(g.members.contains_key(member_id));
            }
            owned_timers.extend(g.pending_members.values().copied());
            owned_timers.extend(g.join_timer);
            owned_timers.extend(g.sync_timer);
        }
        let armed: BTreeSet<TimerKey> = self.timers.queue.keys().copied().collect();
        assert_eq!(
            armed, owned_timers,
            "every armed timer has an owner and vice versa"
        );
    }
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
