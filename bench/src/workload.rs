//! The batches the engine benchmarks append.
//!
//! Every benchmark appends the same kind of data a Kafka producer sends: uncompressed
//! RecordBatch v2 blobs built with [`tern_engine::batch::build`], so the engine does all of
//! its real per-append work (header parse, CRC32C over the whole batch, copy into the write
//! unit, base offset stamp). Batches are sized to an exact byte count so that "16 KiB per
//! append" means 16 384 bytes on disk and throughput figures compare with the raw baseline
//! byte for byte.

use tern_engine::batch::build::{self, Record};

/// Tries left when the exact size is not reachable (varint lengths jump at 64 and 8192).
const SIZE_FIT_TRIES_MAX: usize = 8;

/// A valid batch of `records` records totalling exactly `target_bytes` bytes when reachable
/// (otherwise the closest size at most `target_bytes`, or the smallest batch if even that is
/// larger). Record values carry a pattern derived from `seed`; timestamps start at
/// `base_timestamp_ms`.
pub fn batch_of_size(
    target_bytes: usize,
    records: usize,
    seed: u8,
    base_timestamp_ms: i64,
) -> Vec<u8> {
    let records = records.max(1);
    let pattern: Vec<u8> = (0..target_bytes)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let make = |common: usize, last: usize| {
        let recs: Vec<Record<'_>> = (0..records)
            .map(|i| {
                let len = if i + 1 == records { last } else { common };
                Record {
                    key: None,
                    value: Some(&pattern[..len.min(pattern.len())]),
                    timestamp_delta_ms: i as i64,
                }
            })
            .collect();
        build::batch(base_timestamp_ms, &recs)
    };
    // The per-record overhead is a few bytes; start from an estimate and correct the last
    // record's value until the total is exact.
    let header = tern_engine::batch::HEADER_BYTES;
    let common = (target_bytes.saturating_sub(header) / records).saturating_sub(8);
    let mut last = common;
    let mut best = make(common, last);
    for _ in 0..SIZE_FIT_TRIES_MAX {
        let b = make(common, last);
        let fits = b.len() <= target_bytes;
        if fits && (best.len() > target_bytes || b.len() > best.len()) {
            best = b.clone();
        }
        if b.len() == target_bytes {
            return b;
        }
        let diff = target_bytes as i64 - b.len() as i64;
        let next = (last as i64 + diff).max(0) as usize;
        if next == last {
            break;
        }
        last = next;
    }
    best
}

/// Milliseconds since the Unix epoch, for batch timestamps (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards that the benchmark batches are valid and exactly the advertised size.
    #[test]
    fn exact_sizes_and_valid() {
        for (target, records) in [(16 * 1024, 16), (1024, 8), (1024, 1), (4096, 3), (200, 2)] {
            let b = batch_of_size(target, records, 7, 1_700_000_000_000);
            assert_eq!(b.len(), target, "target {target} records {records}");
            let h = tern_engine::batch::validate(&b, 0);
            assert!(h.is_ok_and(|h| h.record_count == records as i32));
        }
    }
}
