//! A KServe V2 server whose behaviour the caller controls: a fixed service
//! time on a fixed number of workers (so its capacity is known), or none at
//! all (a trivial server, to measure the load generator itself), and a
//! switch that stalls every request. Used by the tests and by
//! `sb-loadtest serve-test`.

use proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use proto::inference::model_metadata_response::TensorMetadata;
use proto::inference::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Time each request occupies a worker.
    pub service_time: Duration,
    /// Workers; 0 answers at once with no limit (a trivial server).
    pub workers: usize,
}

/// Stalls and resumes a running test server, and tells how many infer
/// requests it has received (so a test can place a stall in the load
/// rather than in wall-clock time). Only tests stall it.
#[cfg(feature = "test-util")]
#[derive(Clone)]
pub struct Control {
    stall: Arc<watch::Sender<bool>>,
    received: Arc<AtomicU64>,
}

#[cfg(feature = "test-util")]
impl Control {
    pub fn stall(&self) {
        self.stall.send_replace(true);
    }
    pub fn resume(&self) {
        self.stall.send_replace(false);
    }
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    #[cfg(feature = "test-util")]
    pub control: Control,
    _stop: oneshot::Sender<()>,
}

/// A request handed to a worker: when it arrived, and where to answer.
struct Job {
    arrived: Instant,
    done: oneshot::Sender<()>,
}

#[derive(Clone)]
struct Service {
    stalled: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
    jobs: Option<std_mpsc::Sender<Job>>,
}

impl TestServer {
    #[cfg(feature = "test-util")]
    pub async fn start(b: Behaviour) -> std::io::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, b).await
    }

    pub async fn serve(
        listener: tokio::net::TcpListener,
        b: Behaviour,
    ) -> std::io::Result<TestServer> {
        let addr = listener.local_addr()?;
        // Without a Control the sender is dropped; `wait_for` still passes
        // on the unstalled value.
        let (_stall, stalled) = watch::channel(false);
        let jobs = (b.workers > 0).then(|| {
            let (tx, rx) = std_mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..b.workers {
                let rx = rx.clone();
                // Real threads, each keeping its own schedule: a request
                // starts when it arrived or when the previous one finished,
                // whichever is later, and finishes one service time on.
                // Sleeping to that deadline rather than for the service time
                // keeps a late wake-up (a busy machine oversleeps by a
                // millisecond or more) from adding to every later request,
                // so the capacity is exactly workers / service time.
                std::thread::spawn(move || {
                    let mut free_at = Instant::now();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        free_at = free_at.max(job.arrived) + b.service_time;
                        let now = Instant::now();
                        if free_at > now {
                            std::thread::sleep(free_at - now);
                        }
                        let _ = job.done.send(());
                    }
                });
            }
            tx
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let received = Arc::new(AtomicU64::new(0));
        let svc = GrpcInferenceServiceServer::new(Service {
            stalled,
            received: received.clone(),
            jobs,
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(proto::incoming_nodelay(listener), async move {
                    let _ = stopped.await;
                }),
        );
        Ok(TestServer {
            addr,
            #[cfg(feature = "test-util")]
            control: Control {
                stall: Arc::new(_stall),
                received,
            },
            _stop: stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn tensor(name: &str) -> TensorMetadata {
    TensorMetadata {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![-1, 4],
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }
    async fn model_ready(
        &self,
        _: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "testserver".into(),
            version: "0".into(),
            extensions: vec![],
        }))
    }
    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Ok(Response::new(ModelMetadataResponse {
            name: r.into_inner().name,
            versions: vec!["1".into()],
            platform: "test".into(),
            inputs: vec![tensor("input")],
            outputs: vec![tensor("output")],
        }))
    }
    async fn model_config(
        &self,
        _: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        Err(Status::unimplemented("no config"))
    }
    async fn model_statistics(
        &self,
        _: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        Err(Status::unimplemented("no statistics"))
    }
    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut stalled = self.stalled.clone();
        let _ = stalled.wait_for(|s| !*s).await;
        if let Some(jobs) = &self.jobs {
            let (tx, rx) = oneshot::channel();
            let job = Job {
                arrived: Instant::now(),
                done: tx,
            };
            jobs.send(job)
                .map_err(|_| Status::unavailable("workers gone"))?;
            rx.await.map_err(|_| Status::unavailable("worker gone"))?;
        }
        let r = r.into_inner();
        Ok(Response::new(ModelInferResponse {
            model_name: r.model_name,
            id: r.id,
            ..Default::default()
        }))
    }

    type ModelStreamInferStream = proto::stream::Answers;
    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Err(Status::unimplemented("no streaming"))
    }
}
