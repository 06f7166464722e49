//! Where a request for a partition goes: the placement of partitions on shards and the
//! queues that reach them. Shared (read-only) by every shard thread.

use std::rc::Rc;
use std::sync::Arc;

use tern_tuning::BrokerConfig;
use tokio::sync::{mpsc, oneshot};

use crate::admin::{AdminCommand, MetaMsg};
use crate::error::AdminError;
use crate::meta::{MetaStore, TopicMeta};
use crate::shard::{ShardMsg, ShardState};

/// Shared routing state.
#[derive(Debug)]
pub struct Router {
    pub config: Arc<BrokerConfig>,
    pub meta: Arc<MetaStore>,
    /// Every shard's counters (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    meta_tx: mpsc::Sender<MetaMsg>,
    local_addr: std::net::SocketAddr,
    /// The cluster this node belongs to (`meta.properties`).
    cluster_id: String,
    /// This node's cluster driver, when `controller.quorum.voters` is set.
    pub cluster: Option<tern_replication::node::ClusterNode>,
    /// InitProducerId's allocator.
    pub producer_ids: crate::producer_ids::ProducerIds,
}

/// Which cluster this broker belongs to, and its cluster driver when it is one of several.
#[derive(Debug)]
pub struct Membership {
    pub cluster_id: String,
    pub node: Option<tern_replication::node::ClusterNode>,
}

/// The shard that should have answered is gone (the broker is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

impl Router {
    pub fn new(
        config: Arc<BrokerConfig>,
        meta: Arc<MetaStore>,
        shards: Vec<mpsc::Sender<ShardMsg>>,
        meta_tx: mpsc::Sender<MetaMsg>,
        local_addr: std::net::SocketAddr,
        membership: Membership,
        producer_ids: crate::producer_ids::ProducerIds,
    ) -> Self {
        let Membership {
            cluster_id,
            node: cluster,
        } = membership;
        Router {
            metrics: Arc::new(crate::metrics::Metrics::new(shards.len())),
            config,
            meta,
            shards,
            meta_tx,
            local_addr,
            cluster_id,
            cluster,
            producer_ids,
        }
    }

    /// Messages waiting in each shard's queue.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .collect()
    }

    /// Whether this broker serves `topic`/`partition` (in a cluster: leads it).
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        crate::cluster::leads(self.cluster.as_ref(), self.config.node_id, topic, partition)
    }

    /// The cluster id this node answers in Metadata and DescribeCluster.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard owning `topic`/`partition` under the configured placement.
    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        tern_tuning::place(
            topic,
            partition,
            self.shards.len(),
            self.config.placement,
            &self.config.pins,
        )
    }

    /// Sends `msg` to `shard`, handling it in place when that is the calling shard.
    pub async fn dispatch(
        &self,
        local: &Rc<ShardState>,
        shard: usize,
        msg: ShardMsg,
    ) -> Result<(), ShardGone> {
        if shard == local.index {
            local.handle(msg);
            return Ok(());
        }
        let tx = self.shards.get(shard).ok_or(ShardGone(shard))?;
        local.metrics().cross_shard_message();
        tx.send(msg).await.map_err(|_| ShardGone(shard))
    }

    /// Asks the owner of `topic`/`partition` and waits for its answer; `None` if that shard
    /// is gone.
    pub async fn ask<T>(
        &self,
        local: &Rc<ShardState>,
        topic: &str,
        partition: i32,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let owner = self.owner(topic, partition);
        self.dispatch(local, owner, make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// [`Router::ask`] for a partition this broker leads; `None` (not the leader, or the
    /// shard is gone) otherwise.
    pub async fn ask_leader<T>(
        &self,
        local: &Rc<ShardState>,
        topic: &str,
        partition: i32,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Option<T> {
        if !self.leads(topic, partition) {
            return None;
        }
        self.ask(local, topic, partition, make).await
    }

    /// Sends a command to the metadata writer and waits for its answer: the created, grown,
    /// reconfigured or deleted topic.
    pub async fn admin(
        &self,
        command: AdminCommand,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, AdminError> {
        self.write_meta(command, validate_only)
            .await?
            .ok_or(AdminError::Unexpected("a topic change"))
    }

    /// Changes the dynamic broker defaults through the metadata writer.
    pub async fn alter_broker(
        &self,
        ops: Vec<(String, crate::admin::ConfigOp)>,
        replace: bool,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let command = AdminCommand::AlterBrokerConfigs { ops, replace };
        self.write_meta(command, validate_only).await.map(|_| ())
    }

    async fn write_meta(
        &self,
        command: AdminCommand,
        validate_only: bool,
    ) -> Result<Option<Arc<TopicMeta>>, AdminError> {
        let (reply, rx) = oneshot::channel();
        let msg = MetaMsg {
            command,
            validate_only,
            reply,
        };
        self.meta_tx
            .send(msg)
            .await
            .map_err(|_| AdminError::WriterStopped)?;
        rx.await.map_err(|_| AdminError::WriterStopped)?
    }
}
