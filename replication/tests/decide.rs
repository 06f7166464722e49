//! Unit tests of the controller's decisions, including wrong inputs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

use std::collections::BTreeMap;

use tern_replication::decide::*;
use tern_replication::image::*;

fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
    let index = image.last_applied_index + 1;
    image.apply_entry(index, 1, records).unwrap();
}

fn register(image: &mut MetadataImage, id: BrokerId, rack: &str) -> i64 {
    let req = RegisterBrokerRequest {
        broker_id: id,
        incarnation_id: [id as u8 + 1; 16],
        endpoints: vec![],
        rack: Some(rack.into()),
        previous_broker_epoch: None,
    };
    let (records, _) = register_broker(image, &req, false).unwrap();
    apply(image, &records);
    let epoch = image.broker(id).unwrap().epoch;
    let hb = HeartbeatRequest {
        broker_id: id,
        broker_epoch: epoch,
        current_metadata_offset: epoch,
        want_fence: false,
        want_shutdown: false,
    };
    let (records, reply) = heartbeat(image, &hb).unwrap();
    assert!(!reply.is_fenced && reply.is_caught_up);
    apply(image, &records);
    epoch
}

fn cluster(n: i32) -> MetadataImage {
    let mut image = MetadataImage::default();
    for id in 0..n {
        register(&mut image, id, if id % 2 == 0 { "a" } else { "b" });
    }
    image
}

fn topic(name: &str, partitions: i32, rf: i16) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

const DEFAULTS: TopicDefaults = TopicDefaults {
    num_partitions: 1,
    replication_factor: 1,
};

fn create(
    image: &mut MetadataImage,
    reqs: &[CreateTopicRequest],
) -> Vec<Result<CreatedTopic, ControllerError>> {
    let mut n = 0u8;
    let mut ids = || {
        n += 1;
        [n; 16]
    };
    let (records, results) = create_topics(image, reqs, DEFAULTS, &mut ids);
    apply(image, &records);
    results
}

/// A new broker registers fenced with epoch = its record's index, unfences once caught up.
#[test]
fn registration_and_unfence() {
    let mut image = MetadataImage::default();
    let req = RegisterBrokerRequest {
        broker_id: 1,
        incarnation_id: [7; 16],
        endpoints: vec![],
        rack: None,
        previous_broker_epoch: None,
    };
    let (records, _) = register_broker(&image, &req, false).unwrap();
    apply(&mut image, &records);
    let b = image.broker(1).unwrap();
    assert!(b.fenced);
    assert_eq!(b.epoch, 1);
    let mut hb = HeartbeatRequest {
        broker_id: 1,
        broker_epoch: 1,
        current_metadata_offset: 0,
        want_fence: false,
        want_shutdown: false,
    };
    let (records, reply) = heartbeat(&image, &hb).unwrap();
    assert!(records.is_empty() && reply.is_fenced && !reply.is_caught_up);
    hb.current_metadata_offset = 1;
    let (records, reply) = heartbeat(&image, &hb).unwrap();
    assert!(!reply.is_fenced);
    apply(&mut image, &records);
    assert!(!image.broker(1).unwrap().fenced);
}

/// Stale epochs, unknown brokers and duplicate live registrations are refused.
#[test]
fn wrong_broker_inputs() {
    let mut image = cluster(2);
    let epoch = image.broker(0).unwrap().epoch;
    let hb = |broker_id, broker_epoch| HeartbeatRequest {
        broker_id,
        broker_epoch,
        current_metadata_offset: 100,
        want_fence: false,
        want_shutdown: false,
    };
    let e = heartbeat(&image, &hb(0, epoch - 1)).unwrap_err();
    assert_eq!(e.kafka_code(), 77);
    let e = heartbeat(&image, &hb(9, 1)).unwrap_err();
    assert_eq!(e.kafka_code(), 102);
    assert_eq!(
        allocate_producer_ids(&image, 9, 1)
            .unwrap_err()
            .kafka_code(),
        102
    );
    let other = RegisterBrokerRequest {
        broker_id: 0,
        incarnation_id: [99; 16],
        endpoints: vec![],
        rack: None,
        previous_broker_epoch: None,
    };
    let e = register_broker(&image, &other, true).unwrap_err();
    assert_eq!(e.kafka_code(), 101);
    // A previous epoch from the future is refused.
    let future = RegisterBrokerRequest {
        previous_broker_epoch: Some(1_000),
        ..other.clone()
    };
    assert_eq!(
        register_broker(&image, &future, false)
            .unwrap_err()
            .kafka_code(),
        77
    );
    // Once the old session is gone, the new incarnation takes over with a new epoch.
    let (records, _) = register_broker(&image, &other, false).unwrap();
    apply(&mut image, &records);
    assert!(image.broker(0).unwrap().epoch > epoch);
    image.check_invariants().unwrap();
}

