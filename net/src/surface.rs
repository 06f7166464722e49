//! The protocol table of `net/PROTOCOL.md`: every API key of Kafka 4.1, the versions Kafka
//! serves (the stable `validVersions` of its message schemas, as the `kafka-protocol` crate
//! carries them: a latest version marked unstable is not served by a Kafka broker by default
//! and not in the crate's codec, see [`UNSTABLE_LATEST`]), the versions Tern serves
//! ([`crate::api::supported`], which ApiVersions advertises) and what is refused and why.
//!
//! The table in the document is [`table`]'s output; a test compares the two, so neither can
//! drift (`TERN_BLESS=1 cargo test -p tern-net surface` rewrites the document's table).

use kafka_protocol::messages::ApiKey;

/// The Kafka release whose message schemas give the "Kafka" column.
pub const KAFKA_RELEASE: &str = "4.1.0";

/// APIs whose latest version in Kafka 4.1's schemas is unstable (`latestVersionUnstable`):
/// Kafka brokers do not advertise it unless `unstable.api.versions.enable`, and the codec
/// does not carry it. A test checks the codec refuses each.
pub const UNSTABLE_LATEST: &[(ApiKey, i16)] = &[
    (ApiKey::OffsetCommit, 10),
    (ApiKey::OffsetFetch, 10),
    (ApiKey::InitProducerId, 6),
];

/// The versions a Kafka 4.1 broker serves by default: `min..=max`.
pub fn kafka_versions(api: ApiKey) -> (i16, i16) {
    let v = api.valid_versions();
    match UNSTABLE_LATEST.iter().find(|(a, _)| *a == api) {
        Some((_, unstable)) if *unstable == v.max => (v.min, v.max - 1),
        _ => (v.min, v.max),
    }
}

/// Why an API is not served, or what of a served API is not: one line for the table.
pub fn note(api: ApiKey) -> &'static str {
    use ApiKey::*;
    match api {
        Produce => "acks 0, 1 and all; topic ids from v13 (UNKNOWN_TOPIC_ID); KIP-951 leader hints from v10; transactions are not served",
        Fetch => "sessionless (session id 0 in every answer, so clients send full fetches); topic ids from v13; KIP-951 current leader from v12, leader endpoints from v16; no transactions, so the last stable offset is the high watermark",
        ListOffsets => "latest, earliest, by timestamp; max timestamp from v7, earliest local (= earliest) from v8, latest tiered (-1: no tiered storage) from v9; each refused (INVALID_REQUEST) below its version",
        Metadata => "v0–v3 create unknown topics when `auto.create.topics.enable`, as Kafka does",
        OffsetCommit | OffsetFetch => "classic groups (v10, topic ids, is unstable in Kafka 4.1)",
        FindCoordinator => "groups; key type 2 (share groups) refused",
        JoinGroup | SyncGroup | Heartbeat | LeaveGroup | ListGroups | DeleteGroups
        | OffsetDelete => "classic groups",
        DescribeGroups => "classic groups; from v6 a group that does not exist is GROUP_ID_NOT_FOUND (KIP-1043)",
        ApiVersions => "any other version: UNSUPPORTED_VERSION in a v0 answer that lists what is served",
        CreateTopics | DeleteTopics | CreatePartitions | DeleteRecords => "",
        DescribeConfigs => "topics and the broker (its keys read-only)",
        AlterConfigs | IncrementalAlterConfigs => "topic configs and the dynamic broker defaults (resource \"\", or this broker's id on a single node; keys in tuning/src/topic.rs DYNAMIC_BROKER_KEYS), validated by the broker asked, committed by the controller in a cluster, applied at once by every replica; other broker keys are read-only and per-broker configs in a cluster refused (INVALID_REQUEST)",
        DescribeLogDirs => "the one data directory: each open partition's bytes, the filesystem's total and free bytes",
        InitProducerId => "idempotent producers; a transactional id is refused (INVALID_REQUEST) (v6, KIP-939, is unstable in Kafka 4.1)",
        OffsetForLeaderEpoch => "from the leader's epoch cache, fenced by the current leader epoch",
        DescribeCluster => "",
        DescribeQuorum => "a cluster's controller quorum; INVALID_REQUEST on a single node",
        DescribeProducers => "from the leader's producer table; no transactions (coordinator epoch and transaction start -1)",
        DescribeTopicPartitions => "paged with a cursor; no eligible leader replicas (null)",
        ConsumerGroupDescribe => "every group is classic: GROUP_ID_NOT_FOUND, as Kafka answers for a classic group",
        SaslHandshake | SaslAuthenticate | CreateDelegationToken | RenewDelegationToken
        | ExpireDelegationToken | DescribeDelegationToken | DescribeUserScramCredentials
        | AlterUserScramCredentials => "no SASL: listeners are plaintext",
        DescribeAcls | CreateAcls | DeleteAcls => "no authorization",
        AddPartitionsToTxn | AddOffsetsToTxn | EndTxn | WriteTxnMarkers | TxnOffsetCommit
        | DescribeTransactions | ListTransactions => "no transactions",
        AlterReplicaLogDirs => "one data directory per broker",
        ElectLeaders => "preferred and unclean, decided by the controller; a single node needs none (ELECTION_NOT_NEEDED)",
        AlterPartitionReassignments | ListPartitionReassignments => "no reassignment",
        DescribeClientQuotas | AlterClientQuotas => "no quotas",
        UpdateFeatures => "no feature flags",
        Vote | BeginQuorumEpoch | EndQuorumEpoch | FetchSnapshot | AddRaftVoter
        | RemoveRaftVoter | UpdateRaftVoter | ControllerRegistration | BrokerRegistration
        | BrokerHeartbeat | UnregisterBroker | AlterPartition | AllocateProducerIds
        | AssignReplicasToDirs | Envelope => {
            "between brokers and controllers: Tern's speak their own protocol over QUIC (replication/PROTOCOL.md)"
        }
        ConsumerGroupHeartbeat => "KIP-848 consumer groups are not built; classic groups serve every client",
        ShareGroupHeartbeat | ShareGroupDescribe | ShareFetch | ShareAcknowledge
        | InitializeShareGroupState | ReadShareGroupState | WriteShareGroupState
        | DeleteShareGroupState | ReadShareGroupStateSummary | DescribeShareGroupOffsets
        | AlterShareGroupOffsets | DeleteShareGroupOffsets => "share groups (KIP-932) are not built",
        GetTelemetrySubscriptions | PushTelemetry => "no client telemetry (KIP-714); clients go on without it",
        ListConfigResources => "topics and brokers (groups and client metrics have no configs here); v0 lists client metrics: none",
    }
}

