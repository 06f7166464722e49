//! Which shard owns a partition.
//!
//! Placement is a pure function of the topic name, the partition, the shard count, the policy
//! and the pins: nothing about it is stored on disk, so an operator may change `cores` and
//! restart, and every partition is simply placed again. The hash is FNV-1a, fixed forever:
//! the same configuration places partitions identically in every process and release
//! (std's `DefaultHasher` is seeded per process and would not).

use std::collections::BTreeMap;

use crate::choice::PlacementPolicy;

/// Explicit placements: `(topic, partition)` → shard index (a position in `cores`).
pub type Pins = BTreeMap<(String, i32), usize>;

/// The shard (`0..shard_count`) that owns `topic`'s `partition`.
///
/// A pin wins if it names a shard that exists; otherwise the policy decides:
/// * `balanced`: `(hash(topic) + partition) mod shard_count`, so a topic's partitions occupy
///   consecutive shards and any `shard_count` consecutive partitions hit every shard once;
/// * `hash`: `hash(topic, partition) mod shard_count`.
///
/// Not on the data path: called when a partition is created or loaded.
pub fn place(
    topic: &str,
    partition: i32,
    shard_count: usize,
    policy: PlacementPolicy,
    pins: &Pins,
) -> usize {
    debug_assert!(
        shard_count > 0,
        "placing {topic}/{partition} on zero shards"
    );
    let shard_count = shard_count.max(1);
    if !pins.is_empty() {
        if let Some(&shard) = pins.get(&(topic.to_owned(), partition)) {
            if shard < shard_count {
                return shard;
            }
        }
    }
    // Partition ids are never negative; reinterpreting one keeps the function total.
    let partition = u64::from(partition as u32);
    let h = match policy {
        PlacementPolicy::Balanced => stable_hash(topic.as_bytes()).wrapping_add(partition),
        PlacementPolicy::Hash => {
            let mut key = Vec::with_capacity(topic.len() + 4);
            key.extend_from_slice(topic.as_bytes());
            key.extend_from_slice(&(partition as u32).to_be_bytes());
            stable_hash(&key)
        }
    };
    // usize is at most 64 bits on supported targets, so the remainder fits.
    (h % shard_count as u64) as usize
}

/// 64-bit FNV-1a: stable across processes, machines and releases.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// Splits a pin key `"topic/partition"` (at the last `/`; topic names cannot contain one).
pub(crate) fn parse_pin_key(key: &str) -> Option<(&str, i32)> {
    let (topic, partition) = key.rsplit_once('/')?;
    let partition = partition.parse::<i32>().ok().filter(|p| *p >= 0)?;
    crate::topic_name::validate_topic_name(topic).ok()?;
    Some((topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pins() -> Pins {
        Pins::new()
    }

    /// Guards that `balanced` spreads a topic evenly over the shards.
    #[test]
    fn balanced_spreads_evenly() {
        let mut per_shard = [0; 2];
        for p in 0..8 {
            per_shard[place("orders", p, 2, PlacementPolicy::Balanced, &no_pins())] += 1;
        }
        assert_eq!(per_shard, [4, 4]);
        let mut per_shard = [0; 3];
        for p in 0..9 {
            per_shard[place("clicks", p, 3, PlacementPolicy::Balanced, &no_pins())] += 1;
        }
        assert_eq!(per_shard, [3, 3, 3]);
    }

    /// Guards that pins override the policy, and that a pin past the shard count is ignored.
    #[test]
    fn pins_win() {
        let mut pins = no_pins();
        pins.insert(("orders".to_owned(), 3), 1);
        pins.insert(("orders".to_owned(), 4), 7);
        for policy in [PlacementPolicy::Balanced, PlacementPolicy::Hash] {
            assert_eq!(place("orders", 3, 2, policy, &pins), 1);
            assert_eq!(place("orders", 3, 4, policy, &pins), 1);
            assert_eq!(
                place("orders", 4, 2, policy, &pins),
                place("orders", 4, 2, policy, &no_pins())
            );
        }
    }

    /// Guards placement stability across processes and releases: these exact values must never
    /// change, or partitions would move between shards on upgrade.
    #[test]
    fn stable_values() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        let b = PlacementPolicy::Balanced;
        let h = PlacementPolicy::Hash;
        assert_eq!(stable_hash(b"orders"), 0x0012_5d92_50be_8b4c);
        let got: Vec<usize> = (0..4)
            .map(|p| place("orders", p, 4, b, &no_pins()))
            .collect();
        assert_eq!(got, [0, 1, 2, 3]);
        let got: Vec<usize> = (0..4)
            .map(|p| place("clicks", p, 3, b, &no_pins()))
            .collect();
        assert_eq!(got, [1, 2, 0, 1]);
        let got: Vec<usize> = (0..6)
            .map(|p| place("orders", p, 4, h, &no_pins()))
            .collect();
        assert_eq!(got, [0, 3, 2, 1, 0, 3]);
    }

    /// Guards the pin key notation.
    #[test]
    fn pin_keys() {
        assert_eq!(parse_pin_key("orders/3"), Some(("orders", 3)));
        assert_eq!(parse_pin_key("a.b_c-d/0"), Some(("a.b_c-d", 0)));
        assert_eq!(parse_pin_key("orders"), None);
        assert_eq!(parse_pin_key("orders/-1"), None);
        assert_eq!(parse_pin_key("orders/x"), None);
        assert_eq!(parse_pin_key("/3"), None);
        assert_eq!(parse_pin_key("bad topic/3"), None);
    }
}
