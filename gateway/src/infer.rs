//! The gateway's KServe V2 service. `model_name` is the endpoint; the router
//! picks the deployment and replica, and the worker's answer comes back
//! with the deployment named in `model_version`.

use crate::auth::{Principal, authorize_infer, principal};
use crate::limits::RateLimiter;
use crate::store::{EndpointRecord, Store};
use proto::inference::grpc_inference_service_server::GrpcInferenceService;
use proto::inference::*;
use router::Router;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Metadata that pins a request to one deployment, bypassing the weights.
pub const PIN_HEADER: &str = "switchboard-deployment";

#[derive(Clone)]
pub struct GatewayV2 {
    store: Arc<Store>,
    router: Arc<Router>,
    limits: RateLimiter,
    /// ServerReady and ModelReady answer what `grpc.health.v1` answers.
    health: proto::health::Health,
}

impl GatewayV2 {
    /// `limits` is the rate limiter of the layer stack, shared so that
    /// stream messages count against the same buckets.
    pub fn new(
        store: Arc<Store>,
        router: Arc<Router>,
        limits: RateLimiter,
        health: proto::health::Health,
    ) -> Self {
        GatewayV2 {
            store,
            router,
            limits,
            health,
        }
    }

    /// Looks the endpoint up in the current snapshot and authorizes `p` on
    /// it; `f` reads it there, so the hot path copies nothing.
    fn with_endpoint<T>(
        &self,
        p: &Principal,
        name: &str,
        f: impl FnOnce(&EndpointRecord) -> T,
    ) -> Result<T, Status> {
        let snap = self.store.snapshot();
        let ep = snap
            .endpoints
            .get(name)
            .ok_or_else(|| Status::not_found(format!("unknown endpoint '{name}'")))?;
        authorize_infer(p, ep)?;
        Ok(f(ep))
    }

    fn endpoint(&self, p: &Principal, name: &str) -> Result<EndpointRecord, Status> {
        self.with_endpoint(p, name, Clone::clone)
    }

    /// Routes one request within its deadline, and records its outcome
    /// (metrics, and a log line when it fails).
    pub(crate) async fn infer(
        &self,
        p: &Principal,
        pinned: Option<String>,
        deadline: Option<std::time::Instant>,
        req: ModelInferRequest,
    ) -> Result<ModelInferResponse, Status> {
        let started = std::time::Instant::now();
        let name = req.model_name.clone();
        let request_id = req.id.clone();
        // A version in the request names a deployment, like the pin header.
        let pinned =
            pinned.or_else(|| (!req.model_version.is_empty()).then(|| req.model_version.clone()));
        let work = async {
            self.with_endpoint(p, &name, |_| ())?;
            self.router
                .infer(&name, pinned.as_deref(), req, deadline)
                .await
        };
        let result = proto::within_deadline(deadline, work).await;
        let (deployment, code) = match &result {
            Ok(r) => (r.model_version.as_str(), tonic::Code::Ok),
            Err(s) => (pinned.as_deref().unwrap_or(""), s.code()),
        };
        crate::telemetry::record_inference(&name, deployment, code, started);
        if let Err(s) = &result {
            // The endpoint, never the caller's credential.
            let trace_id = proto::trace::trace_id().unwrap_or_default();
            tracing::info!(endpoint = %name, deployment, request_id, trace_id, code = crate::telemetry::code_name(code), error = s.message(), "request failed");
        }
        result
    }

    /// The deployment that answers metadata questions: the pinned one, the
    /// one named as version, or the one with the most traffic.
    fn metadata_deployment(&self, ep: &EndpointRecord, version: &str) -> Result<String, Status> {
        if !version.is_empty() {
            return self.router.choose(&ep.name, Some(version));
        }
        ep.traffic
            .iter()
            .max_by_key(|(_, w)| **w)
            .map(|(d, _)| d.clone())
            .or_else(|| ep.deployments.keys().next().cloned())
            .ok_or_else(|| {
                Status::unavailable(format!("endpoint '{}' has no deployments", ep.name))
            })
    }

    fn replica_client(
        &self,
        ep: &str,
        deployment: &str,
    ) -> Result<
        proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<
            proto::channel::H2Channel,
        >,
        Status,
    > {
        self.router
            .pool(ep, deployment)
            .and_then(|p| p.pick(None))
            .map(|r| r.client())
            .ok_or_else(|| {
                Status::unavailable(format!("no healthy replica of deployment '{deployment}'"))
            })
    }
}

