//! TLS settings, named by PEM file paths as the C# Quaestor's configuration names them.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {} holds no PEM block", path.display())]
    NotPem { what: &'static str, path: PathBuf },
    #[error("invalid TLS settings: {reason}")]
    Invalid { reason: String },
}

/// A server's certificate and key; with a client CA, clients must present a certificate
/// signed by it (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    pub fn new(certificate: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        ServerTls {
            certificate: certificate.into(),
            private_key: private_key.into(),
            client_ca: None,
        }
    }

    /// Requires client certificates signed by this CA.
    pub fn with_client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(ca.into());
        self
    }

    /// Reads the files.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = Identity::from_pem(
            read_pem("certificate", &self.certificate)?,
            read_pem("private key", &self.private_key)?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?));
        }
        Ok(config)
    }
}

/// How a client checks a server, and who it is (for mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the server's certificate; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Certificate and key to present to a server that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to expect in the server's certificate; `None`: the host connected to.
    pub domain: Option<String>,
}

impl ClientTls {
    /// TLS trusting the CA certificate (PEM) at `ca` only, without a client certificate.
    pub fn with_ca(ca: impl Into<PathBuf>) -> Self {
        ClientTls {
            ca: Some(ca.into()),
            identity: None,
            domain: None,
        }
    }

    pub fn load(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = match &self.ca {
            Some(ca) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem("CA", ca)?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read_pem("client certificate", cert)?,
                read_pem("client key", key)?,
            ));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    // rustls would only say "no certificate" much later, without the file's name.
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}
