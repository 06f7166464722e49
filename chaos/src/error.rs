//! The failures of a chaos run's own machinery (not of the cluster under test: those are
//! findings, reported by the checker).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(
        "network namespaces, nftables, tc and loop-mounted filesystems need root: run as root, \
         or pass --net loopback (kills and pauses only; partitions, bandwidth and disk faults \
         are skipped)"
    )]
    NotRoot,
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node {id}: {reason}")]
    Node { id: u32, reason: String },
    #[error("kafka client: {0}")]
    Client(String),
    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout { what: String, after_ms: u64 },
    #[error("{0}")]
    Options(String),
    #[error("interrupted: the fault in force was healed and the nodes stopped; no verdict")]
    Interrupted,
}

impl ChaosError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ChaosError {
        let path = path.into();
        move |source| ChaosError::Io { path, source }
    }
}
