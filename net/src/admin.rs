//! The metadata writer: the one task (on shard 0) that creates, deletes and grows topics.
//!
//! A change is decided by [`apply`], a pure function of the current topic table, the
//! broker's configuration and the command: a new table and the [`Effect`] the shards must
//! carry out, or a typed refusal. [`commit`] then persists and publishes the new table (see
//! `meta.rs`) and only then has the owning shards open or drop the partitions; the request
//! is answered once every shard has done so, so a client that sees "created" can produce at
//! once. In a cluster the controller decides instead (`cluster.rs`), and this node's table
//! follows the committed image through the same [`commit`].

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use tern_tuning::{BrokerConfig, TopicConfig};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::config_map::topic_config;
use crate::error::AdminError;
use crate::meta::{new_topic, random_uuid, TopicMeta};
use crate::router::ShardGone;
use crate::shard::{ShardMsg, ShardState};

/// Bound of the metadata writer's queue.
pub const META_QUEUE_MAX: usize = 1024;

/// The topic table: topics by name.
pub type Topics = BTreeMap<String, Arc<TopicMeta>>;

/// A change to the topic table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// CreateTopics; -1 partitions or replication factor means the broker's default.
    Create {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    },
    /// DeleteTopics.
    Delete { name: String },
    /// CreatePartitions: grow the topic to `count` partitions.
    CreatePartitions { name: String, count: i32 },
    /// AlterConfigs (`replace`: the topic's overrides become exactly the `Set`s) and
    /// IncrementalAlterConfigs (the operations on the current overrides, in order).
    AlterConfigs {
        name: String,
        ops: Vec<(String, ConfigOp)>,
        replace: bool,
    },
    /// The same on the dynamic broker defaults (broker keys of
    /// [`tern_tuning::DYNAMIC_BROKER_KEYS`]); every topic's open partitions take them.
    AlterBrokerConfigs {
        ops: Vec<(String, ConfigOp)>,
        replace: bool,
    },
}

/// One operation of an (Incremental)AlterConfigs on a topic key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// The topic overrides the key with this value.
    Set(String),
    /// The topic no longer overrides the key: the broker's default applies again.
    Delete,
    /// Adds an item to a list-valued key (`cleanup.policy`).
    Append(String),
    /// Removes an item from a list-valued key.
    Subtract(String),
}

/// The topic keys whose values are comma-separated lists (APPEND and SUBTRACT apply).
const LIST_KEYS: &[&str] = &["cleanup.policy"];

/// What the shards do once a new table is published.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Open the partitions `from..` of `topic` (on the shards that own them).
    Open { topic: Arc<TopicMeta>, from: i32 },
    /// Close the topic's partitions and delete their data.
    Drop { topic: String },
    /// Give the topic's open partitions its new configuration.
    Reconfigure { topic: Arc<TopicMeta> },
}

/// A decided change: the new table, what the shards must do, and the topic as the answer
/// describes it (the created or grown topic, or the deleted one).
#[derive(Debug, Clone)]
pub struct Applied {
    pub topics: Topics,
    pub effect: Effect,
    pub topic: Arc<TopicMeta>,
}

/// A request to the metadata writer.
#[derive(Debug)]
pub struct MetaMsg {
    pub command: AdminCommand,
    /// Decide and answer, change nothing (CreateTopics' and CreatePartitions' validate_only).
    pub validate_only: bool,
    /// The topic as changed; `None` for a change of the broker's defaults.
    pub reply: oneshot::Sender<Result<Option<Arc<TopicMeta>>, AdminError>>,
}

/// Decides `command` against `topics` on a single node: the new table and its effect, or
/// why it is refused. `new_id` is the id a created topic gets. Pure: no IO, no clock.
pub fn apply(
    topics: &Topics,
    config: &BrokerConfig,
    command: AdminCommand,
    new_id: Uuid,
) -> Result<Applied, AdminError> {
    match command {
        AdminCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            tern_tuning::validate_topic_name(&name)
                .map_err(|e| AdminError::InvalidTopic(e.to_string()))?;
            if topics.contains_key(&name) {
                return Err(AdminError::TopicExists(name));
            }
            let partitions = if partitions == -1 {
                config.num_partitions
            } else {
                partitions
            };
            if partitions < 1 {
                return Err(AdminError::TooFewPartitions(partitions));
            }
            let rf = if replication_factor == -1 {
                config.default_replication_factor
            } else {
                replication_factor
            };
            if rf != 1 {
                return Err(AdminError::ReplicationFactor {
                    requested: rf,
                    brokers: 1,
                });
            }
            checked(config, &configs)?;
            Ok(created(
                topics,
                new_topic(name, new_id, partitions, configs),
            ))
        }
        AdminCommand::Delete { name } => deleted(topics, &name),
        AdminCommand::CreatePartitions { name, count } => {
            let Some(old) = topics.get(&name) else {
                return Err(AdminError::UnknownTopic(name));
            };
            if count <= old.partitions {
                return Err(AdminError::PartitionsNotIncreased {
                    current: old.partitions,
                    requested: count,
                    name,
                });
            }
            Ok(grown(topics, old, count))
        }
        AdminCommand::AlterConfigs { name, ops, replace } => {
            let Some(old) = topics.get(&name) else {
                return Err(AdminError::UnknownTopic(name));
            };
            let overrides = altered(config, &old.overrides, ops, replace)?;
            Ok(reconfigured(topics, old, overrides))
        }
        // Not a topic change: decided by `altered_dynamic`.
        AdminCommand::AlterBrokerConfigs { .. } => Err(AdminError::Unexpected("AlterConfigs")),
    }
}

