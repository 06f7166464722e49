//! The log's leader epochs: which epoch wrote each batch (stamped in the batch's
//! `partitionLeaderEpoch`), and the durable epoch cache `leader-epoch.checkpoint` that
//! answers "where does epoch E end?" (see [`crate::epoch`]).
//!
//! ## Durability rule
//!
//! An epoch entry is durable before any batch it covers is acknowledged: a leader persists
//! its epoch when it takes the partition ([`Log::become_leader`]), before it stamps a batch
//! with it; a follower's append that brings a new epoch persists the cache before it
//! completes ([`Log::append_replicated`]). So after a crash the file names every epoch of
//! the recovered log; entries past the recovered end (data that was not durable) are dropped
//! in memory at open, and the next write of the file drops them on disk. A truncation
//! rewrites the file after the log is cut.
//!
//! The file is written through a temporary file, fdatasync, rename and a directory sync. A
//! failed write poisons the log, like a failed segment write.

use std::sync::Arc;

use super::{Inner, Log, Shared};
use crate::epoch::{self, Epoch, EpochCache};
use crate::error::{LogError, OpenError};
use crate::storage::{FileMode, Storage, StorageFile};

/// Reads the epoch cache of the log in `dir` (empty without a file) and fits it to the log
/// recovered as `log_start..end`. Returns the cache and whether it differs from the file.
pub(super) async fn load<S: Storage>(
    storage: &S,
    dir: &std::path::Path,
    names: &[String],
    log_start: i64,
    end: i64,
) -> Result<(EpochCache, bool), OpenError> {
    if !names.iter().any(|n| n == epoch::FILE) {
        return Ok((EpochCache::default(), false));
    }
    let path = dir.join(epoch::FILE);
    let io = |e| OpenError::io(&path, e);
    let f = storage.open(&path, FileMode::Buffered).await.map_err(io)?;
    let len = f.len().await.map_err(io)?;
    let b = f.read_at(0, len as usize).await.map_err(io)?;
    let mut cache = epoch::decode(&b).map_err(|e| {
        OpenError::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("leader epoch cache is damaged ({e}); the replica cannot check its log against its leader"),
            ),
        )
    })?;
    let before = cache.clone();
    cache.truncate_from_end(end);
    cache.truncate_from_start(log_start);
    let changed = cache != before;
    Ok((cache, changed))
}

impl<S: Storage> Inner<S> {
    /// Records that a batch of `epoch` starts at `base` (a replicated or replayed batch):
    /// true if the cache changed. An epoch older than the latest is refused.
    pub(super) fn note_epoch(
        &mut self,
        epoch: Epoch,
        base: i64,
    ) -> Result<bool, epoch::EpochError> {
        let changed = self.epochs.assign(epoch, base)?;
        if changed {
            self.epochs_version += 1;
        }
        Ok(changed)
    }

    pub(super) fn epochs_dirty(&self) -> bool {
        self.epochs_version != self.epochs_persisted
    }
}

impl<S: Storage> Shared<S> {
    /// Writes the epoch cache if it changed since it was last written. One write at a time;
    /// a failure poisons the log.
    pub(super) async fn persist_epochs(&self) -> Result<(), LogError> {
        let _one = self.epochs_lock.lock().await;
        let (storage, dir, bytes, version) = {
            let i = self.inner.borrow();
            if !i.epochs_dirty() {
                return Ok(());
            }
            if let Some(e) = &i.poisoned {
                return Err(LogError::Poisoned {
                    dir: i.dir.clone(),
                    source: e.clone(),
                });
            }
            (
                i.storage.clone(),
                i.dir.clone(),
                epoch::encode(&i.epochs),
                i.epochs_version,
            )
        };
        let dst = dir.join(epoch::FILE);
        let tmp = dir.join(format!("{}.tmp", epoch::FILE));
        let written = async {
            let f = storage.open(&tmp, FileMode::Buffered).await?;
            f.set_len(0).await?;
            f.write_bytes_at(bytes, 0).await?;
            f.sync_data().await?;
            storage.rename(&tmp, &dst).await?;
            storage.sync_dir(&dir).await
        }
        .await;
        let mut i = self.inner.borrow_mut();
        match written {
            Ok(()) => {
                i.epochs_persisted = i.epochs_persisted.max(version);
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %dst.display(), error = %e, "leader epoch cache write failed: log poisoned");
                let source = Arc::new(e);
                i.poisoned = Some(source.clone());
                let refusal = crate::AppendError::Poisoned {
                    dir: i.dir.clone(),
                    source: source.clone(),
                };
                i.fail_waiters(&refusal);
                Err(LogError::Io { path: dst, source })
            }
        }
    }
}

impl<S: Storage> Log<S> {
    /// This replica leads the partition in `epoch` from now on: the epoch starts at the log
    /// end (durably, before this returns) and every client append is stamped with it.
    /// Taking the epoch the log already leads in is a no-op; an epoch older than the log's
    /// latest is refused.
    pub async fn become_leader(&self, epoch: Epoch) -> Result<(), LogError> {
        {
            let mut i = self.shared.inner.borrow_mut();
            let end = i.next_offset;
            i.note_epoch(epoch, end)?;
            i.leader_epoch = Some(epoch);
        }
        self.shared.persist_epochs().await
    }

    /// This replica stops leading: client appends are no longer stamped (the caller refuses
    /// them) until [`Log::become_leader`] again.
    pub fn stop_leading(&self) {
        self.shared.inner.borrow_mut().leader_epoch = None;
    }

    /// The epoch client appends are stamped with, while this replica leads.
    pub fn leader_epoch(&self) -> Option<Epoch> {
        self.shared.inner.borrow().leader_epoch
    }

    /// A copy of the epoch cache (entries up to the log end).
    pub fn epochs(&self) -> EpochCache {
        self.shared.inner.borrow().epochs.clone()
    }

    /// The epoch of the last batch in the log (a follower's `last_fetched_epoch`).
    pub fn latest_epoch(&self) -> Option<Epoch> {
        self.shared.inner.borrow().epochs.latest_epoch()
    }

    /// Kafka's OffsetForLeaderEpoch on this log: the largest epoch at or below `epoch` that
    /// the log has and the offset where it ends (see [`EpochCache::end_offset_for`]); the
    /// latest epoch ends at the log end (queued appends included, as Kafka's log end).
    pub fn end_offset_for_epoch(&self, epoch: Epoch) -> Option<(Epoch, i64)> {
        let i = self.shared.inner.borrow();
        i.epochs.end_offset_for(epoch, i.next_offset)
    }
}
