//! The server under load: connections, credentials, the request sent, and
//! the server's own batch statistics.

use crate::config::{LoadConfig, Protocol};
use crate::rest::{self, Rest};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use proto::channel::H2Channel;
use proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::inference::model_infer_request::InferInputTensor;
use proto::inference::model_metadata_response::TensorMetadata;
use proto::inference::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelStatisticsRequest,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tonic::metadata::AsciiMetadataValue;

pub type Client = GrpcInferenceServiceClient<H2Channel>;

#[derive(Clone)]
pub struct Target {
    /// gRPC connections (none over REST).
    pub clients: Vec<Client>,
    /// The REST client, with `--protocol http`.
    rest: Option<Rest>,
    /// Sent in turn; several when rows come from a data file.
    requests: Arc<Vec<ModelInferRequest>>,
    /// The same requests as REST bodies.
    bodies: Arc<Vec<rest::Body>>,
    auth: Option<AsciiMetadataValue>,
    pin: Option<AsciiMetadataValue>,
    model: String,
}

impl Target {
    /// Connects `connections` HTTP/2 connections and builds the request
    /// from the model's metadata: random FP32 data, `batch` rows.
    pub async fn connect(cfg: &LoadConfig) -> Result<Self> {
        let (url, model, batch, raw) = (cfg.url.as_str(), cfg.model.as_str(), cfg.batch, cfg.raw);
        let (token, pin, connections) = (cfg.token.as_deref(), cfg.pin.as_deref(), cfg.connections);
        let rows = cfg.rows.as_deref().map(Vec::as_slice);
        let (address, tls) = match url.split_once("://") {
            None => (url, None),
            Some(("http", rest)) => (rest, None),
            Some(("https", _)) if cfg.protocol == Protocol::Http => {
                bail!("--protocol http: the gateway serves REST over plaintext only (http://)")
            }
            Some(("https", rest)) => {
                let files = proto::tls::ClientTlsFiles {
                    ca: cfg.ca_cert.clone(),
                    identity: None,
                };
                (rest, Some(proto::tls::client_config(&files)?))
            }
            Some((scheme, _)) => {
                bail!("--url: only http:// and https:// are supported, not {scheme}://")
            }
        };
        let address = address.trim_end_matches('/');
        let mut clients = Vec::new();
        let rest = match cfg.protocol {
            Protocol::Http => Some(Rest::new(address, model, token, pin)?),
            Protocol::Grpc => None,
        };
        let grpc_connections = if rest.is_some() {
            0
        } else {
            connections.max(1)
        };
        for _ in 0..grpc_connections {
            let ch = match &tls {
                Some(config) => H2Channel::connect_tls(address, config.clone()).await,
                None => H2Channel::connect(address).await,
            }
            .with_context(|| format!("connecting to {url}"))?;
            clients.push(
                GrpcInferenceServiceClient::new(ch)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        let auth = token
            .map(|t| format!("Bearer {}", t.trim()).parse::<AsciiMetadataValue>())
            .transpose()
            .context("token is not header text")?;
        let pin = pin
            .map(|p| p.parse::<AsciiMetadataValue>())
            .transpose()
            .context("deployment is not header text")?;
        let mut t = Target {
            clients,
            rest,
            requests: Arc::new(Vec::new()),
            bodies: Arc::new(Vec::new()),
            auth,
            pin,
            model: model.to_string(),
        };
        t.requests = Arc::new(match rows {
            Some(rows) => t.requests_from_rows(rows, batch, raw).await?,
            None => vec![t.build_request(batch, raw).await?],
        });
        if t.rest.is_some() {
            t.bodies = Arc::new(t.requests.iter().map(rest::body).collect());
        }
        Ok(t)
    }

    /// What request number `i` goes out on: a gRPC connection, in turn
    /// (none over REST, whose pool picks a free connection itself).
    pub fn client(&self, i: usize) -> Option<Client> {
        (!self.clients.is_empty()).then(|| self.clients[i % self.clients.len()].clone())
    }

    /// Sends request number `i` on `client` (gRPC) or over REST; failures
    /// as gRPC codes on both protocols. With a `deadline`, the time left
    /// goes out as `grpc-timeout`, and the client gives up when it passes
    /// (DEADLINE_EXCEEDED, as a gRPC client does, over REST too).
    pub async fn infer(
        &self,
        client: Option<&mut Client>,
        i: usize,
        deadline: Option<Instant>,
    ) -> Result<(), tonic::Code> {
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(tonic::Code::DeadlineExceeded),
            },
        };
        let call = async {
            match (&self.rest, client) {
                (Some(rest), _) => {
                    let bodies = &self.bodies;
                    rest.infer(&bodies[i % bodies.len().max(1)]).await
                }
                (None, Some(c)) => {
                    let mut r = self.request(i);
                    if let Some(left) = left {
                        r.set_timeout(left);
                    }
                    c.model_infer(r).await.map(|_| ()).map_err(|s| s.code())
                }
                (None, None) => Err(tonic::Code::Unavailable),
            }
        };
        match deadline {
            None => call.await,
            Some(d) => tokio::time::timeout_at(d.into(), call)
                .await
                .unwrap_or(Err(tonic::Code::DeadlineExceeded)),
        }
    }

