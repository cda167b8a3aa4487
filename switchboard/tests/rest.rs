//! KServe V2 REST on the gateway, through a real gateway, real workers and
//! real ONNX models: JSON and binary tensors agree with gRPC, every row of
//! DESIGN.md's error table comes back as the HTTP status Triton uses, and
//! `curl` works as the README shows.

mod common;

use client::f32_request;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::switchboard::v1 as pb;
use common::rest::{RestGateway, get, post_json, send};
use common::*;
use serde_json::{Value, json};

const INFER: &str = "/v2/models/digits/infer";

fn rows() -> Vec<Vec<f32>> {
    (0..2)
        .map(|r| (0..64).map(|i| ((i * 7 + r * 3) % 17) as f32).collect())
        .collect()
}

fn json_request(binary_out: bool) -> Value {
    let flat: Vec<f32> = rows().concat();
    json!({
        "id": "req-1",
        "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": flat}],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": binary_out}},
            {"name": "label", "parameters": {"binary_data": binary_out}},
        ],
    })
}

/// The gRPC answer for the same rows on the same deployment.
async fn grpc_answer(url: &str, key: &str, deployment: &str) -> (Vec<f32>, Vec<i64>) {
    let mut c = GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .unwrap();
    let mut req = tonic::Request::new(f32_request("digits", "input", &rows(), true).unwrap());
    let m = req.metadata_mut();
    m.insert("authorization", format!("Bearer {key}").parse().unwrap());
    m.insert("switchboard-deployment", deployment.parse().unwrap());
    let r = c.model_infer(req).await.unwrap().into_inner();
    let find = |name: &str| {
        let i = r.outputs.iter().position(|o| o.name == name).unwrap();
        r.raw_output_contents[i].clone()
    };
    let p = find("probabilities")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let l = find("label")
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (p, l)
}

