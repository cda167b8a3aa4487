//! `grpc.health.v1.Health` (Check and Watch), what Kubernetes' native gRPC
//! probes call, on the gateway and the worker. Statuses start NOT_SERVING:
//! a server says SERVING only once the role has said it is ready, and goes
//! back to NOT_SERVING when it starts to drain.
//!
//! The status store is tonic-health's. What this adds: a plain flag that
//! `ServerReady`/`ModelReady` read without awaiting, so the two protocols
//! always agree, and Watch streams that end when the server drains (a
//! graceful shutdown waits for every open stream, and a prober's Watch
//! would otherwise hold it until the drain timeout).

use futures::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

pub use tonic_health::pb::HealthCheckRequest as CheckRequest;
pub use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
pub use tonic_health::pb::health_client::HealthClient;

/// The service name of the V2 inference API, as probes name it.
pub const INFERENCE: &str = "inference.GRPCInferenceService";

#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    /// "" (the whole server) and the services named at creation.
    names: Arc<Vec<String>>,
    serving: Arc<AtomicBool>,
    closing: Arc<watch::Sender<bool>>,
}

impl Health {
    /// Every name (and the server as a whole, "") starts NOT_SERVING.
    pub async fn new(services: &[&str]) -> Health {
        let mut names = vec![String::new()];
        names.extend(services.iter().map(|s| s.to_string()));
        let h = Health {
            reporter: HealthReporter::new(),
            names: Arc::new(names),
            serving: Arc::new(AtomicBool::new(false)),
            closing: Arc::new(watch::channel(false).0),
        };
        h.set(false).await;
        h
    }

    pub async fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for n in self.names.iter() {
            self.reporter.set_service_status(n, status).await;
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Ends every Watch stream (after one last NOT_SERVING): called as the
    /// server stops accepting, so that probes do not hold the drain.
    pub async fn drain(&self) {
        self.set(false).await;
        self.closing.send_replace(true);
    }

    pub fn server(&self) -> HealthServer<Watched> {
        HealthServer::new(Watched {
            inner: HealthService::from_health_reporter(self.reporter.clone()),
            closing: self.closing.subscribe(),
        })
    }
}

/// tonic-health's service with Watch streams that end on drain.
pub struct Watched {
    inner: HealthService,
    closing: watch::Receiver<bool>,
}

type WatchStream =
    Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl HealthApi for Watched {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = self.inner.watch(request).await?.into_inner();
        let mut closing = self.closing.clone();
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        // The last word is NOT_SERVING even when the drain's change of
        // status and the end arrive together (take_until would drop it).
        let last = futures::stream::once(async {
            Ok(HealthCheckResponse {
                status: WireStatus::NotServing as i32,
            })
        });
        Ok(Response::new(Box::pin(
            stream.take_until(closed).chain(last),
        )))
    }
}
