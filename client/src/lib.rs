//! Client SDK: a gRPC connection to a gateway (or worker) that sends the
//! credential as `authorization: Bearer …` on every call. `https://` URLs
//! speak TLS, trusting a CA file or the system's roots.

use proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::inference::model_infer_request::InferInputTensor;
use proto::inference::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse,
};
use proto::switchboard::v1 as pb;
use proto::switchboard::v1::jobs_client::JobsClient;
use proto::switchboard::v1::management_client::ManagementClient;
use thiserror::Error;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use proto;
pub use proto::tls::ClientTlsFiles;

pub mod health;
mod jobs;
pub use jobs::is_final;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("bad gateway URL '{0}'")]
    Url(String),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("credential is not valid header text")]
    Credential,
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Adds the bearer credential and an optional deployment pin.
#[derive(Clone)]
pub struct Credentials {
    bearer: Option<AsciiMetadataValue>,
    pin: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        if let Some(p) = &self.pin {
            req.metadata_mut()
                .insert("switchboard-deployment", p.clone());
        }
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, Credentials>;

#[derive(Clone)]
pub struct Client {
    pub management: ManagementClient<Authed>,
    pub jobs: JobsClient<Authed>,
    pub inference: GrpcInferenceServiceClient<Authed>,
}

impl Client {
    /// `url` like `http://127.0.0.1:8001` (a bare `host:port` works too).
    pub async fn connect(url: &str, credential: Option<&str>) -> Result<Self, ClientError> {
        Self::connect_pinned(url, credential, None).await
    }

    /// As `connect`, with every inference pinned to one deployment.
    pub async fn connect_pinned(
        url: &str,
        credential: Option<&str>,
        deployment: Option<&str>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(url, credential, deployment, &ClientTlsFiles::default()).await
    }

    /// As `connect_pinned`; an `https://` URL trusts `tls.ca` (the system's
    /// roots without it) and presents `tls.identity` when given.
    pub async fn connect_with(
        url: &str,
        credential: Option<&str>,
        deployment: Option<&str>,
        tls: &ClientTlsFiles,
    ) -> Result<Self, ClientError> {
        let channel = endpoint(url, tls)?.tcp_nodelay(true).connect().await?;
        let header = |v: &str| MetadataValue::try_from(v).map_err(|_| ClientError::Credential);
        let creds = Credentials {
            bearer: credential
                .map(|c| header(&format!("Bearer {}", c.trim())))
                .transpose()?,
            pin: deployment.map(header).transpose()?,
        };
        Ok(Client {
            management: ManagementClient::with_interceptor(channel.clone(), creds.clone()),
            jobs: JobsClient::with_interceptor(channel.clone(), creds.clone()),
            inference: GrpcInferenceServiceClient::with_interceptor(channel, creds)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        })
    }

    pub async fn create_endpoint(
        &self,
        name: &str,
        mode: pb::AuthMode,
    ) -> Result<pb::CreateEndpointResponse, ClientError> {
        let req = pb::CreateEndpointRequest {
            name: name.into(),
            auth_mode: mode as i32,
            description: String::new(),
        };
        Ok(self
            .management
            .clone()
            .create_endpoint(req)
            .await?
            .into_inner())
    }

    pub async fn create_deployment(
        &self,
        endpoint: &str,
        deployment: pb::Deployment,
    ) -> Result<pb::Endpoint, ClientError> {
        let req = pb::CreateDeploymentRequest {
            endpoint: endpoint.into(),
            deployment: Some(deployment),
        };
        Ok(self
            .management
            .clone()
            .create_deployment(req)
            .await?
            .into_inner())
    }

