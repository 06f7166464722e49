//! `listeners` and `advertised.listeners`: Kafka's `NAME://host:port,…` notation, reduced to
//! what Tern serves: one PLAINTEXT listener for clients (TCP) and, in a cluster, one
//! CONTROLLER listener, the node's QUIC endpoint (UDP) for the controller quorum and
//! replication.
//!
//! The listener is a socket address because we bind it: its host must be an IP address
//! (`localhost` is read as 127.0.0.1, an empty host as 0.0.0.0, as in Kafka). The advertised
//! address is only told to clients, so it may be a hostname.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::ConfigErrorKind;

/// A host (name or IP address, IPv6 without brackets) and a port, as told to clients in
/// Metadata responses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    /// `host:port`, with an IPv6 host in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

/// The security protocol of the client listener.
const PLAINTEXT: &str = "PLAINTEXT";

/// The listener name of the node's QUIC endpoint (controller quorum and replication).
pub(crate) const CONTROLLER: &str = "CONTROLLER";

/// Kafka's security protocols and listener names that we recognise but do not serve yet.
const NOT_YET: &[&str] = &["SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// Which listener an entry of `listeners` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// Kafka clients (TCP).
    Plaintext,
    /// Other nodes (QUIC over UDP).
    Controller,
}

/// Splits `[NAME://]host:port` into its listener name, host (brackets removed) and port text.
fn split_one<'a>(key: &str, text: &'a str) -> Result<(Name, &'a str, &'a str), ConfigErrorKind> {
    let text = text.trim();
    let (name, address) = match text.split_once("://") {
        Some((protocol, address)) if protocol.eq_ignore_ascii_case(PLAINTEXT) => {
            (Name::Plaintext, address)
        }
        Some((protocol, address)) if protocol.eq_ignore_ascii_case(CONTROLLER) => {
            (Name::Controller, address)
        }
        Some((protocol, _)) => {
            let what = if NOT_YET.iter().any(|p| p.eq_ignore_ascii_case(protocol)) {
                format!("security protocol {protocol}")
            } else {
                format!("listener name {protocol} (Tern has no listener.security.protocol.map)")
            };
            return Err(ConfigErrorKind::Unsupported {
                key: key.to_owned(),
                what,
                instead: "PLAINTEXT://host:port and CONTROLLER://host:port".to_owned(),
            });
        }
        None => (Name::Plaintext, text),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid(key, text))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(|| invalid(key, text))?,
        None if host.contains(':') => return Err(invalid(key, text)),
        None => host,
    };
    Ok((name, host, port))
}

/// Splits a comma-separated list into at most one PLAINTEXT and one CONTROLLER entry.
fn split_list<'a, T>(
    key: &str,
    text: &'a str,
    mut parse: impl FnMut(&'a str, &'a str, &'a str) -> Result<T, ConfigErrorKind>,
) -> Result<(Option<T>, Option<T>), ConfigErrorKind> {
    let (mut plaintext, mut controller) = (None, None);
    for entry in text.split(',') {
        let (name, host, port) = split_one(key, entry)?;
        let slot = match name {
            Name::Plaintext => &mut plaintext,
            Name::Controller => &mut controller,
        };
        if slot.is_some() {
            let which = match name {
                Name::Plaintext => PLAINTEXT,
                Name::Controller => CONTROLLER,
            };
            return Err(ConfigErrorKind::Unsupported {
                key: key.to_owned(),
                what: format!("more than one {which} listener ({:?})", text.trim()),
                instead: format!("one {which} listener"),
            });
        }
        *slot = Some(parse(entry.trim(), host, port)?);
    }
    Ok((plaintext, controller))
}

fn invalid(key: &str, text: &str) -> ConfigErrorKind {
    let expected = if key == "listeners" {
        "a listener like \"PLAINTEXT://127.0.0.1:9092\" (an IP address and a port 0-65535)"
    } else {
        "a listener like \"PLAINTEXT://broker1.example.com:9092\" (a host and a port 1-65535)"
    };
    ConfigErrorKind::Invalid {
        key: key.to_owned(),
        expected: expected.to_owned(),
        found: format!("{text:?}"),
    }
}

/// The addresses to bind (`listeners`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listeners {
    /// PLAINTEXT: Kafka clients, TCP.
    pub kafka: SocketAddr,
    /// CONTROLLER: the node's QUIC endpoint, UDP.
    pub controller: Option<SocketAddr>,
}

/// Parses the addresses to bind (`listeners`): one PLAINTEXT listener and at most one
/// CONTROLLER listener. Port 0 (any free port) is allowed, for tests.
pub(crate) fn parse_listeners(key: &str, text: &str) -> Result<Listeners, ConfigErrorKind> {
    let (kafka, controller) = split_list(key, text, |entry, host, port| {
        let port = port.parse::<u16>().map_err(|_| invalid(key, entry))?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            h if h.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h.parse::<IpAddr>().map_err(|_| invalid(key, entry))?,
        };
        Ok(SocketAddr::new(ip, port))
    })?;
    let kafka = kafka.ok_or_else(|| ConfigErrorKind::Invalid {
        key: key.to_owned(),
        expected: "a PLAINTEXT listener for clients (\"PLAINTEXT://127.0.0.1:9092\")".to_owned(),
        found: format!("{:?}", text.trim()),
    })?;
    Ok(Listeners { kafka, controller })
}

