//! # tern-bench: Tern's benchmark harness
//!
//! Every figure is reported next to a baseline measured in the same run on the same machine
//! (the raw disk through the same io_uring ring, without the broker), and as the ratio
//! between the two: absolute numbers drift on shared machines, ratios hold.
//!
//! ## The tour
//!
//! * [`engine`] runs `tern bench engine`: the partition log's figures, one module each:
//!   [`throughput`] (sequential appends, `flush = never`), [`latency`] (durable appends, one
//!   writer), [`group_commit`] (64 concurrent durable appenders) and [`recovery`] (reopen
//!   after a clean close and after losing the indexes).
//! * [`raw`] is the baseline: the same io_uring O_DIRECT writes without an engine.
//! * [`workload`] builds the RecordBatches appended; [`machine`] describes the machine a
//!   result belongs to; [`report`] holds the serde report (units in every field name) and
//!   the table printed for humans; [`scratch`] owns the data directory; [`cpu`] reads the
//!   thread's CPU time, which tells a busy engine from a waiting one.
//!
//! * `tern bench run` / `suite` / `compare` measure a broker through the Kafka protocol, so
//!   they drive any Kafka-compatible broker: [`spec`] reads the workload files (the
//!   OpenMessaging Benchmark's shape), [`producer`] keeps each producer on its timeline of
//!   intended send times (no coordinated omission) and hands [`batcher`]'s RecordBatches to
//!   [`wire`]'s pipelined Produce connections, [`wire`] also holds the Fetch loop and admin
//!   calls, [`run`] runs the threads and phases of one workload, [`stats`] merges the
//!   threads' histograms, [`broker_report`] is the JSON/table/compare, [`plot`] the SVG,
//!   [`disk`] the raw-disk baseline of a broker run, [`floor`] the latency of an ideal
//!   group-committing broker on this disk (no network, no broker code), [`null_broker`] the
//!   opposite floor (a Kafka-protocol server that stores nothing and answers at once: what
//!   the client, the harness and the network cost), and [`suite`] starts local `tern serve`
//!   processes for the standard workloads (`bench/workloads/`).
//! * `tern bench transport` ([`transport`]) moves bytes between two nodes over the QUIC
//!   transport and over plain TCP on loopback, in one run: throughput and CPU per GB.
//!
//! Criterion micro-benchmarks of the engine's CPU cost live with the engine
//! (`engine/benches/`).

pub mod batcher;
pub mod broker_report;
pub mod cpu;
pub mod disk;
pub mod engine;
pub mod floor;
pub mod group_commit;
pub mod latency;
pub mod machine;
pub mod null_broker;
pub mod plot;
pub mod producer;
pub mod raw;
pub mod recovery;
pub mod report;
pub mod run;
pub mod scratch;
pub mod spec;
pub mod stats;
pub mod suite;
pub mod throughput;
pub mod transport;
pub mod wire;
pub mod workload;

pub use engine::{run as run_engine, EngineOptions};
pub use report::EngineReport;
