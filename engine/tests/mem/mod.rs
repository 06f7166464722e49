//! What the tests on the in-memory disk share: a current-thread runtime with a `LocalSet`
//! (the log spawns its writer task locally), a partition directory, and a configuration
//! small enough that a few appends roll segments.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;

use tern_engine::{Log, LogConfig, MemStorage, Offset};

pub fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

pub fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        hot_bytes_max: 8 * 1024,
        write_bytes_max: 8 * 1024,
        ..LogConfig::default()
    }
}

/// Reads every batch in `[from, readable_end)` and returns (base offset, bytes after the
/// base offset field) per batch.
pub async fn read_all(log: &Log<MemStorage>, from: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = from;
    let end = log.readable_end().0;
    while at < end {
        let r = log.read(Offset(at), 3000, Offset(i64::MAX)).await.unwrap();
        assert!(
            r.next_offset.0 > at,
            "read at {at} made no progress (end {end})"
        );
        for s in &r.slices {
            let bytes = s.to_bytes().unwrap();
            split_batches(&bytes, &mut out);
        }
        at = r.next_offset.0;
    }
    out
}

pub fn split_batches(mut b: &[u8], out: &mut Vec<(i64, Vec<u8>)>) {
    while !b.is_empty() {
        let len = (12 + i32_at(b, 8) as usize).min(b.len());
        let h = tern_engine::batch::check_stored(&b[..len]).unwrap_or_else(|| {
            panic!(
                "a read returned a corrupt or partial batch: {} bytes left, header {:?}",
                b.len(),
                tern_engine::batch::BatchHeader::parse(b)
            )
        });
        let len = h.total_bytes as usize;
        out.push((h.base_offset, b[8..len].to_vec()));
        b = &b[len..];
    }
}

pub fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
