//! The real-time path end to end: gateway -> router -> worker over loopback
//! gRPC, real redis-server, real ONNX Runtime.

mod common;

use client::f32_request;
use client::proto::inference::{ModelInferResponse, ModelStatisticsRequest};
use common::*;
use engine::fixtures::{Fixture, assert_close};
use engine::{DataType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Output `name` of a response as an engine tensor, from raw or typed contents.
fn output(resp: &ModelInferResponse, name: &str) -> Tensor {
    let (i, o) = resp
        .outputs
        .iter()
        .enumerate()
        .find(|(_, o)| o.name == name)
        .expect("output present");
    let dtype = DataType::from_v2_name(&o.datatype).unwrap();
    let data: Vec<u8> = match resp.raw_output_contents.get(i) {
        Some(raw) => raw.to_vec(),
        None => {
            let c = o.contents.as_ref().expect("typed contents");
            match dtype {
                DataType::Int64 => c
                    .int64_contents
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => c
                    .fp32_contents
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            }
        }
    };
    Tensor {
        dtype,
        shape: o.shape.clone(),
        data: data.into(),
    }
}

fn rows(f: &Fixture, from: usize, to: usize) -> Vec<Vec<f32>> {
    let t = &f.inputs["input"];
    let n = t.row_len();
    (from..to)
        .map(|r| {
            t.data[r * n..(r + 1) * n]
                .iter()
                .map(|&v| v as f32)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_through_the_gateway_equal_the_reference() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    for (deployment, fixture) in [("blue", "digits_mlp"), ("green", "digits_logreg")] {
        let f = Fixture::load(fixture).unwrap();
        let client = connect_pinned(&c.gateway_url, Some(&key), deployment).await;
        for raw in [false, true] {
            for batch in [1usize, 8] {
                for start in (0..16).step_by(batch) {
                    let req = f32_request("digits", "input", &rows(&f, start, start + batch), raw)
                        .unwrap();
                    let resp = client.infer(req).await.unwrap();
                    assert_eq!(resp.model_version, deployment);
                    assert_eq!(
                        resp.raw_output_contents.is_empty(),
                        !raw,
                        "answer mirrors the request's contents"
                    );
                    for name in ["label", "probabilities"] {
                        assert_close(
                            name,
                            &output(&resp, name),
                            &f.outputs[name],
                            start,
                            start + batch,
                            1e-5,
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_clients_are_batched() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue"]).await;
    let f = Arc::new(Fixture::load("digits_mlp").unwrap());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let client = connect_pinned(&c.gateway_url, Some(&key), "blue").await;
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                let r = (i + j) % 16;
                let resp = client
                    .infer(f32_request("digits", "input", &rows(&f, r, r + 1), true).unwrap())
                    .await
                    .unwrap();
                assert_close(
                    "probabilities",
                    &output(&resp, "probabilities"),
                    &f.outputs["probabilities"],
                    r,
                    r + 1,
                    1e-5,
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let admin = c.admin().await;
    let stats = admin
        .inference
        .clone()
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: "blue".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let blue = &stats.model_stats[0];
    assert_eq!(blue.inference_count, 640);
    let max_batch = blue.batch_stats.iter().map(|b| b.batch_size).max().unwrap();
    assert!(
        max_batch > 1,
        "no batch larger than 1: {:?}",
        blue.batch_stats
    );
    assert!(blue.execution_count < 640);
    assert_eq!(blue.version, "blue");
    // Without a version: one entry for the endpoint, with a numeric version
    // (perf_analyzer parses versions as integers).
    let all = admin
        .inference
        .clone()
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.model_stats.len(), 1);
    assert_eq!(all.model_stats[0].version, "1");
    assert_eq!(all.model_stats[0].inference_count, 640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_split_ninety_ten() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let f = Arc::new(Fixture::load("digits_mlp").unwrap());
    let counts: Arc<std::sync::Mutex<HashMap<String, usize>>> = Default::default();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = connect(&c.gateway_url, Some(&key)).await;
        let (f, counts) = (f.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..625 {
                let resp = client
                    .infer(f32_request("digits", "input", &rows(&f, 0, 1), true).unwrap())
                    .await
                    .unwrap();
                *counts
                    .lock()
                    .unwrap()
                    .entry(resp.model_version)
                    .or_default() += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts = counts.lock().unwrap();
    let blue = counts.get("blue").copied().unwrap_or(0) as f64;
    let total: usize = counts.values().sum();
    assert_eq!(total, 10_000);
    let pct = blue / 100.0;
    assert!(
        (pct - 90.0).abs() <= 1.5,
        "blue got {pct}% of 10,000: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_requests_reach_their_deployment() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let f = Fixture::load("digits_mlp").unwrap();
    for d in ["green", "blue"] {
        let client = connect_pinned(&c.gateway_url, Some(&key), d).await;
        for _ in 0..100 {
            let resp = client
                .infer(f32_request("digits", "input", &rows(&f, 0, 1), false).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.model_version, d);
        }
    }
    // The V2 way: naming the deployment as model_version.
    let client = connect(&c.gateway_url, Some(&key)).await;
    for _ in 0..50 {
        let mut req = f32_request("digits", "input", &rows(&f, 0, 1), false).unwrap();
        req.model_version = "green".into();
        assert_eq!(client.infer(req).await.unwrap().model_version, "green");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_under_load_drop_nothing() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let f = Arc::new(Fixture::load("digits_mlp").unwrap());
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = connect(&c.gateway_url, Some(&key)).await;
        let (f, done, stop) = (f.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client
                    .infer(f32_request("digits", "input", &rows(&f, 0, 1), true).unwrap())
                    .await
                {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let admin = c.admin().await;
    let splits: [&[(&str, u32)]; 4] = [
        &[("blue", 0), ("green", 100)],
        &[("blue", 50), ("green", 50)],
        &[("blue", 100), ("green", 0)],
        &[("blue", 90), ("green", 10)],
    ];
    for round in 0..3 {
        for split in splits {
            let before = done.load(Ordering::Relaxed);
            admin.set_traffic("digits", split).await.unwrap();
            // Let some requests through at each split before changing again.
            wait_until("requests at the new split", Duration::from_secs(10), || {
                let d = done.clone();
                async move { d.load(Ordering::Relaxed) >= before + 50 }
            })
            .await;
            let _ = round;
        }
    }
    // After the last change the very next requests follow it.
    admin
        .set_traffic("digits", &[("blue", 0), ("green", 100)])
        .await
        .unwrap();
    let probe = connect(&c.gateway_url, Some(&key)).await;
    for _ in 0..20 {
        let r = probe
            .infer(f32_request("digits", "input", &rows(&f, 0, 1), true).unwrap())
            .await
            .unwrap();
        assert_eq!(r.model_version, "green");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let failures = t.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during weight changes: {failures:?}"
        );
    }
    assert!(done.load(Ordering::Relaxed) >= 600);
}
