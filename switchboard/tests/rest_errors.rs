//! Every row of DESIGN.md's error table over KServe V2 REST, through a real
//! gateway and real workers with real ONNX models: the HTTP status Triton
//! and KServe use, with the gRPC path's message in `{"error": ...}`.

mod common;

use client::proto::switchboard::v1 as pb;
use common::rest::{INFER, digits_cluster, get, json_request, post_json, send};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

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
    let wrong = send("GET", &url, &[], "").await;
    assert!(wrong.error(405).contains("GET is not served"), "{wrong:?}");
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

    // Tokens: once the endpoint takes tokens, one from GetToken scores over
    // REST and the key is refused, as over gRPC.
    let token = connect(&g.grpc, Some(&key))
        .await
        .get_token("digits", 60)
        .await
        .unwrap()
        .token;
    admin
        .management
        .clone()
        .update_endpoint(pb::UpdateEndpointRequest {
            name: "digits".into(),
            auth_mode: Some(pb::AuthMode::Token as i32),
            description: None,
        })
        .await
        .unwrap();
    let token_url = url.clone();
    wait_until(
        "token mode to reach the gateway",
        Duration::from_secs(10),
        || {
            let (url, token) = (token_url.clone(), token.clone());
            async move {
                post_json(
                    &url,
                    Some(&format!("Bearer {token}")),
                    &[],
                    &json_request(false),
                )
                .await
                .status
                    == 200
            }
        },
    )
    .await;
    let e = post(bearer(&key), vec![], req.clone()).await.error(401);
    assert!(e.contains("takes tokens"), "{e}");
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
