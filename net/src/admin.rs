//! The metadata writer: the one task (on shard 0) that creates, deletes and grows topics.
//!
//! Each change is validated, persisted and published as a new snapshot (see `meta.rs`), and
//! only then are the owning shards told to open or drop the partitions; the request is
//! answered once every shard has done so, so a client that sees "created" can produce at
//! once.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::config_map::topic_config;
use crate::meta::{new_topic, random_uuid, TopicMeta};
use crate::shard::{ShardMsg, ShardState};

/// Bound of the metadata writer's queue.
pub const META_QUEUE_MAX: usize = 1024;

/// A refused admin request: Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    fn new(e: ResponseError, message: impl Into<String>) -> Self {
        AdminError {
            code: e.code(),
            message: message.into(),
        }
    }
}

/// A request to the metadata writer.
#[derive(Debug)]
pub enum MetaMsg {
    Create {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
        reply: oneshot::Sender<Result<Arc<TopicMeta>, AdminError>>,
    },
    Delete {
        name: String,
        reply: oneshot::Sender<Result<Uuid, AdminError>>,
    },
    CreatePartitions {
        name: String,
        count: i32,
        validate_only: bool,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
}

/// Runs the metadata writer until its queue closes.
pub async fn run_writer(local: Rc<ShardState>, mut rx: mpsc::Receiver<MetaMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            // In a cluster the controller decides: forwarded, and other requests go on
            // while it commits this one.
            msg if local.router.cluster.is_some() => {
                tokio_uring::spawn(crate::cluster::forward(local.clone(), msg));
            }
            MetaMsg::Create {
                name,
                partitions,
                replication_factor,
                configs,
                validate_only,
                reply,
            } => {
                let r = create(
                    &local,
                    name,
                    partitions,
                    replication_factor,
                    configs,
                    validate_only,
                )
                .await;
                let _ = reply.send(r);
            }
            MetaMsg::Delete { name, reply } => {
                let _ = reply.send(delete(&local, &name).await);
            }
            MetaMsg::CreatePartitions {
                name,
                count,
                validate_only,
                reply,
            } => {
                let _ = reply.send(create_partitions(&local, &name, count, validate_only).await);
            }
        }
    }
}

async fn create(
    local: &Rc<ShardState>,
    name: String,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<Arc<TopicMeta>, AdminError> {
    let router = &local.router;
    let config = &router.config;
    tern_tuning::validate_topic_name(&name)
        .map_err(|e| AdminError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    let snap = router.meta.snapshot();
    if snap.topics.contains_key(&name) {
        return Err(AdminError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic '{name}' already exists"),
        ));
    }
    let partitions = if partitions == -1 {
        config.num_partitions
    } else {
        partitions
    };
    if partitions < 1 {
        return Err(AdminError::new(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be at least 1, got {partitions}"),
        ));
    }
    let rf = if replication_factor == -1 {
        config.default_replication_factor
    } else {
        replication_factor
    };
    if rf != 1 {
        return Err(AdminError::new(
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {rf} is not possible: this cluster has 1 broker"),
        ));
    }
    topic_config(config, &configs)
        .map_err(|e| AdminError::new(ResponseError::InvalidConfig, e.to_string()))?;
    let meta = Arc::new(new_topic(name.clone(), random_uuid(), partitions, configs));
    if validate_only {
        return Ok(meta);
    }
    create_local(local, meta.clone()).await?;
    Ok(meta)
}

/// Publishes a new topic and opens its partitions on their shards.
pub(crate) async fn create_local(
    local: &Rc<ShardState>,
    meta: Arc<TopicMeta>,
) -> Result<(), AdminError> {
    let mut topics = local.router.meta.snapshot().topics.clone();
    topics.insert(meta.name.clone(), meta.clone());
    publish_and_open(local, topics, &meta, 0).await
}

async fn publish_and_open(
    local: &Rc<ShardState>,
    topics: BTreeMap<String, Arc<TopicMeta>>,
    meta: &Arc<TopicMeta>,
    from: i32,
) -> Result<(), AdminError> {
    let router = &local.router;
    router
        .meta
        .publish(topics)
        .map_err(|e| AdminError::new(ResponseError::KafkaStorageError, e.to_string()))?;
    for shard in 0..router.shard_count() {
        let (tx, rx) = oneshot::channel();
        let msg = ShardMsg::Open {
            topic: meta.clone(),
            from,
            reply: tx,
        };
        let opened = match router.dispatch(local, shard, msg).await {
            Ok(()) => rx.await.unwrap_or_else(|_| Err("shard stopped".into())),
            Err(e) => Err(e.to_string()),
        };
        opened.map_err(|e| AdminError::new(ResponseError::KafkaStorageError, e))?;
    }
    Ok(())
}

async fn delete(local: &Rc<ShardState>, name: &str) -> Result<Uuid, AdminError> {
    delete_local(local, name).await
}

/// Unpublishes a topic and drops its partitions (and their data) on every shard.
pub(crate) async fn delete_local(local: &Rc<ShardState>, name: &str) -> Result<Uuid, AdminError> {
    let router = &local.router;
    let snap = router.meta.snapshot();
    let Some(meta) = snap.topics.get(name) else {
        return Err(AdminError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        ));
    };
    let mut topics = snap.topics.clone();
    topics.remove(name);
    router
        .meta
        .publish(topics)
        .map_err(|e| AdminError::new(ResponseError::KafkaStorageError, e.to_string()))?;
    for shard in 0..router.shard_count() {
        let (tx, rx) = oneshot::channel();
        let msg = ShardMsg::Drop {
            topic: name.to_string(),
            reply: tx,
        };
        if router.dispatch(local, shard, msg).await.is_ok() {
            let _ = rx.await;
        }
    }
    Ok(meta.id)
}

async fn create_partitions(
    local: &Rc<ShardState>,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), AdminError> {
    let snap = local.router.meta.snapshot();
    let Some(old) = snap.topics.get(name) else {
        return Err(AdminError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        ));
    };
    if count <= old.partitions {
        return Err(AdminError::new(
            ResponseError::InvalidPartitions,
            format!(
                "topic '{name}' has {} partitions; the new count {count} must be larger",
                old.partitions
            ),
        ));
    }
    if validate_only {
        return Ok(());
    }
    grow_local(local, old, count).await
}

/// Publishes `old` with `count` partitions and opens the new ones.
pub(crate) async fn grow_local(
    local: &Rc<ShardState>,
    old: &Arc<TopicMeta>,
    count: i32,
) -> Result<(), AdminError> {
    let name = old.name.as_str();
    let snap = local.router.meta.snapshot();
    let mut grown = new_topic(old.name.clone(), old.id, count, old.overrides.clone());
    for (i, s) in old.signals.iter().enumerate() {
        grown.signals[i] = s.clone();
    }
    let grown = Arc::new(grown);
    let mut topics = snap.topics.clone();
    topics.insert(name.to_string(), grown.clone());
    publish_and_open(local, topics, &grown, old.partitions).await
}
