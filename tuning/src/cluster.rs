//! The cluster keys (Kafka's KRaft names): who the controller voters are, which roles this
//! node plays, the timeouts of broker sessions and elections, and the TLS files of the QUIC
//! transport between nodes.
//!
//! A configuration without `controller.quorum.voters` is the single-node broker: none of
//! these keys may then ask for a cluster (a controller role, TLS files), so a typo cannot
//! silently start a lone node that believes it is one of three.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::ConfigErrorKind;
use crate::listener::{is_host_name, HostPort};

/// One controller voter: `id@host:port` in `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voter {
    /// The voter's `node.id`.
    pub id: i32,
    /// Its CONTROLLER listener (QUIC).
    pub address: HostPort,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.address)
    }
}

/// `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    pub broker: bool,
    pub controller: bool,
}

impl ProcessRoles {
    /// Kafka's spelling: `broker,controller`, `broker` or `controller`.
    pub fn as_str(self) -> &'static str {
        match (self.broker, self.controller) {
            (true, true) => "broker,controller",
            (false, true) => "controller",
            _ => "broker",
        }
    }
}

/// The certificate, key and CA of this node's QUIC endpoint (`quic.tls.*`), PEM files. Both
/// ends present a certificate signed by the CA (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicTls {
    /// `quic.tls.cert`: this node's certificate chain.
    pub cert: PathBuf,
    /// `quic.tls.key`: its private key.
    pub key: PathBuf,
    /// `quic.tls.ca`: the CA that signs every node's certificate.
    pub ca: PathBuf,
}

/// The cluster settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `controller.quorum.voters`: empty for a single node.
    pub voters: Vec<Voter>,
    /// `process.roles`: `broker,controller` when this node is a voter, else `broker`.
    pub roles: ProcessRoles,
    /// `broker.session.timeout.ms`: a broker without a heartbeat for this long is fenced.
    pub broker_session_timeout_ms: i64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the controller.
    pub broker_heartbeat_interval_ms: i64,
    /// `controller.quorum.election.timeout.ms`: a voter that hears no leader for this long
    /// (randomised up to twice it) starts an election.
    pub election_timeout_ms: i64,
    /// `cluster.id`: the cluster this node belongs to; when unset it is generated at the
    /// first start and kept in `meta.properties`.
    pub cluster_id: Option<String>,
    /// `broker.rack`: spread replicas over racks.
    pub rack: Option<String>,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
    /// `quic.tls.*`: required in a cluster.
    pub tls: Option<QuicTls>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            voters: Vec::new(),
            roles: ProcessRoles {
                broker: true,
                controller: false,
            },
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            election_timeout_ms: 1000,
            cluster_id: None,
            rack: None,
            auto_leader_rebalance: true,
            tls: None,
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster (voters are configured).
    pub fn is_cluster(&self) -> bool {
        !self.voters.is_empty()
    }

    /// The voter with this id.
    pub fn voter(&self, id: i32) -> Option<&Voter> {
        self.voters.iter().find(|v| v.id == id)
    }
}

const VOTERS: &str = "controller.quorum.voters";

/// Parses `controller.quorum.voters`: `id@host:port` entries, comma-separated; ids and
/// addresses unique.
pub(crate) fn parse_voters(text: &str) -> Result<Vec<Voter>, ConfigErrorKind> {
    let invalid = |found: &str| ConfigErrorKind::Invalid {
        key: VOTERS.to_owned(),
        expected: "entries like \"1@127.0.0.1:9093,2@127.0.0.2:9093\" (node id ≥ 0 @ host:port)"
            .to_owned(),
        found: format!("{found:?}"),
    };
    let mut voters: Vec<Voter> = Vec::new();
    if text.trim().is_empty() {
        return Ok(voters);
    }
    for entry in text.split(',') {
        let entry = entry.trim();
        let (id, address) = entry.split_once('@').ok_or_else(|| invalid(entry))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .ok_or_else(|| invalid(entry))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid(entry))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(entry))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() && !is_host_name(host) {
            return Err(invalid(entry));
        }
        let voter = Voter {
            id,
            address: HostPort {
                host: host.to_owned(),
                port,
            },
        };
        if let Some(twice) = voters
            .iter()
            .find(|v| v.id == voter.id || v.address == voter.address)
        {
            return Err(ConfigErrorKind::Invalid {
                key: VOTERS.to_owned(),
                expected: "each node id and each address once".to_owned(),
                found: format!("{twice} and {voter}"),
            });
        }
        voters.push(voter);
    }
    Ok(voters)
}

/// Parses `process.roles`.
pub(crate) fn parse_roles(text: &str) -> Result<ProcessRoles, ConfigErrorKind> {
    let mut roles = ProcessRoles {
        broker: false,
        controller: false,
    };
    for role in text.split(',').map(str::trim) {
        match role {
            "broker" if !roles.broker => roles.broker = true,
            "controller" if !roles.controller => roles.controller = true,
            _ => {
                return Err(ConfigErrorKind::NotAllowed {
                    key: "process.roles".to_owned(),
                    value: format!("{text:?}"),
                    allowed: "\"broker,controller\" or \"broker\"".to_owned(),
                })
            }
        }
    }
    if !roles.broker {
        return Err(ConfigErrorKind::Unsupported {
            key: "process.roles".to_owned(),
            what: "a controller-only node".to_owned(),
            instead: "\"broker,controller\"".to_owned(),
        });
    }
    Ok(roles)
}

