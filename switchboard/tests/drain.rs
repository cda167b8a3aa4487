//! SIGTERM drains: a gateway finishes the call it has in flight (and says
//! NOT_SERVING to a prober watching it) before it exits, and stops waiting
//! on a stream the client never closes at --drain-timeout; a batcher stops
//! mid-shard and hands the shard back, so another batcher takes it at once
//! rather than after the visibility timeout, and every row is still
//! written exactly once.

mod common;

use client::f32_request;
use client::proto::health::{CheckRequest, HealthClient, WireStatus};
use common::batch::*;
use common::procs::*;
use common::*;
use loadtest::testserver::{Behaviour, TestServer};
use registry::{Registration, ServedDeployment, WorkerRecord};
use std::time::Duration;
use tokio_stream::StreamExt;

fn one_row() -> Vec<Vec<f32>> {
    vec![vec![2.0; 64]]
}

/// A gateway process in front of a test server registered as the only
/// replica of digits/blue (the server's stall switch holds calls in flight).
struct Setup {
    c: Cluster,
    server: TestServer,
    _registration: Registration,
    gateway: tokio::process::Child,
    url: String,
    key: String,
}

async fn gateway_process(drain_timeout: &str) -> Setup {
    let mut opts = Options::default();
    opts.deployments.clear();
    let c = Cluster::start(opts).await;
    let key = c.create_endpoint("digits", &["blue"]).await;
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
    let registration = Registration::register(conn, record, Duration::from_secs(6))
        .await
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let gateway = spawn(&[
        "gateway",
        "--listen",
        &listen,
        "--redis",
        &c.redis.url(),
        "--drain-timeout",
        drain_timeout,
    ]);
    let url = format!("http://{listen}");
    c.wait_routable(&url, "digits", &["blue"]).await;
    Setup {
        c,
        server,
        _registration: registration,
        gateway,
        url,
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_gateway_finishes_its_in_flight_call_then_exits() {
    let mut s = gateway_process("30").await;
    let channel = tonic::transport::Endpoint::from_shared(s.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, WireStatus::Serving as i32);

    s.server.control.stall();
    let client = connect(&s.url, Some(&s.key)).await;
    let call = tokio::spawn(async move {
        client
            .infer(f32_request("digits", "input", &one_row(), true).unwrap())
            .await
    });
    wait_until(
        "the call to reach the worker",
        Duration::from_secs(10),
        || {
            let n = s.server.control.received();
            async move { n == 1 }
        },
    )
    .await;
    sigterm(&s.gateway);
    // A prober watching sees NOT_SERVING, then its stream ends so that it
    // does not hold the drain.
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a health update after SIGTERM")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, WireStatus::NotServing as i32);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the Watch stream to end on drain");
    assert!(end.as_ref().is_none_or(|r| r.is_ok()), "{end:?}");
    assert!(
        s.gateway.try_wait().unwrap().is_none(),
        "the gateway exited with a call in flight"
    );
    s.server.control.resume();
    let answer = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the in-flight call to be answered")
        .unwrap();
    assert!(answer.is_ok(), "in-flight call failed: {answer:?}");
    let status = wait_exit(&mut s.gateway, Duration::from_secs(20)).await;
    assert!(status.success(), "gateway exited with {status}");
    drop(s.c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_left_open_holds_a_draining_gateway_only_until_the_drain_timeout() {
    let mut s = gateway_process("2").await;
    let client = connect(&s.url, Some(&s.key)).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(f32_request("digits", "input", &one_row(), true).unwrap())
        .await
        .unwrap();
    let mut answers = client
        .inference
        .clone()
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = answers.next().await.unwrap().unwrap();
    assert!(first.error_message.is_empty(), "{}", first.error_message);
    // The client keeps the stream open (tx alive) and never ends it.
    sigterm(&s.gateway);
    let waited = within("the gateway to exit", Duration::from_secs(15), || {
        let exited = s.gateway.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(
        waited >= Duration::from_millis(1500),
        "exited after {waited:?}: the open stream was not waited for"
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_batcher_hands_its_shard_back_and_another_takes_it_at_once() {
    let mut c = cluster().await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    // Far longer than the test may take: a shard that waited it out would
    // fail the test.
    let slow_reclaim = ["--visibility-timeout", "300", "--batch-max-auto", "512"];
    spawn_batcher(&mut c, "b1", &slow_reclaim);
    let client = connect(&c.gateway_url, Some(&key)).await;
    let digits = Digits::load();
    let input = c.dir.0.join("rows.csv");
    // One shard, long enough to be SIGTERMed in the middle of.
    const N: u64 = 400_000;
    digits.write_csv(&input, N, false);
    let out = out_dir(&c, "out");
    let mut s = spec("digits", &input, &out);
    s.shard_rows = N as u32;
    let job = client.submit_job(s).await.unwrap();
    wait_until("b1 to hold the job's shard", MINUTES, || {
        let (client, id) = (client.clone(), job.id.clone());
        async move {
            client.get_job(&id).await.is_ok_and(|j| {
                j.shards_total == 1
                    && j.state == client::proto::switchboard::v1::JobState::Running as i32
            })
        }
    })
    .await;
    sigterm(&c.children[0]);
    let status = wait_exit(&mut c.children[0], Duration::from_secs(30)).await;
    assert!(status.success(), "b1 exited with {status}");
    let after = client.get_job(&job.id).await.unwrap();
    assert_eq!(
        after.shards_done, 0,
        "b1 finished the shard instead of handing it back"
    );
    spawn_batcher(&mut c, "b2", &slow_reclaim);
    let end = wait_final(&client, &job.id, Duration::from_secs(120)).await;
    assert_eq!(
        state(&end),
        client::proto::switchboard::v1::JobState::Succeeded,
        "{end:?}"
    );
    assert_eq!((end.rows_done, end.rows_failed), (N, 0));
    let hash = job_hash(&c, &job.id).await;
    let by = hash.get("part:0").cloned().unwrap_or_default();
    assert!(by.ends_with(",b2"), "shard 0 counted by {by}");
    // Being stopped by a drain is not a failed attempt.
    assert_eq!(
        hash.get("attempts:0").map(String::as_str),
        Some("1"),
        "{hash:?}"
    );
    assert_every_row_once(&read_outputs(&out), N, &digits);
}
