//! KServe V2 REST on the gateway, through a real gateway, real workers and
//! real ONNX models: JSON and binary tensors agree with gRPC, metadata,
//! config and statistics answer as Triton's, and `curl` works as the README
//! shows. The error table over HTTP is in `rest_errors.rs`.

mod common;

use client::f32_request;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use common::rest::{INFER, digits_cluster, get, json_request, post_json, rows, send};
use serde_json::{Value, json};

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
