//! Health that means something: `grpc.health.v1` on the worker (SERVING
//! only once its models are loaded and warmed and it has joined the
//! registry; NOT_SERVING while it drains) and on the gateway, with KServe's
//! ServerReady/ModelReady agreeing; the batcher's HTTP probes; and
//! `switchboard health` as an exec probe (exit 0 only when SERVING).

mod common;

use client::proto::health::WireStatus;
use client::proto::inference::{ModelReadyRequest, ModelStatisticsRequest, ServerReadyRequest};
use common::procs::*;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn status(url: &str, service: &str) -> Option<WireStatus> {
    client::health::check(url, service, Duration::from_secs(2), &Default::default())
        .await
        .ok()
}

/// `switchboard health ARGS…`: exit code and the JSON it printed.
async fn health_cli(args: &[&str]) -> (i32, serde_json::Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("health")
        .args(args)
        .output()
        .await
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), json)
}

/// ServerReady and ModelReady(digits, blue) as the V2 API answers them.
async fn v2_ready(url: &str) -> (bool, bool) {
    let c = connect(url, None).await;
    let mut v2 = c.inference.clone();
    let server = v2
        .server_ready(ServerReadyRequest {})
        .await
        .unwrap()
        .into_inner()
        .ready;
    let model = v2
        .model_ready(ModelReadyRequest {
            name: "digits".into(),
            version: "blue".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ready;
    (server, model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_once_loaded_warmed_and_registered_and_not_while_draining() {
    let mut opts = Options::default();
    opts.deployments.clear();
    let c = Cluster::start(opts).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let spec = format!("digits/blue={}", models().join("digits_mlp.onnx").display());
    let mut worker = spawn(&[
        "worker",
        "--listen",
        &listen,
        "--redis",
        &c.redis.url(),
        "--deployment",
        &spec,
        "--drain-grace",
        "3",
    ]);
    // Whenever it says SERVING it is in the registry.
    wait_until("the worker to say SERVING", Duration::from_secs(60), || {
        let (c, url) = (&c, url.clone());
        async move {
            if status(&url, "").await != Some(WireStatus::Serving) {
                return false;
            }
            assert_eq!(
                c.registered("digits", "blue").await,
                1,
                "SERVING before it joined"
            );
            true
        }
    })
    .await;
    assert_eq!(
        status(&url, "inference.GRPCInferenceService").await,
        Some(WireStatus::Serving)
    );
    assert_eq!(v2_ready(&url).await, (true, true));
    let (code, json) = health_cli(&["--url", &url]).await;
    assert_eq!(
        (code, json["status"].as_str()),
        (0, Some("serving")),
        "{json}"
    );
    // The warm-up ran, but it is not traffic: statistics start at zero.
    let stats = connect(&url, None)
        .await
        .inference
        .clone()
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: "blue".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.model_stats[0].inference_count, 0);

    // Draining: out of the registry and NOT_SERVING while it still answers
    // (the 3 s grace), then gone.
    sigterm(&worker);
    wait_until("NOT_SERVING while draining", Duration::from_secs(5), || {
        let url = url.clone();
        async move { status(&url, "").await == Some(WireStatus::NotServing) }
    })
    .await;
    assert_eq!(c.registered("digits", "blue").await, 0);
    assert_eq!(v2_ready(&url).await, (false, false));
    let (code, json) = health_cli(&["--url", &url]).await;
    assert_eq!(
        (code, json["status"].as_str()),
        (1, Some("not_serving")),
        "{json}"
    );
    assert!(
        worker.try_wait().unwrap().is_none(),
        "exited before its grace"
    );
    let exit = wait_exit(&mut worker, Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit}");
    let (code, json) = health_cli(&["--url", &url, "--timeout", "1"]).await;
    assert_eq!(
        (code, json["status"].as_str()),
        (1, Some("unreachable")),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_once_its_control_plane_is_loaded() {
    let c = Cluster::start(Options::default()).await;
    c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue"]).await;
    assert_eq!(status(&c.gateway_url, "").await, Some(WireStatus::Serving));
    assert_eq!(
        status(&c.gateway_url, "inference.GRPCInferenceService").await,
        Some(WireStatus::Serving)
    );
    let (code, json) = health_cli(&["--url", &c.gateway_url]).await;
    assert_eq!(
        (code, json["status"].as_str()),
        (0, Some("serving")),
        "{json}"
    );
    let (code, json) = health_cli(&["--url", &c.gateway_url, "--service", "no.Such"]).await;
    assert_eq!(
        (code, json["status"].as_str()),
        (1, Some("service_unknown")),
        "{json}"
    );

    // A gateway whose Redis is not there has no control plane: it never
    // serves (it exits, and a probe says so).
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut gateway = spawn(&["gateway", "--listen", &listen, "--redis", &dead_redis]);
    let exit = wait_exit(&mut gateway, Duration::from_secs(30)).await;
    assert!(!exit.success());
    let (code, json) = health_cli(&["--url", &format!("http://{listen}"), "--timeout", "1"]).await;
    assert_eq!(
        (code, json["status"].as_str()),
        (1, Some("unreachable")),
        "{json}"
    );
}

async fn http_get(addr: &str, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_is_live_at_once_and_ready_only_with_its_redis() {
    let dir = tempdir::Dir::new();
    let port = free_port();
    let probes = format!("127.0.0.1:{}", free_port());
    let mut batcher = spawn(&[
        "batcher",
        "--redis",
        &format!("redis://127.0.0.1:{port}"),
        "--metrics-listen",
        &probes,
    ]);
    wait_until("/live", Duration::from_secs(30), || {
        let probes = probes.clone();
        async move { http_get(&probes, "/live").await == Some(200) }
    })
    .await;
    // No Redis yet: alive, not ready.
    assert_eq!(http_get(&probes, "/ready").await, Some(503));
    assert_eq!(http_get(&probes, "/metrics").await, Some(200));
    let _redis = switchboard::redis_server::RedisServer::start_on(&dir.0.join("redis"), port)
        .await
        .unwrap();
    wait_until(
        "/ready once Redis is there",
        Duration::from_secs(30),
        || {
            let probes = probes.clone();
            async move { http_get(&probes, "/ready").await == Some(200) }
        },
    )
    .await;
    sigterm(&batcher);
    let exit = wait_exit(&mut batcher, Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit}");
}
