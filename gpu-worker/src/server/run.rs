//! Running a worker: load and warm deployments, register in Redis with a
//! heartbeat, serve V2 and `grpc.health.v1` on a listener; on shutdown,
//! drain: NOT_SERVING, leave the registry, give gateways `drain_grace` to
//! stop sending, GOAWAY, answer what is queued and in flight, exit (all
//! within `drain_timeout`).

use super::{Deployments, WorkerService};
use crate::scheduler::{Scheduler, SchedulerConfig};
use engine::{EngineError, OrtOptions};
use proto::health::{self, Health};
use proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use registry::{Registration, ServedDeployment, WorkerRecord};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// One deployment to serve: `ENDPOINT/DEPLOYMENT=MODEL_PATH`.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub endpoint: String,
    pub deployment: String,
    pub model: PathBuf,
}

impl std::str::FromStr for DeploymentSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("'{s}': expected ENDPOINT/DEPLOYMENT=MODEL_PATH");
        let (names, path) = s.split_once('=').ok_or_else(err)?;
        let (endpoint, deployment) = names.split_once('/').ok_or_else(err)?;
        if endpoint.is_empty() || deployment.is_empty() || path.is_empty() {
            return Err(err());
        }
        Ok(DeploymentSpec {
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            model: path.into(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub deployments: Vec<DeploymentSpec>,
    pub scheduler: SchedulerConfig,
    /// How models are opened; `ort.device` is replaced by each of `devices`.
    pub ort: OrtOptions,
    /// Each model gets `scheduler.instances` instances on each of these
    /// (`--device cuda:all`: every GPU), all behind its one queue.
    pub devices: Vec<engine::Device>,
    /// Registry to join; none runs the worker stand-alone.
    pub redis_url: Option<String>,
    /// Address others reach this worker at; default: the listener's.
    pub advertise: Option<String>,
    pub max_message: usize,
    pub id: Option<String>,
    /// The whole drain, past which the worker stops with calls in flight.
    pub drain_timeout: Duration,
    /// How long the worker keeps serving after leaving the registry, for
    /// gateways to take it out of rotation before it refuses new calls.
    pub drain_grace: Duration,
    /// Serve TLS; with a client CA, only clients holding a certificate it
    /// signed (gateways, batchers) are let in.
    pub tls: Option<proto::tls::ServerTlsFiles>,
    /// Handed this worker's service, for a gateway in the same process.
    pub local: Option<proto::local::LocalWorker>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            deployments: Vec::new(),
            scheduler: SchedulerConfig::default(),
            ort: OrtOptions::default(),
            devices: vec![engine::Device::Cpu],
            redis_url: None,
            advertise: None,
            max_message: 64 << 20,
            id: None,
            drain_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_secs(1),
            tls: None,
            local: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{model}: {source}")]
    Model { model: String, source: EngineError },
    #[error("registry: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] proto::tls::TlsError),
}

/// Loads every deployment's model, starts its scheduler and warms it with
/// one inference (the first run of an ONNX Runtime session is several times
/// slower than the next: it should not be a client's).
pub async fn load(config: &WorkerConfig) -> Result<Deployments, WorkerError> {
    let mut list = Vec::new();
    for d in &config.deployments {
        let factories = config
            .devices
            .iter()
            .map(|&device| {
                let options = OrtOptions {
                    device,
                    ..config.ort.clone()
                };
                engine::open_model(&d.model, &options)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| WorkerError::Model {
                model: d.model.display().to_string(),
                source,
            })?;
        let name = format!("{}/{}", d.endpoint, d.deployment);
        let s = Scheduler::start(name, &factories, config.scheduler.clone())?;
        // A model that fails on zeros may still score real input (and the
        // failure is the client's to see, as INTERNAL): warn, serve on.
        if let Err(e) = warm(&s).await {
            warn!(model = %d.model.display(), error = %e, "warm-up inference failed; serving anyway");
        }
        list.push((d.endpoint.clone(), d.deployment.clone(), s));
    }
    Ok(Deployments::new(list))
}

/// One zero-filled row (batch dimension and any other dynamic one set to 1).
async fn warm(s: &Scheduler) -> Result<(), EngineError> {
    let inputs = s
        .signature()
        .inputs
        .iter()
        .map(|t| {
            let shape: Vec<i64> = t.dims.iter().map(|&d| d.max(1)).collect();
            let bytes = engine::Tensor::element_count(&shape) * t.dtype.size();
            let tensor = engine::Tensor {
                dtype: t.dtype,
                shape,
                data: bytes::Bytes::from(vec![0u8; bytes]),
            };
            (t.name.clone(), tensor)
        })
        .collect();
    let run = s
        .infer(crate::scheduler::Request {
            inputs,
            deadline: None,
            priority: 0,
        })
        .await;
    s.reset_stats();
    run.map(|_| ())
}

pub async fn serve(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let tls = config
        .tls
        .as_ref()
        .map(proto::tls::server_config)
        .transpose()?;
    let deployments = load(&config).await?;
    let memory = tokio::spawn(crate::scheduler::sample_memory(config.devices.clone()));
    let address = match &config.advertise {
        Some(a) => a.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let health = Health::new(&[health::INFERENCE]).await;
    let worker = WorkerService::new(deployments.clone(), health.clone());
    // Before registering: a gateway in this process that learns of this
    // worker finds its service already there.
    if let Some(local) = &config.local {
        local.set(Arc::new(worker.clone()));
    }
    let registration = match &config.redis_url {
        Some(url) => {
            let conn = redis_conn::connect(url).await?;
            let record = WorkerRecord {
                id: config
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("worker-{}-{}", std::process::id(), address)),
                address: address.clone(),
                tls: tls.is_some(),
                deployments: deployments
                    .iter()
                    .map(|(e, d, s)| ServedDeployment {
                        endpoint: e.into(),
                        deployment: d.into(),
                        capacity: (s.config().instances * s.config().max_batch_size.max(1)) as u32,
                    })
                    .collect(),
            };
            Some(Registration::register(conn, record, Duration::from_secs(6)).await?)
        }
        None => None,
    };
    // Loaded, warmed and registered: from here on the worker is SERVING.
    health.set(true).await;
    let service = GrpcInferenceServiceServer::new(worker)
        .max_decoding_message_size(config.max_message)
        .max_encoding_message_size(config.max_message);
    info!(%address, tls = tls.is_some(), "worker listening");
    let leave = {
        let health = health.clone();
        async move {
            health.set(false).await;
            if let Some(r) = registration
                && let Err(e) = r.deregister().await
            {
                warn!(error = %e, "could not deregister; the record will expire");
            }
            tokio::time::sleep(config.drain_grace).await;
            health.drain().await;
        }
    };
    let routes = tonic::transport::Server::builder()
        .layer(proto::trace::TraceLayer)
        .add_service(health.server())
        .add_service(service);
    let served =
        proto::drain::serve_routes(routes, listener, tls, shutdown, leave, config.drain_timeout)
            .await;
    memory.abort();
    Ok(served?)
}
