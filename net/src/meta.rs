//! Topic metadata: one writer, immutable snapshots for every shard.
//!
//! The [`MetaStore`] holds the current [`Snapshot`] behind an `ArcSwap`: shards read it
//! without locks, and only the metadata writer (a task on shard 0, see `server.rs`) stores a
//! new one. Each change is persisted to `<log.dirs>/__tern/topics.json` (temp file, fsync,
//! rename, fsync of the directory) before it is published, so a topic that a client was told
//! exists survives a restart. Nothing here names a shard: placement is computed from the
//! configuration every time, so an operator can change `cores` and restart.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

/// The metadata directory inside the data directory.
pub const META_DIR: &str = "__tern";
const TOPICS_FILE: &str = "topics.json";
const FORMAT_VERSION: u32 = 1;

/// One topic as every shard sees it.
#[derive(Debug)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Per-topic config overrides (Kafka names → values).
    pub overrides: BTreeMap<String, String>,
    /// Woken whenever a partition's readable end moves (long-poll fetches wait on these).
    pub signals: Vec<Arc<Notify>>,
}

/// An immutable view of all topics.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Dynamic broker defaults (AlterConfigs of the broker), by broker key: in place of the
    /// config file's values for every topic that does not set the key itself.
    pub dynamic: BTreeMap<String, String>,
}

impl Snapshot {
    /// The topic and whether `partition` exists in it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&Arc<TopicMeta>> {
        self.topics
            .get(topic)
            .filter(|t| partition >= 0 && partition < t.partitions)
    }

    /// The topic with id `id`.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| t.id == id)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicRecord>,
    /// Dynamic broker defaults; absent when there are none (files written before them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    broker_configs: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: Uuid,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// Why metadata could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{}: not a Tern topics file ({reason})", path.display())]
    Format { path: PathBuf, reason: String },
}

/// The published metadata and where it is persisted.
#[derive(Debug)]
pub struct MetaStore {
    current: ArcSwap<Snapshot>,
    dir: PathBuf,
}

impl MetaStore {
    /// Loads `<data_dir>/__tern/topics.json` (an empty snapshot if missing).
    pub fn load(data_dir: &Path) -> Result<MetaStore, MetaError> {
        let dir = data_dir.join(META_DIR);
        fs::create_dir_all(&dir).map_err(|cause| MetaError::Io {
            path: dir.clone(),
            cause,
        })?;
        let path = dir.join(TOPICS_FILE);
        let mut snap = Snapshot::default();
        match fs::read(&path) {
            Ok(bytes) => {
                let file: TopicsFile =
                    serde_json::from_slice(&bytes).map_err(|e| MetaError::Format {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != FORMAT_VERSION {
                    return Err(MetaError::Format {
                        path,
                        reason: format!("version {} (this build reads 1)", file.version),
                    });
                }
                for t in file.topics {
                    snap.topics.insert(t.name.clone(), Arc::new(topic_meta(t)));
                }
                snap.dynamic = file.broker_configs;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(cause) => return Err(MetaError::Io { path, cause }),
        }
        Ok(MetaStore {
            current: ArcSwap::from_pointee(snap),
            dir,
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Persists `topics` and publishes them as the next snapshot (the dynamic broker
    /// defaults unchanged). Only the metadata writer calls this.
    pub fn publish(&self, topics: BTreeMap<String, Arc<TopicMeta>>) -> Result<(), MetaError> {
        let dynamic = self.current.load().dynamic.clone();
        self.publish_all(topics, dynamic)
    }

    /// Persists and publishes new dynamic broker defaults (the topics unchanged). Only the
    /// metadata writer calls this.
    pub fn publish_dynamic(&self, dynamic: BTreeMap<String, String>) -> Result<(), MetaError> {
        let topics = self.current.load().topics.clone();
        self.publish_all(topics, dynamic)
    }

    fn publish_all(
        &self,
        topics: BTreeMap<String, Arc<TopicMeta>>,
        dynamic: BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        let file = TopicsFile {
            version: FORMAT_VERSION,
            topics: topics
                .values()
                .map(|t| TopicRecord {
                    name: t.name.clone(),
                    id: t.id,
                    partitions: t.partitions,
                    configs: t.overrides.clone(),
                })
                .collect(),
            broker_configs: dynamic.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| MetaError::Format {
            path: self.dir.join(TOPICS_FILE),
            reason: e.to_string(),
        })?;
        write_atomically(&self.dir, TOPICS_FILE, &bytes)?;
        let version = self.current.load().version + 1;
        self.current.store(Arc::new(Snapshot {
            version,
            topics,
            dynamic,
        }));
        Ok(())
    }
}

/// A new topic's metadata with fresh signals.
pub fn new_topic(
    name: String,
    id: Uuid,
    partitions: i32,
    overrides: BTreeMap<String, String>,
) -> TopicMeta {
    topic_meta(TopicRecord {
        name,
        id,
        partitions,
        configs: overrides,
    })
}

fn topic_meta(t: TopicRecord) -> TopicMeta {
    TopicMeta {
        signals: (0..t.partitions.max(0))
            .map(|_| Arc::new(Notify::new()))
            .collect(),
        name: t.name,
        id: t.id,
        partitions: t.partitions,
        overrides: t.configs,
    }
}

/// A random (version 4) topic id.
pub fn random_uuid() -> Uuid {
    let mut b = [0u8; 16];
    let filled = fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut b)
    });
    if filled.is_err() {
        // Fall back to time and address entropy; ids only need to be unique per cluster.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let a = &b as *const _ as u128;
        b = (t ^ a.rotate_left(64)).to_le_bytes();
    }
    uuid::Builder::from_random_bytes(b).into_uuid()
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), MetaError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| MetaError::Io { path, cause }
    };
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &dst).map_err(io(&dst))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards that published topics survive a reload, ids and overrides included.
    #[test]
    fn publish_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::load(dir.path()).unwrap();
        assert!(store.snapshot().topics.is_empty());
        let mut topics = BTreeMap::new();
        let id = random_uuid();
        let mut cfg = BTreeMap::new();
        cfg.insert("retention.ms".to_string(), "1000".to_string());
        topics.insert(
            "t".to_string(),
            Arc::new(new_topic("t".into(), id, 3, cfg.clone())),
        );
        store.publish(topics).unwrap();
        assert_eq!(store.snapshot().version, 1);
        let again = MetaStore::load(dir.path()).unwrap();
        let snap = again.snapshot();
        let t = snap.partition("t", 2).unwrap();
        assert_eq!((t.id, t.partitions, &t.overrides), (id, 3, &cfg));
        assert_eq!(t.signals.len(), 3);
        assert!(snap.partition("t", 3).is_none());
        assert!(snap.topic_by_id(id).is_some());
        // Dynamic broker defaults are kept with the topics, and survive a reload.
        let dynamic = BTreeMap::from([("log.retention.ms".to_string(), "5000".to_string())]);
        again.publish_dynamic(dynamic.clone()).unwrap();
        let third = MetaStore::load(dir.path()).unwrap();
        assert_eq!(third.snapshot().dynamic, dynamic);
        assert_eq!(third.snapshot().topics.len(), 1);
    }

    /// Guards that a damaged topics file stops startup with a clear error.
    #[test]
    fn corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        fs::write(dir.path().join(META_DIR).join(TOPICS_FILE), b"{nope").unwrap();
        let err = MetaStore::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a Tern topics file"), "{err}");
    }
}
