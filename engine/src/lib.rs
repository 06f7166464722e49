//! # tern-engine: the partition log
//!
//! One [`Log`] is the on-disk log of one partition replica. It owns a directory of segment
//! files (`<base offset>.log`, each with a sparse offset index `.index` and a time index
//! `.timeindex`), and knows nothing about networking.
//!
//! ## The tour
//!
//! * [`batch`] validates Kafka RecordBatch v2 blobs (magic, length, CRC32C, record count) and
//!   writes the broker's fields into them (base offset; LogAppendTime). Records are stored as
//!   the client sent them: compressed batches stay compressed.
//! * [`buf`] is the 4096-aligned memory every direct write uses.
//! * [`storage`] puts all IO behind a trait: io_uring + O_DIRECT in production, a
//!   fault-injecting in-memory disk in the crash tests.
//! * [`index`] holds the offset and time indexes and their file format.
//! * [`log`] is the partition log itself: group commit, reads as slices, roll, truncate,
//!   delete-records, retention and recovery.
//! * [`epoch`] is a replica's leader epoch cache (which epoch wrote where); the log keeps it
//!   durable and stamps client batches with the epoch it leads in.
//! * [`journal`] is the shard journal: under `flush = always` one write-ahead journal makes
//!   the appends of all a shard's logs durable with one write, and replays them after a
//!   crash; the segments are then synced by its checkpoints.
//!
//! ## Invariants
//!
//! * Offsets only grow; a batch's bytes on disk are the bytes a Fetch response carries.
//! * An append completes only when its bytes are durable under the partition's flush policy
//!   (`always`: in the shard journal, or written to the segment with RWF_DSYNC or followed
//!   by fdatasync).
//! * Readers see only data whose write has completed ([`Log::readable_end`]); a read never
//!   returns a partial batch.
//! * A failed write or sync poisons the log: every later append returns the original error
//!   until the log is reopened (and recovered). ENOSPC is the exception: the append is
//!   refused, nothing acknowledged is touched, and later appends may succeed.
//! * Recovery truncates the active segment at the first batch that is torn, corrupt, zero
//!   padding or out of offset sequence, so whatever was acknowledged under `flush = always`
//!   survives a crash at any instant.
//!
//! The file formats are in `engine/FORMAT.md`.

pub mod batch;
pub mod buf;
pub mod config;
pub mod epoch;
pub mod error;
pub mod index;
pub mod journal;
pub mod log;
pub mod producer;
pub mod storage;

pub use config::{FlushPolicy, LogConfig, TimestampType};
pub use error::{AppendError, LogError, OpenError};
pub use journal::{Journal, JournalConfig, JournalError};
pub use log::{AppendInfo, Log, LogStats, Offset, ReadResult, Recovery, Slice};
pub use storage::memory::MemStorage;
pub use storage::uring::{DirectIo, UringStorage};
