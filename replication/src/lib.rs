//! # tern-replication: the cluster layer
//!
//! What a single `tern serve` does not know alone: which brokers exist, which of them leads
//! each partition, and how nodes talk to each other.
//!
//! * The controller: a metadata image built from records (brokers, topics, partitions,
//!   producer-id blocks), replicated by a Raft quorum of the voter nodes (tikv's `raft`
//!   crate, `RawNode`: no IO inside). Every decision (placement, election, fencing) is a
//!   pure function of the image; the quorum and the controller are state machines driven by
//!   messages and a clock, so a whole quorum runs deterministically in virtual time.
//! * [`image`]: the metadata image and its records; `apply` refuses any record that would
//!   break an invariant (leader ∈ ISR ⊆ replicas, epochs only grow, unique names and ids).
//! * [`decide`]: the controller's decisions as pure functions of the image (registration,
//!   heartbeats and fencing, elections, placement, topics, producer ids) and the one table
//!   of Kafka error codes.
//! * [`codec`]: the byte formats of record batches, image snapshots and node-to-node frames
//!   (`replication/FORMAT.md`); decoders never panic on any input.
//! * [`quorum`]: raft-rs `RawNode` glue without IO: persist batches, messages held until
//!   durable, committed entries; the [`quorum::QuorumLog`] persistence trait.
//! * [`raft_log`]: [`raft_log::FileQuorumLog`], the durable `QuorumLog`: one append-only file
//!   of checksummed records, torn tails truncated, damage to synced records refused, rewritten
//!   through a synced rename when it outgrows the state.
//! * [`epoch`]: a replica's leader epoch cache (KIP-101/279, the engine's, which keeps it
//!   durable next to the log): where each epoch's batches start, where they end.
//! * [`replica`]: the replica protocol of a partition without IO: the leader's high
//!   watermark over the maximal ISR, acks=all waits, ISR shrink and expand, epoch fencing
//!   of follower fetches, the follower's truncation.
//! * [`fetch`]: the replica fetch frames a follower shard and its leader exchange on a
//!   replica stream.
//! * [`controller`]: one controller node (`handle_*` inputs, `poll_*` outputs, virtual time).
//! * [`sim`]: the seeded simulator of a controller quorum and its brokers, with faults.
//! * [`node`]: the driver thread of a cluster node: controller + transport + Raft log +
//!   clock, this broker's registration and heartbeats, requests routed to the leader, and
//!   the committed image published to the broker.
//! * [`transport`]: QUIC (quinn) between nodes, one stream per direction and peer, framed
//!   messages; [`tls`]: mutual TLS with node certificates from the cluster's CA, and the
//!   development certificates of `tern cert dev`.
//!
//! ## Invariants
//!
//! * The Raft log and hard state are durable before any message that depends on them is
//!   sent.
//! * The image changes only by applying committed records, in log order, on every node
//!   alike.

pub mod codec;
pub mod controller;
pub mod decide;
pub mod fetch;
/// The leader epoch cache, kept by the engine next to each partition's log.
pub use tern_engine::epoch;
pub mod image;
pub mod node;
pub mod quorum;
pub mod raft_log;
pub mod replica;
pub mod sim;
pub mod tls;
pub mod transport;
