//! The leader epoch cache of a partition replica (Kafka's KIP-101/KIP-279): for each leader
//! epoch that wrote to this replica's log, the offset of its first batch. From it a leader
//! answers "where does your log of epoch E end?" and a follower finds where its log diverged
//! from the leader's, so that truncation never depends on the high watermark.
//!
//! The [`crate::Log`] keeps one per partition, durable in `leader-epoch.checkpoint` (format
//! in `engine/FORMAT.md`, codec here: [`encode`], [`decode`]).
//!
//! Invariants (asserted by [`EpochCache::from_entries`] and kept by every method): epochs
//! strictly increase and start offsets never decrease along the entries.

/// A leader epoch (Kafka's `leader_epoch`, bumped by the controller at each election).
pub type Epoch = i32;
/// A log offset.
pub type Offset = i64;

/// The first offset written in one leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEntry {
    pub epoch: Epoch,
    pub start_offset: Offset,
}

/// Why entries do not make an epoch cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("epoch {epoch} is not after the latest epoch {latest}")]
    EpochNotAfter { epoch: Epoch, latest: Epoch },
    #[error(
        "epoch {epoch} starts at {start_offset}, before epoch {previous}'s start {previous_start}"
    )]
    StartBackwards {
        epoch: Epoch,
        start_offset: Offset,
        previous: Epoch,
        previous_start: Offset,
    },
    #[error("epoch {epoch} or its start offset {start_offset} is negative")]
    Negative { epoch: Epoch, start_offset: Offset },
}

