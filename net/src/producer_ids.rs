//! Producer ids for InitProducerId: unique for the life of the data directory.
//!
//! Ids are handed out from blocks of [`BLOCK_IDS`]: before the first id of a block is
//! given, the start of the *next* block is made durable in `__tern/producer-ids`
//! (temporary file, fsync, rename, directory fsync). After a restart allocation resumes at
//! that recorded start, so an id is never handed out twice, at the cost of skipping the
//! unused rest of a block. The file is 20 bytes, little-endian:
//!
//! ```text
//! 0   4  magic "TNPI"
//! 4   2  version u16 = 1
//! 6   2  reserved, 0
//! 8   8  next unallocated id i64
//! 16  4  crc u32            CRC32C of bytes 0..16
//! ```
//!
//! Allocation takes a mutex shared by the shards and, once per block, does a blocking
//! write + fsync on the calling shard's thread: rare enough (one per 1,000 producers) not to
//! deserve an IO path of its own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids per durable reservation.
pub const BLOCK_IDS: i64 = 1000;

const MAGIC: [u8; 4] = *b"TNPI";
const VERSION: u16 = 1;
const FILE_BYTES: usize = 20;

/// Why ids cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{}: not a producer id file (bad magic, version or checksum)", path.display())]
    Corrupt { path: PathBuf },
    #[error("producer ids exhausted")]
    Exhausted,
}

#[derive(Debug)]
struct Next {
    id: i64,
    reserved_end: i64,
}

/// The allocator.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    next: Mutex<Next>,
    /// In a cluster: the block the controller gave this broker, `[next, end)`.
    cluster_block: Mutex<(i64, i64)>,
}

fn encode(next: i64) -> [u8; FILE_BYTES] {
    let mut b = [0u8; FILE_BYTES];
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&next.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<i64> {
    if b.len() != FILE_BYTES || b[..4] != MAGIC || b[4..6] != VERSION.to_le_bytes() {
        return None;
    }
    if crc32c::crc32c(&b[..16]).to_le_bytes() != b[16..20] {
        return None;
    }
    Some(i64::from_le_bytes(b[8..16].try_into().ok()?))
}

impl ProducerIds {
    /// Opens (or starts) the allocator whose file lives in `meta_dir`.
    pub fn open(meta_dir: &Path) -> Result<ProducerIds, ProducerIdError> {
        let path = meta_dir.join("producer-ids");
        let io = |cause| ProducerIdError::Io {
            path: path.clone(),
            cause,
        };
        let start = match std::fs::read(&path) {
            Ok(b) => decode(&b).ok_or_else(|| ProducerIdError::Corrupt { path: path.clone() })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e)),
        };
        Ok(ProducerIds {
            path,
            next: Mutex::new(Next {
                id: start,
                reserved_end: start,
            }),
            cluster_block: Mutex::new((0, 0)),
        })
    }

    /// A producer id never handed out before.
    pub fn allocate(&self) -> Result<i64, ProducerIdError> {
        let mut next = match self.next.lock() {
            Ok(g) => g,
            // A panic elsewhere while holding the lock cannot leave `Next` half-updated:
            // fields are only written after the file is durable.
            Err(poisoned) => poisoned.into_inner(),
        };
        if next.id >= next.reserved_end {
            let end = next
                .reserved_end
                .checked_add(BLOCK_IDS)
                .ok_or(ProducerIdError::Exhausted)?;
            self.persist(end)?;
            next.reserved_end = end;
        }
        let id = next.id;
        next.id += 1;
        Ok(id)
    }

    /// In a cluster: the next id of the block the controller handed out, if any is left.
    pub fn take_from_cluster_block(&self) -> Option<i64> {
        let mut b = match self.cluster_block.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        (b.0 < b.1).then(|| {
            b.0 += 1;
            b.0 - 1
        })
    }

    /// In a cluster: a new block from the controller replaces what is left of the old one
    /// (the controller never hands an id out twice, so the rest is only skipped).
    pub fn set_cluster_block(&self, first: i64, size: i32) {
        let mut b = match self.cluster_block.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *b = (first, first.saturating_add(i64::from(size.max(0))));
    }

    fn persist(&self, next: i64) -> Result<(), ProducerIdError> {
        let io = |cause| ProducerIdError::Io {
            path: self.path.clone(),
            cause,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&encode(next)).map_err(io)?;
        f.sync_data().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Guards uniqueness across restarts and the refusal of a corrupt file.
    #[test]
    fn ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(b.allocate().unwrap(), BLOCK_IDS);
        let path = dir.path().join("producer-ids");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            ProducerIds::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