/// Checks `cluster.id`: Kafka's are 22 characters of URL-safe base64; we accept 1 to 64
/// URL-safe characters.
pub(crate) fn check_cluster_id(id: &str) -> Result<(), ConfigErrorKind> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigErrorKind::Invalid {
            key: "cluster.id".to_owned(),
            expected: "1 to 64 characters of A-Z a-z 0-9 - _".to_owned(),
            found: format!("{id:?}"),
        })
    }
}

/// The checks across keys, once every key is read: `node_id` and the CONTROLLER listener
/// against the voters and the roles.
pub(crate) fn check(
    cluster: &ClusterConfig,
    node_id: i32,
    roles_given: bool,
    controller_listener: Option<SocketAddr>,
) -> Result<(), ConfigErrorKind> {
    let mismatch = |key: &str, expected: String, found: String| {
        Err(ConfigErrorKind::Invalid {
            key: key.to_owned(),
            expected,
            found,
        })
    };
    if !cluster.is_cluster() {
        if cluster.roles.controller {
            return mismatch(
                "process.roles",
                format!("\"broker\" when {VOTERS} is empty (a single node)"),
                format!("{:?}", cluster.roles.as_str()),
            );
        }
        if cluster.tls.is_some() {
            return mismatch(
                "quic.tls.cert",
                format!("no TLS files when {VOTERS} is empty (a single node has no QUIC peers)"),
                "quic.tls.* set".to_owned(),
            );
        }
        return Ok(());
    }
    let own = cluster.voter(node_id);
    if roles_given && cluster.roles.controller != own.is_some() {
        let expected = if own.is_some() {
            format!("\"broker,controller\": node {node_id} is one of {VOTERS}")
        } else {
            format!("\"broker\": node {node_id} is not one of {VOTERS}")
        };
        return mismatch(
            "process.roles",
            expected,
            format!("{:?}", cluster.roles.as_str()),
        );
    }
    let Some(listener) = controller_listener else {
        return mismatch(
            "listeners",
            format!("a CONTROLLER listener (\"PLAINTEXT://…,CONTROLLER://host:port\") when {VOTERS} is set"),
            "none".to_owned(),
        );
    };
    if let Some(own) = own {
        let host_ok = listener.ip().is_unspecified()
            || own
                .address
                .host
                .parse::<std::net::IpAddr>()
                .map_or(true, |ip| ip == listener.ip());
        if own.address.port != listener.port() || !host_ok {
            return mismatch(
                VOTERS,
                format!(
                    "this node's entry ({node_id}@…) to name its CONTROLLER listener {listener}"
                ),
                own.to_string(),
            );
        }
    }
    if cluster.tls.is_none() {
        return mismatch(
            "quic.tls.cert",
            format!(
                "quic.tls.cert, quic.tls.key and quic.tls.ca when {VOTERS} is set \
                 (`tern cert dev --nodes N --out DIR` makes them)"
            ),
            "none".to_owned(),
        );
    }
    if cluster.cluster_id.is_none() {
        return mismatch(
            "cluster.id",
            format!(
                "the same cluster.id on every node when {VOTERS} is set \
                 (`tern cert dev` prints a new one)"
            ),
            "none".to_owned(),
        );
    }
    if cluster.broker_heartbeat_interval_ms >= cluster.broker_session_timeout_ms {
        return mismatch(
            "broker.heartbeat.interval.ms",
            format!(
                "less than broker.session.timeout.ms ({})",
                cluster.broker_session_timeout_ms
            ),
            cluster.broker_heartbeat_interval_ms.to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the voter list notation and its refusals.
    #[test]
    fn voters() {
        let v = parse_voters("1@127.0.0.1:9093, 2@127.0.0.2:9093,3@[::1]:9093").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].address.host, "::1");
        assert_eq!(v[0].to_string(), "1@127.0.0.1:9093");
        assert!(parse_voters("").unwrap().is_empty());
        let err = |t: &str| parse_voters(t).unwrap_err().to_string();
        assert!(err("1@a:9093,1@b:9093").contains("each node id and each address once"));
        assert!(err("1@a:9093,2@a:9093").contains("each node id and each address once"));
        assert!(err("x@a:9093").contains("expected entries like"));
        assert!(err("-1@a:9093").contains("expected"));
        assert!(err("1@a").contains("expected"));
        assert!(err("1@a:0").contains("expected"));
        assert!(err("1@bad host:9093").contains("expected"));
    }

    /// Guards the roles we serve.
    #[test]
    fn roles() {
        assert!(parse_roles("broker, controller").unwrap().controller);
        assert!(!parse_roles("broker").unwrap().controller);
        assert!(parse_roles("controller")
            .unwrap_err()
            .to_string()
            .contains("controller-only"));
        assert!(parse_roles("broker,broker").is_err());
        assert!(parse_roles("server").is_err());
    }

    /// Guards the cluster id's alphabet.
    #[test]
    fn cluster_ids() {
        assert!(check_cluster_id("MkU3OEVBNTcwNTJENDM2Qk").is_ok());
        assert!(check_cluster_id("").is_err());
        assert!(check_cluster_id("a b").is_err());
        assert!(check_cluster_id(&"a".repeat(65)).is_err());
    }
}
