//! The batcher's HTTP port (`--metrics-listen`): Prometheus metrics at
//! `/metrics`, and for Kubernetes' HTTP probes `/live` (200 while the
//! process answers) and `/ready` (200 while it takes work: Redis reached
//! and not draining; 503 otherwise). The batcher has no gRPC server, so
//! it cannot answer `grpc.health.v1` like the gateway and the worker.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Binds `addr` (so a taken port fails the start) and serves it in the
/// background.
pub async fn serve(addr: SocketAddr, ready: Arc<AtomicBool>) -> Result<SocketAddr> {
    let metrics = crate::prom::builder()
        .install_recorder()
        .context("installing the metrics recorder")?;
    crate::prom::describe();
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics and probes on {addr}"))?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "metrics at /metrics, probes at /live and /ready");
    {
        // Histograms are summarised on upkeep; the built-in listener
        // would run it for us.
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        });
    }
    tokio::spawn(accept(listener, metrics, ready));
    Ok(bound)
}

async fn accept(listener: TcpListener, metrics: PrometheusHandle, ready: Arc<AtomicBool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "probe port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let answer = answer(req.uri().path(), &metrics, &ready);
            async move { Ok::<_, Infallible>(answer) }
        });
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn answer(path: &str, metrics: &PrometheusHandle, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/live" => (StatusCode::OK, "live\n".to_string()),
        "/ready" if ready.load(Ordering::Relaxed) => (StatusCode::OK, "ready\n".to_string()),
        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}