/// Placement spreads leaders and racks; RF too large, bad names, duplicates are refused.
#[test]
fn create_topics_rules() {
    let mut image = cluster(4);
    let results = create(&mut image, &[topic("orders", 8, 2)]);
    assert!(results[0].is_ok());
    let t = &image.topics["orders"];
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        *leaders.entry(p.leader).or_insert(0) += 1;
        let racks: Vec<_> = p
            .replicas
            .iter()
            .map(|r| image.broker(*r).unwrap().rack.clone())
            .collect();
        assert_ne!(racks[0], racks[1], "replicas in one rack: {p:?}");
        assert_eq!(p.isr, p.replicas);
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
    let codes: Vec<i16> = create(
        &mut image,
        &[
            topic("too-wide", 1, 5),
            topic("orders", 1, 1),
            topic("", 1, 1),
            topic("bad name", 1, 1),
            topic(&"x".repeat(250), 1, 1),
            topic("zero", 0, 1),
            topic("dup", 1, 1),
            topic("dup", 1, 1),
        ],
    )
    .into_iter()
    .map(|r| r.unwrap_err().kafka_code())
    .collect();
    assert_eq!(codes, vec![38, 36, 17, 17, 17, 37, 42, 42]);
    // '.' and '_' collide.
    create(&mut image, &[topic("a.b", 1, 1)])[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        create(&mut image, &[topic("a_b", 1, 1)])[0]
            .as_ref()
            .unwrap_err()
            .kafka_code(),
        17
    );
}

/// Fencing moves leadership within the ISR; the last ISR member keeps the partition
/// leaderless and is elected again when it comes back.
#[test]
fn fence_and_unfence_elections() {
    let mut image = cluster(3);
    create(&mut image, &[topic("t", 3, 2), topic("solo", 1, 1)]);
    let solo_leader = image.topics["solo"].partitions[0].leader;
    {
        let r = fence_broker(&image, solo_leader);
        apply(&mut image, &r);
    }
    image.check_invariants().unwrap();
    for (t, i, p) in image.partitions() {
        assert_ne!(p.leader, solo_leader, "{}-{i}", t.name);
        if t.name == "t" {
            assert_ne!(p.leader, NO_LEADER);
            assert!(!p.isr.contains(&solo_leader));
        }
    }
    let solo = &image.topics["solo"].partitions[0];
    assert_eq!(
        (solo.leader, solo.isr.clone()),
        (NO_LEADER, vec![solo_leader])
    );
    assert_eq!((solo.leader_epoch, solo.partition_epoch), (1, 1));
    {
        let r = unfence_broker(&image, solo_leader);
        apply(&mut image, &r);
    }
    let solo = &image.topics["solo"].partitions[0];
    assert_eq!(solo.leader, solo_leader);
    assert_eq!((solo.leader_epoch, solo.partition_epoch), (2, 2));
    // Fencing twice writes nothing.
    {
        let r = fence_broker(&image, solo_leader);
        apply(&mut image, &r);
    }
    assert!(fence_broker(&image, solo_leader).is_empty());
}

/// Controlled shutdown moves leaderships away and is reported to heartbeats.
#[test]
fn controlled_shutdown_moves_leaders() {
    let mut image = cluster(3);
    create(&mut image, &[topic("t", 6, 3)]);
    let epoch = image.broker(1).unwrap().epoch;
    let (records, _) = controlled_shutdown(&image, 1, epoch).unwrap();
    apply(&mut image, &records);
    assert!(image.partitions().all(|(_, _, p)| p.leader != 1));
    let hb = HeartbeatRequest {
        broker_id: 1,
        broker_epoch: epoch,
        current_metadata_offset: 100,
        want_fence: false,
        want_shutdown: true,
    };
    assert!(heartbeat(&image, &hb).unwrap().1.should_shut_down);
    assert_eq!(
        controlled_shutdown(&image, 1, epoch - 1)
            .unwrap_err()
            .kafka_code(),
        77
    );
    // New topics avoid the shutting-down broker.
    create(&mut image, &[topic("later", 4, 2)]);
    assert!(image.topics["later"]
        .partitions
        .iter()
        .all(|p| !p.replicas.contains(&1)));
}