/// See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache of `(epoch, start offset)` pairs, checked like [`EpochCache::from_entries`].
    pub fn from_pairs(pairs: &[(Epoch, Offset)]) -> Result<Self, EpochError> {
        Self::from_entries(
            pairs
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
    }

    /// A cache of `entries`, checked.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<Self, EpochError> {
        for (i, e) in entries.iter().enumerate() {
            if e.epoch < 0 || e.start_offset < 0 {
                return Err(EpochError::Negative {
                    epoch: e.epoch,
                    start_offset: e.start_offset,
                });
            }
            if let Some(p) = i.checked_sub(1).map(|j| entries[j]) {
                if e.epoch <= p.epoch {
                    return Err(EpochError::EpochNotAfter {
                        epoch: e.epoch,
                        latest: p.epoch,
                    });
                }
                if e.start_offset < p.start_offset {
                    return Err(EpochError::StartBackwards {
                        epoch: e.epoch,
                        start_offset: e.start_offset,
                        previous: p.epoch,
                        previous_start: p.start_offset,
                    });
                }
            }
        }
        Ok(EpochCache { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The epoch that wrote `offset`: the latest entry starting at or before it (`None`
    /// when every entry starts after it, or there is none).
    pub fn epoch_at(&self, offset: Offset) -> Option<Epoch> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        i.checked_sub(1).map(|j| self.entries[j].epoch)
    }

    /// The epoch of the last batch in the log (a follower's `last_fetched_epoch`).
    pub fn latest_epoch(&self) -> Option<Epoch> {
        self.latest().map(|e| e.epoch)
    }

    /// Records that a batch of `epoch` was appended at `start_offset`. Nothing changes when
    /// `epoch` is already the latest. A newer epoch replaces entries that start at or after
    /// `start_offset` (epochs that wrote nothing that is still in the log). An older epoch
    /// is refused: a leader never appends under an epoch older than one in its log.
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: Epoch, start_offset: Offset) -> Result<bool, EpochError> {
        if epoch < 0 || start_offset < 0 {
            return Err(EpochError::Negative {
                epoch,
                start_offset,
            });
        }
        if let Some(latest) = self.latest() {
            if epoch == latest.epoch {
                return Ok(false);
            }
            if epoch < latest.epoch {
                return Err(EpochError::EpochNotAfter {
                    epoch,
                    latest: latest.epoch,
                });
            }
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(true)
    }

    /// Kafka's OffsetForLeaderEpoch on a log ending at `log_end`: the largest epoch at or
    /// below `epoch` that this log has, and the offset where its batches end (the start of
    /// the next epoch, or `log_end` for the latest). An `epoch` older than every epoch here
    /// ends where this log's first epoch starts: `(epoch, first start)` — whatever another
    /// log wrote in it, this one does not have. `None` for an empty cache (Kafka's
    /// UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET).
    pub fn end_offset_for(&self, epoch: Epoch, log_end: Offset) -> Option<(Epoch, Offset)> {
        let first = self.entries.first()?;
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let Some(found) = i.checked_sub(1).map(|j| self.entries[j]) else {
            return Some((epoch, first.start_offset));
        };
        let end = self
            .entries
            .get(i)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// The log was truncated to end at `log_end`: epochs that start at or after it go.
    pub fn truncate_from_end(&mut self, log_end: Offset) {
        self.entries.retain(|e| e.start_offset < log_end);
    }

    /// The log now starts at `log_start` (retention, DeleteRecords): epochs wholly before it
    /// go, and the epoch that covers it starts there.
    pub fn truncate_from_start(&mut self, log_start: Offset) {
        let covering = self
            .entries
            .partition_point(|e| e.start_offset <= log_start);
        if covering == 0 {
            return;
        }
        self.entries.drain(..covering - 1);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = first.start_offset.max(log_start);
        }
    }
}

/// Name of the epoch cache file in a partition's directory.
pub const FILE: &str = "leader-epoch.checkpoint";
const MAGIC: [u8; 4] = *b"TNLE";
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 12;
const ENTRY_BYTES: usize = 12;

/// Encodes the cache: magic, version u16, reserved u16, entry count u32, the entries
/// (epoch i32, start offset i64), CRC32C of everything before it; little-endian.
pub fn encode(cache: &EpochCache) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_BYTES + cache.entries.len() * ENTRY_BYTES + 4);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(cache.entries.len() as u32).to_le_bytes());
    for e in &cache.entries {
        b.extend_from_slice(&e.epoch.to_le_bytes());
        b.extend_from_slice(&e.start_offset.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Why an epoch cache file is not readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an epoch cache file (magic, version or length)")]
    Format,
    #[error("checksum mismatch")]
    Checksum,
    #[error(transparent)]
    Entries(#[from] EpochError),
}

/// Decodes what [`encode`] wrote, checking the checksum and the cache's invariants.
pub fn decode(b: &[u8]) -> Result<EpochCache, DecodeError> {
    if b.len() < HEADER_BYTES + 4 || b[..4] != MAGIC {
        return Err(DecodeError::Format);
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if u16::from_le_bytes([b[4], b[5]]) != VERSION {
        return Err(DecodeError::Format);
    }
    let count = u32_at(8) as usize;
    let body = HEADER_BYTES + count.saturating_mul(ENTRY_BYTES);
    if b.len() != body + 4 {
        return Err(DecodeError::Format);
    }
    if crc32c::crc32c(&b[..body]) != u32_at(body) {
        return Err(DecodeError::Checksum);
    }
    let entries = b[HEADER_BYTES..body]
        .chunks_exact(ENTRY_BYTES)
        .map(|c| {
            let mut o = [0u8; 8];
            o.copy_from_slice(&c[4..12]);
            EpochEntry {
                epoch: i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                start_offset: i64::from_le_bytes(o),
            }
        })
        .collect();
    Ok(EpochCache::from_entries(entries)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(Epoch, Offset)]) -> EpochCache {
        let entries = pairs
            .iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect();
        EpochCache::from_entries(entries).unwrap()
    }

    #[test]
    fn end_offsets_follow_kafkas_offset_for_leader_epoch() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(0, 40), Some((0, 0)));
        let late = cache(&[(5, 30)]);
        assert_eq!(late.end_offset_for(2, 40), Some((2, 30)));
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(4, 40), Some((4, 40)));
        assert_eq!(c.end_offset_for(9, 40), Some((4, 40)));
        assert_eq!(EpochCache::default().end_offset_for(3, 0), None);
    }

    #[test]
    fn assign_keeps_the_invariants() {
        let mut c = EpochCache::default();
        assert!(c.assign(2, 0).unwrap());
        assert!(!c.assign(2, 5).unwrap());
        assert!(c.assign(5, 7).unwrap());
        assert_eq!(
            c.assign(4, 9),
            Err(EpochError::EpochNotAfter {
                epoch: 4,
                latest: 5
            })
        );
        // Epoch 5 wrote nothing that is still there: epoch 6 at the same offset replaces it.
        assert!(c.assign(6, 7).unwrap());
        assert_eq!(c, cache(&[(2, 0), (6, 7)]));
        assert!(c.assign(-1, 0).is_err());
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.truncate_from_end(25);
        assert_eq!(c, cache(&[(1, 0), (3, 10)]));
        c.truncate_from_end(11);
        assert_eq!(c, cache(&[(1, 0), (3, 10)]));
        let mut d = cache(&[(1, 0), (3, 10), (4, 25)]);
        d.truncate_from_start(12);
        assert_eq!(d, cache(&[(3, 12), (4, 25)]));
        d.truncate_from_start(25);
        assert_eq!(d, cache(&[(4, 25)]));
        d.truncate_from_start(3);
        assert_eq!(d, cache(&[(4, 25)]));
    }

    #[test]
    fn bad_entries_are_refused() {
        let e = |epoch, start_offset| EpochEntry {
            epoch,
            start_offset,
        };
        assert!(EpochCache::from_entries(vec![e(2, 0), e(2, 5)]).is_err());
        assert!(EpochCache::from_entries(vec![e(2, 5), e(3, 4)]).is_err());
        assert!(EpochCache::from_entries(vec![e(-2, 5)]).is_err());
        assert!(EpochCache::from_entries(vec![e(1, 5), e(3, 5)]).is_ok());
    }

    #[test]
    fn the_file_round_trips_and_refuses_damage() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        let b = encode(&c);
        assert_eq!(decode(&b), Ok(c.clone()));
        assert_eq!(
            decode(&encode(&EpochCache::default())),
            Ok(EpochCache::default())
        );
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(decode(&d).is_err(), "a flipped byte {i} was read");
        }
        assert_eq!(decode(&b[..b.len() - 1]), Err(DecodeError::Format));
        assert_eq!(decode(&[]), Err(DecodeError::Format));
        // Entries that break the invariants are refused even with a good checksum.
        let bad = EpochCache {
            entries: vec![
                EpochEntry {
                    epoch: 3,
                    start_offset: 0,
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 5,
                },
            ],
        };
        assert!(matches!(
            decode(&encode(&bad)),
            Err(DecodeError::Entries(_))
        ));
    }
}
