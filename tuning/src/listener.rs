//! `listeners` and `advertised.listeners`: Kafka's `PROTOCOL://host:port` notation, reduced
//! to what Tern serves today (one PLAINTEXT listener).
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

/// The only security protocol served so far.
const PLAINTEXT: &str = "PLAINTEXT";

/// Kafka's security protocols and listener names that we recognise but do not serve yet.
const NOT_YET: &[&str] = &["SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// Splits `[PLAINTEXT://]host:port` into host (brackets removed) and port text, checking
/// there is one listener and its protocol is PLAINTEXT.
fn split<'a>(key: &str, text: &'a str) -> Result<(&'a str, &'a str), ConfigErrorKind> {
    let text = text.trim();
    if text.contains(',') {
        return Err(ConfigErrorKind::Unsupported {
            key: key.to_owned(),
            what: format!("more than one listener ({text:?})"),
            instead: "a single PLAINTEXT listener".to_owned(),
        });
    }
    let address = match text.split_once("://") {
        Some((protocol, address)) if protocol.eq_ignore_ascii_case(PLAINTEXT) => address,
        Some((protocol, _)) => {
            let what = if NOT_YET.iter().any(|p| p.eq_ignore_ascii_case(protocol)) {
                format!("security protocol {protocol}")
            } else {
                format!("listener name {protocol} (Tern has no listener.security.protocol.map)")
            };
            return Err(ConfigErrorKind::Unsupported {
                key: key.to_owned(),
                what,
                instead: "PLAINTEXT://host:port".to_owned(),
            });
        }
        None => text,
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid(key, text))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(|| invalid(key, text))?,
        None if host.contains(':') => return Err(invalid(key, text)),
        None => host,
    };
    Ok((host, port))
}

fn invalid(key: &str, text: &str) -> ConfigErrorKind {
    let expected = if key == "listeners" {
        "one listener like \"PLAINTEXT://127.0.0.1:9092\" (an IP address and a port 0-65535)"
    } else {
        "one listener like \"PLAINTEXT://broker1.example.com:9092\" (a host and a port 1-65535)"
    };
    ConfigErrorKind::Invalid {
        key: key.to_owned(),
        expected: expected.to_owned(),
        found: format!("{text:?}"),
    }
}

/// Parses the address to bind (`listeners`). Port 0 (any free port) is allowed, for tests.
pub(crate) fn parse_listener(key: &str, text: &str) -> Result<SocketAddr, ConfigErrorKind> {
    let (host, port) = split(key, text)?;
    let port = port.parse::<u16>().map_err(|_| invalid(key, text))?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        h if h.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse::<IpAddr>().map_err(|_| invalid(key, text))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses the address told to clients (`advertised.listeners`): a hostname or an IP
/// address, and a port that is not 0.
pub(crate) fn parse_advertised(key: &str, text: &str) -> Result<HostPort, ConfigErrorKind> {
    let (host, port) = split(key, text)?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(key, text))?;
    let is_name = |h: &str| {
        h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if host.parse::<Ipv6Addr>().is_err() && !is_name(host) {
        return Err(invalid(key, text));
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// `PLAINTEXT://host:port`, the form Kafka tools show.
pub(crate) fn format_listener(address: &HostPort) -> String {
    format!("{PLAINTEXT}://{address}")
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
        assert!(err("PLAINTEXT://a:1,PLAINTEXT://b:2").contains("more than one listener"));
        assert!(err("broker1:9092").starts_with("key \"listeners\": expected one listener"));
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