/// Preferred leaders come back with auto rebalance; ISR changes are compare-and-set.
#[test]
fn rebalance_and_alter_partition() {
    let mut image = cluster(2);
    create(&mut image, &[topic("t", 2, 2)]);
    let preferred = image.topics["t"].partitions[0].replicas[0];
    let e = image.broker(preferred).unwrap().epoch;
    {
        let r = fence_broker(&image, preferred);
        apply(&mut image, &r);
    }
    let p = image.topics["t"].partitions[0].clone();
    assert_ne!(p.leader, preferred);
    // The leader adds the returning broker back only after it is unfenced.
    let mut alter = AlterPartitionRequest {
        broker_id: p.leader,
        broker_epoch: image.broker(p.leader).unwrap().epoch,
        topic: "t".into(),
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: p.replicas.clone(),
    };
    assert_eq!(
        alter_partition(&image, &alter).unwrap_err().kafka_code(),
        42
    );
    {
        let r = unfence_broker(&image, preferred);
        apply(&mut image, &r);
    }
    let (records, ()) = alter_partition(&image, &alter).unwrap();
    apply(&mut image, &records);
    assert_eq!(
        alter_partition(&image, &alter).unwrap_err().kafka_code(),
        95
    );
    alter.partition_epoch += 1;
    assert!(alter_partition(&image, &alter).unwrap().0.is_empty());
    {
        let r = preferred_leader_elections(&image);
        apply(&mut image, &r);
    }
    assert_eq!(image.topics["t"].partitions[0].leader, preferred);
    assert!(preferred_leader_elections(&image).is_empty());
    let _ = e;
}

/// Delete topics, create partitions, producer-id blocks.
#[test]
fn topics_partitions_producer_ids() {
    let mut image = cluster(3);
    create(&mut image, &[topic("t", 2, 2)]);
    let (records, results) = create_partitions(
        &image,
        &[
            CreatePartitionsRequest {
                name: "t".into(),
                count: 5,
            },
            CreatePartitionsRequest {
                name: "t2".into(),
                count: 5,
            },
        ],
    );
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().kafka_code(), 3);
    apply(&mut image, &records);
    assert_eq!(image.topics["t"].partitions.len(), 5);
    let (_, results) = create_partitions(
        &image,
        &[CreatePartitionsRequest {
            name: "t".into(),
            count: 5,
        }],
    );
    assert_eq!(results[0].as_ref().unwrap_err().kafka_code(), 37);
    let (records, results) = delete_topics(&image, &["t".into(), "nope".into()]);
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().kafka_code(), 3);
    apply(&mut image, &records);
    assert!(image.topics.is_empty());
    let mut blocks = vec![];
    for b in 0..3 {
        let epoch = image.broker(b).unwrap().epoch;
        let (records, reply) = allocate_producer_ids(&image, b, epoch).unwrap();
        apply(&mut image, &records);
        blocks.push(reply.first_id);
        assert_eq!(reply.size, 1000);
    }
    assert_eq!(blocks, vec![0, 1000, 2000]);
    assert_eq!(image.next_producer_id, 3000);
}

/// Guards SetTopicConfigs: the overrides become exactly the requested ones (set, changed and
/// removed keys, one record each, none for an unchanged key); an unknown topic is refused
/// alone.
#[test]
fn set_topic_configs_makes_the_overrides_exactly_the_requested() {
    let mut image = cluster(3);
    create(&mut image, &[topic("t", 1, 3)]);
    let want = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let first = want(&[("retention.ms", "1000"), ("segment.bytes", "65536")]);
    let (records, results) = set_topic_configs(
        &image,
        &[
            SetTopicConfigsRequest {
                name: "t".into(),
                configs: first.clone(),
            },
            SetTopicConfigsRequest {
                name: "nope".into(),
                configs: first.clone(),
            },
        ],
    );
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().kafka_code(), 3);
    assert_eq!(records.len(), 2);
    apply(&mut image, &records);
    assert_eq!(image.topics["t"].configs, first);
    let second = want(&[("retention.ms", "1000"), ("flush", "interval")]);
    let (records, results) = set_topic_configs(
        &image,
        &[SetTopicConfigsRequest {
            name: "t".into(),
            configs: second.clone(),
        }],
    );
    assert!(results[0].is_ok());
    assert_eq!(
        records.len(),
        2,
        "flush set, segment.bytes removed: {records:?}"
    );
    apply(&mut image, &records);
    assert_eq!(image.topics["t"].configs, second);

    // The dynamic broker defaults the same way, cluster-wide.
    let records = set_broker_configs(&image, &first);
    assert_eq!(records.len(), 2);
    apply(&mut image, &records);
    assert_eq!(image.broker_configs, first);
    assert!(set_broker_configs(&image, &first).is_empty());
    let records = set_broker_configs(&image, &BTreeMap::new());
    apply(&mut image, &records);
    assert!(image.broker_configs.is_empty());
}

