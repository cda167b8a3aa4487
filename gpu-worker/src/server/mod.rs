//! The worker's KServe V2 gRPC service: one or more deployments, each a
//! scheduler over an engine. `model_name` is the endpoint and
//! `model_version` the deployment, so the gateway can forward requests as
//! they came, and a worker can also be called directly.

mod convert;
mod metadata;
mod params;
pub mod run;
#[cfg(test)]
mod tests;

pub use convert::{config_dtype, output_tensor, request_inputs};
pub use params::{Reserved, reserved};
pub use proto::deadline_of;

use crate::scheduler::{Request, Scheduler};
use engine::EngineError;
use proto::inference::grpc_inference_service_server::GrpcInferenceService;
use proto::inference::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

/// The engine's refusals as gRPC statuses (DESIGN.md's error table).
pub fn status_of(e: EngineError) -> Status {
    match e {
        EngineError::InvalidArgument(m) => Status::invalid_argument(m),
        EngineError::NotFound(m) => Status::not_found(m),
        EngineError::ResourceExhausted(m) => Status::resource_exhausted(m),
        e @ EngineError::OutOfMemory(_) => Status::resource_exhausted(e.to_string()),
        EngineError::DeadlineExceeded => {
            Status::deadline_exceeded("deadline exceeded before the request ran")
        }
        EngineError::Unavailable(m) => Status::unavailable(m),
        e @ (EngineError::Internal(_) | EngineError::Runtime(_)) => Status::internal(e.to_string()),
    }
}

/// Deployments this worker serves, by endpoint then deployment name.
#[derive(Clone, Default)]
pub struct Deployments {
    by_endpoint: Arc<BTreeMap<String, BTreeMap<String, Scheduler>>>,
}

impl Deployments {
    pub fn new(list: impl IntoIterator<Item = (String, String, Scheduler)>) -> Self {
        let mut map: BTreeMap<String, BTreeMap<String, Scheduler>> = BTreeMap::new();
        for (endpoint, deployment, s) in list {
            map.entry(endpoint).or_default().insert(deployment, s);
        }
        Deployments {
            by_endpoint: Arc::new(map),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Scheduler)> {
        self.by_endpoint
            .iter()
            .flat_map(|(e, ds)| ds.iter().map(move |(d, s)| (e.as_str(), d.as_str(), s)))
    }

    /// The deployment named by `version`, or the endpoint's only one.
    pub fn find(&self, name: &str, version: &str) -> Result<(&str, &Scheduler), Status> {
        let ds = self
            .by_endpoint
            .get(name)
            .ok_or_else(|| Status::not_found(format!("unknown model '{name}'")))?;
        if version.is_empty() {
            if let Some((d, s)) = ds.iter().next().filter(|_| ds.len() == 1) {
                return Ok((d, s));
            }
            let names: Vec<&String> = ds.keys().collect();
            return Err(Status::not_found(format!(
                "model '{name}' has deployments {names:?}; name one as the version"
            )));
        }
        ds.get_key_value(version)
            .map(|(d, s)| (d.as_str(), s))
            .ok_or_else(|| {
                Status::not_found(format!("model '{name}' has no deployment '{version}'"))
            })
    }
}

#[derive(Clone)]
pub struct WorkerService {
    deployments: Deployments,
    /// ServerReady and ModelReady answer what `grpc.health.v1` answers.
    health: proto::health::Health,
}

impl WorkerService {
    pub fn new(deployments: Deployments, health: proto::health::Health) -> Self {
        WorkerService {
            deployments,
            health,
        }
    }

