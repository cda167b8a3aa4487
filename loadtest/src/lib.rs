//! Closed-loop load against any KServe V2 gRPC server: N requests in flight,
//! latencies in an HDR histogram, warm-up excluded.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::inference::model_infer_request::InferInputTensor;
use proto::inference::{ModelInferRequest, ModelMetadataRequest, ModelStatisticsRequest};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub model: String,
    pub token: Option<String>,
    pub pin: Option<String>,
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub batch: usize,
    pub raw: bool,
    /// Server processes whose CPU time is charged to the measured requests.
    pub server_pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub concurrency: usize,
    pub batch: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub throughput_per_s: f64,
    pub rows_per_s: f64,
    pub latency_us: Latency,
    /// CPU the listed server processes spent per request (µs), from /proc.
    pub server_cpu_us_per_request: Option<f64>,
    /// CPU this load generator spent per request (µs).
    pub client_cpu_us_per_request: Option<f64>,
    /// Executions per batch size (rows) during the measured window, from
    /// the server's ModelStatistics; empty when it has none.
    pub server_batches: BTreeMap<u64, u64>,
    pub server_mean_batch: Option<f64>,
}

/// Executions so far per batch size, if the server keeps statistics.
async fn batch_counts(
    client: &mut GrpcInferenceServiceClient<Channel>,
    model: &str,
    auth: &Option<AsciiMetadataValue>,
) -> BTreeMap<u64, u64> {
    let req = with_headers(
        ModelStatisticsRequest {
            name: model.to_string(),
            version: String::new(),
        },
        auth,
        &None,
    );
    let Ok(resp) = client.model_statistics(req).await else {
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

/// utime + stime of a process in microseconds (Linux clock ticks are 10 ms
/// on every kernel config we run on: USER_HZ is 100).
fn cpu_us(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, in parens.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

fn cpu_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| cpu_us(&p.to_string())).sum()
}

async fn channel(url: &str) -> Result<Channel> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Endpoint::from_shared(url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

fn with_headers<T>(
    msg: T,
    auth: &Option<AsciiMetadataValue>,
    pin: &Option<AsciiMetadataValue>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(a) = auth {
        r.metadata_mut().insert("authorization", a.clone());
    }
    if let Some(p) = pin {
        r.metadata_mut().insert("switchboard-deployment", p.clone());
    }
    r
}

/// A request of random FP32 data shaped from the model's metadata.
pub async fn build_request(
    client: &mut GrpcInferenceServiceClient<Channel>,
    cfg: &LoadConfig,
    auth: &Option<AsciiMetadataValue>,
) -> Result<ModelInferRequest> {
    let meta = client
        .model_metadata(with_headers(
            ModelMetadataRequest {
                name: cfg.model.clone(),
                version: String::new(),
            },
            auth,
            &None,
        ))
        .await
        .context("ModelMetadata")?
        .into_inner();
    let mut req = ModelInferRequest {
        model_name: cfg.model.clone(),
        ..Default::default()
    };
    for input in &meta.inputs {
        if input.datatype != "FP32" {
            bail!(
                "input {} is {}; only FP32 inputs are generated",
                input.name,
                input.datatype
            );
        }
        let shape: Vec<i64> = input
            .shape
            .iter()
            .enumerate()
            .map(|(d, &s)| {
                if s < 0 {
                    if d == 0 { cfg.batch as i64 } else { 1 }
                } else {
                    s
                }
            })
            .collect();
        let n: i64 = shape.iter().product();
        let values: Vec<u8> = (0..n)
            .flat_map(|_| rand::random::<f32>().to_le_bytes())
            .collect();
        let mut t = InferInputTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape,
            ..Default::default()
        };
        if cfg.raw {
            req.raw_input_contents.push(Bytes::from(values));
        } else {
            let floats = values
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            t.contents = Some(proto::inference::InferTensorContents {
                fp32_contents: floats,
                ..Default::default()
            });
        }
        req.inputs.push(t);
    }
    Ok(req)
}

pub async fn run_closed_loop(cfg: LoadConfig) -> Result<Report> {
    let auth = cfg
        .token
        .as_ref()
        .map(|t| format!("Bearer {}", t.trim()).parse::<AsciiMetadataValue>())
        .transpose()
        .context("token is not header text")?;
    let pin = cfg
        .pin
        .as_ref()
        .map(|p| p.parse::<AsciiMetadataValue>())
        .transpose()
        .context("pin")?;
    let mut channels = Vec::new();
    for _ in 0..cfg.connections.max(1) {
        channels.push(channel(&cfg.url).await?);
    }
    let mut first = GrpcInferenceServiceClient::new(channels[0].clone());
    let req = Arc::new(build_request(&mut first, &cfg, &auth).await?);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..cfg.concurrency {
        let mut client = GrpcInferenceServiceClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (req, measuring, stop, auth, pin) = (
            req.clone(),
            measuring.clone(),
            stop.clone(),
            auth.clone(),
            pin.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let result = client
                    .model_infer(with_headers((*req).clone(), &auth, &pin))
                    .await;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok(_) => {
                        let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                    }
                    Err(s) => *errors.entry(format!("{:?}", s.code())).or_default() += 1,
                }
            }
            (hist, errors)
        }));
    }
    tokio::time::sleep(cfg.warmup).await;
    let batches0 = batch_counts(&mut first, &cfg.model, &auth).await;
    let (server0, client0) = (cpu_of(&cfg.server_pids), cpu_us("self"));
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (server1, client1) = (cpu_of(&cfg.server_pids), cpu_us("self"));
    let batches1 = batch_counts(&mut first, &cfg.model, &auth).await;
    let server_batches: BTreeMap<u64, u64> = batches1
        .iter()
        .map(|(size, n)| (*size, n - batches0.get(size).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let executions: u64 = server_batches.values().sum();
    let server_mean_batch = (executions > 0)
        .then(|| server_batches.iter().map(|(s, n)| s * n).sum::<u64>() as f64 / executions as f64);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut errors_by_code: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (h, e) = t.await?;
        hist.add(&h).ok();
        for (k, v) in e {
            *errors_by_code.entry(k).or_default() += v;
        }
    }
    let requests = hist.len();
    let errors = errors_by_code.values().sum();
    let per_request = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if requests > 0 => Some(b.saturating_sub(a) as f64 / requests as f64),
        _ => None,
    };
    let server_cpu_us_per_request = if cfg.server_pids.is_empty() {
        None
    } else {
        per_request(server0, server1)
    };
    let client_cpu_us_per_request = per_request(client0, client1);
    Ok(Report {
        model: cfg.model.clone(),
        concurrency: cfg.concurrency,
        batch: cfg.batch,
        duration_s: elapsed,
        requests,
        errors,
        errors_by_code,
        throughput_per_s: requests as f64 / elapsed,
        rows_per_s: (requests as f64 * cfg.batch as f64) / elapsed,
        latency_us: Latency {
            p50: hist.value_at_quantile(0.5),
            p90: hist.value_at_quantile(0.9),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            p9999: hist.value_at_quantile(0.9999),
            max: hist.max(),
            mean: hist.mean(),
        },
        server_cpu_us_per_request,
        client_cpu_us_per_request,
        server_batches,
        server_mean_batch,
    })
}
