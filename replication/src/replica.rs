//! The replica protocol of one partition as IO-free state machines (Kafka's semantics):
//! [`LeaderState`] on the broker that leads it, the follower's decisions as functions
//! ([`fetch_request`], [`truncation_on_diverging`]). They are driven by messages (follower
//! fetches, partition states from the metadata image, AlterPartition refusals), by
//! completions of the local log (how far it is durable) and by a clock in milliseconds; they
//! do no IO and read no clock, so the whole protocol runs in virtual time (`sim::replicas`).
//!
//! # Rules
//! * A follower's fetch offset is its acknowledgement: it fetches from its *durable* log
//!   end, so the leader never counts bytes a crash could take back.
//! * The high watermark is the smallest log end over the maximal ISR (the committed ISR
//!   plus the members of an AlterPartition in flight, KIP-497), the leader's own durable
//!   end included; it does not advance while the committed ISR is smaller than
//!   `min.insync.replicas` (KIP-966's strict rule), and it never goes backwards.
//! * acks=all is refused before the append when the ISR is below `min.insync.replicas`
//!   (NOT_ENOUGH_REPLICAS), completes when the high watermark covers the batch, fails with
//!   NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrinks below the minimum while it
//!   waits, with REQUEST_TIMED_OUT at its deadline, NOT_LEADER_OR_FOLLOWER when the
//!   leadership ends.
//! * ISR shrink: a member that has not caught up for `replica.lag.time.max.ms`. ISR expand:
//!   a replica whose log end reached the high watermark and the start of the current
//!   epoch. Both are compare-and-set requests on the leader and partition epochs; one at a
//!   time, resent until the image shows the outcome.
//! * Fetches are fenced by epoch: an older `current_leader_epoch` gets FENCED_LEADER_EPOCH,
//!   a newer one UNKNOWN_LEADER_EPOCH; a fetch whose last fetched epoch does not match the
//!   leader's log gets the diverging epoch and its end instead of records, and the follower
//!   truncates there (never to a high watermark).

use std::collections::BTreeMap;

use crate::epoch::{Epoch, EpochCache, Offset};
use crate::image::{BrokerId, Partition};

