//! A small blocking Kafka client for Tern's command-line tools and tests.
//!
//! It speaks to any Kafka-compatible broker: connects, negotiates versions with ApiVersions,
//! and sends one request at a time, encoded and decoded with the `kafka-protocol` crate.
//! Blocking I/O is deliberate: the tools do one thing at a time and need no runtime.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Largest response the client accepts.
const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: io::Error },
    #[error("connection to {addr}: {cause}")]
    Io { addr: String, cause: io::Error },
    #[error(
        "{addr} does not support {api:?} in versions {want_min}..={want_max} (it offers {have:?})"
    )]
    Version {
        addr: String,
        api: ApiKey,
        want_min: i16,
        want_max: i16,
        have: Option<(i16, i16)>,
    },
    #[error("{api:?}: cannot encode or decode: {reason}")]
    Codec { api: ApiKey, reason: String },
    #[error("{api:?}: response has correlation id {got}, expected {want}")]
    Correlation { api: ApiKey, got: i32, want: i32 },
}

/// One connection to one broker.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    addr: String,
    next_correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
    client_id: String,
}

impl Client {
    /// Connects and negotiates API versions.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let err = |cause| ClientError::Connect {
            addr: addr.to_string(),
            cause,
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(err)?
            .next()
            .ok_or_else(|| err(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
        let stream = TcpStream::connect_timeout(&sock, timeout).map_err(err)?;
        stream.set_read_timeout(Some(timeout)).map_err(err)?;
        stream.set_write_timeout(Some(timeout)).map_err(err)?;
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            addr: addr.to_string(),
            next_correlation_id: 1,
            versions: HashMap::new(),
            client_id: "tern-cli".to_string(),
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("tern"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = c.request(ApiKey::ApiVersions, 3, &req)?;
        c.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(c)
    }

    /// The broker's address as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Changes how long a request may wait for its response.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|cause| ClientError::Io {
                addr: self.addr.clone(),
                cause,
            })
    }

    /// The highest version of `api` within `min..=max` that the broker supports.
    pub fn version(&self, api: ApiKey, min: i16, max: i16) -> Result<i16, ClientError> {
        let have = self.versions.get(&(api as i16)).copied();
        match have {
            Some((lo, hi)) if lo <= max && hi >= min => Ok(hi.min(max)),
            _ => Err(ClientError::Version {
                addr: self.addr.clone(),
                api,
                want_min: min,
                want_max: max,
                have,
            }),
        }
    }

    /// Sends `req` as `api` version `version` and waits for the response.
    pub fn request<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        let id = self.send(api, version, req)?;
        let mut body = self.receive()?;
        let codec = |e: anyhow::Error| ClientError::Codec {
            api,
            reason: e.to_string(),
        };
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(codec)?;
        if header.correlation_id != id {
            return Err(ClientError::Correlation {
                api,
                got: header.correlation_id,
                want: id,
            });
        }
        Resp::decode(&mut body, version).map_err(codec)
    }

    /// Sends a request for which no response comes (Produce with acks=0).
    pub fn send_only<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<(), ClientError> {
        self.send(api, version, req).map(|_| ())
    }

    fn send<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<i32, ClientError> {
        let (id, frame) = self.encode_request(api, version, req)?;
        self.write_raw(&frame)?;
        Ok(id)
    }

    /// Encodes a request frame (length prefix included) with the next correlation id,
    /// without sending it (tests pipeline several frames in one write).
    pub fn encode_request<Req: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<(i32, BytesMut), ClientError> {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::with_capacity(128);
        buf.extend_from_slice(&[0; 4]);
        let codec = |e: anyhow::Error| ClientError::Codec {
            api,
            reason: e.to_string(),
        };
        header
            .encode(&mut buf, api.request_header_version(version))
            .map_err(codec)?;
        req.encode(&mut buf, version).map_err(codec)?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((id, buf))
    }

    /// Writes raw bytes to the connection (tests use it to send malformed frames).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(|cause| ClientError::Io {
                addr: self.addr.clone(),
                cause,
            })
    }

    /// Reads one response frame (without its length prefix).
    pub fn receive(&mut self) -> Result<Bytes, ClientError> {
        let io = |cause| ClientError::Io {
            addr: self.addr.clone(),
            cause,
        };
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > RESPONSE_BYTES_MAX {
            return Err(io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response of {len} bytes is too large"),
            )));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).map_err(io)?;
        Ok(Bytes::from(body))
    }
}

/// CreateTopics' config entries for `configs` (key, value pairs), as every tool sends them.
pub fn topic_configs<K: AsRef<str>, V: AsRef<str>>(
    configs: impl IntoIterator<Item = (K, V)>,
) -> Vec<kafka_protocol::messages::create_topics_request::CreatableTopicConfig> {
    configs
        .into_iter()
        .map(|(k, v)| {
            kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.as_ref().to_string()))
                .with_value(Some(StrBytes::from_string(v.as_ref().to_string())))
        })
        .collect()
}
