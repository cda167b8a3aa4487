//! The control plane at scale: a change costs the same with thousands of
//! endpoints as with a few, reaches a second gateway within 100 ms, and a
//! gateway that missed changes finds out and reloads.

mod common;

use client::proto::switchboard::v1 as pb;
use common::{ADMIN, Cluster, Options, connect, wait_until};
use std::time::{Duration, Instant};

/// The tests here run one at a time: the first measures this process's CPU,
/// which the others' gateways would add to.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn no_workers() -> Options {
    Options {
        deployments: vec![],
        ..Default::default()
    }
}

/// CPU time of this process (every thread: both gateways, their followers
/// and the test's client), from /proc: the work done, whatever else the
/// machine is busy with.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn describe(admin: &client::Client, name: &str, description: &str) {
    admin
        .management
        .clone()
        .update_endpoint(pb::UpdateEndpointRequest {
            name: name.into(),
            auth_mode: None,
            description: Some(description.into()),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_stay_flat_and_changes_reach_a_second_gateway_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    const BATCH: usize = 500;
    const BATCHES: usize = 6;
    let c = Cluster::start(no_workers()).await;
    let second = c.start_gateway(gateway::GatewayConfig::default()).await;
    let admin = c.admin().await;
    let other = connect(&second, Some(ADMIN)).await;

    // Warm-up (connections, the script cached in Redis), not measured.
    for i in 0..50 {
        admin
            .create_endpoint(&format!("warm-{i:02}"), pb::AuthMode::Key)
            .await
            .unwrap();
    }
    // Per batch: each creation's latency, and this process's CPU per
    // creation (the work, whatever else the machine is doing).
    let mut walls: Vec<Vec<Duration>> = Vec::new();
    let mut cpus = Vec::new();
    for b in 0..BATCHES {
        let mut wall = Vec::with_capacity(BATCH);
        let cpu = process_cpu();
        for i in 0..BATCH {
            let t = Instant::now();
            admin
                .create_endpoint(&format!("ep-{b}-{i:04}"), pb::AuthMode::Key)
                .await
                .unwrap();
            wall.push(t.elapsed());
        }
        cpus.push((process_cpu() - cpu) / BATCH as u32);
        walls.push(wall);
    }
    let medians: Vec<Duration> = walls.iter().map(|w| median(w.clone())).collect();
    eprintln!("median create per batch of {BATCH}: {medians:?}; CPU per create: {cpus:?}");
    // The first two batches against the last two, so that one batch the
    // machine slowed down decides nothing.
    let first = median(walls[..2].concat());
    let last = median(walls[BATCHES - 2..].concat());
    assert!(
        last <= first * 2,
        "the last creations (median {last:?}) took more than twice the first (median {first:?})"
    );
    let first = (cpus[0] + cpus[1]) / 2;
    let last = (cpus[BATCHES - 2] + cpus[BATCHES - 1]) / 2;
    assert!(
        last <= first * 2,
        "CPU per creation grew from {first:?} to {last:?}"
    );

    // Every endpoint is listed once, in order, a page at a time.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = other
            .management
            .clone()
            .list_endpoints(pb::ListEndpointsRequest {
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.endpoints.len() <= 1000);
        names.extend(page.endpoints.into_iter().map(|e| e.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names.len(), 50 + BATCH * BATCHES);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "pages out of order");

    // A change made through one gateway reaches the other within 100 ms:
    // from the write's start until the second gateway answers with it.
    let mut seen = Vec::new();
    for i in 0..100 {
        let name = format!("ep-{}-{:04}", i % BATCHES, i);
        let text = format!("change {i}");
        let t = Instant::now();
        describe(&admin, &name, &text).await;
        loop {
            let e = other.get_endpoint(&name).await.unwrap();
            if e.description == text {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "change {i} never arrived"
            );
            tokio::task::yield_now().await;
        }
        seen.push(t.elapsed());
    }
    seen.sort();
    let (p50, p99) = (seen[49], seen[98]);
    eprintln!("change visible on the second gateway: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?} over 100 ms");

    // Deleting is a change like the others.
    admin
        .management
        .clone()
        .delete_endpoint(pb::DeleteEndpointRequest {
            name: "warm-00".into(),
        })
        .await
        .unwrap();
    wait_until(
        "the delete to reach the second gateway",
        Duration::from_secs(1),
        || {
            let other = other.clone();
            async move { other.get_endpoint("warm-00").await.is_err() }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_missed_a_change_reloads_everything() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(no_workers()).await;
    let (second, admin) = second_gateway_in_step(&c).await;

    // A change whose event is lost, as when the stream was trimmed past a
    // gateway or a failover dropped it: the record and the counter move,
    // no event says so.
    let mut redis = redis_conn::connect(&c.redis.url()).await.unwrap();
    let ghost = r#"{"name":"ghost","auth_mode":"none","keys":[{"hash":"a","created_unix":0},{"hash":"b","created_unix":0}]}"#;
    let _: () = redis::pipe()
        .set("sb:endpoint:ghost", ghost)
        .sadd("sb:endpoints", "ghost")
        .incr("sb:cp:version", 1)
        .query_async(&mut redis)
        .await
        .unwrap();
    // The next change's event is one version too far: the gateways notice
    // the gap and load everything, ghost included, long before a quiet
    // stream would have made them compare the counter.
    admin
        .create_endpoint("after", pb::AuthMode::Key)
        .await
        .unwrap();
    for url in [&c.gateway_url, &second] {
        let gw = connect(url, Some(ADMIN)).await;
        wait_until(
            "the missed change on each gateway",
            Duration::from_secs(2),
            || {
                let gw = gw.clone();
                async move {
                    gw.get_endpoint("ghost").await.is_ok() && gw.get_endpoint("after").await.is_ok()
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_keep_arriving_after_redis_restarts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(no_workers()).await;
    let (second, admin) = second_gateway_in_step(&c).await;
    let other = connect(&second, Some(ADMIN)).await;

    // Same port, same data (AOF): the followers reconnect and go on from
    // where they were.
    let port = c.redis.port;
    c.redis.kill().await;
    c.redis = switchboard::redis_server::RedisServer::start_on(&c.dir.0.join("redis"), port)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match admin.create_endpoint("after", pb::AuthMode::Key).await {
            Ok(_) => break,
            // An earlier try got through but its answer did not.
            Err(e) if e.to_string().contains("already exists") => break,
            Err(e) => assert!(
                Instant::now() < until,
                "no write to the restarted Redis: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(
        "'after' on the second gateway",
        Duration::from_secs(3),
        || {
            let other = other.clone();
            async move {
                other.get_endpoint("after").await.is_ok()
                    && other.get_endpoint("before").await.is_ok()
            }
        },
    )
    .await;
}

/// A second gateway on `c`'s Redis, once it has seen an endpoint `before`
/// created through the first: its URL, and an admin client of the first.
async fn second_gateway_in_step(c: &Cluster) -> (String, client::Client) {
    let second = c.start_gateway(gateway::GatewayConfig::default()).await;
    let admin = c.admin().await;
    let other = connect(&second, Some(ADMIN)).await;
    admin
        .create_endpoint("before", pb::AuthMode::Key)
        .await
        .unwrap();
    wait_until(
        "'before' on the second gateway",
        Duration::from_secs(2),
        || {
            let other = other.clone();
            async move { other.get_endpoint("before").await.is_ok() }
        },
    )
    .await;
    (second, admin)
}
