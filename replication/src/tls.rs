//! Mutual TLS for the QUIC transport between nodes.
//!
//! Every node holds a certificate signed by the cluster's CA whose DNS name is
//! [`node_name`]`(node.id)` (`tern-node-1`, …). Both ends of a connection present their
//! certificate and check the other's against the CA: a node whose certificate the CA did
//! not sign never completes a handshake. The dialling side checks the name of the node it
//! meant to reach; the accepting side checks, once the dialler says which node it is, that
//! its certificate carries that node's name ([`certificate_names_node`]), so a node cannot
//! speak for another.
//!
//! [`dev_certificates`] makes a CA and node certificates for trying a cluster out (`tern cert
//! dev`); production certificates come from the operator's own CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ALPN protocol of Tern's node-to-node QUIC connections.
pub const ALPN: &[u8] = b"tern-node/1";

/// The DNS name a node's certificate carries.
pub fn node_name(node_id: i32) -> String {
    format!("tern-node-{node_id}")
}

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration: {0}")]
    Verifier(String),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A node's certificate chain, private key and the CA it trusts.
#[derive(Debug)]
pub struct TlsMaterial {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Reads the PEM files named by `quic.tls.cert`, `quic.tls.key` and `quic.tls.ca`.
    /// The QUIC endpoint settings that outlive a process: a stateless-reset key and a
    /// connection-id key derived from this node's private key, so they are the same in
    /// every process of the node. After a restart the new process recognises the
    /// connection ids the old one issued and resets, with the first packet a peer sends
    /// it, the connections the peer still holds to the old process (their reset tokens
    /// were made with the same key); the peer reconnects at once instead of after its
    /// idle timeout.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let (reset, cid_key) = self.endpoint_keys();
        let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset);
        let mut config = quinn::EndpointConfig::new(Arc::new(reset));
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config
    }

    /// The stateless-reset key and the connection-id key of [`TlsMaterial::endpoint_config`]:
    /// a hash of the node's private key (never the key itself).
    fn endpoint_keys(&self) -> ([u8; 16], u64) {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tern QUIC endpoint keys v1");
        ctx.update(self.key.secret_der());
        let digest = ctx.finish();
        let bytes = digest.as_ref();
        let mut reset = [0u8; 16];
        reset.copy_from_slice(&bytes[..16]);
        let mut cid = [0u8; 8];
        cid.copy_from_slice(&bytes[16..24]);
        (reset, u64::from_le_bytes(cid))
    }

    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<TlsMaterial, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|cause| TlsError::Read {
                path: p.to_path_buf(),
                cause,
            })
        };
        Self::from_pem_named(
            (&read(cert)?, &cert.display().to_string()),
            (&read(key)?, &key.display().to_string()),
            (&read(ca)?, &ca.display().to_string()),
        )
    }

    /// From PEM text: the certificate chain, the private key and the CA certificate(s).
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsMaterial, TlsError> {
        Self::from_pem_named((cert, "certificate"), (key, "key"), (ca, "CA"))
    }

    fn from_pem_named(
        (cert, cert_name): (&[u8], &str),
        (key, key_name): (&[u8], &str),
        (ca, ca_name): (&[u8], &str),
    ) -> Result<TlsMaterial, TlsError> {
        let pem_err = |what: &str, reason: String| TlsError::Pem {
            what: what.to_owned(),
            reason,
        };
        let certs = |bytes: &[u8], what: &str| {
            let list: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &bytes[..])
                .collect::<Result<_, _>>()
                .map_err(|e| pem_err(what, e.to_string()))?;
            if list.is_empty() {
                return Err(pem_err(what, "no CERTIFICATE block".to_owned()));
            }
            Ok(list)
        };
        let chain = certs(cert, cert_name)?;
        let key = rustls_pemfile::private_key(&mut &key[..])
            .map_err(|e| pem_err(key_name, e.to_string()))?
            .ok_or_else(|| pem_err(key_name, "no PRIVATE KEY block".to_owned()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca, ca_name)? {
            roots
                .add(c)
                .map_err(|e| pem_err(ca_name, format!("not a usable CA certificate: {e}")))?;
        }
        Ok(TlsMaterial {
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// The accepting side: presents this node's certificate, requires a client certificate
    /// signed by the CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// The dialling side: checks the server against the CA (and the node name it dials),
    /// presents this node's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }
}

/// Whether the end-entity certificate of a verified peer chain carries `node_id`'s name.
pub fn certificate_names_node(chain: &[CertificateDer<'static>], node_id: i32) -> bool {
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(node_id)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A CA and one certificate per node, PEM.
#[derive(Debug, Clone)]
pub struct DevCertificates {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// `(node id, certificate, private key)`.
    pub nodes: Vec<(i32, String, String)>,
}

impl DevCertificates {
    /// The material of node `id`, as a node would load it from files.
    pub fn material(&self, id: i32) -> Option<Result<TlsMaterial, TlsError>> {
        let (_, cert, key) = self.nodes.iter().find(|(n, _, _)| *n == id)?;
        Some(TlsMaterial::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            self.ca_cert_pem.as_bytes(),
        ))
    }
}

/// Makes a new CA and a certificate for each of `node_ids` (DNS name [`node_name`], also
/// valid for 127.0.0.1 and localhost), for development clusters and tests. Valid 10 years.
pub fn dev_certificates(node_ids: &[i32]) -> Result<DevCertificates, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let now = std::time::SystemTime::now();
    let validity = |p: &mut CertificateParams| {
        p.not_before = now.into();
        p.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tern development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut nodes = Vec::new();
    for &id in node_ids {
        let mut p = CertificateParams::new(vec![node_name(id), "localhost".to_owned()])?;
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        p.distinguished_name.push(DnType::CommonName, node_name(id));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut p);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        nodes.push((id, cert.pem(), key.serialize_pem()));
    }
    Ok(DevCertificates {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the keys that let a restarted node reset its peers' stale connections: the
    /// same in every process of a node (loaded again from the same files), different for
    /// another node, and not the private key's bytes.
    #[test]
    fn endpoint_keys_are_the_nodes_own_and_stable() {
        let dev = dev_certificates(&[1, 2]).unwrap();
        let (_, cert, key) = &dev.nodes[0];
        let ca = dev.ca_cert_pem.as_bytes();
        let a = TlsMaterial::from_pem(cert.as_bytes(), key.as_bytes(), ca).unwrap();
        let again = TlsMaterial::from_pem(cert.as_bytes(), key.as_bytes(), ca).unwrap();
        let other = dev.material(2).unwrap().unwrap();
        assert_eq!(a.endpoint_keys(), again.endpoint_keys());
        assert_ne!(a.endpoint_keys().0, other.endpoint_keys().0);
        assert_ne!(a.endpoint_keys().1, other.endpoint_keys().1);
        let secret = a.key.secret_der();
        assert!(!secret.windows(16).any(|w| w == a.endpoint_keys().0));
        let _ = a.endpoint_config();
    }

    /// Guards the development certificates: each names its node and only its node, and
    /// loads as TLS material; wrong PEM is refused with a reason.
    #[test]
    fn dev_certificates_name_their_nodes() {
        let dev = dev_certificates(&[1, 2]).unwrap();
        assert_eq!(dev.nodes.len(), 2);
        let m = dev.material(1).unwrap().unwrap();
        assert!(certificate_names_node(&m.chain, 1));
        assert!(!certificate_names_node(&m.chain, 2));
        assert!(!certificate_names_node(&[], 1));
        m.server_config().unwrap();
        m.client_config().unwrap();
        assert!(dev.material(3).is_none());

        let (_, cert, key) = &dev.nodes[0];
        let err = TlsMaterial::from_pem(b"garbage", key.as_bytes(), dev.ca_cert_pem.as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
        let err =
            TlsMaterial::from_pem(cert.as_bytes(), b"", dev.ca_cert_pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no PRIVATE KEY block"), "{err}");
        let err = TlsMaterial::from_files(
            Path::new("/nonexistent/cert.pem"),
            Path::new("k"),
            Path::new("c"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/cert.pem: "),
            "{err}"
        );
    }
}
