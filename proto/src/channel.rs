//! A gRPC client transport (the gateway's to each worker, the load tool's to
//! its target): one HTTP/2 connection, driven with the `h2` crate, under
//! tonic's generated client.
//!
//! Why not tonic's `Channel`: a unary call through it passes a buffer task
//! and hyper's body pipe, and leaves as three writes (HEADERS, DATA, then
//! an empty END_STREAM frame), so the server can wake up to three times per
//! request and the sender pays a syscall for each. Here the headers and the
//! whole message are queued in one call and leave in one write.
//!
//! What `Channel` did that this keeps: lazy connect with a timeout and
//! TCP_NODELAY, reconnect after the connection breaks, HTTP/2 keep-alive
//! pings (a frozen worker loses its connection instead of holding requests),
//! and a bound on every call (the `grpc-timeout` the caller set, at most
//! [`CALL_LIMIT`]); TLS when made with [`H2Channel::lazy_tls`].

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tonic::Status;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a call may take when its caller set no deadline: tonic does not
/// enforce `grpc-timeout` on the client side.
pub const CALL_LIMIT: Duration = Duration::from_secs(60);
/// A worker whose link goes down (a partitioned host) answers nothing,
/// and TCP would hold the calls on it for minutes: an unanswered ping
/// fails them within KEEPALIVE_EVERY + KEEPALIVE_TIMEOUT so they are
/// retried elsewhere. A ping is answered by the worker's HTTP/2 driver,
/// not by its model, so a busy worker still answers in milliseconds.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
// Windows as hyper's defaults: a large answer is not paced by
// WINDOW_UPDATE round trips.
const STREAM_WINDOW: u32 = 2 << 20;
const CONN_WINDOW: u32 = 5 << 20;
/// Calls on one connection before the next call opens a fresh one: a
/// client has 2^30 stream ids per HTTP/2 connection, and h2 refuses every
/// call after the last without closing the connection.
const CALLS_PER_CONNECTION: u32 = (1 << 30) - (1 << 20);

/// An address that is not `host:port`.
#[derive(Debug, thiserror::Error)]
pub enum InvalidAddress {
    #[error(transparent)]
    Uri(#[from] http::uri::InvalidUri),
    #[error("'{0}' is not a host name a certificate can hold")]
    ServerName(String),
}

/// What a TLS connection needs: the config, and the name the server's
/// certificate must hold.
#[derive(Clone, Debug)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

/// A cloneable handle; all clones share the connection.
#[derive(Clone, Debug)]
pub struct H2Channel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    address: String,
    /// Parsed once: every request's URI names it.
    authority: http::uri::Authority,
    tls: Option<Tls>,
    current: Mutex<Option<Conn>>,
    /// Held while connecting, so that concurrent callers share one
    /// attempt; it keeps the last failure and when it ended, so that those
    /// who waited for an attempt that failed fail with it at once instead
    /// of each trying again in turn.
    connecting: tokio::sync::Mutex<Option<(Instant, Status)>>,
}

