//! A rolling update under load: open-loop traffic at a steady rate through
//! a gateway while each of two worker processes is SIGTERMed and replaced,
//! twice over. The draining worker leaves the registry first (gateways hear
//! of it at once), keeps answering through its grace period, sends GOAWAY
//! and finishes what it holds, so no request fails and none waits on a
//! retry: the tail stays where it was before the roll.

mod common;

use common::procs::*;
use common::*;
use std::time::{Duration, Instant};

const RATE: f64 = 200.0;
/// The roll's own checks poll this often: at wait_until's 10 ms they would
/// be a load on the gateway that only the roll's window carries.
const POLL: Duration = Duration::from_millis(100);

/// Workers registered for digits/blue, on one held connection.
async fn blue_workers(conn: &mut redis_conn::Connection) -> usize {
    registry::discover(conn).await.map_or(0, |ws| {
        ws.iter()
            .filter(|w| {
                w.deployments
                    .iter()
                    .any(|d| d.endpoint == "digits" && d.deployment == "blue")
            })
            .count()
    })
}

fn load(url: &str, key: &str, duration: Duration, warmup: Duration) -> loadtest::LoadConfig {
    loadtest::LoadConfig {
        url: url.to_string(),
        model: "digits".into(),
        token: Some(key.to_string()),
        mode: loadtest::Mode::Open {
            rate: RATE,
            poisson: false,
        },
        duration,
        warmup,
        drain: Duration::from_secs(10),
        ..Default::default()
    }
}

async fn healthy_replicas(admin: &client::Client) -> i64 {
    admin
        .get_endpoint("digits")
        .await
        .ok()
        .and_then(|e| {
            e.deployments
                .iter()
                .find(|d| d.name == "blue")
                .map(|d| d.replicas_healthy as i64)
        })
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_two_workers_under_load_fails_nothing_and_keeps_p99() {
    let mut opts = Options::default();
    opts.deployments.clear();
    let c = Cluster::start(opts).await;
    let redis = c.redis.url();
    let key = c.create_endpoint("digits", &["blue"]).await;
    let admin = c.admin().await;
    let conn = redis_conn::connect(&redis).await.unwrap();
    let worker = || {
        spawn_worker(
            &redis,
            "digits",
            "blue",
            "digits_mlp.onnx",
            &["--threads", "1"],
        )
    };
    let mut workers = [worker(), worker()];
    wait_until("two replicas routable", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move { healthy_replicas(&admin).await == 2 }
    })
    .await;

    // Both windows are as long, so that both p99s rest on as many samples.
    const WINDOW: Duration = Duration::from_secs(10);
    let before = loadtest::run(load(&c.gateway_url, &key, WINDOW, Duration::from_secs(1)))
        .await
        .expect("load before the roll");
    assert_eq!(
        before.errors, 0,
        "before the roll: {:?}",
        before.errors_by_code
    );

    let during = tokio::spawn(loadtest::run(load(
        &c.gateway_url,
        &key,
        WINDOW,
        Duration::ZERO,
    )));
    let load_start = Instant::now();
    for round in 0..2 {
        for (i, w) in workers.iter_mut().enumerate() {
            sigterm(w);
            // It leaves the registry first, while it still runs and
            // answers (drain grace): gateways stop sending to it on the
            // registry change, not on a refused connection.
            wait_every(
                "the draining worker to leave the registry",
                Duration::from_secs(10),
                POLL,
                || {
                    let mut conn = conn.clone();
                    async move { blue_workers(&mut conn).await == 1 }
                },
            )
            .await;
            assert!(
                w.try_wait().unwrap().is_none(),
                "round {round}, worker {i}: left the registry only as it exited"
            );
            let status = wait_exit(w, Duration::from_secs(30)).await;
            assert!(
                status.success(),
                "round {round}, worker {i}: drained worker exited with {status}"
            );
            *w = worker();
            wait_every(
                "the replacement to be routable",
                Duration::from_secs(30),
                POLL,
                || {
                    let admin = admin.clone();
                    async move { healthy_replicas(&admin).await == 2 }
                },
            )
            .await;
        }
    }
    let roll = load_start.elapsed();
    let during = during.await.unwrap().expect("load during the roll");
    eprintln!(
        "roll took {roll:?}; p99 before {} µs, during {} µs; requests {} / {}",
        before.latency_us.p99, during.latency_us.p99, before.requests, during.requests
    );
    assert!(
        roll < WINDOW,
        "the roll ({roll:?}) must fall inside the load window ({WINDOW:?})"
    );
    assert_eq!(
        during.errors, 0,
        "requests failed during the roll: {:?}",
        during.errors_by_code
    );
    // Open loop: the offered load was really sent.
    assert!(
        during.requests as f64 >= 0.9 * RATE * WINDOW.as_secs_f64(),
        "only {} requests sent",
        during.requests
    );
    assert!(
        during.latency_us.p99 <= 2 * before.latency_us.p99,
        "p99 during the roll {} µs is over twice the p99 before it ({} µs)",
        during.latency_us.p99,
        before.latency_us.p99
    );
}
