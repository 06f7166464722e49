//! The broker in a cluster: what changes when `controller.quorum.voters` is set.
//!
//! * [`start`] starts this node's [`ClusterNode`] (QUIC transport, registration and
//!   heartbeats; on a voter the controller and its Raft log in `<log.dirs>/__cluster/`; on a
//!   broker-only node (`process.roles = "broker"`) the committed image fetched from the
//!   voters).
//! * The committed metadata image is the truth: Metadata answers from it (every live broker,
//!   each partition's leader, replicas, ISR and epochs), and Produce, Fetch and ListOffsets
//!   for a partition this broker does not lead get NOT_LEADER_OR_FOLLOWER ([`leads`]).
//! * The metadata writer forwards CreateTopics, DeleteTopics and CreatePartitions to the
//!   controller ([`create`], [`delete`], [`create_partitions`]) and answers once the change
//!   is in this node's image and its partitions are open.
//! * [`run_mirror`] (a task on shard 0) keeps the local topic table and the shards' open
//!   partitions equal to the image's topics: every node opens every partition (a replica or
//!   not), and serves only those it leads.
//!
//! A topic on disk that the image never had is kept (never deleted here): only a deletion
//! seen in the image deletes data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tern_replication::controller::{BrokerRequest, BrokerResponse, ControllerConfig};
use tern_replication::decide::{
    CreatePartitionsRequest, CreateTopicRequest, SetTopicConfigsRequest,
};
use tern_replication::image::{Endpoint, MetadataImage};
use tern_replication::node::{
    ClusterNode, NodeSettings, NodeView, RequestError, REPLICA_LISTENER_PREFIX,
};
use tern_tuning::BrokerConfig;
use tokio::sync::watch;
use uuid::Uuid;

use crate::admin::{self, AdminCommand, Applied, MetaMsg, Topics};
use crate::error::AdminError;
use crate::meta::{new_topic, TopicMeta};
use crate::shard::ShardState;

/// The listener name clients connect to, as registered with the controller.
const CLIENT_LISTENER: &str = "PLAINTEXT";
/// How long an admin request waits for the controller and then for the local image.
const ADMIN_TIMEOUT_MS: u64 = 30_000;

/// Why the cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    #[error("quic.tls: {0}")]
    Tls(#[from] tern_replication::tls::TlsError),
    #[error("controller.quorum.voters: {voter}: {reason}")]
    Voter { voter: String, reason: String },
    #[error(
        "listeners: the CONTROLLER listener {0} binds every interface; set \
         advertised.listeners = \"…,CONTROLLER://host:port\" so that the controllers can \
         answer this broker"
    )]
    ControllerAddress(SocketAddr),
    #[error("replica endpoint: cannot bind a UDP socket on {addr}: {cause}")]
    ReplicaSocket {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] tern_replication::node::NodeError),
}

