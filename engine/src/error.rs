//! Errors of the partition log, one enum per failure domain.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::batch::BatchError;
use crate::config::ConfigError;

/// Why an append was refused. Nothing of a refused append is readable or acknowledged.
#[derive(Debug, Clone, Error)]
pub enum AppendError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("batch of {len} bytes is larger than segment_bytes ({segment_bytes})")]
    BatchTooLarge { len: usize, segment_bytes: u32 },
    #[error("disk full writing {}: append refused; acknowledged data is untouched", path.display())]
    DiskFull { path: PathBuf },
    #[error(
        "log {} stopped accepting writes after an I/O failure ({source}); \
         reopen it to recover", dir.display()
    )]
    Poisoned {
        dir: PathBuf,
        source: Arc<io::Error>,
    },
    #[error(transparent)]
    Sequence(#[from] crate::producer::SequenceError),
    #[error("log is being truncated; retry the append")]
    Truncating,
    #[error("replicated batch at offset {got} does not follow the log end {expected}")]
    NotContiguous { expected: i64, got: i64 },
    #[error("replicated batch at offset {offset}: {source}")]
    Epoch {
        offset: i64,
        source: crate::epoch::EpochError,
    },
    #[error("log is closed")]
    Closed,
}

/// Why opening (and recovering) a log failed.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Why a read, lookup or maintenance operation failed.
#[derive(Debug, Clone, Error)]
pub enum LogError {
    #[error("offset {offset} is out of range: the log holds {log_start}..{log_end}")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: Arc<io::Error>,
    },
    #[error(
        "log {} stopped accepting writes after an I/O failure ({source}); \
         reopen it to recover", dir.display()
    )]
    Poisoned {
        dir: PathBuf,
        source: Arc<io::Error>,
    },
    #[error("log is closed")]
    Closed,
    #[error("leader epoch: {0}")]
    Epoch(#[from] crate::epoch::EpochError),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

impl OpenError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        OpenError::Io {
            path: path.into(),
            source,
        }
    }
}
