//! TLS for the HTTP API and the agent protocol: the server's certificate and key read from PEM
//! files, the rustls configurations built from them, the client a standby forwards requests with,
//! and the HTTPS accept loop that warp 0.4 no longer has.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}")]
    Pem {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("the certificate {cert} and the key {key} cannot serve TLS: {source}")]
    Identity {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the client that forwards requests to the leader: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot serve the agent protocol over TLS: {0}")]
    Grpc(#[source] tonic::transport::Error),
}

/// Where the server's certificate chain and private key are (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server's TLS identity, read and checked once at start-up, for both of its ports.
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// What a standby trusts when it forwards to the leader: `--ca-cert`, else our own chain.
    trusted_pem: Vec<u8>,
    acceptor: TlsAcceptor,
}

/// How long a client may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(Error::Pem {
            what,
            path: path.display().to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

impl ServerTls {
    /// Reads the certificate chain and key (and `ca`, the certificates to trust when forwarding
    /// to the leader) and checks that they make a usable identity.
    ///
    /// # Errors
    /// Fails on unreadable files, files without PEM certificates or key, and a key that does not
    /// match the certificate.
    pub fn load(files: &CertFiles, ca: Option<&Path>) -> Result<ServerTls, Error> {
        let cert_pem = read("the certificate (--tls-cert)", &files.cert)?;
        let key_pem = read("the key (--tls-key)", &files.key)?;
        let certs = certificates("the certificate (--tls-cert)", &files.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| Error::Pem {
            what: "the key (--tls-key)",
            path: files.key.display().to_string(),
            expected: "private key",
        })?;
        let trusted_pem = match ca {
            Some(path) => {
                let pem = read("the CA certificates (--ca-cert)", path)?;
                certificates("the CA certificates (--ca-cert)", path, &pem)?;
                pem
            }
            None => cert_pem.clone(),
        };
        let identity = |source| Error::Identity {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            source,
        };
        // The provider is named rather than taken from the process default, which rustls can
        // only infer while exactly one provider is compiled in.
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(identity)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(identity)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            cert_pem,
            key_pem,
            trusted_pem,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The agent port's gRPC server, serving TLS (tonic builds its own rustls configuration from
    /// the same PEM).
    ///
    /// # Errors
    /// Fails when tonic does not take the identity.
    pub fn grpc_server(&self) -> Result<tonic::transport::Server, Error> {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT);
        tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(Error::Grpc)
    }

    /// The client a standby forwards requests to the leader with: it trusts `--ca-cert`, or the
    /// certificates of our own `--tls-cert` (enough when the servers share a certificate or the
    /// chain names the issuing CA), besides the public roots.
    ///
    /// # Errors
    /// Fails when reqwest does not take the certificates.
    pub fn leader_client(&self) -> Result<reqwest::Client, Error> {
        let roots = reqwest::Certificate::from_pem_bundle(&self.trusted_pem).map_err(Error::Client)?;
        roots
            .into_iter()
            .fold(reqwest::Client::builder().use_rustls_tls(), |builder, root| {
                builder.add_root_certificate(root)
            })
            .build()
            .map_err(Error::Client)
    }

    /// Serves `filter` over HTTPS on `listener` until `shutdown` resolves, then lets the requests
    /// in flight finish, as `warp::serve(..).graceful(..)` does for plain HTTP.
    pub fn serve_https<F>(
        &self,
        listener: tokio::net::TcpListener,
        filter: F,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        F: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            let mut shutdown = std::pin::pin!(shutdown);
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, most likely: give connections time to close
                            // rather than spinning.
                            tracing::error!(%error, "Cannot accept an HTTPS connection.");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                    () = &mut shutdown => break,
                };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(warp::service(filter.clone()));
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed.");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out.");
                            return;
                        }
                    };
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let service = WithPeer { inner: service, peer };
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%peer, %error, "HTTPS connection ended with an error.");
                    }
                });
            }
            drop(listener);
            graceful.shutdown().await;
        })
    }
}

/// The address an HTTPS request came from. warp knows the peer only of connections it accepts
/// itself, so connections served here carry it as a request extension instead; the guard reads
/// either, for the audit log and the limit on failed attempts.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Adds [`Peer`] to every request of one connection.
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request.extensions_mut().insert(Peer(self.peer));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, as PEM files in `dir`.
    fn self_signed(dir: &Path, name: &str) -> CertFiles {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        CertFiles { cert, key }
    }

    fn load_error(files: &CertFiles, ca: Option<&Path>) -> String {
        match ServerTls::load(files, ca) {
            Ok(_) => panic!("{files:?} loaded"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_certificate_loads_only_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), "a");
        let b = self_signed(dir.path(), "b");
        let tls = ServerTls::load(&a, None).unwrap();
        assert!(tls.grpc_server().is_ok());
        assert!(tls.leader_client().is_ok());
        let mixed = CertFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let message = load_error(&mixed, None);
        assert!(message.contains("cannot serve TLS"), "{message}");
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = self_signed(dir.path(), "good");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        let cases = [
            (
                CertFiles {
                    cert: missing.clone(),
                    key: good.key.clone(),
                },
                None,
                "--tls-cert",
            ),
            (
                CertFiles {
                    cert: junk.clone(),
                    key: good.key.clone(),
                },
                None,
                "no usable PEM certificate",
            ),
            (
                CertFiles {
                    cert: good.cert.clone(),
                    key: junk.clone(),
                },
                None,
                "no usable PEM private key",
            ),
            (good.clone(), Some(junk.as_path()), "--ca-cert"),
        ];
        for (files, ca, expected) in cases {
            let message = load_error(&files, ca);
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
}