async fn digits_cluster(config: gateway::GatewayConfig) -> (Cluster, RestGateway, String) {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    let g = c.start_rest_gateway(config).await;
    c.wait_routable(&g.grpc, "digits", &["blue", "green"]).await;
    (c, g, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_binary_tensors_answer_as_grpc_does() {
    let (_c, g, key) = digits_cluster(Default::default()).await;
    let bearer = format!("Bearer {key}");
    let auth = Some(bearer.as_str());
    let base = &g.http;

    // Health, server and model metadata, config and statistics.
    assert_eq!(
        get(&format!("{base}/v2/health/live"), None).await.json()["live"],
        true
    );
    assert_eq!(
        get(&format!("{base}/v2/health/ready"), None).await.json()["ready"],
        true
    );
    let server = get(&format!("{base}/v2"), None).await.json();
    assert_eq!(server["name"], "switchboard");
    assert!(
        server["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    let meta = get(&format!("{base}/v2/models/digits"), auth).await;
    assert_eq!(meta.status, 200, "{meta:?}");
    let meta = meta.json();
    assert_eq!(meta["inputs"][0]["name"], "input");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    let versions = meta["versions"].as_array().unwrap();
    assert!(versions.contains(&json!("blue")) && versions.contains(&json!("green")));
    let green = get(&format!("{base}/v2/models/digits/versions/green"), auth)
        .await
        .json();
    assert_eq!(green["name"], "digits");
    let ready = get(&format!("{base}/v2/models/digits/ready"), auth).await;
    assert_eq!(
        (ready.status, ready.json()["ready"].clone()),
        (200, json!(true))
    );
    let config = get(&format!("{base}/v2/models/digits/config"), auth)
        .await
        .json();
    assert!(config["max_batch_size"].as_i64().unwrap() > 0, "{config}");
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["input"][0]["dims"], json!([64]));

    // JSON in, JSON out, pinned to each deployment; the same numbers as gRPC.
    for d in ["blue", "green"] {
        let a = post_json(
            &format!("{base}{INFER}"),
            auth,
            &[("switchboard-deployment", d)],
            &json_request(false),
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.headers["content-type"], "application/json");
        let v = a.json();
        assert_eq!(v["model_name"], "digits");
        assert_eq!(v["model_version"], d, "the answer names the deployment");
        assert_eq!(v["id"], "req-1");
        let out = |n: &str| {
            v["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(out("probabilities")["shape"], json!([2, 10]));
        let probs: Vec<f32> = serde_json::from_value(out("probabilities")["data"].clone()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(out("label")["data"].clone()).unwrap();
        let (gp, gl) = grpc_answer(&g.grpc, &key, d).await;
        assert_eq!((probs, labels), (gp, gl), "{d}: REST and gRPC agree");
    }

    // The version in the path pins as well.
    let v = post_json(
        &format!("{base}/v2/models/digits/versions/green/infer"),
        auth,
        &[],
        &json_request(false),
    )
    .await
    .json();
    assert_eq!(v["model_version"], "green");

    // Binary in and out (Triton's extension), as tritonclient sends it.
    let header = json!({
        "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "parameters": {"binary_data_size": 2 * 64 * 4}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for x in rows().concat() {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let n = header.len().to_string();
    let a = send(
        "POST",
        &format!("{base}{INFER}"),
        &[
            ("authorization", bearer.as_str()),
            ("switchboard-deployment", "blue"),
            ("inference-header-content-length", &n),
            ("content-type", "application/octet-stream"),
        ],
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let len: usize = a.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&a.body[..len]).unwrap();
    assert_eq!(head["model_version"], "blue");
    let mut at = len;
    let mut section = |name: &str| {
        let o = head["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap();
        assert!(o.get("data").is_none(), "{name} is binary");
        let size = o["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let s = a.body[at..at + size].to_vec();
        at += size;
        s
    };
    // Outputs come in the answer's order; read them in that order.
    let names: Vec<String> = head["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    let mut got = std::collections::HashMap::new();
    for n in &names {
        got.insert(n.clone(), section(n));
    }
    assert_eq!(at, a.body.len());
    let probs: Vec<f32> = got["probabilities"]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (gp, _) = grpc_answer(&g.grpc, &key, "blue").await;
    assert_eq!(probs, gp);

    // Statistics count what REST served, per endpoint and per deployment.
    let stats = get(&format!("{base}/v2/models/digits/stats"), auth)
        .await
        .json();
    assert_eq!(stats["model_stats"][0]["name"], "digits");
    assert!(
        stats["model_stats"][0]["inference_count"].as_u64().unwrap() >= 6,
        "{stats}"
    );
    let all = get(&format!("{base}/v2/models/stats"), auth).await.json();
    assert_eq!(
        all["model_stats"].as_array().unwrap().len(),
        1,
        "a key sees its endpoint only"
    );
}

/// The README's first example, with the real `curl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_scores_a_row() {
    let (_c, g, key) = digits_cluster(Default::default()).await;
    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [rows()[0].clone()]}]});
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", &body.to_string()])
        .arg(format!("{}{INFER}", g.http))
        .output()
        .await
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        ["blue", "green"].contains(&v["model_version"].as_str().unwrap()),
        "{v}"
    );
    let labels = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(labels["datatype"], "INT64");
    assert_eq!(labels["data"].as_array().unwrap().len(), 1);
}

/// Credentials, routing and bad input: 400, 401, 403, 404, 413, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_table_over_http() {
    let (c, g, key) = digits_cluster(gateway::GatewayConfig {
        max_message: 64 << 10,
        ..Default::default()
    })
    .await;
    let url = format!("{}{INFER}", g.http);
    let admin = c.admin().await;
    let other = admin
        .create_endpoint("other", pb::AuthMode::Key)
        .await
        .unwrap();
    let req = json_request(false);
    let post = |auth: Option<String>, extra: Vec<(&'static str, String)>, body: Value| {
        let url = url.clone();
        async move {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_json(&url, auth.as_deref(), &extra, &body).await
        }
    };
    let bearer = |k: &str| Some(format!("Bearer {k}"));

    assert_eq!(
        post(bearer(&format!("  {key} ")), vec![], req.clone())
            .await
            .status,
        200
    );
    assert_eq!(post(bearer(ADMIN), vec![], req.clone()).await.status, 200);
    let a = post(None, vec![], req.clone()).await;
    assert!(a.error(401).contains("needs a credential"));
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    assert!(
        post(Some(format!("Basic {key}")), vec![], req.clone())
            .await
            .error(401)
            .contains("Bearer")
    );
    assert!(
        post(bearer("sbk_not-a-real-key"), vec![], req.clone())
            .await
            .error(401)
            .contains("unknown key")
    );
    assert!(
        post(bearer(&other.primary_key), vec![], req.clone())
            .await
            .error(403)
            .contains("for endpoint 'other'")
    );
    // A bad credential is refused on metadata too, by the same gate.
    assert_eq!(
        get(&format!("{}/v2/models/digits", g.http), Some("Bearer nope"))
            .await
            .status,
        401
    );

    // Routing.
    let nope = post_json(
        &format!("{}/v2/models/nope/infer", g.http),
        bearer(ADMIN).as_deref(),
        &[],
        &req,
    )
    .await;
    assert!(nope.error(404).contains("unknown endpoint 'nope'"));
    let purple = post(
        bearer(&key),
        vec![("switchboard-deployment", "purple".into())],
        req.clone(),
    )
    .await;
    assert!(purple.error(404).contains("no deployment 'purple'"));
    assert!(
        get(&format!("{}/v2/nothing", g.http), None)
            .await
            .error(404)
            .contains("no route")
    );
    admin
        .create_endpoint("lonely", pb::AuthMode::None)
        .await
        .unwrap();
    admin
        .create_deployment(
            "lonely",
            pb::Deployment {
                name: "x".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lonely = post_json(
        &format!("{}/v2/models/lonely/infer", g.http),
        None,
        &[],
        &req,
    )
    .await;
    assert!(lonely.error(503).contains("replica"));

    // Bad input, from the gateway's parser and from the worker's checks.
    let bad = |v: Value| post(bearer(&key), vec![], v);
    let e = bad(json!({"inputs": [{"name": "wrong", "shape": [1, 64], "datatype": "FP32", "data": vec![0.0; 64]}]})).await.error(400);
    assert!(e.contains("wrong") || e.contains("input"), "{e}");
    let e = bad(json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": vec![0.0; 63]}]})).await.error(400);
    assert!(e.contains("input"), "{e}");
    let e = bad(json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.0; 3]}]})).await.error(400);
    assert!(
        e.contains("input 'input'") && e.contains("3 elements"),
        "{e}"
    );
    let e = bad(json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": vec![0; 64]}]})).await.error(400);
    assert!(e.contains("input"), "{e}");
    let e = bad(json!({"inputs": []})).await.error(400);
    assert!(!e.is_empty());
    let e = send(
        "POST",
        &url,
        &[("authorization", &format!("Bearer {key}"))],
        "{\"inputs\": [",
    )
    .await
    .error(400);
    assert!(e.contains("malformed"), "{e}");
    let e = bad(json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.0; 64]}],
        "outputs": [{"name": "nope"}]})).await.error(400);
    assert!(e.contains("unknown output 'nope'"), "{e}");
    // Past the message limit (64 KiB here): refused before it is read.
    let big = vec![b' '; 65 << 10];
    let e = send(
        "POST",
        &url,
        &[("authorization", &format!("Bearer {key}"))],
        big,
    )
    .await
    .error(413);
    assert!(e.contains("message limit"), "{e}");
}

