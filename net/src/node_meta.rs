//! `<log.dirs>/meta.properties`: which cluster and which node a data directory belongs to.
//!
//! Kafka writes this file in every log directory (`kafka-storage format`); Tern writes it at
//! the first start, in Kafka's Java-properties form:
//!
//! ```text
//! #Written by tern at its first start in this directory.
//! version=1
//! cluster.id=MkU3OEVBNTcwNTJENDM2Qk
//! node.id=1
//! ```
//!
//! A later start reads it back: a `cluster.id` or `node.id` in the configuration that
//! differs from the file's refuses to start (the data belongs to another node or cluster;
//! serving it would mix two clusters' logs). Without `cluster.id` in the configuration the
//! file's is used; at the first start one is generated: 16 random bytes in URL-safe base64
//! without padding (22 characters), as Kafka's are.
//!
//! The file is written to a temporary name, synced, renamed and the directory synced, so a
//! crash leaves either no file or the whole one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in the data directory.
pub const META_PROPERTIES: &str = "meta.properties";

/// The file format version we write and read.
const VERSION: &str = "1";

/// What the data directory says about its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    pub cluster_id: String,
    pub node_id: i32,
}

/// Why the data directory cannot be used by this configuration.
#[derive(Debug, thiserror::Error)]
pub enum NodeMetaError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{path}: this data directory belongs to cluster {stored} but cluster.id is {configured}; \
         use the data directory of that cluster or remove cluster.id"
    )]
    ClusterMismatch {
        path: PathBuf,
        stored: String,
        configured: String,
    },
    #[error(
        "{path}: this data directory belongs to node.id {stored} but node.id is {configured}; \
         a node's data cannot be served under another id"
    )]
    NodeMismatch {
        path: PathBuf,
        stored: i32,
        configured: i32,
    },
}

impl NodeMeta {
    /// Reads `dir/meta.properties` and checks it against the configuration, or writes it
    /// (durably) when it is missing.
    pub fn load_or_create(
        dir: &Path,
        node_id: i32,
        configured_cluster_id: Option<&str>,
    ) -> Result<NodeMeta, NodeMetaError> {
        let path = dir.join(META_PROPERTIES);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let stored = parse(&path, &text)?;
                if let Some(configured) = configured_cluster_id {
                    if configured != stored.cluster_id {
                        return Err(NodeMetaError::ClusterMismatch {
                            path,
                            stored: stored.cluster_id,
                            configured: configured.to_owned(),
                        });
                    }
                }
                if stored.node_id != node_id {
                    return Err(NodeMetaError::NodeMismatch {
                        path,
                        stored: stored.node_id,
                        configured: node_id,
                    });
                }
                Ok(stored)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = NodeMeta {
                    cluster_id: configured_cluster_id.map_or_else(new_cluster_id, str::to_owned),
                    node_id,
                };
                write(dir, &meta)?;
                Ok(meta)
            }
            Err(cause) => Err(NodeMetaError::Io { path, cause }),
        }
    }
}

/// A new cluster id: 16 random bytes, URL-safe base64 without padding.
pub fn new_cluster_id() -> String {
    base64_url(&rand::random::<[u8; 16]>())
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn parse(path: &Path, text: &str) -> Result<NodeMeta, NodeMetaError> {
    let malformed = |line: usize, reason: String| NodeMetaError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let (mut version, mut cluster_id, mut node_id) = (None, None, None);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(malformed(
                i + 1,
                format!("expected key=value, found {line:?}"),
            ));
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_owned()),
            "cluster.id" => cluster_id = Some(value.to_owned()),
            "node.id" | "broker.id" => {
                let id = value
                    .parse::<i32>()
                    .map_err(|_| malformed(i + 1, format!("node.id {value:?} is not a number")))?;
                node_id = Some(id);
            }
            // Kafka's other keys (directory.id) are kept by Kafka, not needed by Tern.
            _ => {}
        }
    }
    let end = text.lines().count().max(1);
    match version.as_deref() {
        Some(VERSION) | Some("0") => {}
        Some(v) => return Err(malformed(end, format!("unknown version {v:?}"))),
        None => return Err(malformed(end, "no version".to_owned())),
    }
    let cluster_id = cluster_id
        .filter(|c| !c.is_empty())
        .ok_or_else(|| malformed(end, "no cluster.id".to_owned()))?;
    let node_id = node_id.ok_or_else(|| malformed(end, "no node.id".to_owned()))?;
    Ok(NodeMeta {
        cluster_id,
        node_id,
    })
}

fn write(dir: &Path, meta: &NodeMeta) -> Result<(), NodeMetaError> {
    let path = dir.join(META_PROPERTIES);
    let tmp = dir.join(format!("{META_PROPERTIES}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |cause| NodeMetaError::Io { path: p, cause }
    };
    let text = format!(
        "#Written by tern at its first start in this directory.\nversion={VERSION}\n\
         cluster.id={}\nnode.id={}\n",
        meta.cluster_id, meta.node_id
    );
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the first start (a generated id, written), the next start (read back), and the
    /// refusals of another cluster's or node's directory and of a damaged file.
    #[test]
    fn written_once_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeMeta::load_or_create(dir.path(), 3, None).unwrap();
        assert_eq!(first.cluster_id.len(), 22);
        assert_eq!(
            NodeMeta::load_or_create(dir.path(), 3, None).unwrap(),
            first
        );
        let again = NodeMeta::load_or_create(dir.path(), 3, Some(&first.cluster_id)).unwrap();
        assert_eq!(again, first);
        let err = NodeMeta::load_or_create(dir.path(), 3, Some("other")).unwrap_err();
        assert!(err.to_string().contains("belongs to cluster"), "{err}");
        let err = NodeMeta::load_or_create(dir.path(), 4, None).unwrap_err();
        assert!(err.to_string().contains("belongs to node.id 3"), "{err}");
        assert!(!dir.path().join("meta.properties.tmp").exists());

        let path = dir.path().join(META_PROPERTIES);
        std::fs::write(&path, "version=1\nnode.id=3\n").unwrap();
        let err = NodeMeta::load_or_create(dir.path(), 3, None).unwrap_err();
        assert!(err.to_string().contains("no cluster.id"), "{err}");
        std::fs::write(&path, "version=9\ncluster.id=x\nnode.id=3\n").unwrap();
        assert!(NodeMeta::load_or_create(dir.path(), 3, None).is_err());
        std::fs::write(&path, "garbage\n").unwrap();
        let err = NodeMeta::load_or_create(dir.path(), 3, None).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        // Kafka's own file (with directory.id) is read.
        std::fs::write(
            &path,
            "#\n#Thu Dec 03\nnode.id=3\ndirectory.id=abc\nversion=1\ncluster.id=Kc1\n",
        )
        .unwrap();
        let kafka = NodeMeta::load_or_create(dir.path(), 3, Some("Kc1")).unwrap();
        assert_eq!(kafka.cluster_id, "Kc1");
    }

    /// Guards the base64 alphabet and length.
    #[test]
    fn cluster_ids_are_url_safe_base64() {
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_url(b"Man"), "TWFu");
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(new_cluster_id(), id);
    }
}
