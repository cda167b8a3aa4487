//! Prometheus metrics agree with what happened: a gateway and a worker as
//! processes (each with --metrics-listen), a load of N requests from the
//! load tool, and the same N read back from both roles' /metrics and from
//! the worker's ModelStatistics; refusals land on their own series. And
//! the series the roles export, the catalog (switchboard::prom::CATALOG,
//! the README's table) and the names deploy/observability's dashboard and
//! alerts use are one and the same.

mod common;

use client::f32_request;
use client::proto::inference::ModelStatisticsRequest;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::switchboard::v1 as pb;
use common::procs::{free_port, spawn};
use common::scrape::{get, sum};
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use switchboard::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_agree_with_the_load_tool_and_model_statistics() {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let (gw_metrics, w_metrics) = (free_port(), free_port());
    let (gw_port, w_port) = (free_port(), free_port());
    let spec = format!("digits/blue={}", models().join("digits_mlp.onnx").display());
    let worker_addr = format!("127.0.0.1:{w_port}");
    let _worker = spawn(&[
        "worker",
        "--listen",
        &worker_addr,
        "--redis",
        &redis.url(),
        "--deployment",
        &spec,
        "--metrics-listen",
        &format!("127.0.0.1:{w_metrics}"),
    ]);
    let gateway = format!("127.0.0.1:{gw_port}");
    let _gateway = spawn(&[
        "gateway",
        "--listen",
        &gateway,
        "--redis",
        &redis.url(),
        "--metrics-listen",
        &format!("127.0.0.1:{gw_metrics}"),
    ]);
    let url = format!("http://{gateway}");
    let admin = connect(&url, Some(ADMIN)).await;
    let key = admin
        .create_endpoint("digits", client::proto::switchboard::v1::AuthMode::Key)
        .await
        .unwrap()
        .primary_key;
    admin
        .create_deployment(
            "digits",
            client::proto::switchboard::v1::Deployment {
                name: "blue".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_until(
        "the gateway to route to the worker",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                admin.get_endpoint("digits").await.is_ok_and(|e| {
                    e.deployments
                        .iter()
                        .any(|d| d.name == "blue" && d.replicas_healthy == 1)
                })
            }
        },
    )
    .await;

    let report = loadtest::run(loadtest::LoadConfig {
        url: url.clone(),
        model: "digits".into(),
        token: Some(key.clone()),
        mode: loadtest::Mode::Closed { concurrency: 4 },
        duration: Duration::from_secs(2),
        warmup: Duration::ZERO,
        server_metrics: vec![format!("http://127.0.0.1:{w_metrics}/metrics")],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_code);
    let n = report.requests as f64;
    // The load tool read the worker's own view of the window.
    let server = report
        .server_metrics
        .as_ref()
        .expect("--server-metrics read");
    assert!(server.executions > 0, "{server:?}");
    assert!(server.mean_batch.is_some_and(|b| b >= 1.0), "{server:?}");
    assert!(
        server.queue_us_mean.is_some() && server.compute_us_mean.is_some(),
        "{server:?}"
    );
    assert!(n > 100.0, "only {n} requests");

    let gw = get(&format!("127.0.0.1:{gw_metrics}"), "/metrics")
        .await
        .expect("gateway /metrics");
    let ok = [
        ("endpoint", "digits"),
        ("deployment", "blue"),
        ("code", "OK"),
    ];
    assert_eq!(sum(&gw, "switchboard_requests_total", &ok), n, "{gw}");
    let both = [("endpoint", "digits"), ("deployment", "blue")];
    assert_eq!(
        sum(&gw, "switchboard_request_duration_seconds_count", &both),
        n
    );
    assert_eq!(sum(&gw, "switchboard_replicas_healthy", &both), 1.0);

    let w = get(&format!("127.0.0.1:{w_metrics}"), "/metrics")
        .await
        .expect("worker /metrics");
    let ok = [("deployment", "blue"), ("outcome", "ok")];
    assert_eq!(sum(&w, "switchboard_worker_requests_total", &ok), n);
    // One row a request.
    assert_eq!(sum(&w, "switchboard_inferences_total", &both), n);
    assert_eq!(
        sum(&w, "switchboard_queue_duration_seconds_count", &both),
        n
    );
    let mut direct = GrpcInferenceServiceClient::connect(format!("http://{worker_addr}"))
        .await
        .unwrap();
    let stats = direct
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = &stats.model_stats[0];
    assert_eq!(s.inference_count as f64, n);
    assert_eq!(
        sum(&w, "switchboard_executions_total", &both),
        s.execution_count as f64
    );
    assert_eq!(
        sum(&w, "switchboard_compute_duration_seconds_count", &both),
        s.execution_count as f64
    );

    // A bad key is refused at the gate; a pin to no deployment by the
    // service: each on its own series, nothing else moves.
    let bad = connect(&url, Some("sb_not-a-key")).await;
    let req = || f32_request("digits", "input", &[vec![1.0; 64]], true).unwrap();
    assert!(bad.infer(req()).await.is_err());
    let pinned = connect_pinned(&url, Some(&key), "purple").await;
    let err = pinned.infer(req()).await.unwrap_err();
    assert!(err.to_string().contains("purple"), "{err}");
    let gw = get(&format!("127.0.0.1:{gw_metrics}"), "/metrics")
        .await
        .expect("gateway /metrics");
    assert_eq!(
        sum(
            &gw,
            "switchboard_unauthenticated_total",
            &[("code", "UNAUTHENTICATED")]
        ),
        1.0
    );
    let nf = [("deployment", "purple"), ("code", "NOT_FOUND")];
    assert_eq!(sum(&gw, "switchboard_requests_total", &nf), 1.0);
    assert_eq!(sum(&gw, "switchboard_requests_total", &[("code", "OK")]), n);
}

/// Series that exist only once their event has happened (a retry, an
/// ejection, a refusal, a mirror, a halving, a dead letter).
const ON_EVENT: [&str; 8] = [
    "switchboard_retries_total",
    "switchboard_ejections_total",
    "switchboard_unauthenticated_total",
    "switchboard_rate_limited_total",
    "switchboard_mirror_total",
    "switchboard_rejected_total",
    "switchboard_batch_halvings_total",
    "switchboard_dead_letters_total",
];

/// Metric names a file mentions, histogram parts under their base name.
fn named_in(path: &str, catalog: &BTreeSet<&str>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("switchboard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| catalog.contains(b)))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_export_the_catalog_and_dashboards_name_only_it() {
    let catalog: BTreeSet<&str> = switchboard::prom::CATALOG.iter().map(|c| c.1).collect();
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let metrics = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let model = models().join("digits_mlp.onnx").canonicalize().unwrap();
    let spec = format!("digits/blue={}", model.display());
    let worker = format!("127.0.0.1:{}", ports[3]);
    let gateway = format!("127.0.0.1:{}", ports[4]);
    let mut children = Vec::new();
    for args in [
        vec![
            "worker",
            "--listen",
            &worker,
            "--deployment",
            &spec,
            "--metrics-listen",
            &metrics(0),
        ],
        vec![
            "gateway",
            "--listen",
            &gateway,
            "--metrics-listen",
            &metrics(1),
        ],
        vec!["batcher", "--id", "b1", "--metrics-listen", &metrics(2)],
    ] {
        let mut a = args.clone();
        let url = redis.url();
        a.extend(["--redis", url.as_str()]);
        children.push(spawn(&a));
    }
    let url = format!("http://{gateway}");
    let admin = connect(&url, Some(ADMIN)).await;
    let key = create_digits(&admin, &model).await;
    let client = connect(&url, Some(&key)).await;
    wait_first_answer(&client).await;
    let digits = common::batch::Digits::load();
    let input = dir.0.join("rows.csv");
    digits.write_csv(&input, 200, true);
    let job = client
        .submit_job(common::batch::spec("digits", &input, &dir.0.join("out")))
        .await
        .unwrap();
    let end = common::batch::wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(end.rows_done, 200, "{end:?}");

    let mut exported = BTreeSet::new();
    for i in 0..3 {
        let body = get(&metrics(i), "/metrics").await.expect("/metrics");
        exported.extend(
            common::scrape::names(&body)
                .into_iter()
                .filter(|n| n.starts_with("switchboard_")),
        );
    }
    let undocumented: Vec<&String> = exported
        .iter()
        .filter(|n| !catalog.contains(n.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported, not in the catalog: {undocumented:?}"
    );
    let missing: Vec<&&str> = catalog
        .iter()
        .filter(|n| !ON_EVENT.contains(n) && !exported.contains(**n))
        .collect();
    assert!(
        missing.is_empty(),
        "in the catalog, not exported: {missing:?}"
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/observability/");
    for file in ["dashboard.json", "alerts.yml"] {
        let named = named_in(&format!("{root}{file}"), &catalog);
        assert!(named.len() > 5, "{file} names {named:?}");
        let unknown: Vec<&String> = named
            .iter()
            .filter(|n| !catalog.contains(n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics no role exports: {unknown:?}"
        );
    }
}

/// `--log-format json`: one JSON object a line; a failed request is one
/// line at info with its endpoint, status, request id and trace id, and no
/// credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_failed_request_and_no_credential() {
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    let log = dir.0.join("gateway.log");
    let out = std::fs::File::create(&log).unwrap();
    let _gw = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--log-format", "json", "gateway", "--listen", &gateway])
        .args(["--redis", &redis.url()])
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN)
        .env("RUST_LOG", "info")
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{gateway}");
    let admin = connect(&url, Some(ADMIN)).await;
    let key = admin
        .create_endpoint("digits", pb::AuthMode::Key)
        .await
        .unwrap()
        .primary_key;
    let client = connect(&url, Some(&key)).await;
    let mut req = f32_request("digits", "input", &[vec![1.0; 64]], true).unwrap();
    req.id = "req-42".into();
    // No deployment yet: UNAVAILABLE from the router.
    assert!(client.infer(req).await.is_err());
    let line = |text: &str| -> Option<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|j| j["message"] == "request failed")
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while line(&std::fs::read_to_string(&log).unwrap_or_default()).is_none() {
        assert!(
            std::time::Instant::now() < until,
            "no 'request failed' line in: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {l}"));
    }
    let j = line(&text).unwrap();
    assert_eq!(j["level"], "INFO", "{j}");
    assert_eq!(j["endpoint"], "digits", "{j}");
    assert_eq!(j["request_id"], "req-42", "{j}");
    assert_eq!(j["code"], "UNAVAILABLE", "{j}");
    assert!(
        j["error"]
            .as_str()
            .is_some_and(|e| e.contains("no deployment")),
        "{j}"
    );
    assert_eq!(j["trace_id"], "", "no trace came with it: {j}");
    // A caller's trace id is on the line (OTLP off: the gateway passes the
    // caller's context on and logs it).
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut traced =
        tonic::Request::new(f32_request("digits", "input", &[vec![1.0; 64]], true).unwrap());
    traced.get_mut().id = "req-43".into();
    let md = traced.metadata_mut();
    md.insert("authorization", format!("Bearer {key}").parse().unwrap());
    md.insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    assert!(
        GrpcInferenceServiceClient::new(channel)
            .model_infer(traced)
            .await
            .is_err()
    );
    let traced_line = |text: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|j| j["request_id"] == "req-43")
    };
    while traced_line(&std::fs::read_to_string(&log).unwrap_or_default()).is_none() {
        assert!(std::time::Instant::now() < until, "no line for req-43");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let j = traced_line(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(j["trace_id"], trace, "{j}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&key) && !text.contains(ADMIN),
        "a credential in the log"
    );
}
