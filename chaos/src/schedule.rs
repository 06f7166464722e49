//! The fault schedule: which fault, on which nodes, for how long — all drawn from the seed
//! before the run starts, so that `--seed` reproduces a run's faults. What only the running
//! cluster knows (the current leader of a partition, the controller) is looked up when the
//! fault is applied.
//!
//! Every kind of the run gets its turn in each round (in a shuffled order), so a run of N
//! faults over K kinds injects each kind N/K times, ±1.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::history::FaultKind;

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub kind: FaultKind,
    /// How long the fault lasts before it is healed.
    pub duration_ms: u64,
    /// The node a node fault touches (kill-node, pause, isolate, bandwidth, disk-full), the
    /// lone side of a split, the receiving side of a one-way drop.
    pub node: u32,
    /// Another node: the sending side of a one-way drop.
    pub other: u32,
    /// The partition whose leader a kill-leader fault kills (modulo the partition count).
    pub partition: u32,
}

/// `count` faults of `kinds` over nodes `nodes` (at least 2), each lasting between
/// `min_ms` and `max_ms`.
pub fn plan(
    seed: u64,
    count: usize,
    kinds: &[FaultKind],
    nodes: &[u32],
    min_ms: u64,
    max_ms: u64,
) -> Vec<Planned> {
    assert!(nodes.len() >= 2, "faults need two nodes at least");
    assert!(min_ms <= max_ms);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    let mut round: Vec<FaultKind> = Vec::new();
    while out.len() < count && !kinds.is_empty() {
        if round.is_empty() {
            round = kinds.to_vec();
            round.shuffle(&mut rng);
        }
        let Some(kind) = round.pop() else { break };
        let node = nodes[rng.gen_range(0..nodes.len())];
        let others: Vec<u32> = nodes.iter().copied().filter(|n| *n != node).collect();
        let other = others[rng.gen_range(0..others.len())];
        out.push(Planned {
            kind,
            duration_ms: rng.gen_range(min_ms..=max_ms),
            node,
            other,
            partition: rng.gen_range(0..1024),
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_plans_the_same_faults() {
        let k = FaultKind::ALL;
        assert_eq!(
            plan(7, 50, &k, &[1, 2, 3], 1000, 5000),
            plan(7, 50, &k, &[1, 2, 3], 1000, 5000)
        );
        assert_ne!(
            plan(7, 50, &k, &[1, 2, 3], 1000, 5000),
            plan(8, 50, &k, &[1, 2, 3], 1000, 5000)
        );
    }

    #[test]
    fn every_kind_gets_its_share() {
        let k = FaultKind::ALL;
        let p = plan(1, 200, &k, &[1, 2, 3, 4, 5], 1000, 5000);
        assert_eq!(p.len(), 200);
        let share = 200 / k.len();
        for kind in k {
            let n = p.iter().filter(|f| f.kind == kind).count();
            assert!((share..=share + 1).contains(&n), "{kind:?}: {n}");
        }
    }

    #[test]
    fn targets_and_durations_stay_in_range() {
        for f in plan(
            3,
            100,
            &[FaultKind::OneWay, FaultKind::Pause],
            &[1, 2, 3],
            10,
            20,
        ) {
            assert!([1, 2, 3].contains(&f.node));
            assert!([1, 2, 3].contains(&f.other));
            assert_ne!(f.node, f.other);
            assert!((10..=20).contains(&f.duration_ms));
        }
        assert!(plan(3, 10, &[], &[1, 2], 1, 1).is_empty());
    }
}
