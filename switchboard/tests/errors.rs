//! Every row of DESIGN.md's error table, produced through the gateway.
//! Malformed inference requests (names, dtypes, shapes, sizes, contents,
//! parameters) have their own table in `malformed.rs`.

mod common;

use client::f32_request;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, infer_parameter,
};
use client::proto::switchboard::v1 as pb;
use common::*;
use std::time::{Duration, Instant};
use tonic::Code;

/// One call with exactly the `authorization` header given (or none).
async fn call(
    url: &str,
    auth: Option<&str>,
    req: ModelInferRequest,
) -> Result<ModelInferResponse, tonic::Status> {
    let mut client = GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .expect("connect");
    let mut r = tonic::Request::new(req);
    if let Some(a) = auth {
        r.metadata_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    client.model_infer(r).await.map(|r| r.into_inner())
}

fn row() -> Vec<Vec<f32>> {
    vec![vec![1.0; 64]]
}

fn digits() -> ModelInferRequest {
    f32_request("digits", "input", &row(), true).unwrap()
}

fn expect(r: Result<ModelInferResponse, tonic::Status>, code: Code, fragment: &str) {
    match r {
        Ok(_) => panic!("expected {code:?}, got an answer"),
        Err(s) => {
            assert_eq!(s.code(), code, "status {s:?}");
            assert!(
                s.message().contains(fragment),
                "message '{}' lacks '{fragment}'",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let admin = c.admin().await;
    let other = admin
        .create_endpoint("other", pb::AuthMode::Token)
        .await
        .unwrap();
    let url = &c.gateway_url;

    // Accepted: the key, with whitespace around it ignored, and the admin key.
    call(url, Some(&format!("Bearer   {key}  ")), digits())
        .await
        .unwrap();
    call(url, Some(&format!("Bearer {ADMIN}")), digits())
        .await
        .unwrap();

    expect(
        call(url, None, digits()).await,
        Code::Unauthenticated,
        "needs a credential",
    );
    expect(
        call(url, Some(&format!("Basic {key}")), digits()).await,
        Code::Unauthenticated,
        "Bearer",
    );
    expect(
        call(url, Some("Bearer sbk_not-a-real-key"), digits()).await,
        Code::Unauthenticated,
        "unknown key",
    );
    // A valid key, for another endpoint.
    expect(
        call(
            url,
            Some(&format!("Bearer {}", other.primary_key)),
            digits(),
        )
        .await,
        Code::PermissionDenied,
        "for endpoint 'other'",
    );

    // Tokens: issued for 'other' (token mode) by its own key.
    let other_client = connect(url, Some(&other.primary_key)).await;
    let token = other_client.get_token("other", 60).await.unwrap().token;
    expect(
        call(url, Some(&format!("Bearer {token}")), digits()).await,
        Code::Unauthenticated,
        "takes keys, not tokens",
    );
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
    expect(
        call(url, Some(&format!("Bearer {token}")), digits()).await,
        Code::PermissionDenied,
        "for endpoint 'other'",
    );
    expect(
        call(url, Some(&format!("Bearer {key}")), digits()).await,
        Code::Unauthenticated,
        "takes tokens",
    );
    let digits_token = connect(url, Some(&key))
        .await
        .get_token("digits", 60)
        .await
        .unwrap()
        .token;
    call(url, Some(&format!("Bearer {digits_token}")), digits())
        .await
        .unwrap();

    // An expired token, signed with the gateways' real secret.
    let mut redis = redis_conn::connect(&c.redis.url()).await.unwrap();
    let secret: String = redis::AsyncCommands::get(&mut redis, "sb:token-secret")
        .await
        .unwrap();
    let expired = gateway::secrets::sign_token(
        secret.as_bytes(),
        "digits",
        gateway::secrets::now_unix() - 1,
    );
    expect(
        call(url, Some(&format!("Bearer {expired}")), digits()).await,
        Code::Unauthenticated,
        "expired",
    );
    let forged = gateway::secrets::sign_token(
        b"not the secret",
        "digits",
        gateway::secrets::now_unix() + 60,
    );
    expect(
        call(url, Some(&format!("Bearer {forged}")), digits()).await,
        Code::Unauthenticated,
        "invalid token",
    );

    // Management needs the admin key; an endpoint key may only score and get tokens.
    let as_key = connect(url, Some(&key)).await;
    let denied = as_key.get_endpoint("digits").await.expect_err("denied");
    assert!(
        denied.to_string().contains("PermissionDenied")
            || denied.to_string().contains("permission"),
        "{denied}"
    );
    let denied = as_key.get_token("other", 60).await.expect_err("denied");
    assert!(
        denied.to_string().to_lowercase().contains("may not issue"),
        "{denied}"
    );

    // Auth mode none: no header needed.
    admin
        .management
        .clone()
        .update_endpoint(pb::UpdateEndpointRequest {
            name: "digits".into(),
            auth_mode: Some(pb::AuthMode::None as i32),
            description: None,
        })
        .await
        .unwrap();
    call(url, None, digits()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerated_key_replaces_the_old_one() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let admin = c.admin().await;
    let r = admin
        .management
        .clone()
        .regenerate_key(pb::RegenerateKeyRequest {
            endpoint: "digits".into(),
            slot: pb::KeySlot::Primary as i32,
        })
        .await
        .unwrap()
        .into_inner();
    expect(
        call(&c.gateway_url, Some(&format!("Bearer {key}")), digits()).await,
        Code::Unauthenticated,
        "unknown key",
    );
    call(&c.gateway_url, Some(&format!("Bearer {}", r.key)), digits())
        .await
        .unwrap();
    // Only hashes are stored: no key appears in Redis.
    let mut redis = redis_conn::connect(&c.redis.url()).await.unwrap();
    let stored: String = redis::AsyncCommands::get(&mut redis, "sb:endpoint:digits")
        .await
        .unwrap();
    assert!(!stored.contains(&r.key) && !stored.contains(&key));
    assert!(stored.contains(&gateway::secrets::hash(&r.key)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors() {
    let c = Cluster::start(Options::default()).await;
    c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let admin = format!("Bearer {ADMIN}");
    let url = &c.gateway_url;
    let mut req = digits();
    req.model_name = "nope".into();
    expect(
        call(url, Some(&admin), req).await,
        Code::NotFound,
        "unknown endpoint 'nope'",
    );
    let mut req = digits();
    req.model_version = "purple".into();
    expect(
        call(url, Some(&admin), req).await,
        Code::NotFound,
        "no deployment 'purple'",
    );
    // A deployment without any worker: no healthy replica.
    let a = c.admin().await;
    a.create_endpoint("lonely", pb::AuthMode::Key)
        .await
        .unwrap();
    a.create_deployment(
        "lonely",
        pb::Deployment {
            name: "x".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut req = digits();
    req.model_name = "lonely".into();
    expect(
        call(url, Some(&admin), req).await,
        Code::Unavailable,
        "replica",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_deadlines_and_model_failures() {
    let mut opts = Options::default();
    opts.gateway.rate_limit = 5;
    opts.deployments = vec![
        ("conv", "a", "convnet.onnx"),
        ("broken", "a", "fails_at_runtime.onnx"),
    ];
    opts.scheduler.max_batch_size = 1;
    opts.scheduler.max_queue_size = 2;
    let c = Cluster::start(opts).await;
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
    c.wait_routable(&c.gateway_url, "conv", &["a"]).await;
    c.wait_routable(&c.gateway_url, "broken", &["a"]).await;
    let url = c.gateway_url.clone();
    let conv = || {
        let mut r = f32_request("conv", "input", &[vec![0.5; 3 * 32 * 32]], true).unwrap();
        r.inputs[0].shape = vec![1, 3, 32, 32];
        r
    };

    // Full queue: 48 concurrent requests (admin: not rate limited) into a
    // queue of 2 behind one instance.
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (url, r) = (url.clone(), conv());
        tasks.push(tokio::spawn(async move {
            call(&url, Some(&format!("Bearer {ADMIN}")), r).await
        }));
    }
    let mut full = 0;
    for t in tasks {
        if let Err(s) = t.await.unwrap() {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(s.message().contains("full"));
            full += 1;
        }
    }
    assert!(full > 0, "48 requests never overflowed a queue of 2");

    // A deadline that has passed when the request arrives: never run.
    let mut r = conv();
    r.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(1)),
        },
    );
    expect(
        call(&url, Some(&format!("Bearer {ADMIN}")), r).await,
        Code::DeadlineExceeded,
        "deadline",
    );

    // The model fails on input that matches its signature.
    let mut r = f32_request("broken", "input", &[vec![1.0; 4]], true).unwrap();
    r.inputs[0].shape = vec![1, 4];
    expect(
        call(&url, Some(&format!("Bearer {ADMIN}")), r).await,
        Code::Internal,
        "Reshape",
    );

    // Rate limit: 5 per second per key; 20 back to back must hit it.
    let mut limited = 0;
    for _ in 0..20 {
        if let Err(s) = call(&url, Some(&format!("Bearer {}", keys[0])), conv()).await {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(s.message().contains("rate limit"));
            limited += 1;
        }
    }
    assert!(limited >= 10, "only {limited} of 20 were limited");
}

/// A deadline a client set in `grpc-timeout` is enforced by the server
/// (DEADLINE_EXCEEDED, answered a little before tonic's own timer would say
/// CANCELLED), but tonic's client enforces the same header itself, so a test
/// through it cannot tell the two apart; the server-side expiry is covered
/// with Triton's `timeout` parameter above. What is checked here: a value
/// over 8 digits (the gRPC limit) means no deadline, and crashes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_grpc_timeout_values_are_ignored() {
    let c = Cluster::start(Options::default()).await;
    c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let mut client = GrpcInferenceServiceClient::connect(c.gateway_url.clone())
        .await
        .unwrap();
    let mut r = tonic::Request::new(digits());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    r.metadata_mut()
        .insert("grpc-timeout", "99999999999999999S".parse().unwrap());
    client.model_infer(r).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_messages_are_rate_limited_and_reauthorised() {
    use futures::StreamExt;
    let mut opts = Options::default();
    opts.gateway.rate_limit = 5;
    let c = Cluster::start(opts).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let mut client = GrpcInferenceServiceClient::connect(c.gateway_url.clone())
        .await
        .unwrap();
    let open = |n: usize| {
        let mut r = tonic::Request::new(futures::stream::iter((0..n).map(|_| digits())));
        r.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        r
    };
    // 20 messages on one stream against 5 per second: the limit counts messages.
    let mut answers = client
        .model_stream_infer(open(20))
        .await
        .unwrap()
        .into_inner();
    let mut limited = 0;
    for _ in 0..20 {
        let m = answers.next().await.unwrap().unwrap();
        if m.error_message.contains("rate limit") {
            limited += 1;
        }
    }
    assert!(
        limited >= 10,
        "only {limited} of 20 stream messages were limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_regenerated_while_its_stream_is_open_stops_working_on_it() {
    use futures::StreamExt;
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let mut client = GrpcInferenceServiceClient::connect(c.gateway_url.clone())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut r = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut answers = client.model_stream_infer(r).await.unwrap().into_inner();
    tx.send(digits()).await.unwrap();
    let first = answers.next().await.unwrap().unwrap();
    assert!(first.error_message.is_empty(), "{}", first.error_message);
    c.admin()
        .await
        .management
        .clone()
        .regenerate_key(pb::RegenerateKeyRequest {
            endpoint: "digits".into(),
            slot: pb::KeySlot::Primary as i32,
        })
        .await
        .unwrap();
    tx.send(digits()).await.unwrap();
    let second = answers.next().await.unwrap().unwrap();
    assert!(
        second.error_message.contains("regenerated"),
        "{}",
        second.error_message
    );
}

/// `--rate-limit` counts per credential across every gateway on the Redis:
/// 600/s offered through two gateways for 10 s against a limit of 200/s
/// admits 200/s, and refuses the rest with RESOURCE_EXHAUSTED. (Each
/// gateway counting alone would admit 400/s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_across_gateways() {
    let mut opts = Options::default();
    opts.gateway.rate_limit = 200;
    let c = Cluster::start(opts).await;
    let second = gateway::GatewayConfig {
        rate_limit: 200,
        ..Default::default()
    };
    let second = c.start_gateway(second).await;
    let key = c.deploy_digits().await;
    for url in [&c.gateway_url, &second] {
        c.wait_routable(url, "digits", &["blue", "green"]).await;
    }
    let (a, b) = tokio::join!(
        offer(&c.gateway_url, &key, 300.0, 10.0),
        offer(&second, &key, 300.0, 10.0)
    );
    let calls: Vec<_> = a.into_iter().chain(b).collect();
    let offered = calls.len() as f64 / 10.0;
    assert!(offered > 500.0, "the load offered only {offered:.0}/s");
    let refusals: Vec<_> = calls.iter().filter_map(|(_, r)| r.err()).collect();
    assert!(
        refusals.iter().all(|c| *c == Code::ResourceExhausted),
        "refusals other than RESOURCE_EXHAUSTED: {refusals:?}"
    );
    // Admitted per second of wall time, counted by when each call was
    // actually sent (a busy machine sends some late, in bursts), over the
    // run's middle 8 s.
    let start = calls.iter().map(|(at, _)| *at).min().unwrap();
    let (from, to) = (
        start + Duration::from_secs(1),
        start + Duration::from_secs(9),
    );
    let admitted = calls
        .iter()
        .filter(|(at, r)| r.is_ok() && (from..to).contains(at))
        .count() as f64
        / 8.0;
    assert!(
        (180.0..=220.0).contains(&admitted),
        "admitted {admitted:.0}/s across two gateways, offered {offered:.0}/s"
    );
}

/// Calls digits through `url` at `rate` a second for `secs` (open loop: a
/// late tick is caught up, not skipped); each call's send time and outcome.
async fn offer(url: &str, key: &str, rate: f64, secs: f64) -> Vec<(Instant, Result<(), Code>)> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut calls = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let mut client = GrpcInferenceServiceClient::new(channel.clone());
        let mut r = tonic::Request::new(digits());
        r.metadata_mut().insert("authorization", auth.clone());
        calls.spawn(async move {
            let at = Instant::now();
            let outcome = client.model_infer(r).await;
            (at, outcome.map(|_| ()).map_err(|s| s.code()))
        });
    }
    calls.join_all().await
}
