//! A worker called directly, as perf_analyzer or tritonclient would: its V2
//! metadata, Triton ModelConfig, streaming, and Prometheus metrics.

mod common;

use client::f32_request;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::inference::*;
use common::*;
use futures::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn worker_process(c: &Cluster, metrics_port: u16) -> (tokio::process::Child, String) {
    let spec = format!("digits/blue={}", models().join("digits_mlp.onnx").display());
    let port = switchboard::redis_server::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "worker",
            "--listen",
            &addr,
            "--redis",
            &c.redis.url(),
            "--deployment",
            &spec,
        ])
        .args([
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--max-queue-delay-us",
            "2000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until("worker registered", Duration::from_secs(20), || async {
        c.registered("digits", "blue").await == 1
    })
    .await;
    (child, format!("http://{addr}"))
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_v2_directly_with_metrics() {
    let c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let metrics_port = switchboard::redis_server::free_port().unwrap();
    let (_child, url) = worker_process(&c, metrics_port).await;
    let mut w = GrpcInferenceServiceClient::connect(url.clone())
        .await
        .unwrap();

    let meta = w
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(meta.extensions.contains(&"statistics".to_string()));
    let m = w
        .model_metadata(ModelMetadataRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, vec!["blue".to_string()]);
    assert_eq!(m.inputs[0].shape, vec![-1, 64]);
    assert_eq!(
        m.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["label", "probabilities"]
    );
    // Triton ModelConfig: batching model, dims without the batch dimension.
    let cfg = w
        .model_config(ModelConfigRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.max_batch_size, 32);
    assert_eq!(cfg.input[0].dims, vec![64]);
    assert_eq!(cfg.input[0].data_type, 11, "TYPE_FP32");
    assert_eq!(cfg.output[1].dims, vec![10]);
    assert!(
        cfg.scheduling_choice.is_some(),
        "dynamic batching is declared"
    );

    // Streaming: answers come back matched by id.
    let reqs: Vec<ModelInferRequest> = (0..20)
        .map(|i| {
            let mut r = f32_request("digits", "input", &[vec![i as f32; 64]], true).unwrap();
            r.id = format!("r{i}");
            r
        })
        .collect();
    let mut stream = w
        .model_stream_infer(futures::stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(msg) = stream.next().await {
        let msg = msg.unwrap();
        assert!(msg.error_message.is_empty(), "{}", msg.error_message);
        let resp = msg.infer_response.unwrap();
        assert_eq!(resp.model_version, "blue");
        ids.push(resp.id);
        if ids.len() == 20 {
            break;
        }
    }
    ids.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(ids, want);

    // Concurrent unary calls, then the batch-size histogram in Prometheus.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.model_infer(f32_request("digits", "input", &[vec![i as f32; 64]], false).unwrap())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = w
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.model_stats[0].inference_count, 52);
    let body = http_get(metrics_port, "/metrics").await;
    assert!(body.contains("switchboard_batch_size_bucket"), "{body}");
    assert!(
        body.contains("endpoint=\"digits\",deployment=\"blue\""),
        "{body}"
    );
    assert!(body.contains("switchboard_worker_requests_total"), "{body}");
    assert!(
        body.contains("switchboard_queue_duration_seconds_bucket"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_sends_rows_from_a_data_file() {
    let c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let addr = c
        .start_worker(&[("digits", "blue", "digits_mlp.onnx")], Default::default())
        .await;
    let f = engine::fixtures::Fixture::load("digits_mlp").unwrap();
    let x = &f.inputs["input"];
    let csv: String = std::iter::once(
        (0..64)
            .map(|i| format!("p{i}"))
            .collect::<Vec<_>>()
            .join(","),
    )
    .chain(x.data.chunks(64).map(|r| {
        r.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }))
    .collect::<Vec<_>>()
    .join("\n");
    let dir = common::tempdir::Dir::new();
    let path = dir.0.join("rows.csv");
    std::fs::write(&path, csv).unwrap();
    let rows = loadtest::data::load_rows(&path).unwrap();
    assert_eq!((rows.len(), rows[0].len()), (16, 64));
    let cfg = loadtest::LoadConfig {
        url: format!("http://{addr}"),
        model: "digits".into(),
        mode: loadtest::Mode::Closed { concurrency: 4 },
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        batch: 8,
        rows: Some(std::sync::Arc::new(rows)),
        ..Default::default()
    };
    let r = loadtest::run(cfg.clone()).await.unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_code);
    assert!(r.requests > 0);
    assert!(
        r.server_batches.keys().all(|&b| b % 8 == 0),
        "8-row requests: {:?}",
        r.server_batches
    );
    // Rows that do not fit the model are refused before any load is sent.
    let short = Some(std::sync::Arc::new(vec![vec![0.0; 63]; 4]));
    let err = loadtest::run(loadtest::LoadConfig { rows: short, ..cfg })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rows have 63 values"), "{err}");
}
