//! HTTPS for the HTTP listener, from the same [`ServerTls`] as the gRPC listener: the
//! certificate chain and key, and with a client CA, client certificates required (mutual
//! TLS). rustls with the ring provider, as tonic's TLS here; ALPN `http/1.1`.
//!
//! Handshakes run on their own tasks (bounded by [`HANDSHAKE_TIMEOUT`]), so a client that
//! connects and says nothing holds up no one; a failed handshake is logged at debug and
//! dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::tls::{ServerTls, TlsError};

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls server config of `tls`: its files read and checked now, so that a bad file is
/// reported at start, naming the file.
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs("certificate", &tls.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| TlsError::Invalid {
        reason: format!("private key file {}: {e}", tls.private_key.display()),
    })?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client CA", ca)? {
                roots.add(cert).map_err(invalid)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(invalid)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(invalid)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn invalid(error: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        reason: error.to_string(),
    }
}

fn read_certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            reason: format!("{what} file {}: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A TCP listener whose connections are handed on once their TLS handshake is done.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::debug!(%error, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "HTTPS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local_addr,
            accepted,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor ended (it does not, but for its abort): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpError, HttpServer, Readiness, Source};
    use quaestor_test_support::TestPki;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::ClientConfig;
    use tokio_rustls::rustls::pki_types::ServerName;

    struct Nothing;

    impl Source for Nothing {
        fn register(&self, _: &mut prometheus_client::registry::Registry) {}
        fn status(&self) -> serde_json::Value {
            serde_json::json!({})
        }
        fn readiness(&self) -> Readiness {
            Ok(())
        }
    }

    async fn serve(tls: ServerTls) -> crate::http::HttpHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        HttpServer::new(Nothing)
            .with_tls(Some(tls))
            .spawn(listener)
            .expect("serve")
    }

    /// The status line of `GET /healthz` over TLS (trusting the test CA), with a client
    /// certificate if given; an error if the server refused.
    async fn healthz(
        addr: SocketAddr,
        pki: &TestPki,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> std::io::Result<String> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs("CA", &pki.ca).expect("CA") {
            roots.add(cert).expect("a CA certificate");
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    read_certs("client", cert).expect("client certificate"),
                    PrivateKeyDer::from_pem_file(key).expect("client key"),
                )
                .expect("client identity"),
        };
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("a name");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut line = String::new();
        BufReader::new(tls).read_line(&mut line).await?;
        Ok(line.trim_end().to_owned())
    }

    #[tokio::test]
    async fn https_answers_clients_that_trust_the_certificate() {
        let pki = TestPki::new();
        let server = serve(ServerTls::new(&pki.server_cert, &pki.server_key)).await;
        let addr = server.local_addr();
        assert_eq!(
            healthz(addr, &pki, None).await.expect("GET"),
            "HTTP/1.1 200 OK"
        );
        // Plain HTTP gets no HTTP answer from an HTTPS port.
        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut line = String::new();
        let _ = BufReader::new(plain).read_line(&mut line).await;
        assert!(!line.starts_with("HTTP/1.1 200"), "{line:?}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn mutual_tls_requires_a_client_certificate_of_the_ca() {
        let pki = TestPki::new();
        let tls = ServerTls::new(&pki.server_cert, &pki.server_key).with_client_ca(&pki.ca);
        let server = serve(tls).await;
        let addr = server.local_addr();
        let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
        assert_eq!(
            healthz(addr, &pki, client).await.expect("GET"),
            "HTTP/1.1 200 OK"
        );
        for refused in [
            None,
            Some((pki.stranger_cert.as_path(), pki.stranger_key.as_path())),
        ] {
            let answer = healthz(addr, &pki, refused).await;
            assert!(
                !answer
                    .as_deref()
                    .is_ok_and(|line| line.starts_with("HTTP/")),
                "{answer:?}"
            );
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_bad_certificate_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let not_pem = dir.path().join("cert.pem");
        std::fs::write(&not_pem, "not a certificate\n").expect("write");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let error = HttpServer::new(Nothing)
            .with_tls(Some(ServerTls::new(&not_pem, &not_pem)))
            .spawn(listener)
            .expect_err("no certificate");
        assert!(matches!(error, HttpError::Tls(_)), "{error:?}");
        assert!(error.to_string().contains("cert.pem"), "{error}");
    }
}
