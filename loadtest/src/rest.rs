//! KServe V2 REST as a load-test protocol (`--protocol http`): HTTP/1.1
//! keep-alive connections from a pool (one request in flight each, as
//! perf_analyzer and tritonclient.http do), bodies built once before the
//! run with Triton's binary tensor extension (raw, the default) or JSON
//! `data` (`--typed`), and answers read to their last byte.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proto::inference::ModelInferRequest;
use proto::inference::model_metadata_response::TensorMetadata;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Clone)]
pub struct Rest {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    model: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// One request, ready to send again and again.
#[derive(Clone)]
pub struct Body {
    bytes: Bytes,
    header_length: Option<HeaderValue>,
}

impl Rest {
    /// `address` is host:port.
    pub fn new(address: &str, model: &str, token: Option<&str>, pin: Option<&str>) -> Result<Self> {
        let mut connector = HttpConnector::new();
        // Without it, bodies over ~1 KiB wait for delayed ACKs.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut headers = Vec::new();
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .context("token is not header text")?;
            headers.push((AUTHORIZATION, v));
        }
        if let Some(p) = pin {
            let v = HeaderValue::from_str(p).context("deployment is not header text")?;
            headers.push((HeaderName::from_static("switchboard-deployment"), v));
        }
        Ok(Rest {
            client,
            base: format!("http://{address}"),
            model: model.to_string(),
            headers,
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>> {
        let mut r = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        Ok(r.body(Full::new(body))?)
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self
            .client
            .request(self.request("GET", path, Bytes::new())?)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// The model's inputs, as ModelMetadata would list them.
    pub async fn inputs(&self) -> Result<Vec<TensorMetadata>> {
        let meta = self.get_json(&format!("/v2/models/{}", self.model)).await?;
        let inputs = meta["inputs"]
            .as_array()
            .context("metadata lists no inputs")?;
        inputs
            .iter()
            .map(|i| {
                Ok(TensorMetadata {
                    name: i["name"].as_str().context("input without a name")?.into(),
                    datatype: i["datatype"]
                        .as_str()
                        .context("input without a datatype")?
                        .into(),
                    shape: serde_json::from_value(i["shape"].clone())?,
                })
            })
            .collect()
    }

    /// Executions so far per batch size, from the statistics.
    pub async fn batch_counts(&self) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        let Ok(s) = self
            .get_json(&format!("/v2/models/{}/stats", self.model))
            .await
        else {
            return out;
        };
        for m in s["model_stats"].as_array().into_iter().flatten() {
            for b in m["batch_stats"].as_array().into_iter().flatten() {
                if let (Some(size), Some(n)) = (
                    b["batch_size"].as_u64(),
                    b["compute_infer"]["count"].as_u64(),
                ) {
                    *out.entry(size).or_default() += n;
                }
            }
        }
        out
    }

    /// One inference; the answer is read whole. Failures carry the gRPC
    /// code their HTTP status stands for, so that reports count both
    /// protocols alike.
    pub async fn infer(&self, body: &Body) -> Result<(), tonic::Code> {
        let path = format!("/v2/models/{}/infer", self.model);
        let mut req = self
            .request("POST", &path, body.bytes.clone())
            .map_err(|_| tonic::Code::InvalidArgument)?;
        let h = req.headers_mut();
        match &body.header_length {
            Some(n) => {
                h.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                h.insert(HEADER_LENGTH, n.clone());
            }
            None => {
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        let status = resp.status().as_u16();
        // Read to the end: the latency is the whole answer's, and the
        // connection goes back to the pool.
        resp.into_body()
            .collect()
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        match status {
            200..=299 => Ok(()),
            400 => Err(tonic::Code::InvalidArgument),
            401 => Err(tonic::Code::Unauthenticated),
            403 => Err(tonic::Code::PermissionDenied),
            404 => Err(tonic::Code::NotFound),
            413 | 429 => Err(tonic::Code::ResourceExhausted),
            503 => Err(tonic::Code::Unavailable),
            504 => Err(tonic::Code::DeadlineExceeded),
            _ => Err(tonic::Code::Internal),
        }
    }
}

/// `req` (raw or typed FP32 inputs) as a REST body: binary tensors after a
/// JSON header for raw requests, JSON `data` for typed ones; the answer is
/// asked for in the same form.
pub fn body(req: &ModelInferRequest) -> Body {
    let raw = !req.raw_input_contents.is_empty();
    let inputs: Vec<Value> = req
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut v = json!({ "name": t.name, "shape": t.shape, "datatype": t.datatype });
            if raw {
                let n = req.raw_input_contents.get(i).map_or(0, Bytes::len);
                v["parameters"] = json!({ "binary_data_size": n });
            } else {
                v["data"] = json!(
                    t.contents
                        .as_ref()
                        .map(|c| c.fp32_contents.clone())
                        .unwrap_or_default()
                );
            }
            v
        })
        .collect();
    let header = json!({
        "inputs": inputs,
        "parameters": { "binary_data_output": raw },
    })
    .to_string();
    if !raw {
        return Body {
            bytes: Bytes::from(header),
            header_length: None,
        };
    }
    let mut bytes = header.clone().into_bytes();
    for b in &req.raw_input_contents {
        bytes.extend_from_slice(b);
    }
    Body {
        bytes: Bytes::from(bytes),
        header_length: Some(HeaderValue::from(header.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::inference::InferTensorContents;
    use proto::inference::model_infer_request::InferInputTensor;

    fn req(raw: bool) -> ModelInferRequest {
        let mut t = InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            ..Default::default()
        };
        let mut r = ModelInferRequest::default();
        if raw {
            r.raw_input_contents = vec![Bytes::from_static(&[0, 0, 128, 63, 0, 0, 0, 64])];
        } else {
            t.contents = Some(InferTensorContents {
                fp32_contents: vec![1.0, 2.0],
                ..Default::default()
            });
        }
        r.inputs.push(t);
        r
    }

    #[test]
    fn raw_requests_go_binary_and_typed_ones_json() {
        let b = body(&req(true));
        let n: usize = b
            .header_length
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let head: Value = serde_json::from_slice(&b.bytes[..n]).unwrap();
        assert_eq!(head["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(head["parameters"]["binary_data_output"], true);
        assert_eq!(&b.bytes[n..], &[0, 0, 128, 63, 0, 0, 0, 64]);
        let j = body(&req(false));
        assert!(j.header_length.is_none());
        let v: Value = serde_json::from_slice(&j.bytes).unwrap();
        assert_eq!(v["inputs"][0]["data"], json!([1.0, 2.0]));
        assert_eq!(v["parameters"]["binary_data_output"], false);
    }
}