    pub async fn set_traffic(
        &self,
        endpoint: &str,
        traffic: &[(&str, u32)],
    ) -> Result<pb::Endpoint, ClientError> {
        let req = pb::SetTrafficRequest {
            endpoint: endpoint.into(),
            traffic: traffic.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        Ok(self.management.clone().set_traffic(req).await?.into_inner())
    }

    pub async fn get_endpoint(&self, name: &str) -> Result<pb::Endpoint, ClientError> {
        Ok(self
            .management
            .clone()
            .get_endpoint(pb::GetEndpointRequest { name: name.into() })
            .await?
            .into_inner())
    }

    pub async fn get_token(
        &self,
        endpoint: &str,
        ttl_seconds: u64,
    ) -> Result<pb::GetTokenResponse, ClientError> {
        let req = pb::GetTokenRequest {
            endpoint: endpoint.into(),
            ttl_seconds,
        };
        Ok(self.management.clone().get_token(req).await?.into_inner())
    }

    pub async fn metadata(&self, model: &str) -> Result<ModelMetadataResponse, ClientError> {
        let req = ModelMetadataRequest {
            name: model.into(),
            version: String::new(),
        };
        Ok(self
            .inference
            .clone()
            .model_metadata(req)
            .await?
            .into_inner())
    }

    pub async fn infer(&self, req: ModelInferRequest) -> Result<ModelInferResponse, ClientError> {
        Ok(self.inference.clone().model_infer(req).await?.into_inner())
    }

    /// As [`Client::infer`], with a deadline sent as `grpc-timeout`: the
    /// gateway and the worker give up when it passes, and a worker whose
    /// queue would make the answer late refuses at once
    /// (RESOURCE_EXHAUSTED, worth retrying later or elsewhere).
    pub async fn infer_within(
        &self,
        req: ModelInferRequest,
        timeout: std::time::Duration,
    ) -> Result<ModelInferResponse, ClientError> {
        let mut r = tonic::Request::new(req);
        r.set_timeout(timeout);
        Ok(self.inference.clone().model_infer(r).await?.into_inner())
    }

    /// Scores FP32 rows on a model with one input, as raw contents.
    pub async fn infer_rows(
        &self,
        model: &str,
        input: &str,
        rows: &[Vec<f32>],
    ) -> Result<ModelInferResponse, ClientError> {
        self.infer(f32_request(model, input, rows, true)?).await
    }
}

/// The endpoint for `url` (`http://` when it names no scheme); an
/// `https://` URL trusts `tls.ca` (the system's roots without it) and
/// presents `tls.identity` when given.
pub(crate) fn endpoint(url: &str, tls: &ClientTlsFiles) -> Result<Endpoint, ClientError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|_| ClientError::Url(url.clone()))?;
    if url.starts_with("https://") {
        Ok(endpoint.tls_config(tls_config(tls)?)?)
    } else {
        Ok(endpoint)
    }
}

fn tls_config(files: &ClientTlsFiles) -> Result<ClientTlsConfig, ClientError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| ClientError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let mut config = ClientTlsConfig::new();
    config = match &files.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = &files.identity {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

/// A request for one FP32 input of `rows`, typed or raw.
pub fn f32_request(
    model: &str,
    input: &str,
    rows: &[Vec<f32>],
    raw: bool,
) -> Result<ModelInferRequest, ClientError> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != width) {
        return Err(ClientError::Input("rows differ in length".into()));
    }
    let values: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut t = InferInputTensor {
        name: input.into(),
        datatype: "FP32".into(),
        shape: vec![rows.len() as i64, width as i64],
        ..Default::default()
    };
    let mut req = ModelInferRequest {
        model_name: model.into(),
        ..Default::default()
    };
    if raw {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        req.raw_input_contents.push(bytes::Bytes::from(bytes));
    } else {
        t.contents = Some(InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        });
    }
    req.inputs.push(t);
    Ok(req)
}

/// An output as JSON: `{"name", "datatype", "shape", "data"}`, read from
/// typed or raw contents.
pub fn output_json(resp: &ModelInferResponse) -> serde_json::Value {
    let outs: Vec<serde_json::Value> = resp
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let data: Vec<serde_json::Value> = match (resp.raw_output_contents.get(i), &o.contents) {
                (Some(raw), _) => decode_raw(&o.datatype, raw),
                (None, Some(c)) => typed_json(c),
                (None, None) => Vec::new(),
            };
            serde_json::json!({"name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data})
        })
        .collect();
    serde_json::json!({"model_name": resp.model_name, "model_version": resp.model_version, "outputs": outs})
}

fn typed_json(c: &InferTensorContents) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = Vec::new();
    v.extend(c.fp32_contents.iter().map(|x| serde_json::json!(x)));
    v.extend(c.fp64_contents.iter().map(|x| serde_json::json!(x)));
    v.extend(c.int64_contents.iter().map(|x| serde_json::json!(x)));
    v.extend(c.int_contents.iter().map(|x| serde_json::json!(x)));
    v.extend(c.uint64_contents.iter().map(|x| serde_json::json!(x)));
    v.extend(c.uint_contents.iter().map(|x| serde_json::json!(x)));
    v.extend(c.bool_contents.iter().map(|x| serde_json::json!(x)));
    v
}

fn decode_raw(dtype: &str, raw: &[u8]) -> Vec<serde_json::Value> {
    fn each<const N: usize>(
        raw: &[u8],
        f: impl Fn([u8; N]) -> serde_json::Value,
    ) -> Vec<serde_json::Value> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    match dtype {
        "FP32" => each(raw, |b| serde_json::json!(f32::from_le_bytes(b))),
        "FP64" => each(raw, |b| serde_json::json!(f64::from_le_bytes(b))),
        "INT64" => each(raw, |b| serde_json::json!(i64::from_le_bytes(b))),
        "INT32" => each(raw, |b| serde_json::json!(i32::from_le_bytes(b))),
        "UINT64" => each(raw, |b| serde_json::json!(u64::from_le_bytes(b))),
        "UINT32" => each(raw, |b| serde_json::json!(u32::from_le_bytes(b))),
        "BOOL" => raw.iter().map(|&b| serde_json::json!(b != 0)).collect(),
        _ => raw.iter().map(|&b| serde_json::json!(b)).collect(),
    }
}
