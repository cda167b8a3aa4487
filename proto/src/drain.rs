//! Graceful drain for a gRPC server, shared by the gateway and the worker:
//! on the shutdown signal, first `leave` (the role's own steps while it
//! still serves: say NOT_SERVING, leave the registry, give gateways time
//! to notice), then stop accepting and send HTTP/2 GOAWAY (tonic's graceful
//! shutdown), then wait for the calls in flight; all of it within
//! `timeout`, past which the server is dropped with whatever is left.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// `serve` gets the future that tells tonic to shut down gracefully.
pub async fn serve_draining<S, E, L>(
    serve: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> S,
    shutdown: impl Future<Output = ()>,
    leave: L,
    timeout: Duration,
) -> Result<(), E>
where
    S: Future<Output = Result<(), E>>,
    L: Future<Output = ()>,
{
    let (goaway, goaway_rx) = tokio::sync::oneshot::channel();
    let server = serve(goaway_rx);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = shutdown => {}
    }
    let deadline = Instant::now() + timeout;
    info!(timeout_s = timeout.as_secs_f64(), "draining");
    tokio::pin!(leave);
    // The server keeps answering while the role leaves.
    let left = tokio::time::timeout_at(deadline, async {
        tokio::select! {
            r = &mut server => Some(r),
            () = &mut leave => None,
        }
    })
    .await;
    match left {
        Ok(Some(r)) => return r,
        Ok(None) => {}
        Err(_) => warn!("drain timeout passed before the server stopped accepting"),
    }
    let _ = goaway.send(());
    match tokio::time::timeout_at(deadline, &mut server).await {
        Ok(r) => {
            info!("drained");
            r
        }
        Err(_) => {
            warn!("drain timeout passed with calls still in flight; stopping anyway");
            Ok(())
        }
    }
}

/// The error type tonic's server bounds name.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `routes` on `listener`, over TLS when `tls` is given, until
/// `shutdown`; then drains as [`serve_draining`] does. The gateway and the
/// worker both end their `serve` here.
pub async fn serve_routes<L, ResBody>(
    routes: tonic::transport::server::Router<L>,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    leave: impl Future<Output = ()>,
    timeout: Duration,
) -> Result<(), tonic::transport::Error>
where
    L: tower::Layer<tonic::service::Routes>,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error: Into<BoxError> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    use futures::future::Either;
    serve_draining(
        |goaway| {
            let stop = async {
                let _ = goaway.await;
            };
            match tls {
                Some(tls) => Either::Left(
                    routes.serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), stop),
                ),
                None => Either::Right(
                    routes.serve_with_incoming_shutdown(crate::incoming_nodelay(listener), stop),
                ),
            }
        },
        shutdown,
        leave,
        timeout,
    )
    .await
}