fn pinned<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(PIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

#[tonic::async_trait]
impl GrpcInferenceService for GatewayV2 {
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
        Ok(Response::new(ServerReadyResponse {
            ready: self.health.is_serving(),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let p = principal(&r);
        let r = r.into_inner();
        let ep = self.endpoint(&p, &r.name)?;
        let ready = self.health.is_serving()
            && self
                .metadata_deployment(&ep, &r.version)
                .ok()
                .and_then(|d| self.router.pool(&ep.name, &d))
                .is_some_and(|pool| pool.healthy() > 0);
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "switchboard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_configuration".into(), "statistics".into()],
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let p = principal(&r);
        let mut r = r.into_inner();
        let ep = self.endpoint(&p, &r.name)?;
        r.version = self.metadata_deployment(&ep, &r.version)?;
        let mut resp = self
            .replica_client(&ep.name, &r.version)?
            .model_metadata(r)
            .await?
            .into_inner();
        resp.versions = ep.deployments.keys().cloned().collect();
        Ok(Response::new(resp))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let p = principal(&r);
        let mut r = r.into_inner();
        let ep = self.endpoint(&p, &r.name)?;
        r.version = self.metadata_deployment(&ep, &r.version)?;
        Ok(Response::new(
            self.replica_client(&ep.name, &r.version)?
                .model_config(r)
                .await?
                .into_inner(),
        ))
    }

    /// Statistics of every replica of each deployment, summed per
    /// deployment when the version names one, else per endpoint.
    async fn model_statistics(
        &self,
        r: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let p = principal(&r);
        let r = r.into_inner();
        let snap = self.store.snapshot();
        let names: Vec<String> = if r.name.is_empty() {
            snap.endpoints
                .values()
                .filter(|e| authorize_infer(&p, e).is_ok())
                .map(|e| e.name.clone())
                .collect()
        } else {
            vec![self.with_endpoint(&p, &r.name, |e| e.name.clone())?]
        };
        let mut model_stats = Vec::new();
        for name in names {
            let Some(ep) = snap.endpoints.get(&name) else {
                continue;
            };
            let mut endpoint_total: Option<ModelStatistics> = None;
            for d in ep
                .deployments
                .keys()
                .filter(|d| r.version.is_empty() || **d == r.version)
            {
                let Some(pool) = self.router.pool(&name, d) else {
                    continue;
                };
                for replica in pool.replicas() {
                    let q = ModelStatisticsRequest {
                        name: name.clone(),
                        version: d.clone(),
                    };
                    if let Ok(resp) = replica.client().model_statistics(q).await {
                        for s in resp.into_inner().model_stats {
                            endpoint_total = Some(match endpoint_total {
                                None => s,
                                Some(t) => proto::stats::merge(t, s),
                            });
                        }
                    }
                }
            }
            if let Some(mut total) = endpoint_total {
                total.name = name.clone();
                total.version = if r.version.is_empty() {
                    proto::stats::SUMMED_VERSION.into()
                } else {
                    r.version.clone()
                };
                model_stats.push(total);
            }
        }
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let p = principal(&r);
        let pin = pinned(&r);
        let deadline = proto::deadline_of(&r);
        Ok(Response::new(
            self.infer(&p, pin, deadline, r.into_inner()).await?,
        ))
    }

    type ModelStreamInferStream = proto::stream::Answers;

    async fn model_stream_infer(
        &self,
        r: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let p = principal(&r);
        let pin = pinned(&r);
        let deadline = proto::deadline_of(&r);
        let svc = self.clone();
        // The auth and rate-limit layers saw only the stream's opening, so
        // each message is checked again: a key regenerated or a token
        // expired mid-stream stops working, and the rate limit counts
        // messages, not streams.
        Ok(Response::new(proto::stream::serve(
            r.into_inner(),
            move |req| {
                let (svc, p, pin) = (svc.clone(), p.clone(), pin.clone());
                async move {
                    crate::auth::still_valid(&p, &svc.store.snapshot())?;
                    svc.limits.check_principal(&p).await?;
                    svc.infer(&p, pin, deadline, req).await
                }
            },
        )))
    }
}
