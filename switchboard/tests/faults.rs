//! Faults: a worker SIGKILLed under load, Redis going away, a second
//! gateway, mirror traffic, and worker deregistration.

mod common;

use client::f32_request;
use client::proto::inference::ModelStatisticsRequest;
use common::*;
use std::time::Duration;

fn one_row() -> Vec<Vec<f32>> {
    vec![vec![2.0; 64]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_under_load_fails_nothing() {
    let mut opts = Options::default();
    opts.deployments.clear();
    let mut c = Cluster::start(opts).await;
    c.spawn_worker_process("digits", "blue", "digits_mlp.onnx");
    c.spawn_worker_process("digits", "blue", "digits_mlp.onnx");
    let admin = c.admin().await;
    let key = c.create_endpoint("digits", &["blue"]).await;
    c.wait_healthy("digits", "blue", 2, Duration::from_secs(30))
        .await;

    let load = load::Load::start(&c.gateway_url, &key, 16).await;
    assert!(
        load.goes_on(300, Duration::from_secs(10)).await,
        "load did not start"
    );
    // SIGKILL one replica mid-load.
    c.children[0].start_kill().unwrap();
    assert!(
        load.goes_on(1000, Duration::from_secs(20)).await,
        "load did not go on after the kill"
    );
    let failures = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} requests failed after SIGKILL: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The dead replica is ejected or expired from the registry.
    wait_until(
        "dead replica out of rotation",
        Duration::from_secs(20),
        || {
            let admin = admin.clone();
            async move {
                admin
                    .get_endpoint("digits")
                    .await
                    .is_ok_and(|e| e.deployments.iter().any(|d| d.replicas_healthy == 1))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_state_and_serve_while_redis_is_away() {
    let mut c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    // A second gateway on the same Redis sees the endpoint, weights and key.
    let second = c.start_gateway(gateway::GatewayConfig::default()).await;
    c.wait_routable(&second, "digits", &["blue", "green"]).await;
    let client = connect(&second, Some(&key)).await;
    let r = client
        .infer(f32_request("digits", "input", &one_row(), true).unwrap())
        .await
        .unwrap();
    assert!(r.model_version == "blue" || r.model_version == "green");
    let e = c.admin().await.get_endpoint("digits").await.unwrap();
    assert_eq!(e.traffic.get("blue"), Some(&90));

    // Redis dies: both gateways keep serving from their last view.
    c.redis.kill().await;
    for url in [&c.gateway_url, &second] {
        let client = connect(url, Some(&key)).await;
        for _ in 0..50 {
            client
                .infer(f32_request("digits", "input", &one_row(), true).unwrap())
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_a_share_to_the_shadow() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let admin = c.admin().await;
    admin
        .set_traffic("digits", &[("blue", 100), ("green", 0)])
        .await
        .unwrap();
    admin
        .management
        .clone()
        .set_mirror(client::proto::switchboard::v1::SetMirrorRequest {
            endpoint: "digits".into(),
            deployment: "green".into(),
            percent: 25,
        })
        .await
        .unwrap();
    let client = connect(&c.gateway_url, Some(&key)).await;
    for _ in 0..200 {
        let r = client
            .infer(f32_request("digits", "input", &one_row(), true).unwrap())
            .await
            .unwrap();
        assert_eq!(
            r.model_version, "blue",
            "answers come from the primary only"
        );
    }
    let green = || {
        let admin = admin.clone();
        async move {
            let q = ModelStatisticsRequest {
                name: "digits".into(),
                version: "green".into(),
            };
            admin
                .inference
                .clone()
                .model_statistics(q)
                .await
                .map(|s| s.into_inner().model_stats[0].inference_count)
                .unwrap_or(0)
        }
    };
    wait_until(
        "50 mirrored requests on green",
        Duration::from_secs(10),
        || async { green().await == 50 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_and_deregister() {
    let c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = gpu_worker::server::run::WorkerConfig {
        deployments: vec![
            format!("digits/blue={}", models().join("digits_mlp.onnx").display())
                .parse()
                .unwrap(),
        ],
        redis_url: Some(c.redis.url()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tokio::spawn(gpu_worker::server::run::serve(
        config,
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    wait_until("registration", Duration::from_secs(10), || async {
        c.registered("digits", "blue").await == 1
    })
    .await;
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    assert_eq!(
        c.registered("digits", "blue").await,
        0,
        "graceful shutdown deregisters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_replica_is_ejected_and_readmitted_after_a_health_check() {
    let c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let admin = c.admin().await;
    let key = c.create_endpoint("digits", &["blue"]).await;
    let port = switchboard::redis_server::free_port().unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([
                "worker",
                "--id",
                "w1",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis",
                &c.redis.url(),
            ])
            .args([
                "--deployment",
                &format!("digits/blue={}", models().join("digits_mlp.onnx").display()),
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let healthy = |n: u32| {
        let admin = admin.clone();
        move || {
            let admin = admin.clone();
            async move {
                admin
                    .get_endpoint("digits")
                    .await
                    .is_ok_and(|e| e.deployments[0].replicas_healthy == n)
            }
        }
    };
    let mut worker = spawn();
    wait_until("replica healthy", Duration::from_secs(20), healthy(1)).await;
    let client = connect(&c.gateway_url, Some(&key)).await;
    client
        .infer(f32_request("digits", "input", &one_row(), true).unwrap())
        .await
        .unwrap();

    worker.kill().await.unwrap();
    // With the only replica gone, requests fail UNAVAILABLE until it is ejected.
    for _ in 0..router::pool::EJECT_AFTER {
        let e = client
            .infer(f32_request("digits", "input", &one_row(), true).unwrap())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("Unavailable") || e.to_string().contains("unavailable"),
            "{e}"
        );
    }
    wait_until("replica ejected", Duration::from_secs(5), healthy(0)).await;

    // Same id, same address: the gateway's health check lets it back in.
    let _worker = spawn();
    wait_until("replica readmitted", Duration::from_secs(20), healthy(1)).await;
    client
        .infer(f32_request("digits", "input", &one_row(), true).unwrap())
        .await
        .unwrap();
}