/// Parses the address to bind (`listeners`) when only a PLAINTEXT one is allowed.
#[cfg(test)]
pub(crate) fn parse_listener(key: &str, text: &str) -> Result<SocketAddr, ConfigErrorKind> {
    parse_listeners(key, text).map(|l| l.kafka)
}

/// The addresses told to others (`advertised.listeners`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Advertised {
    pub kafka: Option<HostPort>,
    pub controller: Option<HostPort>,
}

/// Parses the addresses told to others (`advertised.listeners`): hostnames or IP addresses,
/// and ports that are not 0; at most one PLAINTEXT and one CONTROLLER entry.
pub(crate) fn parse_advertised_listeners(
    key: &str,
    text: &str,
) -> Result<Advertised, ConfigErrorKind> {
    let (kafka, controller) = split_list(key, text, |entry, host, port| {
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(key, entry))?;
        if host.parse::<Ipv6Addr>().is_err() && !is_host_name(host) {
            return Err(invalid(key, entry));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    })?;
    Ok(Advertised { kafka, controller })
}

/// A DNS name (or an IPv4 address, which has the same shape).
pub(crate) fn is_host_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses the address told to clients when only a PLAINTEXT one is given.
#[cfg(test)]
pub(crate) fn parse_advertised(key: &str, text: &str) -> Result<HostPort, ConfigErrorKind> {
    parse_advertised_listeners(key, text)?
        .kafka
        .ok_or_else(|| invalid(key, text))
}

/// `PLAINTEXT://host:port`, the form Kafka tools show.
pub(crate) fn format_listener(address: &HostPort) -> String {
    format!("{PLAINTEXT}://{address}")
}

/// `CONTROLLER://host:port`.
pub(crate) fn format_controller_listener(address: &HostPort) -> String {
    format!("{CONTROLLER}://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the listener notations we accept and the ones we refuse.
    #[test]
    fn listeners() {
        let ok = |t: &str| parse_listener("listeners", t).unwrap().to_string();
        assert_eq!(ok("PLAINTEXT://127.0.0.1:9092"), "127.0.0.1:9092");
        assert_eq!(ok("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(ok("plaintext://:9093"), "0.0.0.0:9093");
        assert_eq!(ok("PLAINTEXT://localhost:9092"), "127.0.0.1:9092");
        assert_eq!(ok("PLAINTEXT://[::1]:9092"), "[::1]:9092");
        let err = |t: &str| parse_listener("listeners", t).unwrap_err().to_string();
        assert!(err("SSL://1.2.3.4:9093").contains("security protocol SSL is not supported yet"));
        assert!(err("INTERNAL://1.2.3.4:9093").contains("listener name INTERNAL"));
        assert!(err("PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.2:2")
            .contains("more than one PLAINTEXT listener"));
        assert!(err("broker1:9092").starts_with("key \"listeners\": expected a listener"));
        let both = parse_listeners(
            "listeners",
            "PLAINTEXT://127.0.0.1:9092, CONTROLLER://127.0.0.1:9093",
        )
        .unwrap();
        assert_eq!(both.kafka.port(), 9092);
        assert_eq!(both.controller.map(|c| c.port()), Some(9093));
        let err = |t: &str| parse_listeners("listeners", t).unwrap_err().to_string();
        assert!(err("CONTROLLER://127.0.0.1:9093").contains("a PLAINTEXT listener for clients"));
        assert!(err("CONTROLLER://127.0.0.1:1,CONTROLLER://127.0.0.1:2")
            .contains("more than one CONTROLLER listener"));
        assert!(err("PLAINTEXT://127.0.0.1:1,CONTROLLER://host:2").contains("expected"));
        assert!(err("127.0.0.1").contains("expected"));
        assert!(err("127.0.0.1:70000").contains("expected"));
        assert!(err("::1:9092").contains("expected"));
    }

    /// Guards advertised addresses, which may be hostnames but not port 0.
    #[test]
    fn advertised() {
        let key = "advertised.listeners";
        let hp = parse_advertised(key, "PLAINTEXT://broker-1.example.com:19092").unwrap();
        assert_eq!(
            hp,
            HostPort {
                host: "broker-1.example.com".into(),
                port: 19092
            }
        );
        let hp = parse_advertised(key, "[fe80::1]:9092").unwrap();
        assert_eq!(hp.host, "fe80::1");
        assert_eq!(format_listener(&hp), "PLAINTEXT://[fe80::1]:9092");
        assert!(parse_advertised(key, "host:0").is_err());
        assert!(parse_advertised(key, "bad host:9092").is_err());
        assert!(parse_advertised(key, ":9092").is_err());
    }
}
