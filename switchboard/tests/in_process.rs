//! `up`'s in-process hop: the gateway calls the worker in its own process
//! directly, while workers elsewhere are still called over gRPC. The local
//! worker here advertises an address nothing listens on, so an answer from
//! it proves the call never went over the network; a gateway without the
//! hop, on the same Redis, cannot reach it.

mod common;

use client::proto::local::LocalWorker;
use client::proto::switchboard::v1 as pb;
use common::{Cluster, Options, connect, models};
use gpu_worker::server::run::{DeploymentSpec, WorkerConfig};
use tonic::Code;

/// A port nothing listens on (bound, then closed).
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_calls_its_own_worker_in_process_and_others_over_grpc() {
    // A remote worker (over gRPC) serves digits/green; no local one yet.
    let c = Cluster::start(Options {
        deployments: vec![("digits", "green", "digits_logreg.onnx")],
        ..Default::default()
    })
    .await;
    let nowhere = dead_address().await;
    let local = LocalWorker::new(nowhere.clone());
    let config = WorkerConfig {
        deployments: vec![DeploymentSpec {
            endpoint: "digits".into(),
            deployment: "blue".into(),
            model: models().join("digits_mlp.onnx"),
        }],
        redis_url: Some(c.redis_url.clone()),
        advertise: Some(nowhere),
        local: Some(local.clone()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(gpu_worker::server::run::serve(
        config,
        listener,
        c.stopped(),
    ));
    let with_hop = c
        .start_gateway(gateway::GatewayConfig {
            local_worker: Some(local),
            ..Default::default()
        })
        .await;
    let without = c.start_gateway(Default::default()).await;

    let admin = connect(&with_hop, Some(common::ADMIN)).await;
    admin
        .create_endpoint("digits", pb::AuthMode::Key)
        .await
        .unwrap();
    for d in ["blue", "green"] {
        let dep = pb::Deployment {
            name: d.into(),
            ..Default::default()
        };
        admin.create_deployment("digits", dep).await.unwrap();
    }
    c.wait_routable(&with_hop, "digits", &["blue", "green"])
        .await;

    let row = vec![vec![1.0f32; 64]];
    let pinned = |url: String, d: &'static str| async move {
        let c = client::Client::connect_pinned(&url, Some(common::ADMIN), Some(d)).await;
        c.unwrap()
    };
    // blue answers through the hop: its advertised address is dead.
    let blue = pinned(with_hop.clone(), "blue").await;
    let r = blue.infer_rows("digits", "input", &row).await.unwrap();
    assert_eq!(r.model_version, "blue");
    // green is remote and still over gRPC, through the same gateway.
    let green = pinned(with_hop.clone(), "green").await;
    let r = green.infer_rows("digits", "input", &row).await.unwrap();
    assert_eq!(r.model_version, "green");
    // Without the hop, blue's address is all a gateway has: unreachable.
    let blue_elsewhere = pinned(without, "blue").await;
    match blue_elsewhere.infer_rows("digits", "input", &row).await {
        Err(client::ClientError::Status(s)) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        other => panic!("a dead address answered: {other:?}"),
    }

    // The worker's refusals keep their status through the hop.
    let mut bad = client::f32_request("digits", "input", &[vec![1.0; 63]], true).unwrap();
    bad.inputs[0].shape = vec![1, 63];
    match blue.infer(bad).await {
        Err(client::ClientError::Status(s)) => {
            assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
            assert!(s.message().contains("input"), "{}", s.message());
        }
        other => panic!("{other:?}"),
    }
    // Triton's `timeout` parameter reaches the worker through the hop: one
    // of 1 µs has passed before the request can run.
    let mut req = client::f32_request("digits", "input", &row, true).unwrap();
    req.parameters.insert(
        "timeout".into(),
        client::proto::inference::InferParameter {
            parameter_choice: Some(
                client::proto::inference::infer_parameter::ParameterChoice::Int64Param(1),
            ),
        },
    );
    match blue.infer(req).await {
        Err(client::ClientError::Status(s)) => {
            assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}")
        }
        other => panic!("{other:?}"),
    }
}
