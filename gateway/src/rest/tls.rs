//! REST over TLS with the gRPC listener's certificate (and client CA, for
//! mTLS): the same rustls config, reloaded from the same files, offering
//! HTTP/1.1 in ALPN instead of h2. Handshakes run concurrently off the
//! accept loop (`proto::tls::incoming`), so a slow client holds up no one.

use axum::serve::Listener;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;

pub struct TlsListener {
    incoming: proto::tls::TlsIncoming,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: &Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let mut http1 = (**config).clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsListener {
            incoming: proto::tls::incoming(listener, Arc::new(http1)),
            local,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "REST TLS connection"),
                // The accept loop ended: the server is going away.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