#[derive(Clone, Debug)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Set when the connection can take no more calls: its driver ended, a
    /// keep-alive went unanswered, a call could not open a stream on it,
    /// or it used up its stream ids. The next call then reconnects.
    closed: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl Conn {
    fn retire(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl H2Channel {
    /// Connects on first use. `address` is `host:port`.
    pub fn lazy(address: &str) -> Result<Self, InvalidAddress> {
        Self::new(address, None)
    }

    /// As `lazy`, over TLS with `config`; the server's certificate must
    /// name the host in `address`.
    pub fn lazy_tls(
        address: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, InvalidAddress> {
        Self::lazy_tls_named(address, config, None)
    }

    /// As `lazy_tls`; the certificate must hold `name` when one is given
    /// (workers that advertise pod IPs share one certificate for a DNS
    /// name, since cert-manager cannot issue one per pod IP).
    pub fn lazy_tls_named(
        address: &str,
        config: Arc<rustls::ClientConfig>,
        name: Option<&str>,
    ) -> Result<Self, InvalidAddress> {
        let wanted = name.unwrap_or(address);
        let name = crate::tls::server_name(wanted)
            .ok_or_else(|| InvalidAddress::ServerName(wanted.to_string()))?;
        Self::new(address, Some(Tls { config, name }))
    }

    fn new(address: &str, tls: Option<Tls>) -> Result<Self, InvalidAddress> {
        let authority = address.parse::<http::uri::Authority>()?;
        Ok(H2Channel {
            inner: Arc::new(Inner {
                address: address.to_string(),
                authority,
                tls,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Connects now, so that a wrong address fails here rather than on
    /// the first call.
    pub async fn connect(address: &str) -> Result<Self, Status> {
        let ch = H2Channel::lazy(address)
            .map_err(|e| Status::invalid_argument(format!("address '{address}': {e}")))?;
        ch.connection().await?;
        Ok(ch)
    }

    /// As `connect`, over TLS.
    pub async fn connect_tls(
        address: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, Status> {
        let ch = H2Channel::lazy_tls(address, config)
            .map_err(|e| Status::invalid_argument(format!("address '{address}': {e}")))?;
        ch.connection().await?;
        Ok(ch)
    }

    fn live(&self) -> Option<Conn> {
        let current = self.inner.current.lock().ok()?;
        current
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .cloned()
    }

    async fn connection(&self) -> Result<Conn, Status> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let asked = Instant::now();
        let mut last_failure = self.inner.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        if let Some((at, status)) = last_failure.as_ref()
            && *at >= asked
        {
            return Err(status.clone());
        }
        match connect(&self.inner.address, self.inner.tls.as_ref()).await {
            Ok(conn) => {
                *last_failure = None;
                if let Ok(mut current) = self.inner.current.lock() {
                    *current = Some(conn.clone());
                }
                Ok(conn)
            }
            Err(status) => {
                *last_failure = Some((Instant::now(), status.clone()));
                Err(status)
            }
        }
    }

    async fn call(self, req: Request<tonic::body::Body>) -> Result<Response<RecvBody>, Status> {
        let limit = grpc_timeout(req.headers()).map_or(CALL_LIMIT, |t| t.min(CALL_LIMIT));
        match tokio::time::timeout(limit, self.send(req)).await {
            Ok(r) => r,
            Err(_) => Err(with_source(
                Status::cancelled("Timeout expired"),
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            )),
        }
    }

    async fn send(&self, req: Request<tonic::body::Body>) -> Result<Response<RecvBody>, Status> {
        let (mut head, body) = req.into_parts();
        // A unary message is ready at once: collecting it costs no wait.
        let message = body
            .collect()
            .await
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))?
            .to_bytes();
        // tonic gives the path alone; h2 needs the scheme and authority.
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(if self.inner.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        uri.authority = Some(self.inner.authority.clone());
        head.uri =
            Uri::from_parts(uri).map_err(|e| Status::internal(format!("request URI: {e}")))?;
        let conn = self.connection().await?;
        if conn.calls.fetch_add(1, Ordering::Relaxed) >= CALLS_PER_CONNECTION {
            conn.retire();
        }
        let retire = |e: h2::Error| {
            conn.retire();
            transport(e)
        };
        let mut send = conn.send.clone().ready().await.map_err(retire)?;
        let req = Request::from_parts(head, ());
        let (answer, mut stream) = send.send_request(req, message.is_empty()).map_err(retire)?;
        if !message.is_empty() {
            stream.send_data(message, true).map_err(transport)?;
        }
        let answer = answer.await.map_err(transport)?;
        Ok(answer.map(|body| RecvBody {
            stream: body,
            data_done: false,
            done: false,
        }))
    }
}

impl tower::Service<Request<tonic::body::Body>> for H2Channel {
    type Response = Response<RecvBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.clone().call(req))
    }
}

async fn connect(address: &str, tls: Option<&Tls>) -> Result<Conn, Status> {
    let unreachable = |e: std::io::Error| {
        with_source(
            Status::unavailable(format!("cannot connect to {address}: {e}")),
            e,
        )
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    tcp.set_nodelay(true).map_err(unreachable)?;
    let Some(tls) = tls else {
        return start(tcp).await;
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(tls.name.clone(), tcp))
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(|e| {
            with_source(
                Status::unavailable(format!("TLS handshake with {address}: {e}")),
                e,
            )
        })?;
    start(stream).await
}

/// HTTP/2 on a connected stream, with its driver and keep-alive tasks.
async fn start<T>(io: T) -> Result<Conn, Status>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(transport)?;
    let closed = Arc::new(AtomicBool::new(false));
    let pings = connection.ping_pong();
    let driver = tokio::spawn({
        let closed = closed.clone();
        async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "worker connection ended");
            }
            closed.store(true, Ordering::Release);
        }
    });
    if let Some(pings) = pings {
        tokio::spawn(keep_alive(pings, driver.abort_handle(), closed.clone()));
    }
    Ok(Conn {
        send,
        closed,
        calls: Arc::new(AtomicU32::new(0)),
    })
}

/// Pings the worker; one that does not answer in time loses the
/// connection, which fails its calls so that they can go elsewhere.
async fn keep_alive(
    mut pings: h2::PingPong,
    driver: tokio::task::AbortHandle,
    closed: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        if closed.load(Ordering::Acquire) {
            return;
        }
        let pong = tokio::time::timeout(KEEPALIVE_TIMEOUT, pings.ping(h2::Ping::opaque())).await;
        if !matches!(pong, Ok(Ok(_))) {
            tracing::warn!("worker did not answer a keep-alive ping; dropping its connection");
            closed.store(true, Ordering::Release);
            driver.abort();
            return;
        }
    }
}

/// A transport failure as tonic reports one: the h2 error is kept as the
/// status's source, which tells the router the call may be retried.
fn transport(e: h2::Error) -> Status {
    Status::from_error(Box::new(e))
}

fn with_source(mut s: Status, e: std::io::Error) -> Status {
    s.set_source(Arc::new(e));
    s
}

/// The `grpc-timeout` header the caller set.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    crate::parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// An answer's body: its DATA frames, then its trailers (where gRPC puts
/// the status). Received bytes are released at once, so the window never
/// closes on a connection shared by many calls.
pub struct RecvBody {
    stream: h2::RecvStream,
    data_done: bool,
    done: bool,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match std::task::ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        let trailers = std::task::ready!(self.stream.poll_trailers(cx));
        self.done = true;
        Poll::Ready(match trailers {
            Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
