//! What the tests on the in-memory disk share: a current-thread runtime with a `LocalSet`
//! (the log spawns its writer task locally), a partition directory, and a configuration
//! small enough that a few appends roll segments.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;

use tern_engine::LogConfig;

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
