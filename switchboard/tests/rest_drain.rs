//! SIGTERM over REST: a gateway process (`--http-listen`) stops taking new
//! REST connections, answers the REST call it has in flight, and exits.

mod common;

use common::procs::*;
use common::rest::{get, json_request, post_json};
use common::*;
use loadtest::testserver::{Behaviour, TestServer};
use registry::{Registration, ServedDeployment, WorkerRecord};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_gateway_answers_its_rest_call_in_flight_then_exits() {
    let c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let key = c.create_endpoint("digits", &["blue"]).await;
    // A test server as the only replica: its stall switch holds calls.
    let server = TestServer::start(Behaviour {
        service_time: Duration::ZERO,
        workers: 0,
    })
    .await
    .unwrap();
    let record = WorkerRecord {
        id: "test-server".into(),
        address: server.addr.to_string(),
        deployments: vec![ServedDeployment {
            endpoint: "digits".into(),
            deployment: "blue".into(),
            capacity: 1,
        }],
        tls: false,
    };
    let conn = redis_conn::connect(&c.redis.url()).await.unwrap();
    let _registration = Registration::register(conn, record, Duration::from_secs(6))
        .await
        .unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut gateway = spawn(&[
        "gateway",
        "--listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--redis",
        &c.redis.url(),
    ]);
    c.wait_routable(&format!("http://127.0.0.1:{grpc}"), "digits", &["blue"])
        .await;
    let addr = format!("127.0.0.1:{http}");
    let base = format!("http://{addr}");
    let ready = format!("{base}/v2/health/ready");
    wait_until("REST to listen", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.is_ok() }
    })
    .await;
    assert_eq!(get(&ready, None).await.status, 200);

    server.control.stall();
    let (url, auth) = (
        format!("{base}/v2/models/digits/infer"),
        format!("Bearer {key}"),
    );
    let call =
        tokio::spawn(async move { post_json(&url, Some(&auth), &[], &json_request(false)).await });
    wait_until(
        "the call to reach the worker",
        Duration::from_secs(10),
        || {
            let n = server.control.received();
            async move { n == 1 }
        },
    )
    .await;
    sigterm(&gateway);
    wait_until(
        "new REST connections to be refused",
        Duration::from_secs(10),
        || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(&addr).await.is_err() }
        },
    )
    .await;
    assert!(
        gateway.try_wait().unwrap().is_none(),
        "the gateway exited with a REST call in flight"
    );
    server.control.resume();
    let answer = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the in-flight REST call to be answered")
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["model_name"], "digits");
    let status = wait_exit(&mut gateway, Duration::from_secs(20)).await;
    assert!(status.success(), "gateway exited with {status}");
}