/// The dynamic broker defaults after `ops` (on none when `replace`), validated: only keys of
/// [`tern_tuning::DYNAMIC_BROKER_KEYS`] (another broker key is read-only, an unknown one
/// unknown), each value by the rules of the topic key it is the default of.
pub fn altered_dynamic(
    config: &BrokerConfig,
    current: &BTreeMap<String, String>,
    ops: Vec<(String, ConfigOp)>,
    replace: bool,
) -> Result<BTreeMap<String, String>, AdminError> {
    let start = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    let key_ok = |key: &str| match tern_tuning::dynamic_topic_key(key) {
        Some(_) => Ok(()),
        None if config.entries().iter().any(|e| e.name == key) => {
            Err(AdminError::ReadOnlyConfig(key.to_string()))
        }
        None => Err(AdminError::UnknownBrokerConfig(key.to_string())),
    };
    let dynamic = apply_ops(start, ops, key_ok, |_, _| Ok(None))?;
    TopicConfig::defaults_with(config, &dynamic)?;
    Ok(dynamic)
}

/// A topic's overrides after `ops` (on none when `replace`), validated and in the form
/// DescribeConfigs shows them; the first bad key, operation or value is the error.
pub fn altered(
    config: &BrokerConfig,
    current: &BTreeMap<String, String>,
    ops: Vec<(String, ConfigOp)>,
    replace: bool,
) -> Result<BTreeMap<String, String>, AdminError> {
    let defaults = TopicConfig::defaults_from(config);
    let start = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    // An unknown key is named with the keys there are.
    let key_ok = |key: &str| Ok(defaults.clone().reset(key, &defaults)?);
    let list = |map: &BTreeMap<String, String>, key: &str| match LIST_KEYS.contains(&key) {
        true => list_value(config, map, key).map(Some),
        false => Ok(None),
    };
    let overrides = apply_ops(start, ops, key_ok, list)?;
    Ok(checked(config, &overrides)?.overrides())
}

/// Applies `ops` in order to `map`: `key_ok` vets each key (once per request: a key twice is
/// refused), `list` gives the items of a list-valued key (`None`: not a list, so APPEND and
/// SUBTRACT are refused).
fn apply_ops(
    mut map: BTreeMap<String, String>,
    ops: Vec<(String, ConfigOp)>,
    key_ok: impl Fn(&str) -> Result<(), AdminError>,
    list: impl Fn(&BTreeMap<String, String>, &str) -> Result<Option<Vec<String>>, AdminError>,
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut seen = std::collections::BTreeSet::new();
    for (key, op) in ops {
        key_ok(&key)?;
        if !seen.insert(key.clone()) {
            return Err(AdminError::DuplicateConfig(key));
        }
        let (item, append) = match op {
            ConfigOp::Set(v) => {
                map.insert(key, v);
                continue;
            }
            ConfigOp::Delete => {
                map.remove(&key);
                continue;
            }
            ConfigOp::Append(item) => (item, true),
            ConfigOp::Subtract(item) => (item, false),
        };
        let Some(mut items) = list(&map, &key)? else {
            return Err(AdminError::NotAList(key));
        };
        if !append {
            items.retain(|i| *i != item);
        } else if !items.contains(&item) {
            items.push(item);
        }
        map.insert(key, items.join(","));
    }
    Ok(map)
}

/// The items of list-valued `key` as `overrides` over the broker's defaults make it.
fn list_value(
    config: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<String>, AdminError> {
    let value = match overrides.get(key) {
        Some(v) => v.clone(),
        None => checked(config, &BTreeMap::new())?
            .entries()
            .into_iter()
            .find(|e| e.name == key)
            .map(|e| e.value)
            .unwrap_or_default(),
    };
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect())
}