    /// The model's inputs, from its metadata over the protocol in use.
    async fn inputs(&self) -> Result<Vec<TensorMetadata>> {
        if let Some(rest) = &self.rest {
            return rest.inputs().await.context("model metadata over REST");
        }
        let q = ModelMetadataRequest {
            name: self.model.clone(),
            version: String::new(),
        };
        let client = self.clients.first().context("no gRPC connection")?;
        Ok(client
            .clone()
            .model_metadata(self.wrap(q))
            .await
            .context("ModelMetadata")?
            .into_inner()
            .inputs)
    }

    /// The i-th request to send, with the credentials.
    pub fn request(&self, i: usize) -> tonic::Request<ModelInferRequest> {
        let reqs = &self.requests;
        self.wrap(reqs[i % reqs.len().max(1)].clone())
    }

    /// Requests of `batch` rows each, in file order (wrapping at the end),
    /// for a model with one FP32 input whose sample has as many values as a row.
    async fn requests_from_rows(
        &self,
        rows: &[Vec<f32>],
        batch: usize,
        raw: bool,
    ) -> Result<Vec<ModelInferRequest>> {
        let template = self.build_request(batch, raw).await?;
        let [input] = template.inputs.as_slice() else {
            bail!(
                "--data needs a model with one input; {} has {}",
                self.model,
                template.inputs.len()
            );
        };
        let per_row: i64 = input.shape[1..].iter().product();
        let width = rows[0].len();
        if per_row as usize != width {
            bail!(
                "rows have {width} values; input {} takes {per_row} per sample (shape {:?})",
                input.name,
                input.shape
            );
        }
        let batch = batch.max(1);
        let count = rows.len().div_ceil(batch).min(4096);
        Ok((0..count)
            .map(|k| {
                let values: Vec<f32> = (0..batch)
                    .flat_map(|j| rows[(k * batch + j) % rows.len()].iter().copied())
                    .collect();
                let mut req = template.clone();
                if raw {
                    req.raw_input_contents = vec![Bytes::from(
                        values
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect::<Vec<u8>>(),
                    )];
                } else {
                    req.inputs[0].contents = Some(InferTensorContents {
                        fp32_contents: values,
                        ..Default::default()
                    });
                }
                req
            })
            .collect())
    }

    fn wrap<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        if let Some(p) = &self.pin {
            r.metadata_mut().insert("switchboard-deployment", p.clone());
        }
        r
    }

    async fn build_request(&self, batch: usize, raw: bool) -> Result<ModelInferRequest> {
        let inputs = self.inputs().await?;
        let mut req = ModelInferRequest {
            model_name: self.model.clone(),
            ..Default::default()
        };
        for input in &inputs {
            if input.datatype != "FP32" {
                bail!(
                    "input {} is {}; only FP32 inputs are generated",
                    input.name,
                    input.datatype
                );
            }
            // Dynamic dims: the batch first, 1 elsewhere.
            let shape: Vec<i64> = input
                .shape
                .iter()
                .enumerate()
                .map(|(d, &s)| {
                    if s >= 0 {
                        s
                    } else if d == 0 {
                        batch as i64
                    } else {
                        1
                    }
                })
                .collect();
            let n: i64 = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rand::random::<f32>()).collect();
            let mut t = InferInputTensor {
                name: input.name.clone(),
                datatype: input.datatype.clone(),
                shape,
                ..Default::default()
            };
            if raw {
                req.raw_input_contents.push(Bytes::from(
                    values
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect::<Vec<u8>>(),
                ));
            } else {
                t.contents = Some(InferTensorContents {
                    fp32_contents: values,
                    ..Default::default()
                });
            }
            req.inputs.push(t);
        }
        Ok(req)
    }

    /// Executions so far per batch size, if the server keeps statistics.
    pub async fn batch_counts(&self) -> BTreeMap<u64, u64> {
        if let Some(rest) = &self.rest {
            return rest.batch_counts().await;
        }
        let Some(client) = self.clients.first() else {
            return BTreeMap::new();
        };
        let q = ModelStatisticsRequest {
            name: self.model.clone(),
            version: String::new(),
        };
        let Ok(resp) = client.clone().model_statistics(self.wrap(q)).await else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for m in resp.into_inner().model_stats {
            for b in m.batch_stats {
                *out.entry(b.batch_size).or_default() += b.compute_infer.map_or(0, |d| d.count);
            }
        }
        out
    }
}
