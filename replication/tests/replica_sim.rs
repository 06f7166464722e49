//! Seeded simulations of one replicated partition with faults (see
//! `tern_replication::sim::replicas`). `TERN_SIM_SEEDS=N` runs N seeds (default 100);
//! `TERN_SIM_SEED=S` replays one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use tern_replication::sim::replicas::{run, ReplicaSimConfig, ReplicaSimReport};

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("TERN_SIM_SEED") {
        return vec![s.parse().expect("TERN_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("TERN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    (0..n).collect()
}

/// Guards the replica protocol's safety (no acknowledged record lost, no divergence below
/// the high watermark, monotonic high watermark, maximal ISR ⊇ controller ISR, reads never
/// undone) and its liveness after faults stop.
#[test]
fn replica_sim_three_brokers() {
    let start = Instant::now();
    let seeds = seeds();
    let mut total = ReplicaSimReport::default();
    for &seed in &seeds {
        match run(ReplicaSimConfig::new(seed)) {
            Ok(r) => {
                total.produced += r.produced;
                total.acknowledged += r.acknowledged;
                total.refused_not_enough_replicas += r.refused_not_enough_replicas;
                total.failed_after_append += r.failed_after_append;
                total.timed_out += r.timed_out;
                total.crashes += r.crashes;
                total.isolations += r.isolations;
                total.leader_epochs += r.leader_epochs;
                total.truncations += r.truncations;
                total.isr_changes += r.isr_changes;
                total.consumer_reads += r.consumer_reads;
            }
            Err(e) => panic!("{e}\nreplay with TERN_SIM_SEED={seed}"),
        }
    }
    eprintln!("{} seeds in {:?}: {total:?}", seeds.len(), start.elapsed());
    // The faults must have happened, or the run proves nothing.
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.truncations > 0);
    assert!(total.leader_epochs as usize > seeds.len());
}