/// `topics` with `old` taking `overrides` (same id, partitions and wake-up signals).
pub fn reconfigured(
    topics: &Topics,
    old: &Arc<TopicMeta>,
    overrides: BTreeMap<String, String>,
) -> Applied {
    let mut meta = new_topic(old.name.clone(), old.id, old.partitions, overrides);
    meta.signals = old.signals.clone();
    let topic = Arc::new(meta);
    let mut topics = topics.clone();
    topics.insert(topic.name.clone(), topic.clone());
    Applied {
        topics,
        effect: Effect::Reconfigure {
            topic: topic.clone(),
        },
        topic,
    }
}

/// Checks a topic's overrides: each value alone against its key's rules (the defaults under
/// them, dynamic or not, play no part), as the topic configuration they make.
fn checked(
    config: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicConfig, AdminError> {
    Ok(topic_config(config, &BTreeMap::new(), overrides)?)
}

/// `topics` with `meta` added.
pub fn created(topics: &Topics, meta: TopicMeta) -> Applied {
    opened(topics, meta, 0)
}

/// `topics` with `meta` in place of its namesake, and its partitions `from..` to open.
fn opened(topics: &Topics, meta: TopicMeta, from: i32) -> Applied {
    let topic = Arc::new(meta);
    let mut topics = topics.clone();
    topics.insert(topic.name.clone(), topic.clone());
    Applied {
        topics,
        effect: Effect::Open {
            topic: topic.clone(),
            from,
        },
        topic,
    }
}

/// `topics` without the topic `name`.
pub fn deleted(topics: &Topics, name: &str) -> Result<Applied, AdminError> {
    let Some(topic) = topics.get(name).cloned() else {
        return Err(AdminError::UnknownTopic(name.to_string()));
    };
    let mut topics = topics.clone();
    topics.remove(name);
    Ok(Applied {
        topics,
        effect: Effect::Drop {
            topic: name.to_string(),
        },
        topic,
    })
}

/// `topics` with `old` grown to `count` partitions (its existing partitions keep their
/// wake-up signals, so long polls waiting on them still wake).
pub fn grown(topics: &Topics, old: &Arc<TopicMeta>, count: i32) -> Applied {
    debug_assert!(count > old.partitions);
    let mut grown = new_topic(old.name.clone(), old.id, count, old.overrides.clone());
    for (i, s) in old.signals.iter().enumerate() {
        grown.signals[i] = s.clone();
    }
    opened(topics, grown, old.partitions)
}

/// Runs the metadata writer until its queue closes.
pub async fn run_writer(local: Rc<ShardState>, mut rx: mpsc::Receiver<MetaMsg>) {
    while let Some(msg) = rx.recv().await {
        // In a cluster the controller decides: forwarded, and other requests go on while it
        // commits this one.
        if local.router.cluster.is_some() {
            tokio_uring::spawn(crate::cluster::forward(local.clone(), msg));
            continue;
        }
        let MetaMsg {
            command,
            validate_only,
            reply,
        } = msg;
        let snap = local.router.meta.snapshot();
        if let AdminCommand::AlterBrokerConfigs { ops, replace } = command {
            let decided = altered_dynamic(&local.router.config, &snap.dynamic, ops, replace);
            let answer = match decided {
                Ok(_) if validate_only => Ok(None),
                Ok(dynamic) => commit_dynamic(&local, dynamic).await.map(|()| None),
                Err(e) => Err(e),
            };
            let _ = reply.send(answer);
            continue;
        }
        let decided = apply(&snap.topics, &local.router.config, command, random_uuid());
        let answer = match decided {
            Ok(applied) if validate_only => Ok(Some(applied.topic)),
            Ok(applied) => {
                let topic = applied.topic.clone();
                commit(&local, applied).await.map(|()| Some(topic))
            }
            Err(e) => Err(e),
        };
        let _ = reply.send(answer);
    }
}

/// Persists and publishes new dynamic broker defaults, then has every shard reconfigure the
/// open partitions of every topic (those that set a key themselves keep their value).
pub async fn commit_dynamic(
    local: &Rc<ShardState>,
    dynamic: BTreeMap<String, String>,
) -> Result<(), AdminError> {
    let router = &local.router;
    router.meta.publish_dynamic(dynamic)?;
    let snap = router.meta.snapshot();
    for topic in snap.topics.values() {
        let effect = Effect::Reconfigure {
            topic: topic.clone(),
        };
        run_effect(local, &effect).await?;
    }
    Ok(())
}

/// Persists and publishes `applied.topics`, then has every shard carry out its effect.
pub async fn commit(local: &Rc<ShardState>, applied: Applied) -> Result<(), AdminError> {
    local.router.meta.publish(applied.topics)?;
    run_effect(local, &applied.effect).await
}

/// Has every shard carry out `effect` (the table that asks for it is published).
async fn run_effect(local: &Rc<ShardState>, effect: &Effect) -> Result<(), AdminError> {
    let router = &local.router;
    for shard in 0..router.shard_count() {
        let (tx, rx) = oneshot::channel();
        let msg = match effect {
            Effect::Open { topic, from } => ShardMsg::Open {
                topic: topic.clone(),
                from: *from,
                reply: tx,
            },
            Effect::Reconfigure { topic } => ShardMsg::Reconfigure {
                topic: topic.clone(),
                reply: tx,
            },
            Effect::Drop { topic } => {
                let (done, gone) = oneshot::channel();
                let msg = ShardMsg::Drop {
                    topic: topic.clone(),
                    reply: done,
                };
                // A shard that is gone has nothing left to drop.
                if router.dispatch(local, shard, msg).await.is_ok() {
                    let _ = gone.await;
                }
                continue;
            }
        };
        router.dispatch(local, shard, msg).await?;
        rx.await
            .map_err(|_| ShardGone(shard))?
            .map_err(|e| AdminError::Open {
                shard,
                source: Box::new(e),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig {
            num_partitions: 3,
            ..Default::default()
        }
    }

    fn create(name: &str, partitions: i32, rf: i16) -> AdminCommand {
        AdminCommand::Create {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    #[test]
    fn create_adds_the_topic_with_defaults_and_opens_all_its_partitions() {
        let a = apply(&Topics::new(), &config(), create("t", -1, -1), id(1)).unwrap();
        assert_eq!(a.topic.partitions, 3);
        assert_eq!(a.topic.id, id(1));
        assert!(a.topics.contains_key("t"));
        assert!(matches!(a.effect, Effect::Open { from: 0, .. }));
    }

    #[test]
    fn create_refusals_name_their_cause() {
        let c = config();
        let t = apply(&Topics::new(), &c, create("t", 1, 1), id(1))
            .unwrap()
            .topics;
        let cases = [
            (create("t", 1, 1), "already exists"),
            (create("bad name!", 1, 1), "invalid topic name"),
            (create("u", 0, 1), "at least 1"),
            (create("u", 1, 3), "replication factor 3"),
        ];
        for (cmd, want) in cases {
            let e = apply(&t, &c, cmd.clone(), id(2)).unwrap_err();
            assert!(e.to_string().contains(want), "{cmd:?}: {e}");
        }
        let bad_config = AdminCommand::Create {
            name: "u".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".into(), "soon".into())]),
        };
        assert!(matches!(
            apply(&t, &c, bad_config, id(2)),
            Err(AdminError::Config(_))
        ));
        // A refusal leaves the table as it was: the caller still holds `t`.
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn grow_keeps_signals_and_opens_only_new_partitions() {
        let c = config();
        let t = apply(&Topics::new(), &c, create("t", 2, 1), id(1))
            .unwrap()
            .topics;
        let grow = AdminCommand::CreatePartitions {
            name: "t".into(),
            count: 5,
        };
        let a = apply(&t, &c, grow, id(9)).unwrap();
        assert_eq!(a.topic.partitions, 5);
        assert_eq!(a.topic.id, id(1));
        assert!(Arc::ptr_eq(&a.topic.signals[1], &t["t"].signals[1]));
        assert!(matches!(a.effect, Effect::Open { from: 2, .. }));
        for count in [2, 1, -1] {
            let shrink = AdminCommand::CreatePartitions {
                name: "t".into(),
                count,
            };
            assert!(matches!(
                apply(&t, &c, shrink, id(9)),
                Err(AdminError::PartitionsNotIncreased { .. })
            ));
        }
        let unknown = AdminCommand::CreatePartitions {
            name: "nope".into(),
            count: 9,
        };
        assert!(matches!(
            apply(&t, &c, unknown, id(9)),
            Err(AdminError::UnknownTopic(_))
        ));
    }

    #[test]
    fn delete_removes_the_topic_and_answers_its_id() {
        let c = config();
        let t = apply(&Topics::new(), &c, create("t", 2, 1), id(4))
            .unwrap()
            .topics;
        let del = AdminCommand::Delete { name: "t".into() };
        let a = apply(&t, &c, del.clone(), id(9)).unwrap();
        assert!(a.topics.is_empty());
        assert_eq!(a.topic.id, id(4));
        assert!(matches!(a.effect, Effect::Drop { .. }));
        assert!(matches!(
            apply(&a.topics, &c, del, id(9)),
            Err(AdminError::UnknownTopic(_))
        ));
    }
}
