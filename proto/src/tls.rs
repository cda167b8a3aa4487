//! TLS on every gRPC hop, with rustls (ring; no OpenSSL).
//!
//! Servers take a certificate and key from PEM files and re-read them when
//! they change (cert-manager rotates them in place): a new connection gets
//! the new certificate, connections already open keep theirs. A client CA
//! makes client certificates required (mTLS). Clients trust a CA file, or
//! the system's roots without one, and may present an identity of their own.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use rustls;
pub use tokio_rustls;

/// How often a server looks at its certificate files' modification times
/// (only when a connection is being set up: a handshake costs more).
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A client that connects and never finishes its handshake (a plaintext
/// client waiting for the server to speak first) is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: String },
    #[error("certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The files a TLS server reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// What a TLS client trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA certificates to trust; the system's roots without it.
    pub ca: Option<PathBuf>,
    /// The client's own certificate and key, for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The one crypto provider every TLS config here uses, named explicitly:
/// rustls refuses to guess when two are compiled in (the `cloud` build has
/// aws-lc-rs as well).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process default, for libraries that build their own
/// rustls configs (the `redis` crate). Harmless when one is set already.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |source| TlsError::Read {
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c)?;
    }
    Ok(roots)
}

fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "reading the system's CA certificates");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

/// A server config whose certificate follows its files, speaking h2 only
/// (gRPC clients such as grpc-core refuse a server that negotiates nothing).
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = Arc::new(ReloadingCert::load(&files.cert, &files.key)?);
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &files.ca {
        Some(ca) => roots(ca)?,
        None => native_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match &files.identity {
        Some((cert, key)) => builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The name a server's certificate must hold, from `host:port`.
pub fn server_name(address: &str) -> Option<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// The certificate a server presents, re-read when its files change. A
/// pair that does not load (cert-manager writes the two files one after
/// the other, so for a moment they may not match) keeps the old one in
/// use and is tried again at the next check.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    stamp: Stamp,
    current: Arc<CertifiedKey>,
}

/// Modification time and length of both files.
type Stamp = [Option<(SystemTime, u64)>; 2];

impl ReloadingCert {
    fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let current = Arc::new(certified_key(cert, key)?);
        Ok(ReloadingCert {
            cert: cert.into(),
            key: key.into(),
            state: Mutex::new(Loaded {
                checked: Instant::now(),
                stamp,
                current,
            }),
        })
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    [one(cert), one(key)]
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey::from_der(
        read_certs(cert)?,
        read_key(key)?,
        &provider(),
    )?)
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().ok()?;
        if state.checked.elapsed() >= RELOAD_CHECK_EVERY {
            state.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != state.stamp {
                match certified_key(&self.cert, &self.key) {
                    Ok(k) => {
                        state.current = Arc::new(k);
                        state.stamp = now;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate changed but does not load; keeping the previous one")
                    }
                }
            }
        }
        Some(state.current.clone())
    }
}

/// TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming`. Handshakes run concurrently, each on its own
/// task, so one slow client does not hold up the others; a failed one is
/// logged and dropped (a plaintext client's connection is closed at once).
pub fn incoming(listener: TcpListener, config: Arc<ServerConfig>) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if speaks_plaintext_http2(&tcp).await {
                    refuse_plaintext(tcp).await;
                    return;
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(stream).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsIncoming { rx, task }
}

/// Whether the client opened with the HTTP/2 preface, i.e. is a gRPC
/// client given an `http://` URL for a TLS port.
async fn speaks_plaintext_http2(tcp: &TcpStream) -> bool {
    let mut head = [0u8; 4];
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut head)).await,
        Ok(Ok(n)) if n >= 3 && head.starts_with(b"PRI")
    )
}

/// Tells a plaintext gRPC client why it is turned away, in its own
/// protocol: its first call is answered UNAVAILABLE "this port serves TLS:
/// use an https:// URL" (a trailers-only response), then the connection is
/// closed with a GOAWAY carrying the same text. Left to rustls, the client
/// would get a TLS alert that h2 reads as an oversized frame, or a reset,
/// depending on timing; a bare GOAWAY makes grpc-core retry until its
/// deadline.
async fn refuse_plaintext(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = async {
        let mut preface = [0u8; 24];
        tcp.read_exact(&mut preface).await?;
        tcp.write_all(&frame(0x4, 0, 0, &[])).await?; // our SETTINGS
        let mut payload = Vec::new();
        loop {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if len > 1 << 20 {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            payload.resize(len, 0);
            tcp.read_exact(&mut payload).await?;
            match kind {
                0x4 if flags & 0x1 == 0 => tcp.write_all(&frame(0x4, 0x1, 0, &[])).await?,
                0x1 => {
                    let mut out = frame(0x1, 0x5, stream, &refusal_headers());
                    let mut goaway = stream.to_be_bytes().to_vec();
                    goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                    goaway.extend_from_slice(REFUSAL.as_bytes());
                    out.extend(frame(0x7, 0, 0, &goaway));
                    tcp.write_all(&out).await?;
                    return Ok::<_, std::io::Error>(());
                }
                _ => {}
            }
        }
    };
    if let Ok(Err(e)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, answer).await {
        tracing::debug!(error = %e, "answering a plaintext client on the TLS port");
    }
    let _ = tcp.shutdown().await;
    // Read what the client still sends until it closes: closing with
    // unread data would reset the connection, and the reset can overtake
    // the answer.
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    tracing::debug!("plaintext HTTP/2 client on the TLS port turned away");
}

const REFUSAL: &str = "this port serves TLS: use an https:// URL";

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for a trailers-only gRPC answer: `:status 200`,
/// `content-type: application/grpc`, `grpc-status: 14` (UNAVAILABLE) and
/// the reason, as literals that need no decoder state.
fn refusal_headers() -> Vec<u8> {
    let mut block = vec![0x88]; // :status 200, static table entry 8
    let literal = |block: &mut Vec<u8>, name: &str, value: &str| {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "grpc-status", "14");
    literal(&mut block, "grpc-message", REFUSAL);
    block
}

pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
    task: tokio::task::JoinHandle<()>,
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}