/// Starts this node's controller and broker session. `kafka` is the bound client address.
/// Also binds one UDP socket per shard (on the CONTROLLER listener's address, a port of
/// the system's choice), registered as the `REPLICA-<shard>` endpoints: each shard makes
/// its socket its own QUIC endpoint for replica streams.
pub fn start(
    config: &BrokerConfig,
    cluster_id: &str,
    kafka: SocketAddr,
    shards: usize,
) -> Result<(ClusterNode, Vec<std::net::UdpSocket>), ClusterStartError> {
    let c = &config.cluster;
    let Some(tls) = &c.tls else {
        // The configuration check requires the files in a cluster.
        return Err(ClusterStartError::Voter {
            voter: config.node_id.to_string(),
            reason: "no quic.tls files".into(),
        });
    };
    let tls = tern_replication::tls::TlsMaterial::from_files(&tls.cert, &tls.key, &tls.ca)?;
    let mut voters = BTreeMap::new();
    for v in &c.voters {
        let addr = (v.address.host.as_str(), v.address.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ClusterStartError::Voter {
                voter: v.to_string(),
                reason: "the host does not resolve".into(),
            })?;
        voters.insert(v.id, addr);
    }
    let voter = c.roles.controller;
    // The configuration check makes a cluster node name its CONTROLLER listener.
    let listen = match config.controller_listener {
        Some(l) => l,
        None => voters
            .get(&config.node_id)
            .copied()
            .ok_or(ClusterStartError::ControllerAddress(kafka))?,
    };
    let controller_endpoint = match (&config.advertised_controller, voters.get(&config.node_id)) {
        (Some(a), _) => (a.host.clone(), a.port),
        (None, _) if !listen.ip().is_unspecified() => (listen.ip().to_string(), listen.port()),
        (None, Some(own)) => (own.ip().to_string(), own.port()),
        (None, None) => return Err(ClusterStartError::ControllerAddress(listen)),
    };
    let controller = voter.then(|| {
        let mut controller = ControllerConfig::new(
            config.node_id,
            voters.keys().copied().collect(),
            rand::random(),
        );
        controller.election_timeout_ms = c.election_timeout_ms as u64;
        controller.broker_session_timeout_ms = c.broker_session_timeout_ms as u64;
        controller.auto_leader_rebalance_enable = c.auto_leader_rebalance;
        controller.num_partitions = config.num_partitions;
        controller.default_replication_factor = config.default_replication_factor;
        controller
    });
    let advertised = config.advertised(kafka);
    let mut sockets = Vec::with_capacity(shards);
    let mut replica_endpoints = Vec::with_capacity(shards);
    for k in 0..shards {
        let bind = SocketAddr::new(listen.ip(), 0);
        let socket = std::net::UdpSocket::bind(bind)
            .and_then(|s| Ok((s.local_addr()?.port(), s)))
            .map_err(|cause| ClusterStartError::ReplicaSocket { addr: bind, cause })?;
        replica_endpoints.push(Endpoint {
            listener: format!("{REPLICA_LISTENER_PREFIX}{k}"),
            host: controller_endpoint.0.clone(),
            port: socket.0,
        });
        sockets.push(socket.1);
    }
    let settings = NodeSettings {
        node_id: config.node_id,
        cluster_id: cluster_id.to_owned(),
        listen,
        voters,
        controller,
        endpoints: vec![
            Endpoint {
                listener: CLIENT_LISTENER.into(),
                host: advertised.host,
                port: advertised.port,
            },
            Endpoint {
                listener: tern_replication::node::CONTROLLER_LISTENER.into(),
                host: controller_endpoint.0,
                port: controller_endpoint.1,
            },
        ]
        .into_iter()
        .chain(replica_endpoints)
        .collect(),
        rack: c.rack.clone(),
        heartbeat_interval_ms: c.broker_heartbeat_interval_ms as u64,
        request_timeout_ms: ADMIN_TIMEOUT_MS,
    };
    let dir = config.log_dir.join(RAFT_DIR);
    let open_log = voter.then_some(move || open_raft_log(dir));
    Ok((ClusterNode::start(settings, tls, open_log)?, sockets))
}

/// The controller's Raft log directory inside `log.dirs`.
pub const RAFT_DIR: &str = "__cluster";

/// Whether this broker leads `topic`/`partition`: always without a cluster; in a cluster,
/// when the image names this node as the partition's leader.
pub fn leads(node: Option<&ClusterNode>, node_id: i32, topic: &str, partition: i32) -> bool {
    let Some(node) = node else {
        return true;
    };
    let view = node.view();
    let Some(t) = view.image.topics.get(topic) else {
        return false;
    };
    usize::try_from(partition)
        .ok()
        .and_then(|p| t.partitions.get(p))
        .is_some_and(|p| p.leader == node_id)
}

/// The endpoint clients connect to, from a broker's registration.
pub fn client_endpoint(b: &tern_replication::image::BrokerRegistration) -> Option<&Endpoint> {
    b.endpoints.iter().find(|e| e.listener == CLIENT_LISTENER)
}

/// KIP-951's hint to a client that sent a Produce or Fetch to a broker that does not lead
/// the partition: the leader and its epoch as this broker's image has them, with the
/// leader's client endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader: i32,
    pub leader_epoch: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// The [`LeaderHint`] of `topic`/`partition`; `None` when the image names no live leader.
