//! KServe V2 REST (with Triton's binary tensor data extension) on the
//! gateway. The REST front door is a translation, not a second gateway:
//! the authentication and rate-limit gates of the gRPC stack run in front
//! of it as they are, and every handler turns its request into the gRPC
//! message and calls the gRPC service's own code (routing, authorization,
//! deadlines, metrics), then writes that answer as JSON.

pub mod binary;
mod body;
pub mod errors;
#[cfg(test)]
mod fuzz;
pub mod jobs;
pub mod json;
pub mod meta;
pub mod tensors;
mod tls;

use crate::auth::{Authenticator, Principal};
use crate::gate::GateLayer;
use crate::infer::{GatewayV2, PIN_HEADER};
use crate::jobs::JobsService;
use crate::limits::{RateLimitLayer, RateLimiter};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use errors::RestError;
use http::{HeaderValue, StatusCode, header};
use proto::inference::grpc_inference_service_server::GrpcInferenceService;
use proto::inference::*;
use serde::Deserialize;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What the handlers share: the gRPC services they translate to.
#[derive(Clone)]
pub struct Rest {
    v2: GatewayV2,
    jobs: Arc<JobsService>,
    max_message: usize,
}

impl Rest {
    pub fn new(v2: GatewayV2, jobs: Arc<JobsService>, max_message: usize) -> Self {
        Rest {
            v2,
            jobs,
            max_message,
        }
    }
}

/// The REST routes behind the same gates as gRPC: authentication, then the
/// per-credential rate limit; their refusals are rewritten as REST errors.
pub fn router(rest: Rest, auth: Authenticator, limits: RateLimiter) -> axum::Router {
    let model = |tail: &str| {
        [
            format!("/v2/models/{{m}}{tail}"),
            format!("/v2/models/{{m}}/versions/{{v}}{tail}"),
        ]
    };
    let mut r = axum::Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_statistics));
    for p in model("") {
        r = r.route(&p, get(model_metadata));
    }
    for p in model("/ready") {
        r = r.route(&p, get(model_ready));
    }
    for p in model("/config") {
        r = r.route(&p, get(model_config));
    }
    for p in model("/stats") {
        r = r.route(&p, get(model_statistics));
    }
    for p in model("/infer") {
        r = r.route(&p, post(infer));
    }
    jobs::routes(r)
        .method_not_allowed_fallback(wrong_method)
        .fallback(unknown_route)
        .with_state(rest)
        .layer(RateLimitLayer(limits))
        .layer(GateLayer(auth))
        .layer(axum::middleware::map_response(errors::refusal_to_rest))
        // Outermost, as on gRPC: a `traceparent` header makes the call's
        // span a child of the caller's.
        .layer(proto::trace::TraceLayer)
}

/// Serves `app` (over TLS with `tls`) until `shutdown`, then drains as the
/// gRPC server does: stops accepting, finishes what is in flight, within
/// `timeout`.
pub async fn serve(
    app: axum::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    timeout: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, &config)?;
            drain_on(listener, app, shutdown, timeout).await
        }
        None => {
            // Without TCP_NODELAY, answers over ~1 KiB wait for delayed ACKs.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            drain_on(listener, app, shutdown, timeout).await
        }
    }
}

async fn drain_on<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    timeout: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    proto::drain::serve_draining(
        |goaway| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = goaway.await;
                })
                .await
        },
        shutdown,
        async {},
        timeout,
    )
    .await
}

#[derive(Deserialize)]
struct ModelPath {
    m: String,
    #[serde(default)]
    v: Option<String>,
}

impl ModelPath {
    fn version(&self) -> String {
        self.v.clone().unwrap_or_default()
    }
}

/// A gRPC request carrying the caller the gate found.
pub(crate) fn grpc<T>(req: &Request, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(principal(req));
    r
}