/// Settings of the replica protocol (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `min.insync.replicas` of the topic.
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`
    pub replica_lag_time_max_ms: u64,
    /// An AlterPartition with no visible outcome is sent again after this.
    pub alter_partition_retry_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            alter_partition_retry_ms: 1_000,
        }
    }
}

/// A follower's fetch of this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica: BrokerId,
    /// Its durable log end: where it wants records from, and its acknowledgement.
    pub fetch_offset: Offset,
    /// The leader epoch the follower knows.
    pub current_leader_epoch: Epoch,
    /// The epoch of the last batch in its log (`None` for an empty log).
    pub last_fetched_epoch: Option<Epoch>,
}

/// What the leader answers a follower's fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Records from `from` (the fetch offset) up to the leader's log end.
    Read {
        from: Offset,
        high_watermark: Offset,
    },
    /// The follower's log diverged: it must truncate to at most `end_offset` (its own end of
    /// `epoch`, if lower) and fetch again.
    Diverging {
        epoch: Epoch,
        end_offset: Offset,
        high_watermark: Offset,
    },
}

/// Why a follower's fetch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("leader epoch {theirs} is older than the leader's {ours}")]
    FencedLeaderEpoch { ours: Epoch, theirs: Epoch },
    #[error("leader epoch {theirs} is newer than the leader's {ours}")]
    UnknownLeaderEpoch { ours: Epoch, theirs: Epoch },
    #[error("broker {0} is not a replica of this partition")]
    NotReplica(BrokerId),
    #[error("fetch offset {offset} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
}

/// Why a produce with acks=all failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the ISR has {isr} members, below min.insync.replicas = {min}")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error("the ISR shrank below min.insync.replicas after the append")]
    NotEnoughReplicasAfterAppend,
    #[error("the high watermark did not reach the batch before the deadline")]
    Timeout,
    #[error("this broker no longer leads the partition")]
    NotLeader,
}

/// The end of an acks=all wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckResult {
    pub id: u64,
    pub result: Result<(), AckError>,
}

/// An ISR change to ask the controller for (AlterPartition), compare-and-set on the epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: Epoch,
    pub partition_epoch: Epoch,
    pub new_isr: Vec<BrokerId>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's durable log end (its last fetch offset); -1 until it fetched in this
    /// leadership.
    log_end: Offset,
    /// When it last was caught up (Kafka's lastCaughtUpTimeMs).
    caught_up_ms: u64,
    /// Time and leader log end of its previous fetch.
    last_fetch_ms: u64,
    last_fetch_leader_end: Offset,
}

#[derive(Debug, Clone)]
struct PendingIsr {
    change: IsrChange,
    sent_ms: u64,
    /// Refused as stale: not sent again; the image will show what became of it.
    parked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    id: u64,
    end_offset: Offset,
    deadline_ms: u64,
}

/// The leader's side of one partition; see the module doc.
#[derive(Debug, Clone)]
pub struct LeaderState {
    local: BrokerId,
    config: ReplicaConfig,
    partition: Partition,
    /// The leader's own durable log end.
    log_end: Offset,
    /// The end of what the leader has appended, durable or not (≥ `log_end`): followers may
    /// have been sent records up to here before they were durable on the leader.
    appended_end: Offset,
    log_start: Offset,
    /// The leader's log end when this leadership began (ISR expansion needs it reached).
    epoch_start_offset: Offset,
    high_watermark: Offset,
    followers: BTreeMap<BrokerId, Progress>,
    pending: Option<PendingIsr>,
    /// An ISR change decided but not yet handed out by `poll_alter_partition`.
    unsent: bool,
    waiters: Vec<Waiter>,
}

impl LeaderState {
    /// Leadership of `partition` (whose leader is `local`) begins, with the local log at
    /// `[log_start, log_end)` durable and `high_watermark` as this replica knew it.
    pub fn new(
        local: BrokerId,
        partition: &Partition,
        log_start: Offset,
        log_end: Offset,
        high_watermark: Offset,
        now_ms: u64,
        config: ReplicaConfig,
    ) -> Self {
        debug_assert_eq!(partition.leader, local);
        let followers = partition
            .replicas
            .iter()
            .filter(|&&r| r != local)
            .map(|&r| {
                let p = Progress {
                    log_end: -1,
                    caught_up_ms: now_ms,
                    last_fetch_ms: now_ms,
                    last_fetch_leader_end: log_end,
                };
                (r, p)
            })
            .collect();
        let mut state = LeaderState {
            local,
            config,
            partition: partition.clone(),
            log_end,
            appended_end: log_end,
            log_start,
            epoch_start_offset: log_end,
            high_watermark: high_watermark.clamp(log_start, log_end),
            followers,
            pending: None,
            unsent: false,
            waiters: Vec::new(),
        };
        // A leader alone in its ISR commits its log at once (Kafka's new leader does the
        // same); with followers in the ISR it waits for their fetches.
        state.advance(&mut Vec::new());
        state
    }

    pub fn leader_epoch(&self) -> Epoch {
        self.partition.leader_epoch
    }

    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The committed ISR plus the members of an AlterPartition in flight.
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut isr = self.partition.isr.clone();
        if let Some(p) = &self.pending {
            for b in &p.change.new_isr {
                if !isr.contains(b) {
                    isr.push(*b);
                }
            }
        }
        isr
    }

    /// A follower's durable log end as last fetched (-1 before its first fetch).
    pub fn follower_log_end(&self, replica: BrokerId) -> Option<Offset> {
        self.followers.get(&replica).map(|p| p.log_end)
    }

    /// Refuses an acks=all produce before its append when the ISR is too small.
    pub fn check_append(&self) -> Result<(), AckError> {
        let isr = self.partition.isr.len();
        let min = self.config.min_insync_replicas;
        if isr < min {
            return Err(AckError::NotEnoughReplicas { isr, min });
        }
        Ok(())
    }

    /// The partition's state in the image changed without a new leader epoch (an ISR change,
    /// a reassignment). A newer leader epoch ends this leadership: see [`LeaderState::stop`].
    /// Takes changed settings (AlterConfigs of `min.insync.replicas`): the next produce
    /// admission, ISR change and high-watermark decision use them.
    pub fn set_config(&mut self, config: ReplicaConfig) {
        self.config = config;
    }

    pub fn update_partition(&mut self, partition: &Partition, now_ms: u64) -> Vec<AckResult> {
        debug_assert_eq!(partition.leader_epoch, self.partition.leader_epoch);
        if partition.partition_epoch < self.partition.partition_epoch {
            return Vec::new();
        }
        if partition.partition_epoch > self.partition.partition_epoch {
            self.pending = None;
            self.unsent = false;
        }
        self.partition = partition.clone();
        let local = self.local;
        self.followers
            .retain(|r, _| partition.replicas.contains(r) && *r != local);
        for &r in &partition.replicas {
            if r != local {
                self.followers.entry(r).or_insert(Progress {
                    log_end: -1,
                    caught_up_ms: now_ms,
                    last_fetch_ms: now_ms,
                    last_fetch_leader_end: self.log_end,
                });
            }
        }
        let mut out = Vec::new();
        if self.partition.isr.len() < self.config.min_insync_replicas {
            for w in self.waiters.drain(..) {
                out.push(AckResult {
                    id: w.id,
                    result: Err(AckError::NotEnoughReplicasAfterAppend),
                });
            }
        }
        self.advance(&mut out);
        out
    }

    /// The local log is durable up to `log_end` (appends completed).
    pub fn on_log_end(&mut self, log_end: Offset) -> Vec<AckResult> {
        debug_assert!(log_end >= self.log_end, "the leader's log end went back");
        self.log_end = self.log_end.max(log_end);
        self.appended_end = self.appended_end.max(self.log_end);
        let mut out = Vec::new();
        self.advance(&mut out);
        out
    }

    /// The local log has records appended up to `end`, not yet durable: a follower may be
    /// sent them and fetch from past the durable end. The high watermark still waits for
    /// the leader's own durable end ([`LeaderState::on_log_end`]).
    pub fn on_log_appended(&mut self, end: Offset) {
        self.appended_end = self.appended_end.max(end);
    }

    /// The local log now starts at `log_start` (retention, DeleteRecords).
    pub fn on_log_start(&mut self, log_start: Offset) {
        self.log_start = log_start;
        self.high_watermark = self.high_watermark.max(log_start.min(self.log_end));
    }

    /// Waits (acks=all) until the high watermark reaches `end_offset` (the offset after the
    /// batch); answered now if it already has.
    pub fn await_ack(
        &mut self,
        id: u64,
        end_offset: Offset,
        deadline_ms: u64,
    ) -> Option<AckResult> {
        if self.high_watermark >= end_offset {
            return Some(AckResult { id, result: Ok(()) });
        }
        self.waiters.push(Waiter {
            id,
            end_offset,
            deadline_ms,
        });
        None
    }

    /// A follower's fetch: refused, answered with records from its offset, or told where
    /// its log diverged. Its fetch offset counts as its acknowledgement only when its log
    /// matches the leader's (no divergence).
    pub fn on_follower_fetch(
        &mut self,
        fetch: &FollowerFetch,
        cache: &EpochCache,
        now_ms: u64,
    ) -> (Result<FetchOutcome, FetchError>, Vec<AckResult>) {
        let mut out = Vec::new();
        let ours = self.partition.leader_epoch;
        let theirs = fetch.current_leader_epoch;
        if theirs < ours {
            return (Err(FetchError::FencedLeaderEpoch { ours, theirs }), out);
        }
        if theirs > ours {
            return (Err(FetchError::UnknownLeaderEpoch { ours, theirs }), out);
        }
        if !self.followers.contains_key(&fetch.replica) {
            return (Err(FetchError::NotReplica(fetch.replica)), out);
        }
        if let Some(last) = fetch.last_fetched_epoch {
            if let Some((epoch, end)) = cache.end_offset_for(last, self.appended_end) {
                if epoch < last || end < fetch.fetch_offset {
                    let d = FetchOutcome::Diverging {
                        epoch,
                        end_offset: end,
                        high_watermark: self.high_watermark,
                    };
                    return (Ok(d), out);
                }
            }
        }
        if fetch.fetch_offset < self.log_start || fetch.fetch_offset > self.appended_end {
            let e = FetchError::OffsetOutOfRange {
                offset: fetch.fetch_offset,
                log_start: self.log_start,
                log_end: self.appended_end,
            };
            return (Err(e), out);
        }
        let leader_end = self.log_end;
        if let Some(p) = self.followers.get_mut(&fetch.replica) {
            if fetch.fetch_offset >= leader_end {
                p.caught_up_ms = now_ms;
            } else if fetch.fetch_offset >= p.last_fetch_leader_end {
                p.caught_up_ms = p.caught_up_ms.max(p.last_fetch_ms);
            }
            p.log_end = fetch.fetch_offset;
            p.last_fetch_ms = now_ms;
            p.last_fetch_leader_end = leader_end;
        }
        self.advance(&mut out);
        self.consider_expand(fetch.replica);
        let read = FetchOutcome::Read {
            from: fetch.fetch_offset,
            high_watermark: self.high_watermark,
        };
        (Ok(read), out)
    }

    /// Time passed: expired acks=all waits, lagging ISR members.
    pub fn tick(&mut self, now_ms: u64) -> Vec<AckResult> {
        let mut out = Vec::new();
        self.waiters.retain(|w| {
            if w.deadline_ms <= now_ms {
                out.push(AckResult {
                    id: w.id,
                    result: Err(AckError::Timeout),
                });
                false
            } else {
                true
            }
        });
        if self.pending.is_none() {
            let lag = self.config.replica_lag_time_max_ms;
            let lagging: Vec<BrokerId> = self
                .partition
                .isr
                .iter()
                .copied()
                .filter(|r| {
                    self.followers
                        .get(r)
                        .is_some_and(|p| now_ms.saturating_sub(p.caught_up_ms) > lag)
                })
                .collect();
            if !lagging.is_empty() {
                let new_isr = self
                    .partition
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| !lagging.contains(r))
                    .collect();
                self.propose(new_isr);
            }
        }
        out
    }

    /// The ISR change to send to the controller now, if any (a new one, or one whose
    /// outcome has not shown after `alter_partition_retry_ms`).
    pub fn poll_alter_partition(&mut self, now_ms: u64) -> Option<IsrChange> {
        let retry = self.config.alter_partition_retry_ms;
        let p = self.pending.as_mut().filter(|p| !p.parked)?;
        if self.unsent || now_ms.saturating_sub(p.sent_ms) >= retry {
            self.unsent = false;
            p.sent_ms = now_ms;
            return Some(p.change.clone());
        }
        None
    }

    /// The controller refused `change`. With `stale` (its epochs were not the partition's
    /// any more: Kafka's INVALID_UPDATE_VERSION) it may have been applied under an answer
    /// that was lost, so it stays in the maximal ISR, unsent, until the image shows the
    /// partition's new state. Otherwise it was not applied: the next change may be proposed,
    /// and a refused addition no longer holds the high watermark. A refusal of anything but
    /// the change in flight is ignored.
    pub fn on_alter_partition_refused(
        &mut self,
        change: &IsrChange,
        stale: bool,
    ) -> Vec<AckResult> {
        let mut out = Vec::new();
        if self.pending.as_ref().is_none_or(|p| p.change != *change) {
            return out;
        }
        if stale {
            if let Some(p) = self.pending.as_mut() {
                p.parked = true;
            }
            self.unsent = false;
            return out;
        }
        self.pending = None;
        self.unsent = false;
        self.advance(&mut out);
        out
    }

    /// The leadership ended (a newer leader epoch, the partition deleted, shutdown): every
    /// acks=all wait fails with NOT_LEADER_OR_FOLLOWER.
    pub fn stop(self) -> Vec<AckResult> {
        self.waiters
            .into_iter()
            .map(|w| AckResult {
                id: w.id,
                result: Err(AckError::NotLeader),
            })
            .collect()
    }

    fn propose(&mut self, new_isr: Vec<BrokerId>) {
        debug_assert!(self.pending.is_none());
        debug_assert!(new_isr.contains(&self.local));
        let change = IsrChange {
            leader_epoch: self.partition.leader_epoch,
            partition_epoch: self.partition.partition_epoch,
            new_isr,
        };
        self.pending = Some(PendingIsr {
            change,
            sent_ms: 0,
            parked: false,
        });
        self.unsent = true;
    }

    fn consider_expand(&mut self, replica: BrokerId) {
        if self.pending.is_some() || self.partition.isr.contains(&replica) {
            return;
        }
        let Some(p) = self.followers.get(&replica) else {
            return;
        };
        if p.log_end >= self.high_watermark && p.log_end >= self.epoch_start_offset {
            let mut new_isr = self.partition.isr.clone();
            new_isr.push(replica);
            self.propose(new_isr);
        }
    }

    /// Moves the high watermark as far as the maximal ISR allows and completes waits.
    fn advance(&mut self, out: &mut Vec<AckResult>) {
        if self.partition.isr.len() >= self.config.min_insync_replicas {
            let mut hw = self.log_end;
            for r in self.maximal_isr() {
                if r == self.local {
                    continue;
                }
                // A member that has not fetched in this leadership holds the mark.
                let end = self.followers.get(&r).map_or(-1, |p| p.log_end);
                hw = hw.min(end);
            }
            if hw > self.high_watermark {
                self.high_watermark = hw;
            }
        }
        debug_assert!(
            self.high_watermark <= self.log_end,
            "the high watermark passed the leader's durable end"
        );
        let hw = self.high_watermark;
        self.waiters.retain(|w| {
            if w.end_offset <= hw {
                out.push(AckResult {
                    id: w.id,
                    result: Ok(()),
                });
                false
            } else {
                true
            }
        });
    }
}

/// The fetch a follower sends: from its durable log end, with the epochs it knows.
pub fn fetch_request(
    local: BrokerId,
    current_leader_epoch: Epoch,
    durable_log_end: Offset,
    cache: &EpochCache,
) -> FollowerFetch {
    FollowerFetch {
        replica: local,
        fetch_offset: durable_log_end,
        current_leader_epoch,
        last_fetched_epoch: cache.latest_epoch(),
    }
}

/// Where a follower truncates when the leader answers that its log diverged at `epoch`,
/// whose batches end at `end_offset` on the leader. `complete` is false when the follower's
/// log does not know `epoch`: it truncates to the end of its largest older epoch and fetches
/// again, which finds the next divergence point (KIP-279).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub offset: Offset,
    pub complete: bool,
}

/// See [`Truncation`]. `log_end` is the follower's log end (written, durable or not).
pub fn truncation_on_diverging(
    cache: &EpochCache,
    log_end: Offset,
    epoch: Epoch,
    end_offset: Offset,
) -> Truncation {
    match cache.end_offset_for(epoch, log_end) {
        Some((ours, our_end)) if ours == epoch => Truncation {
            offset: our_end.min(end_offset).min(log_end),
            complete: true,
        },
        Some((_, our_end)) => Truncation {
            offset: our_end.min(log_end),
            complete: false,
        },
        None => Truncation {
            offset: end_offset.min(log_end),
            complete: true,
        },
    }
}

/// A follower's high watermark: the leader's, capped by what it has.
pub fn follower_high_watermark(leader_high_watermark: Offset, log_end: Offset) -> Offset {
    leader_high_watermark.min(log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(isr: &[BrokerId]) -> Partition {
        Partition {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 7,
        }
    }

    fn config(min: usize) -> ReplicaConfig {
        ReplicaConfig {
            min_insync_replicas: min,
            replica_lag_time_max_ms: 100,
            alter_partition_retry_ms: 50,
        }
    }

    fn cache(pairs: &[(Epoch, Offset)]) -> EpochCache {
        EpochCache::from_pairs(pairs).unwrap()
    }

    /// A fetch that must be answered with records; its completed waits.
    fn read(l: &mut LeaderState, f: FollowerFetch, c: &EpochCache, now: u64) -> Vec<AckResult> {
        let (r, acks) = l.on_follower_fetch(&f, c, now);
        assert!(matches!(r, Ok(FetchOutcome::Read { .. })), "{r:?}");
        acks
    }

    fn fetch(replica: BrokerId, offset: Offset, last: Option<Epoch>) -> FollowerFetch {
        FollowerFetch {
            replica,
            fetch_offset: offset,
            current_leader_epoch: 4,
            last_fetched_epoch: last,
        }
    }

    /// Guards a takeover: a leader alone in its ISR commits its whole log at once (nobody
    /// else holds the mark); with followers in the ISR it keeps the mark it knew.
    #[test]
    fn a_new_leader_alone_in_its_isr_commits_its_log() {
        let alone = LeaderState::new(1, &partition(&[1]), 0, 30, 10, 0, config(1));
        assert_eq!(alone.high_watermark(), 30);
        let strict = LeaderState::new(1, &partition(&[1]), 0, 30, 10, 0, config(2));
        assert_eq!(strict.high_watermark(), 10);
        let shared = LeaderState::new(1, &partition(&[1, 2, 3]), 0, 30, 10, 0, config(2));
        assert_eq!(shared.high_watermark(), 10);
    }

    /// Guards tail reads: followers sent records the leader has appended but not yet made
    /// durable fetch from past its durable end; that is no error and no divergence, but
    /// the high watermark waits for the leader's own durable end. Past the appended end a
    /// fetch is still out of range (or diverging, with its epoch).
    #[test]
    fn followers_ahead_of_the_leaders_durable_end_wait_for_it() {
        let c = cache(&[(4, 0)]);
        let mut l = LeaderState::new(1, &partition(&[1, 2, 3]), 0, 0, 0, 0, config(2));
        l.on_log_end(10);
        assert_eq!(l.await_ack(1, 20, 1_000), None);
        l.on_log_appended(20);
        let (r, _) = l.on_follower_fetch(&fetch(2, 21, None), &c, 1);
        assert!(
            matches!(r, Err(FetchError::OffsetOutOfRange { .. })),
            "{r:?}"
        );
        // Past the appended end in the leader's epoch: diverging at the appended end.
        let (r, _) = l.on_follower_fetch(&fetch(2, 21, Some(4)), &c, 1);
        assert!(
            matches!(r, Ok(FetchOutcome::Diverging { end_offset: 20, .. })),
            "{r:?}"
        );
        assert!(read(&mut l, fetch(2, 20, Some(4)), &c, 1).is_empty());
        assert!(read(&mut l, fetch(3, 20, Some(4)), &c, 2).is_empty());
        assert_eq!(
            l.high_watermark(),
            10,
            "bounded by the leader's durable end"
        );
        assert_eq!(
            l.on_log_end(20),
            vec![AckResult {
                id: 1,
                result: Ok(())
            }]
        );
        assert_eq!(l.high_watermark(), 20);
    }

    #[test]
    fn high_watermark_is_the_minimum_over_the_isr_and_acks_complete() {
        let c = cache(&[(4, 0)]);
        let mut l = LeaderState::new(1, &partition(&[1, 2, 3]), 0, 0, 0, 0, config(2));
        assert_eq!(l.check_append(), Ok(()));
        assert_eq!(l.on_log_end(10), vec![]);
        assert_eq!(l.await_ack(1, 10, 1_000), None);
        // One follower is not enough: the third ISR member holds the mark.
        let (r, acks) = l.on_follower_fetch(&fetch(2, 10, Some(4)), &c, 1);
        assert!(matches!(r, Ok(FetchOutcome::Read { from: 10, .. })));
        assert!(acks.is_empty());
        assert_eq!(l.high_watermark(), 0);
        let (_, acks) = l.on_follower_fetch(&fetch(3, 6, Some(4)), &c, 2);
        assert_eq!(l.high_watermark(), 6);
        assert!(acks.is_empty());
        let (_, acks) = l.on_follower_fetch(&fetch(3, 10, Some(4)), &c, 3);
        assert_eq!(
            acks,
            vec![AckResult {
                id: 1,
                result: Ok(())
            }]
        );
        assert_eq!(l.high_watermark(), 10);
        // Already covered: answered at once.
        assert_eq!(
            l.await_ack(2, 9, 5),
            Some(AckResult {
                id: 2,
                result: Ok(())
            })
        );
    }

    #[test]
    fn lagging_member_leaves_the_isr_and_waits_fail_after_append() {
        let c = cache(&[(4, 0)]);
        let mut l = LeaderState::new(1, &partition(&[1, 2]), 0, 0, 0, 0, config(2));
        l.on_log_end(5);
        assert_eq!(l.await_ack(9, 5, 10_000), None);
        read(&mut l, fetch(2, 0, Some(4)), &c, 10);
        // No catch-up for longer than the lag time: a shrink is proposed, once.
        assert!(l.tick(50).is_empty());
        assert_eq!(l.poll_alter_partition(50), None);
        l.tick(200);
        let change = l.poll_alter_partition(200).unwrap();
        assert_eq!(change.new_isr, vec![1]);
        assert_eq!((change.leader_epoch, change.partition_epoch), (4, 7));
        assert_eq!(l.poll_alter_partition(210), None);
        // Resent when its outcome does not show.
        assert_eq!(l.poll_alter_partition(260), Some(change));
        // The maximal ISR still counts the leaving member: no advance past it.
        assert_eq!(l.maximal_isr(), vec![1, 2]);
        // The controller commits it: the ISR is below min, the wait fails, no more appends.
        let mut shrunk = partition(&[1]);
        shrunk.partition_epoch = 8;
        let acks = l.update_partition(&shrunk, 300);
        assert_eq!(
            acks,
            vec![AckResult {
                id: 9,
                result: Err(AckError::NotEnoughReplicasAfterAppend)
            }]
        );
        assert_eq!(
            l.check_append(),
            Err(AckError::NotEnoughReplicas { isr: 1, min: 2 })
        );
        // Strict min ISR: the mark stays although the leader alone has everything.
        assert_eq!(l.high_watermark(), 0);
    }

    #[test]
    fn caught_up_replica_rejoins_through_the_maximal_isr() {
        let c = cache(&[(4, 0)]);
        let mut p = partition(&[1, 2]);
        let mut l = LeaderState::new(1, &p, 0, 0, 0, 0, config(1));
        l.on_log_end(8);
        read(&mut l, fetch(2, 8, Some(4)), &c, 1);
        assert_eq!(l.high_watermark(), 8);
        // Replica 3 is behind the mark: not yet.
        read(&mut l, fetch(3, 4, Some(4)), &c, 2);
        assert_eq!(l.poll_alter_partition(2), None);
        read(&mut l, fetch(3, 8, Some(4)), &c, 3);
        let change = l.poll_alter_partition(3).unwrap();
        assert_eq!(change.new_isr, vec![1, 2, 3]);
        // While it is in flight, the new member holds the mark too (maximal ISR).
        l.on_log_end(12);
        read(&mut l, fetch(2, 12, Some(4)), &c, 4);
        assert_eq!(l.high_watermark(), 8);
        read(&mut l, fetch(3, 12, Some(4)), &c, 5);
        assert_eq!(l.high_watermark(), 12);
        p.isr = vec![1, 2, 3];
        p.partition_epoch = 8;
        l.update_partition(&p, 6);
        assert_eq!(l.maximal_isr(), vec![1, 2, 3]);
        assert_eq!(l.poll_alter_partition(100), None);
    }

    #[test]
    fn fetches_are_fenced_and_divergence_is_reported() {
        let c = cache(&[(1, 0), (4, 10)]);
        let mut l = LeaderState::new(1, &partition(&[1, 2, 3]), 0, 15, 0, 0, config(2));
        let mut f = fetch(2, 12, Some(4));
        f.current_leader_epoch = 3;
        assert_eq!(
            l.on_follower_fetch(&f, &c, 1).0,
            Err(FetchError::FencedLeaderEpoch { ours: 4, theirs: 3 })
        );
        f.current_leader_epoch = 5;
        assert_eq!(
            l.on_follower_fetch(&f, &c, 1).0,
            Err(FetchError::UnknownLeaderEpoch { ours: 4, theirs: 5 })
        );
        assert_eq!(
            l.on_follower_fetch(&fetch(9, 0, None), &c, 1).0,
            Err(FetchError::NotReplica(9))
        );
        assert!(matches!(
            l.on_follower_fetch(&fetch(2, 16, None), &c, 1).0,
            Err(FetchError::OffsetOutOfRange { .. })
        ));
        // Past the leader's end of its own last epoch: that is a divergence, not a range.
        assert!(matches!(
            l.on_follower_fetch(&fetch(2, 16, Some(4)), &c, 1).0,
            Ok(FetchOutcome::Diverging {
                epoch: 4,
                end_offset: 15,
                ..
            })
        ));
        // The follower wrote 14 offsets in epoch 2, which the leader never had: diverged at
        // the end of epoch 1 (offset 10).
        let (r, _) = l.on_follower_fetch(&fetch(2, 14, Some(2)), &c, 1);
        assert_eq!(
            r,
            Ok(FetchOutcome::Diverging {
                epoch: 1,
                end_offset: 10,
                high_watermark: 0
            })
        );
        // A diverging fetch is no acknowledgement.
        assert_eq!(l.follower_log_end(2), Some(-1));
    }

    #[test]
    fn truncation_finds_the_divergence_point() {
        // Follower: epochs 1 @0, 2 @10, log end 14. Leader: epoch 1 ends at 8.
        let f = cache(&[(1, 0), (2, 10)]);
        assert_eq!(
            truncation_on_diverging(&f, 14, 1, 8),
            Truncation {
                offset: 8,
                complete: true
            }
        );
        // The leader's epoch 3 is unknown here: cut to the end of our epoch 2, ask again.
        let g = cache(&[(1, 0), (2, 10)]);
        assert_eq!(
            truncation_on_diverging(&g, 14, 3, 12),
            Truncation {
                offset: 14,
                complete: false
            }
        );
        // Epoch 1 is older than anything here: our log has none of it.
        let h = cache(&[(2, 0)]);
        assert_eq!(
            truncation_on_diverging(&h, 14, 1, 5),
            Truncation {
                offset: 0,
                complete: true
            }
        );
        // An empty cache knows nothing: the leader's end bounds the log.
        assert_eq!(
            truncation_on_diverging(&EpochCache::default(), 14, 1, 5),
            Truncation {
                offset: 5,
                complete: true
            }
        );
    }

    #[test]
    fn refusals_clear_or_park_the_change_in_flight() {
        let c = cache(&[(4, 0)]);
        let mut l = LeaderState::new(1, &partition(&[1, 2]), 0, 0, 0, 0, config(1));
        l.on_log_end(4);
        read(&mut l, fetch(2, 4, Some(4)), &c, 1);
        read(&mut l, fetch(3, 4, Some(4)), &c, 2);
        let change = l.poll_alter_partition(2).unwrap();
        // A refusal of another change is ignored.
        let other = IsrChange {
            new_isr: vec![1],
            ..change.clone()
        };
        l.on_alter_partition_refused(&other, false);
        assert_eq!(l.maximal_isr(), vec![1, 2, 3]);
        // Stale: kept in the maximal ISR, not resent.
        l.on_alter_partition_refused(&change, true);
        assert_eq!(l.maximal_isr(), vec![1, 2, 3]);
        assert_eq!(l.poll_alter_partition(10_000), None);
        // Not applied: gone, and the next change may be proposed.
        let mut l2 = LeaderState::new(1, &partition(&[1, 2]), 0, 0, 0, 0, config(1));
        l2.on_log_end(4);
        read(&mut l2, fetch(2, 4, Some(4)), &c, 1);
        read(&mut l2, fetch(3, 4, Some(4)), &c, 2);
        let change = l2.poll_alter_partition(2).unwrap();
        l2.on_alter_partition_refused(&change, false);
        assert_eq!(l2.maximal_isr(), vec![1, 2]);
        read(&mut l2, fetch(3, 4, Some(4)), &c, 3);
        assert_eq!(l2.poll_alter_partition(3), Some(change));
    }

    #[test]
    fn waits_end_on_deadline_and_on_lost_leadership() {
        let mut l = LeaderState::new(1, &partition(&[1, 2]), 0, 0, 0, 0, config(1));
        l.on_log_end(3);
        assert_eq!(l.await_ack(1, 3, 100), None);
        assert_eq!(l.await_ack(2, 3, 500), None);
        assert_eq!(
            l.tick(100),
            vec![AckResult {
                id: 1,
                result: Err(AckError::Timeout)
            }]
        );
        assert_eq!(
            l.stop(),
            vec![AckResult {
                id: 2,
                result: Err(AckError::NotLeader)
            }]
        );
    }
}