pub fn leader_hint(node: &ClusterNode, topic: &str, partition: i32) -> Option<LeaderHint> {
    let view = node.view();
    let p = view
        .image
        .topics
        .get(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)?;
    let b = view.image.broker(p.leader).filter(|b| !b.fenced)?;
    let e = client_endpoint(b)?;
    Some(LeaderHint {
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        host: e.host.clone(),
        port: e.port,
        rack: b.rack.clone(),
    })
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The Metadata response of a cluster node, from its image.
pub async fn metadata(
    shard: &Rc<ShardState>,
    node: &ClusterNode,
    req: &MetadataRequest,
    v: i16,
) -> MetadataResponse {
    let router = &shard.router;
    let mut view = node.view();
    let wanted: Option<Vec<(Option<String>, Uuid)>> = req.topics.as_ref().map(|t| {
        t.iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
            .collect()
    });
    let wanted = match wanted {
        Some(w) if !(w.is_empty() && v == 0) => Some(w),
        _ => None,
    };
    let auto = router.config.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    if let (Some(w), true) = (&wanted, auto) {
        for (name, _) in w {
            if let Some(n) = name {
                if !view.image.topics.contains_key(n) {
                    let _ = crate::api::auto_create(shard, n).await;
                }
            }
        }
        view = node.view();
    }
    let image = &view.image;
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let e = client_endpoint(b)?;
            let mut broker = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(s(e.host.clone()))
                .with_port(i32::from(e.port));
            broker.rack = b.rack.clone().map(s);
            Some(broker)
        })
        .collect();
    let names: Vec<(Option<String>, Uuid)> = wanted.unwrap_or_else(|| {
        image
            .topics
            .keys()
            .map(|n| (Some(n.clone()), Uuid::nil()))
            .collect()
    });
    let mut topics = Vec::new();
    for (name, id) in names {
        let found = match &name {
            Some(n) => image.topics.get(n),
            None => image.topic_by_id(id.as_bytes()),
        };
        let mut t = match found {
            Some(t) => topic_metadata(image, t),
            None => MetadataResponseTopic::default()
                .with_name(name.map(|n| TopicName(s(n))))
                .with_topic_id(id)
                .with_error_code(if id.is_nil() {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::UnknownTopicId.code()
                }),
        };
        crate::api::for_metadata_version(&mut t, v);
        topics.push(t);
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(s(router.cluster_id())))
        // As in KRaft: every broker forwards admin requests to the active controller, so
        // clients are told this broker; a stale leader id would send them to a dead node.
        // DescribeCluster names the active controller.
        .with_controller_id(BrokerId(router.config.node_id))
        .with_topics(topics)
}