/// Guards ElectLeaders: preferred moves leadership to the first replica only when it is in
/// the ISR and live; unclean fills a leaderless partition from the ISR first, else from any
/// live replica (its ISR then only that one); each refusal names its Kafka error.
#[test]
fn elect_leaders_preferred_and_unclean() {
    let mut image = cluster(3);
    create(&mut image, &[topic("t", 1, 3)]);
    let p0 = |image: &MetadataImage| image.topics["t"].partitions[0].clone();
    let id = image.topics["t"].id;
    let tp = vec![("t".to_string(), 0)];
    let code = |r: &[ElectionResult]| r[0].1.as_ref().map_or_else(|e| e.kafka_code(), |()| 0);
    let preferred = p0(&image).replicas[0];
    // The preferred replica leads: nothing to do.
    assert_eq!(p0(&image).leader, preferred);
    let (records, results) = elect_leaders(&image, ElectionType::Preferred, Some(&tp));
    assert!(records.is_empty());
    assert_eq!(code(&results), 84, "ELECTION_NOT_NEEDED");
    // Another ISR member leads: the preferred one takes over.
    let other = p0(&image).replicas[1];
    let change = MetadataRecord::PartitionChange {
        topic_id: id,
        partition: 0,
        leader: Some(other),
        isr: None,
        replicas: None,
    };
    apply(&mut image, &[change]);
    let (records, results) = elect_leaders(&image, ElectionType::Preferred, None);
    assert_eq!(code(&results), 0);
    apply(&mut image, &records);
    assert_eq!(p0(&image).leader, preferred);
    // The preferred replica out of the ISR: PREFERRED_LEADER_NOT_AVAILABLE.
    let shrink = MetadataRecord::PartitionChange {
        topic_id: id,
        partition: 0,
        leader: Some(other),
        isr: Some(vec![other]),
        replicas: None,
    };
    apply(&mut image, &[shrink]);
    let (records, results) = elect_leaders(&image, ElectionType::Preferred, Some(&tp));
    assert!(records.is_empty());
    assert_eq!(code(&results), 80);
    // Unclean with a leader: not needed. The ISR's only member fenced: a live replica out of
    // the ISR is elected, alone in the new ISR.
    assert_eq!(
        code(&elect_leaders(&image, ElectionType::Unclean, Some(&tp)).1),
        84
    );
    let fence = fence_broker(&image, other);
    apply(&mut image, &fence);
    let (records, results) = elect_leaders(&image, ElectionType::Unclean, Some(&tp));
    assert_eq!(code(&results), 0, "{results:?}");
    apply(&mut image, &records);
    let p = p0(&image);
    assert!(p.leader >= 0 && p.leader != other, "{p:?}");
    assert_eq!(p.isr, vec![p.leader]);
    // Unknown partitions and topics.
    let unknown = vec![("t".to_string(), 9), ("nope".to_string(), 0)];
    let (records, results) = elect_leaders(&image, ElectionType::Preferred, Some(&unknown));
    assert!(records.is_empty());
    assert_eq!(code(&results), 3);
    assert_eq!(code(&results[1..]), 3);
}

/// The image refuses records that break its invariants and stays unchanged.
#[test]
fn image_refuses_bad_records() {
    let mut image = cluster(2);
    create(&mut image, &[topic("t", 1, 2)]);
    let before = image.clone();
    let id = image.topics["t"].id;
    let bad = [
        MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: Some(7),
            isr: None,
            replicas: None,
        },
        MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: None,
            isr: Some(vec![]),
            replicas: None,
        },
        MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 3,
            leader: None,
            isr: None,
            replicas: None,
        },
        MetadataRecord::FenceBroker {
            broker_id: image.topics["t"].partitions[0].leader,
            broker_epoch: image
                .broker(image.topics["t"].partitions[0].leader)
                .unwrap()
                .epoch,
        },
        MetadataRecord::UnfenceBroker {
            broker_id: 0,
            broker_epoch: 12345,
        },
        MetadataRecord::CreateTopic {
            topic_id: id,
            name: "other".into(),
            configs: BTreeMap::new(),
            partitions: vec![],
        },
        MetadataRecord::AllocateProducerIds {
            broker_id: 0,
            broker_epoch: image.broker(0).unwrap().epoch,
            first_id: 5,
            size: 1000,
        },
    ];
    for r in &bad {
        assert!(image.apply(99, r).is_err(), "{r:?}");
        assert_eq!(image, before);
    }
    assert!(image.apply_entry(1, 1, &[]).is_err());
}

/// Groups map to `__consumer_offsets` partitions like Kafka's (Java String.hashCode).
#[test]
fn group_coordinator_placement() {
    assert_eq!(java_string_hash("hello"), 99_162_322);
    assert_eq!(group_partition("hello", 50), 99_162_322 % 50);
    assert_eq!(group_partition("polygenelubricants", 50), 0);
    let mut image = cluster(3);
    assert_eq!(image.group_coordinator("g"), None);
    create(&mut image, &[topic(CONSUMER_OFFSETS_TOPIC, 50, 1)]);
    let p = group_partition("hello", 50) as usize;
    let leader = image.topics[CONSUMER_OFFSETS_TOPIC].partitions[p].leader;
    assert_eq!(image.group_coordinator("hello"), Some(leader));
}