/// Every API key the codec knows, by key.
pub fn all_keys() -> Vec<ApiKey> {
    (0..=i16::MAX)
        .take_while(|k| *k < 1000)
        .filter_map(|k| ApiKey::try_from(k).ok())
        .collect()
}

/// The markdown table: key, API, Kafka's versions, Tern's, notes.
pub fn table() -> String {
    let mut out =
        format!("| key | API | Kafka {KAFKA_RELEASE} | Tern | notes |\n|---:|---|---|---|---|\n");
    for api in all_keys() {
        let (kmin, kmax) = kafka_versions(api);
        let tern = match crate::api::supported(api) {
            Some(r) if r.start() == r.end() => format!("{}", r.start()),
            Some(r) => format!("{}–{}", r.start(), r.end()),
            None => "—".to_string(),
        };
        let kafka = if kmin == kmax {
            format!("{kmin}")
        } else {
            format!("{kmin}–{kmax}")
        };
        out.push_str(&format!(
            "| {} | {:?} | {kafka} | {tern} | {} |\n",
            api as i16,
            api,
            note(api)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- table: generated by net/src/surface.rs -->\n";
    const END: &str = "<!-- end of table -->";

    /// Guards `net/PROTOCOL.md` against the code: its table is exactly [`table`]'s.
    #[test]
    fn the_protocol_table_is_the_codes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
        let doc = std::fs::read_to_string(path).expect("net/PROTOCOL.md");
        let start = doc.find(BEGIN).expect("the table's begin marker") + BEGIN.len();
        let end = start + doc[start..].find(END).expect("the table's end marker");
        let want = table();
        if std::env::var_os("TERN_BLESS").is_some() {
            let new = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(path, new).expect("write net/PROTOCOL.md");
            return;
        }
        assert_eq!(
            doc[start..end],
            want,
            "net/PROTOCOL.md's table differs from the code: rerun with TERN_BLESS=1"
        );
    }

    /// Guards the table's claims: every served version is one Kafka serves, and every API
    /// Kafka has is in the table.
    #[test]
    fn served_versions_are_kafkas() {
        for api in all_keys() {
            if let Some(r) = crate::api::supported(api) {
                let (min, max) = kafka_versions(api);
                assert!(
                    min <= *r.start() && *r.end() <= max,
                    "{api:?}: Tern {r:?}, Kafka {min}..={max}"
                );
            }
        }
        assert!(all_keys().len() >= 80, "{}", all_keys().len());
    }

    /// Guards [`UNSTABLE_LATEST`]: the codec refuses each of those versions and takes the one
    /// before (a newer codec that carries them fails here: serve them, or say why not).
    #[test]
    fn unstable_latest_versions_are_not_in_the_codec() {
        use kafka_protocol::messages::{
            InitProducerIdRequest, OffsetCommitRequest, OffsetFetchRequest,
        };
        use kafka_protocol::protocol::Encodable;
        fn encodes<T: Encodable + Default>(v: i16) -> bool {
            T::default().encode(&mut bytes::BytesMut::new(), v).is_ok()
        }
        for (api, v) in UNSTABLE_LATEST {
            let (at, before) = match api {
                ApiKey::OffsetCommit => (
                    encodes::<OffsetCommitRequest>(*v),
                    encodes::<OffsetCommitRequest>(v - 1),
                ),
                ApiKey::OffsetFetch => (
                    encodes::<OffsetFetchRequest>(*v),
                    encodes::<OffsetFetchRequest>(v - 1),
                ),
                ApiKey::InitProducerId => (
                    encodes::<InitProducerIdRequest>(*v),
                    encodes::<InitProducerIdRequest>(v - 1),
                ),
                other => panic!("{other:?}: add it to this test"),
            };
            assert_eq!((at, before), (false, true), "{api:?} v{v}");
            assert_eq!(api.valid_versions().max, *v, "{api:?}");
        }
    }
}
