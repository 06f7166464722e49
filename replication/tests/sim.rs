//! Seeded simulations of the controller quorum with faults (see `tern_replication::sim`).
//! `TERN_SIM_SEEDS=N` runs N seeds (default 100, half with 3 controllers, half with 5);
//! `TERN_SIM_SEED=S` replays one seed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

use std::time::Instant;

use tern_replication::sim::{run, SimConfig};

fn seeds(parity: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("TERN_SIM_SEED") {
        let seed: u64 = s.parse().expect("TERN_SIM_SEED is a number");
        return if seed % 2 == parity {
            vec![seed]
        } else {
            vec![]
        };
    }
    let n: u64 = std::env::var("TERN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    (0..n).filter(|s| s % 2 == parity).collect()
}

fn run_seeds(parity: u64, controllers: usize) {
    let start = Instant::now();
    let seeds = seeds(parity);
    let (mut crashes, mut partitions, mut pauses, mut terms, mut index) = (0, 0, 0, 0, 0);
    for &seed in &seeds {
        match run(SimConfig::new(seed, controllers)) {
            Ok(r) => {
                crashes += r.crashes;
                partitions += r.partitions;
                pauses += r.broker_pauses;
                terms += r.terms;
                index += r.committed_index;
            }
            Err(e) => panic!("{e}\nreplay with TERN_SIM_SEED={seed}"),
        }
    }
    eprintln!(
        "{} seeds with {controllers} controllers in {:?}: {crashes} crashes, {partitions} \
         partitions, {pauses} broker pauses, {terms} terms, {index} entries committed",
        seeds.len(),
        start.elapsed()
    );
}

/// Guards safety and fencing bounds with 3 controllers (even seeds).
#[test]
fn sim_three_controllers() {
    run_seeds(0, 3);
}

/// Guards safety and fencing bounds with 5 controllers (odd seeds).
#[test]
fn sim_five_controllers() {
    run_seeds(1, 5);
}