pub(crate) fn principal(req: &Request) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous)
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut resp = (status, v.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

/// Ready answers are 200 when ready and 503 when not (tritonclient reads
/// the status code alone).
fn readiness(ready: bool) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({ "ready": ready }))
}

async fn wrong_method(req: Request) -> RestError {
    RestError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{} is not served on {}", req.method(), req.uri().path()),
    }
}

async fn unknown_route(req: Request) -> RestError {
    RestError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn live() -> Response {
    ok(json!({ "live": true }))
}

async fn ready(State(s): State<Rest>, req: Request) -> Result<Response, RestError> {
    let r = s.v2.server_ready(grpc(&req, ServerReadyRequest {})).await?;
    Ok(readiness(r.into_inner().ready))
}

async fn server_metadata(State(s): State<Rest>, req: Request) -> Result<Response, RestError> {
    let r =
        s.v2.server_metadata(grpc(&req, ServerMetadataRequest {}))
            .await?;
    Ok(ok(meta::server(r.get_ref())))
}

async fn model_metadata(
    State(s): State<Rest>,
    Path(p): Path<ModelPath>,
    req: Request,
) -> Result<Response, RestError> {
    let msg = ModelMetadataRequest {
        name: p.m.clone(),
        version: p.version(),
    };
    let r = s.v2.model_metadata(grpc(&req, msg)).await?;
    Ok(ok(meta::model(r.get_ref())))
}

async fn model_ready(
    State(s): State<Rest>,
    Path(p): Path<ModelPath>,
    req: Request,
) -> Result<Response, RestError> {
    let msg = ModelReadyRequest {
        name: p.m.clone(),
        version: p.version(),
    };
    let r = s.v2.model_ready(grpc(&req, msg)).await?;
    Ok(readiness(r.into_inner().ready))
}

async fn model_config(
    State(s): State<Rest>,
    Path(p): Path<ModelPath>,
    req: Request,
) -> Result<Response, RestError> {
    let msg = ModelConfigRequest {
        name: p.m.clone(),
        version: p.version(),
    };
    let r = s.v2.model_config(grpc(&req, msg)).await?;
    let config = r.into_inner().config.unwrap_or_default();
    Ok(ok(meta::config(&config)))
}

async fn statistics(
    s: &Rest,
    msg: tonic::Request<ModelStatisticsRequest>,
) -> Result<Response, RestError> {
    let r = s.v2.model_statistics(msg).await?;
    Ok(ok(meta::statistics(r.get_ref())))
}

async fn all_statistics(State(s): State<Rest>, req: Request) -> Result<Response, RestError> {
    statistics(&s, grpc(&req, ModelStatisticsRequest::default())).await
}

async fn model_statistics(
    State(s): State<Rest>,
    Path(p): Path<ModelPath>,
    req: Request,
) -> Result<Response, RestError> {
    let msg = ModelStatisticsRequest {
        version: p.version(),
        name: p.m,
    };
    statistics(&s, grpc(&req, msg)).await
}

/// One inference: the JSON (and binary) request as a `ModelInferRequest`,
/// routed by the gRPC service's own `infer`; the version in the path pins
/// the deployment as `model_version` does over gRPC.
async fn infer(
    State(s): State<Rest>,
    Path(p): Path<ModelPath>,
    req: Request,
) -> Result<Response, RestError> {
    let who = principal(&req);
    let (headers, body) = body::read(req, s.max_message).await?;
    let pin = headers
        .get(PIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    let (head, rest) = binary::split(&headers, body)?;
    let (msg, shown) = json::request(&p.m, p.v.as_deref(), &head, rest)?;
    let deadline = json::timeout(&msg).and_then(|t| Instant::now().checked_add(t));
    let answer = s.v2.infer(&who, pin, deadline, msg).await?;
    let written = json::answer(&answer, &shown)?;
    let mut resp = Response::new(Body::from(written.bytes));
    let h = resp.headers_mut();
    match written.header_length {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(binary::HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(resp)
}
