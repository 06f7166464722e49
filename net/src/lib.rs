//! # tern-net: shards speaking the Kafka protocol
//!
//! The broker's data path, one thread per core:
//!
//! * [`server`] starts a pinned thread per configured core, each with its own io_uring
//!   runtime (tokio-uring) and its own SO_REUSEPORT listener, and stops them gracefully.
//! * [`conn`] reads request frames (bounded by `socket.request.max.bytes`) and answers them in
//!   order; [`api`] decodes requests with the `kafka-protocol` crate and runs the handlers.
//! * [`shard`] owns the partition logs placed on a shard; [`router`] knows the placement
//!   and reaches another shard's queue. A request that touches partitions of several shards
//!   is split per partition and reassembled in request order.
//! * `partition` holds a partition's log and replica state (role, high watermark, acks=all
//!   waits); [`replicate`] gives partitions their roles from the cluster's image, runs the
//!   follower fetch loops and serves the followers' replica streams.
//! * [`meta`] publishes topic metadata as immutable snapshots (lock-free reads); [`admin`]
//!   is its single writer.
//! * [`metrics`] counts per shard without locks and serves them as Prometheus text on
//!   `metrics.listener`.
//! * [`error`] holds the typed errors that cross these modules; [`edge`] is the one table
//!   from them to Kafka's error codes, used only where responses are encoded.
//! * [`surface`] is the protocol table of `net/PROTOCOL.md`: what Kafka 4.1 serves, what
//!   Tern serves and why the rest is refused.
//! * [`wire`] writes Fetch responses without copying records: memory pieces with vectored
//!   writes, file pieces with io_uring splice.
//!
//! Invariants: no lock guards a log (each log lives on one shard thread); no panic is
//! reachable from network input; a partition's appends are queued in arrival order.

pub mod admin;
pub mod alloc;
pub mod api;
pub mod client;
pub mod cluster;
pub mod config_map;
pub mod conn;
pub mod edge;
pub mod error;
pub mod group;
pub mod meta;
pub mod metrics;
pub mod node_meta;
pub(crate) mod partition;
pub mod producer_ids;
pub mod replicate;
pub mod router;
pub mod server;
pub mod shard;
pub mod surface;
pub mod wire;

pub use server::{Broker, StartError};