/// Queue full and rate limit (429), a passed deadline (504), a model that
/// fails on valid input (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_deadlines_and_model_failures_over_http() {
    let mut opts = Options {
        deployments: vec![
            ("conv", "a", "convnet.onnx"),
            ("broken", "a", "fails_at_runtime.onnx"),
        ],
        ..Options::default()
    };
    opts.scheduler.max_batch_size = 1;
    opts.scheduler.max_queue_size = 2;
    let c = Cluster::start(opts).await;
    let g = c
        .start_rest_gateway(gateway::GatewayConfig {
            rate_limit: 5,
            ..Default::default()
        })
        .await;
    let admin = c.admin().await;
    let mut keys = Vec::new();
    for e in ["conv", "broken"] {
        keys.push(
            admin
                .create_endpoint(e, pb::AuthMode::Key)
                .await
                .unwrap()
                .primary_key,
        );
        admin
            .create_deployment(
                e,
                pb::Deployment {
                    name: "a".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    c.wait_routable(&g.grpc, "conv", &["a"]).await;
    c.wait_routable(&g.grpc, "broken", &["a"]).await;
    let conv_url = format!("{}/v2/models/conv/infer", g.http);
    let conv = |params: Value| {
        json!({"parameters": params,
               "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": vec![0.5; 3 * 32 * 32]}]})
    };
    let admin_auth = format!("Bearer {ADMIN}");

    // 48 concurrent requests (admin: not rate limited) into a queue of 2.
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (url, auth, body) = (conv_url.clone(), admin_auth.clone(), conv(json!({})));
        tasks.push(tokio::spawn(async move {
            post_json(&url, Some(&auth), &[], &body).await
        }));
    }
    let mut full = 0;
    for t in tasks {
        let a = t.await.unwrap();
        if a.status != 200 {
            assert!(a.error(429).contains("full"), "{a:?}");
            full += 1;
        }
    }
    assert!(full > 0, "48 requests never overflowed a queue of 2");

    // Triton's `timeout` parameter (microseconds): passed on arrival.
    let late = post_json(
        &conv_url,
        Some(&admin_auth),
        &[],
        &conv(json!({"timeout": 1})),
    )
    .await;
    assert!(late.error(504).contains("deadline"), "{late:?}");

    // The model fails on input that matches its signature: the one 500.
    let broken = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 1.0, 1.0, 1.0]}]});
    let a = post_json(
        &format!("{}/v2/models/broken/infer", g.http),
        Some(&admin_auth),
        &[],
        &broken,
    )
    .await;
    assert!(a.error(500).contains("Reshape"), "{a:?}");

    // 5 per second per key; 20 back to back must hit it.
    let key_auth = format!("Bearer {}", keys[0]);
    let mut limited = 0;
    for _ in 0..20 {
        let a = post_json(&conv_url, Some(&key_auth), &[], &conv(json!({}))).await;
        if a.status != 200 {
            assert!(a.error(429).contains("rate limit"), "{a:?}");
            limited += 1;
        }
    }
    assert!(limited >= 10, "only {limited} of 20 were limited");
}
