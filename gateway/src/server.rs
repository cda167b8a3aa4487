//! Assembling and running the gateway. The stacks read top to bottom: each
//! call gets its trace span first, the oversize-status rewrite sees every answer, authentication runs before the
//! rate limit (which counts per credential), then each service; management
//! has the admin gate in front of it as well.

use crate::admin::admin_gate;
use crate::auth::Authenticator;
use crate::changes::Follower;
use crate::gate::GateLayer;
use crate::infer::GatewayV2;
use crate::jobs::JobsService;
use crate::limits::{RateLimitLayer, RateLimiter};
use crate::manage::ManagementService;
use crate::oversize::OversizeStatusLayer;
use crate::store::{Store, StoreError};
use proto::health::{self, Health};
use proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use proto::switchboard::v1::jobs_server::JobsServer;
use proto::switchboard::v1::management_server::ManagementServer;
use router::{Router, RouterConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub redis_url: String,
    /// Management key; without one, management is closed.
    pub admin_key: Option<String>,
    /// Largest request or answer, in bytes.
    pub max_message: usize,
    /// Requests per second per credential; 0 = unlimited.
    pub rate_limit: u32,
    /// How often the worker registry is re-read (also at once when a
    /// worker joins or leaves). Control-plane changes arrive as events, with
    /// no interval.
    pub refresh: Duration,
    /// On shutdown, how long calls in flight may take to finish.
    pub drain_timeout: Duration,
    /// Serve TLS (mTLS with a client CA).
    pub tls: Option<proto::tls::ServerTlsFiles>,
    /// How to reach workers that advertise TLS (CA, client identity).
    pub worker_tls: Option<proto::tls::ClientTlsFiles>,
    /// The name workers' certificates hold, when not their advertised host.
    pub worker_tls_name: Option<String>,
    /// A worker in this process (`up`), called without gRPC.
    pub local_worker: Option<proto::local::LocalWorker>,
}

/// Where the gateway serves KServe V2 REST (HTTP/1.1; over TLS, with the
/// same certificate, when gRPC is), besides gRPC on its main listener.
pub struct HttpListener(pub TcpListener);

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            admin_key: None,
            max_message: 16 << 20,
            rate_limit: 0,
            refresh: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
            tls: None,
            worker_tls: None,
            worker_tls_name: None,
            local_worker: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] proto::tls::TlsError),
    #[error("REST server: {0}")]
    Http(#[from] std::io::Error),
}

pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    serve_with_http(config, listener, None, shutdown).await
}

/// `serve`, and KServe V2 REST on `http` when given: the same gates,
/// services and router behind both, drained together on `shutdown`.
pub async fn serve_with_http(
    config: GatewayConfig,
    listener: TcpListener,
    http: Option<HttpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    // Certificates first: a bad file fails at start, before any wait on Redis.
    let tls = config
        .tls
        .as_ref()
        .map(proto::tls::server_config)
        .transpose()?;
    let worker_tls = config
        .worker_tls
        .as_ref()
        .map(proto::tls::client_config)
        .transpose()?;
    let conn = redis_conn::connect(&config.redis_url).await?;
    // Fails early on a malformed URL, as opening a client did.
    redis_conn::current_client(&config.redis_url).await?;
    let store = Arc::new(Store::new(conn.clone()));
    let router = Arc::new(Router::new(RouterConfig {
        max_message: config.max_message,
        worker_tls,
        worker_tls_name: config.worker_tls_name.clone(),
        local_worker: config.local_worker.clone(),
    }));
    let follower = Follower::start(&config.redis_url, store.clone(), router.clone()).await?;
    let follower = tokio::spawn(follower.run());
    let mut registry = conn.clone();
    if let Ok(workers) = registry::discover(&mut registry).await {
        router.set_workers(&workers);
    }
    let changed = Arc::new(tokio::sync::Notify::new());
    let follow = tokio::spawn(registry::follow_changes(
        config.redis_url.clone(),
        changed.clone(),
    ));
    let background = tokio::spawn(keep_in_sync(
        router.clone(),
        registry,
        config.refresh,
        changed,
    ));
    // The control plane is loaded: SERVING from the first call on.
    let health = Health::new(&[health::INFERENCE]).await;
    health.set(true).await;

    let limits = RateLimiter::new(config.rate_limit, Some(conn.clone()));
    let v2 = GatewayV2::new(
        store.clone(),
        router.clone(),
        limits.clone(),
        health.clone(),
    );
    let v2_server = GrpcInferenceServiceServer::new(v2.clone())
        .max_decoding_message_size(config.max_message)
        .max_encoding_message_size(config.max_message);
    let manage = tower::ServiceBuilder::new()
        .layer(admin_gate())
        .service(ManagementServer::new(ManagementService::new(
            store.clone(),
            router.clone(),
        )));
    let jobs_service = Arc::new(JobsService::new(
        store.clone(),
        router.clone(),
        job_queue::JobQueue::new(conn.clone()),
    ));
    let jobs = JobsServer::from_arc(jobs_service.clone());
    let authenticator = Authenticator::new(store.clone(), config.admin_key.as_deref());
    // One shutdown for both front doors.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let rest = http.map(|HttpListener(l)| {
        info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = tls.is_some(), "gateway serving KServe V2 REST");
        let app = crate::rest::router(
            crate::rest::Rest::new(v2.clone(), jobs_service.clone(), config.max_message),
            authenticator.clone(),
            limits.clone(),
        );
        let mut stopped = stopped.clone();
        tokio::spawn(crate::rest::serve(
            app,
            l,
            tls.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
            config.drain_timeout,
        ))
    });
    let stack = tower::ServiceBuilder::new()
        .layer(proto::trace::TraceLayer)
        .layer(OversizeStatusLayer)
        .layer(GateLayer(authenticator))
        .layer(RateLimitLayer(limits))
        .into_inner();
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = tls.is_some(), "gateway listening");
    let routes = tonic::transport::Server::builder()
        .layer(stack)
        .add_service(health.server())
        .add_service(v2_server)
        .add_service(manage)
        .add_service(jobs);
    // A gateway leaves nothing behind: it says NOT_SERVING (so that a load
    // balancer's probe takes it out), stops accepting, and answers what
    // it has in flight.
    let leave = {
        let health = health.clone();
        async move { health.drain().await }
    };
    let result =
        proto::drain::serve_routes(routes, listener, tls, shutdown, leave, config.drain_timeout)
            .await;
    let rest_result = match rest {
        Some(task) => task.await.unwrap_or(Ok(())),
        None => Ok(()),
    };
    background.abort();
    follow.abort();
    follower.abort();
    result?;
    Ok(rest_result?)
}

/// Follows the worker registry. Errors are logged and the last good view
/// kept, so the gateway serves on while Redis is away.
async fn keep_in_sync(
    router: Arc<Router>,
    mut registry: redis_conn::Connection,
    every: Duration,
    changed: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redis_ok = true;
    let mut pools = std::collections::HashSet::new();
    loop {
        // A worker that leaves is out of rotation at once, not at the next
        // tick: it stops accepting shortly after.
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
        }
        let workers = registry::discover(&mut registry).await;
        if let Ok(w) = &workers {
            router.set_workers(w);
        }
        let ok = workers.is_ok();
        if ok != redis_ok {
            if ok {
                info!("worker registry reachable again");
            } else {
                warn!("worker registry unreachable; routing to the last known workers");
            }
            redis_ok = ok;
        }
        router.check_ejected().await;
        crate::telemetry::record_replicas(&router, &mut pools);
    }
}