fn topic_metadata(
    image: &MetadataImage,
    t: &tern_replication::image::Topic,
) -> MetadataResponseTopic {
    let offline = |replicas: &[i32]| -> Vec<BrokerId> {
        replicas
            .iter()
            .filter(|r| image.broker(**r).is_none_or(|b| b.fenced))
            .map(|r| BrokerId(*r))
            .collect()
    };
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
            let error = if p.leader < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(offline(&p.replicas))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(t.name.clone()))))
        .with_topic_id(Uuid::from_bytes(t.id))
        .with_is_internal(t.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

/// The controller's answer to `request`, or why there is none.
async fn ask(node: &ClusterNode, request: BrokerRequest) -> Result<BrokerResponse, AdminError> {
    Ok(node
        .request(request)
        .await
        .unwrap_or(Err(RequestError::Stopped))?)
}

/// The one result a single-item controller request answers.
fn single<T>(
    results: Vec<Result<T, tern_replication::decide::ControllerError>>,
    what: &'static str,
) -> Result<T, AdminError> {
    let mut results = results.into_iter();
    match (results.next(), results.next()) {
        (Some(r), None) => Ok(r.map_err(RequestError::Controller)?),
        _ => Err(AdminError::Unexpected(what)),
    }
}

/// Waits until this node's topic table satisfies `done` (the mirror applied the image),
/// and answers the topic `name` as it is then.
async fn wait_local(
    shard: &Rc<ShardState>,
    name: &str,
    done: impl Fn(Option<&Arc<TopicMeta>>) -> bool,
) -> Result<Option<Arc<TopicMeta>>, AdminError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ADMIN_TIMEOUT_MS);
    loop {
        let snap = shard.router.meta.snapshot();
        let topic = snap.topics.get(name);
        if done(topic) {
            return Ok(topic.cloned());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AdminError::NotYetApplied(name.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a metadata writer's request through the controller and answers it.
pub async fn forward(local: Rc<ShardState>, msg: MetaMsg) {
    let Some(node) = local.router.cluster.as_ref() else {
        return;
    };
    let MetaMsg {
        command,
        validate_only,
        reply,
    } = msg;
    let answer = match command {
        AdminCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let request = CreateTopicRequest {
                name,
                num_partitions: partitions,
                replication_factor,
                configs,
            };
            create(&local, node, request, validate_only).await
        }
        AdminCommand::Delete { name } => delete(&local, node, &name).await,
        AdminCommand::CreatePartitions { name, count } => {
            create_partitions(&local, node, &name, count, validate_only).await
        }
        AdminCommand::AlterConfigs { name, ops, replace } => {
            alter_configs(&local, node, &name, ops, replace, validate_only).await
        }
        AdminCommand::AlterBrokerConfigs { ops, replace } => {
            let answer = alter_broker_configs(&local, node, ops, replace, validate_only).await;
            let _ = reply.send(answer.map(|()| None));
            return;
        }
    };
    let _ = reply.send(answer.map(Some));
}

/// The dynamic broker defaults through the controller (cluster-wide, as Kafka's default
/// broker resource): the operations applied here to the image's and validated, committed,
/// and answered once this broker has applied them.
async fn alter_broker_configs(
    shard: &Rc<ShardState>,
    node: &ClusterNode,
    ops: Vec<(String, admin::ConfigOp)>,
    replace: bool,
    validate_only: bool,
) -> Result<(), AdminError> {
    let current = node.view().image.broker_configs.clone();
    let dynamic = admin::altered_dynamic(&shard.router.config, &current, ops, replace)?;
    if validate_only {
        return Ok(());
    }
    let request = BrokerRequest::SetBrokerConfigs(dynamic.clone());
    let BrokerResponse::SetBrokerConfigs = ask(node, request).await? else {
        return Err(AdminError::Unexpected("AlterConfigs"));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ADMIN_TIMEOUT_MS);
    while shard.router.meta.snapshot().dynamic != dynamic {
        if tokio::time::Instant::now() >= deadline {
            return Err(AdminError::NotYetApplied("the broker defaults".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// CreateTopics through the controller.
async fn create(
    shard: &Rc<ShardState>,
    node: &ClusterNode,
    request: CreateTopicRequest,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, AdminError> {
    let name = request.name.clone();
    if validate_only {
        tern_tuning::validate_topic_name(&name)
            .map_err(|e| AdminError::InvalidTopic(e.to_string()))?;
        let partitions = request.num_partitions.max(1);
        return Ok(Arc::new(new_topic(
            name,
            Uuid::nil(),
            partitions,
            request.configs,
        )));
    }
    let BrokerResponse::CreateTopics(results) =
        ask(node, BrokerRequest::CreateTopics(vec![request])).await?
    else {
        return Err(AdminError::Unexpected("CreateTopics"));
    };
    let id = Uuid::from_bytes(single(results, "CreateTopics")?.topic_id);
    wait_local(shard, &name, |t| t.is_some_and(|t| t.id == id))
        .await?
        .ok_or(AdminError::Unexpected("CreateTopics"))
}

/// DeleteTopics through the controller; answers the deleted topic.
async fn delete(
    shard: &Rc<ShardState>,
    node: &ClusterNode,
    name: &str,
) -> Result<Arc<TopicMeta>, AdminError> {
    let before = shard.router.meta.snapshot().topics.get(name).cloned();
    let request = BrokerRequest::DeleteTopics(vec![name.to_owned()]);
    let BrokerResponse::DeleteTopics(results) = ask(node, request).await? else {
        return Err(AdminError::Unexpected("DeleteTopics"));
    };
    let id = Uuid::from_bytes(single(results, "DeleteTopics")?);
    wait_local(shard, name, |t| t.is_none_or(|t| t.id != id)).await?;
    Ok(before
        .filter(|t| t.id == id)
        .unwrap_or_else(|| Arc::new(new_topic(name.to_owned(), id, 0, BTreeMap::new()))))
}

/// CreatePartitions through the controller; answers the grown topic.
async fn create_partitions(
    shard: &Rc<ShardState>,
    node: &ClusterNode,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, AdminError> {
    let view = node.view();
    let Some(t) = view.image.topics.get(name) else {
        return Err(AdminError::UnknownTopic(name.to_owned()));
    };
    let current = t.partitions.len() as i32;
    if count <= current {
        return Err(AdminError::PartitionsNotIncreased {
            name: name.to_owned(),
            current,
            requested: count,
        });
    }
    if validate_only {
        let id = Uuid::from_bytes(t.id);
        return Ok(Arc::new(new_topic(
            name.to_owned(),
            id,
            count,
            t.configs.clone(),
        )));
    }
    let request = BrokerRequest::CreatePartitions(vec![CreatePartitionsRequest {
        name: name.to_owned(),
        count,
    }]);
    let BrokerResponse::CreatePartitions(results) = ask(node, request).await? else {
        return Err(AdminError::Unexpected("CreatePartitions"));
    };
    single(results, "CreatePartitions")?;
    wait_local(shard, name, |t| t.is_some_and(|t| t.partitions >= count))
        .await?
        .ok_or(AdminError::Unexpected("CreatePartitions"))
}

/// AlterConfigs and IncrementalAlterConfigs through the controller: the operations applied
/// here to the image's overrides and validated against this broker's defaults, the result
/// committed as the topic's overrides; answered once this broker has applied it (every
/// replica applies it from the image, see [`mirror_plan`]).
async fn alter_configs(
    shard: &Rc<ShardState>,
    node: &ClusterNode,
    name: &str,
    ops: Vec<(String, admin::ConfigOp)>,
    replace: bool,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, AdminError> {
    let view = node.view();
    let Some(t) = view.image.topics.get(name) else {
        return Err(AdminError::UnknownTopic(name.to_owned()));
    };
    let overrides = admin::altered(&shard.router.config, &t.configs, ops, replace)?;
    let id = Uuid::from_bytes(t.id);
    let partitions = t.partitions.len() as i32;
    if validate_only {
        return Ok(Arc::new(new_topic(
            name.to_owned(),
            id,
            partitions,
            overrides,
        )));
    }
    let request = BrokerRequest::SetTopicConfigs(vec![SetTopicConfigsRequest {
        name: name.to_owned(),
        configs: overrides.clone(),
    }]);
    let BrokerResponse::SetTopicConfigs(results) = ask(node, request).await? else {
        return Err(AdminError::Unexpected("AlterConfigs"));
    };
    single(results, "AlterConfigs")?;
    wait_local(shard, name, |t| t.is_some_and(|t| t.overrides == overrides))
        .await?
        .ok_or(AdminError::Unexpected("AlterConfigs"))
}

/// ElectLeaders through the controller: one result per partition the controller decided on.
pub async fn elect_leaders(
    node: &ClusterNode,
    election: tern_replication::decide::ElectionType,
    partitions: Option<Vec<(String, i32)>>,
) -> Result<Vec<((String, i32), Result<(), RequestError>)>, AdminError> {
    let request = BrokerRequest::ElectLeaders {
        election,
        partitions,
    };
    let BrokerResponse::ElectLeaders(results) = ask(node, request).await? else {
        return Err(AdminError::Unexpected("ElectLeaders"));
    };
    Ok(results
        .into_iter()
        .map(|(tp, r)| (tp, r.map_err(RequestError::Controller)))
        .collect())
}

/// The topic Kafka names the controller quorum's log by (DescribeQuorum asks for its
/// partition 0).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum (KIP-595/KIP-836), forwarded to the controller leader: the Raft term as
/// the leader epoch, the commit index as the high watermark, each voter's matched index as
/// its log end offset. Observers (broker-only nodes) are not listed: the voters do not
/// track how far they have read.
pub async fn describe_quorum(
    shard: &Rc<ShardState>,
    req: DescribeQuorumRequest,
    v: i16,
) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let resp = DescribeQuorumResponse::default();
    let refuse = |code: i16, message: &str| {
        let mut r = resp.clone().with_error_code(code);
        if v >= 2 {
            r.error_message = Some(s(message));
        }
        r
    };
    let Some(node) = shard.router.cluster.as_ref() else {
        return refuse(
            ResponseError::InvalidRequest.code(),
            "this broker is a single node: it has no controller quorum",
        );
    };
    let asked_metadata_log = req.topics.len() == 1
        && req.topics[0].topic_name.as_str() == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !asked_metadata_log {
        return refuse(
            ResponseError::UnknownTopicOrPartition.code(),
            "DescribeQuorum describes __cluster_metadata partition 0 only",
        );
    }
    let q = match ask(node, BrokerRequest::DescribeQuorum).await {
        Ok(BrokerResponse::Quorum(q)) => q,
        Ok(_) => {
            let e = AdminError::Unexpected("DescribeQuorum");
            return refuse(e.kafka_code(), &e.to_string());
        }
        Err(e) => return refuse(e.kafka_code(), &e.to_string()),
    };
    // The controller's clock is its own; ages convert to this host's wall clock.
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let at = |heard: Option<u64>| heard.map_or(-1, |h| wall_ms - q.now_ms.saturating_sub(h) as i64);
    let voters = q
        .voters
        .iter()
        .map(|voter| {
            let caught_up = voter.matched_index >= q.committed_index;
            let mut r = ReplicaState::default()
                .with_replica_id(BrokerId(voter.id))
                .with_log_end_offset(voter.matched_index as i64);
            if v >= 1 {
                r.last_fetch_timestamp = at(voter.last_heard_ms);
                r.last_caught_up_timestamp = if caught_up {
                    at(voter.last_heard_ms)
                } else {
                    -1
                };
            }
            r
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(q.leader_id))
        .with_leader_epoch(i32::try_from(q.term).unwrap_or(i32::MAX))
        .with_high_watermark(q.committed_index as i64)
        .with_current_voters(voters);
    let mut resp = resp.with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(s(METADATA_TOPIC)))
        .with_partitions(vec![partition])]);
    if v >= 2 {
        let image = &node.view().image;
        resp.nodes = q
            .voters
            .iter()
            .filter_map(|voter| {
                let b = image.brokers.get(&voter.id)?;
                let listeners = b
                    .endpoints
                    .iter()
                    .map(|e| {
                        Listener::default()
                            .with_name(s(e.listener.clone()))
                            .with_host(s(e.host.clone()))
                            .with_port(e.port)
                    })
                    .collect();
                Some(
                    Node::default()
                        .with_node_id(BrokerId(voter.id))
                        .with_listeners(listeners),
                )
            })
            .collect();
    }
    resp
}

/// Keeps the local topic table and open partitions equal to the image's topics (task on
/// shard 0, next to the metadata writer).
pub async fn run_mirror(local: Rc<ShardState>, mut views: watch::Receiver<Arc<NodeView>>) {
    let mut seen: BTreeSet<Uuid> = BTreeSet::new();
    loop {
        let view = views.borrow_and_update().clone();
        mirror(&local, &view.image, &mut seen).await;
        if views.changed().await.is_err() {
            return;
        }
    }
}

/// One pass: create, grow and delete local topics so they match `image`.
async fn mirror(local: &Rc<ShardState>, image: &MetadataImage, seen: &mut BTreeSet<Uuid>) {
    let topics = local.router.meta.snapshot().topics.clone();
    for step in mirror_plan(&topics, image, seen) {
        let name = step.topic.name.clone();
        if let Err(e) = admin::commit(local, step).await {
            tracing::error!(topic = %name, error = %e, "cannot apply the cluster's topic here");
        }
    }
    if local.router.meta.snapshot().dynamic != image.broker_configs {
        if let Err(e) = admin::commit_dynamic(local, image.broker_configs.clone()).await {
            tracing::error!(error = %e, "cannot apply the cluster's broker defaults here");
        }
    }
}

/// The changes that make the local topic table `topics` match the image's topics, in order,
/// each on the table the one before it leaves. `seen` holds the ids of topics the image has
/// had since this broker started: only those are deleted (a topic the image never named is
/// left alone). Pure.
pub fn mirror_plan(
    topics: &Topics,
    image: &MetadataImage,
    seen: &mut BTreeSet<Uuid>,
) -> Vec<Applied> {
    let mut steps: Vec<Applied> = Vec::new();
    let mut table = topics.clone();
    let push = |steps: &mut Vec<Applied>, table: &mut Topics, step: Applied| {
        *table = step.topics.clone();
        steps.push(step);
    };
    for (name, t) in &image.topics {
        let id = Uuid::from_bytes(t.id);
        seen.insert(id);
        let want = t.partitions.len() as i32;
        let fresh = || new_topic(name.clone(), id, want, t.configs.clone());
        match table.get(name).cloned() {
            Some(m) if m.id == id && m.partitions >= want => {}
            Some(m) if m.id == id => {
                let step = admin::grown(&table, &m, want);
                push(&mut steps, &mut table, step);
            }
            // Deleted and created again under the same name: drop the old data first.
            Some(_) => {
                if let Ok(step) = admin::deleted(&table, name) {
                    push(&mut steps, &mut table, step);
                }
                let step = admin::created(&table, fresh());
                push(&mut steps, &mut table, step);
            }
            None => {
                let step = admin::created(&table, fresh());
                push(&mut steps, &mut table, step);
            }
        }
        // Changed overrides (AlterConfigs): the open partitions take them.
        if let Some(m) = table.get(name).cloned() {
            if m.overrides != t.configs {
                let step = admin::reconfigured(&table, &m, t.configs.clone());
                push(&mut steps, &mut table, step);
            }
        }
    }
    let gone: Vec<String> = table
        .iter()
        .filter(|(n, m)| !image.topics.contains_key(*n) && seen.contains(&m.id))
        .map(|(n, _)| n.clone())
        .collect();
    for name in gone {
        if let Ok(step) = admin::deleted(&table, &name) {
            push(&mut steps, &mut table, step);
        }
    }
    steps
}

/// Opens the voter's Raft log on the engine's storage (run on the node's own thread).
/// The log's files are buffered (written with fdatasync), so the direct-IO setting is moot.
async fn open_raft_log(
    dir: std::path::PathBuf,
) -> Result<tern_replication::raft_log::FileQuorumLog<tern_engine::UringStorage>, String> {
    let storage = tern_engine::UringStorage::new(tern_engine::DirectIo::Off);
    tern_replication::raft_log::FileQuorumLog::open(storage, &dir)
        .await
        .map_err(|e| e.to_string())
}

/// A producer id from this broker's controller-allocated block (a new block when it is
/// used up): unique across the cluster.
pub async fn allocate_producer_id(
    router: &crate::router::Router,
    node: &ClusterNode,
) -> Result<i64, AdminError> {
    if let Some(id) = router.producer_ids.take_from_cluster_block() {
        return Ok(id);
    }
    let Some(broker_epoch) = node.view().broker_epoch else {
        return Err(AdminError::NotRegistered);
    };
    let request = BrokerRequest::AllocateProducerIds {
        broker_id: router.config.node_id,
        broker_epoch,
    };
    let BrokerResponse::AllocateProducerIds(block) = ask(node, request).await? else {
        return Err(AdminError::Unexpected("AllocateProducerIds"));
    };
    router
        .producer_ids
        .set_cluster_block(block.first_id, block.size);
    router
        .producer_ids
        .take_from_cluster_block()
        .ok_or(AdminError::Unexpected("AllocateProducerIds"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_replication::image::{Partition, Topic};

    fn image(topics: &[(&str, u8, usize)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (name, id, partitions) in topics {
            let p = Partition {
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            };
            let t = Topic {
                id: [*id; 16],
                name: name.to_string(),
                configs: BTreeMap::new(),
                partitions: vec![p; *partitions],
            };
            image.topics.insert(name.to_string(), t);
        }
        image
    }

    fn apply_all(topics: &Topics, steps: &[Applied]) -> Topics {
        steps
            .last()
            .map_or_else(|| topics.clone(), |s| s.topics.clone())
    }

    fn shape(topics: &Topics) -> Vec<(String, u8, i32)> {
        topics
            .values()
            .map(|t| (t.name.clone(), t.id.as_bytes()[0], t.partitions))
            .collect()
    }

    #[test]
    fn mirror_plan_creates_grows_replaces_and_deletes() {
        let mut seen = BTreeSet::new();
        let first = image(&[("a", 1, 2), ("b", 2, 1)]);
        let steps = mirror_plan(&Topics::new(), &first, &mut seen);
        assert_eq!(steps.len(), 2);
        let local = apply_all(&Topics::new(), &steps);
        assert_eq!(
            shape(&local),
            [("a".into(), 1, 2), ("b".into(), 2, 1)].to_vec()
        );
        // The same image again changes nothing.
        assert!(mirror_plan(&local, &first, &mut seen).is_empty());

        // a grows, b is deleted and created again with a new id, c is new.
        let second = image(&[("a", 1, 4), ("b", 3, 1), ("c", 4, 1)]);
        let steps = mirror_plan(&local, &second, &mut seen);
        let kinds: Vec<(String, bool, i32)> = steps
            .iter()
            .map(|s| match &s.effect {
                admin::Effect::Open { topic, from } => (topic.name.clone(), true, *from),
                admin::Effect::Drop { topic } => (topic.clone(), false, 0),
                admin::Effect::Reconfigure { .. } => {
                    unreachable!("the mirror only opens and drops")
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a".into(), true, 2),
                ("b".into(), false, 0),
                ("b".into(), true, 0),
                ("c".into(), true, 0)
            ]
            .to_vec()
        );
        let local = apply_all(&local, &steps);
        // a's first partitions keep their wake-up signals across the growth.
        assert_eq!(local["a"].partitions, 4);

        // A topic the image drops is deleted; one the image never named is left alone.
        let mut with_stranger = local.clone();
        with_stranger.insert(
            "stranger".into(),
            Arc::new(new_topic(
                "stranger".into(),
                Uuid::from_bytes([9; 16]),
                1,
                BTreeMap::new(),
            )),
        );
        let third = image(&[("a", 1, 4), ("c", 4, 1)]);
        let steps = mirror_plan(&with_stranger, &third, &mut seen);
        let after = apply_all(&with_stranger, &steps);
        assert_eq!(
            after.keys().cloned().collect::<Vec<_>>(),
            ["a", "c", "stranger"]
        );

        // Changed overrides reconfigure the topic in place: same id, partitions, signals.
        let mut fourth = third.clone();
        let configs = BTreeMap::from([("retention.ms".to_string(), "5000".to_string())]);
        fourth.topics.get_mut("a").unwrap().configs = configs.clone();
        let steps = mirror_plan(&after, &fourth, &mut seen);
        assert_eq!(steps.len(), 1);
        let admin::Effect::Reconfigure { topic } = &steps[0].effect else {
            panic!("{:?}", steps[0].effect);
        };
        assert_eq!(topic.overrides, configs);
        assert_eq!((topic.id, topic.partitions), (after["a"].id, 4));
        assert!(Arc::ptr_eq(&topic.signals[3], &after["a"].signals[3]));
        let after = apply_all(&after, &steps);
        assert!(mirror_plan(&after, &fourth, &mut seen).is_empty());
    }
}