    pub async fn infer(
        &self,
        deadline: Option<Instant>,
        req: ModelInferRequest,
    ) -> Result<ModelInferResponse, Status> {
        let (deployment, scheduler) = self.deployments.find(&req.model_name, &req.model_version)?;
        let (inputs, raw) = request_inputs(&req).map_err(status_of)?;
        let asked = reserved(&req).map_err(status_of)?;
        let mut deadline = deadline;
        if let Some(d) = asked.timeout.and_then(|t| Instant::now().checked_add(t)) {
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
        }
        let priority = asked.priority;
        let sig = scheduler.signature();
        // Check requested outputs before running anything.
        let wanted = wanted_outputs(sig, &req)?;
        let resp = scheduler
            .infer(Request {
                inputs,
                deadline,
                priority,
            })
            .await
            .map_err(status_of)?;
        let mut outputs: Vec<Option<engine::Tensor>> = resp.outputs.into_iter().map(Some).collect();
        let mut answer = ModelInferResponse {
            model_name: req.model_name,
            model_version: deployment.to_string(),
            id: req.id,
            ..Default::default()
        };
        for i in wanted {
            let Some(t) = outputs.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let (out, bytes) = output_tensor(&sig.outputs[i].name, t, raw);
            answer.outputs.push(out);
            answer.raw_output_contents.extend(bytes);
        }
        Ok(answer)
    }
}

/// Indices of the requested outputs in the signature (all when none are
/// named); an unknown or repeated name is refused.
pub fn wanted_outputs(
    sig: &engine::ModelSignature,
    req: &ModelInferRequest,
) -> Result<Vec<usize>, Status> {
    if req.outputs.is_empty() {
        return Ok((0..sig.outputs.len()).collect());
    }
    let mut wanted = Vec::with_capacity(req.outputs.len());
    for o in &req.outputs {
        let i = sig
            .outputs
            .iter()
            .position(|s| s.name == o.name)
            .ok_or_else(|| Status::invalid_argument(format!("unknown output '{}'", o.name)))?;
        if wanted.contains(&i) {
            return Err(Status::invalid_argument(format!(
                "output '{}' is requested more than once",
                o.name
            )));
        }
        wanted.push(i);
    }
    Ok(wanted)
}

#[tonic::async_trait]
impl GrpcInferenceService for WorkerService {
    async fn server_live(
        &self,
        _: GrpcRequest<ServerLiveRequest>,
    ) -> Result<GrpcResponse<ServerLiveResponse>, Status> {
        Ok(GrpcResponse::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: GrpcRequest<ServerReadyRequest>,
    ) -> Result<GrpcResponse<ServerReadyResponse>, Status> {
        Ok(GrpcResponse::new(ServerReadyResponse {
            ready: self.health.is_serving(),
        }))
    }

    async fn model_ready(
        &self,
        r: GrpcRequest<ModelReadyRequest>,
    ) -> Result<GrpcResponse<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        let ready = self.health.is_serving() && self.deployments.find(&r.name, &r.version).is_ok();
        Ok(GrpcResponse::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: GrpcRequest<ServerMetadataRequest>,
    ) -> Result<GrpcResponse<ServerMetadataResponse>, Status> {
        Ok(GrpcResponse::new(metadata::server()))
    }

    async fn model_metadata(
        &self,
        r: GrpcRequest<ModelMetadataRequest>,
    ) -> Result<GrpcResponse<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let (d, s) = self.deployments.find(&r.name, &r.version)?;
        Ok(GrpcResponse::new(metadata::model(&r.name, d, s)))
    }

    async fn model_config(
        &self,
        r: GrpcRequest<ModelConfigRequest>,
    ) -> Result<GrpcResponse<ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let (_, s) = self.deployments.find(&r.name, &r.version)?;
        Ok(GrpcResponse::new(ModelConfigResponse {
            config: Some(metadata::config(&r.name, s)),
        }))
    }

    /// Per deployment when the version names one; otherwise summed per
    /// endpoint with a numeric version (see `proto::stats`).
    async fn model_statistics(
        &self,
        r: GrpcRequest<ModelStatisticsRequest>,
    ) -> Result<GrpcResponse<ModelStatisticsResponse>, Status> {
        let r = r.into_inner();
        if !r.version.is_empty() {
            let (d, s) = self.deployments.find(&r.name, &r.version)?;
            return Ok(GrpcResponse::new(ModelStatisticsResponse {
                model_stats: vec![metadata::statistics(&r.name, d, s)],
            }));
        }
        if !r.name.is_empty() && !self.deployments.iter().any(|(e, _, _)| e == r.name) {
            return Err(Status::not_found(format!("unknown model '{}'", r.name)));
        }
        let mut summed: std::collections::BTreeMap<&str, ModelStatistics> =
            std::collections::BTreeMap::new();
        for (e, d, s) in self
            .deployments
            .iter()
            .filter(|(e, _, _)| r.name.is_empty() || *e == r.name)
        {
            let one = metadata::statistics(e, d, s);
            let total = match summed.remove(e) {
                Some(t) => proto::stats::merge(t, one),
                None => one,
            };
            summed.insert(e, total);
        }
        let model_stats = summed
            .into_values()
            .map(|mut s| {
                s.version = proto::stats::SUMMED_VERSION.into();
                s
            })
            .collect();
        Ok(GrpcResponse::new(ModelStatisticsResponse { model_stats }))
    }

    async fn model_infer(
        &self,
        r: GrpcRequest<ModelInferRequest>,
    ) -> Result<GrpcResponse<ModelInferResponse>, Status> {
        let deadline = deadline_of(&r);
        let work = self.infer(deadline, r.into_inner());
        Ok(GrpcResponse::new(
            proto::within_deadline(deadline, work).await?,
        ))
    }

    type ModelStreamInferStream = proto::stream::Answers;

    async fn model_stream_infer(
        &self,
        r: GrpcRequest<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<GrpcResponse<Self::ModelStreamInferStream>, Status> {
        let deadline = deadline_of(&r);
        let svc = self.clone();
        Ok(GrpcResponse::new(proto::stream::serve(
            r.into_inner(),
            move |req| {
                let svc = svc.clone();
                async move { svc.infer(deadline, req).await }
            },
        )))
    }
}
