//! The fleet test: the ha overlay's roles on network-namespace hosts
//! (common/fleet.rs), TLS from clients to gateways and mTLS from gateways
//! to workers throughout. Under a steady open-loop load across both
//! gateways: a rolling restart of the workers, then a worker host cut off
//! (its link down) and joined again; then a batcher host cut off mid-job.
//! Last, no role's log holds a secret the fleet was given.
//!
//! Needs root (it makes namespaces and a bridge), iproute2, redis-server
//! and redis-sentinel, and kubectl (scripts/render_overlay.sh installs one
//! when missing).

mod common;

use client::f32_request;
use client::proto::switchboard::v1 as pb;
use common::batch::*;
use common::fleet::Fleet;
use common::overlay::Overlay;
use common::procs::{sigterm, wait_every, wait_exit};
use common::scrape;
use common::wait_until;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOSTS: [(&str, &str); 7] = [
    ("redis", "redis"),
    ("gw1", "gateway"),
    ("gw2", "gateway"),
    ("w1", "worker"),
    ("w2", "worker"),
    ("b1", "batcher"),
    ("b2", "batcher"),
];
const RATE: f64 = 100.0;
/// Checks that call the gateways poll this often, not to load what is measured.
const POLL: Duration = Duration::from_millis(100);

/// One request of the load: when it was due, how long it took from then,
/// and its error.
struct Sample {
    due: Instant,
    took: Duration,
    error: Option<String>,
}

/// Open loop: a request every 1/RATE s, alternating between the gateways,
/// each timed from when it was due.
struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(clients: Vec<client::Client>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, samples) = (stop.clone(), samples.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
                let mut calls = tokio::task::JoinSet::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let due = tick.tick().await.into_std();
                    let client = clients[n % clients.len()].clone();
                    n += 1;
                    let samples = samples.clone();
                    calls.spawn(async move {
                        let req = f32_request("digits", "input", &[vec![2.0; 64]], true).unwrap();
                        let answer =
                            tokio::time::timeout(Duration::from_secs(30), client.infer(req)).await;
                        let error = match answer {
                            Ok(Ok(_)) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(_) => Some("no answer in 30 s".into()),
                        };
                        samples.lock().unwrap().push(Sample {
                            due,
                            took: due.elapsed(),
                            error,
                        });
                    });
                    while calls.try_join_next().is_some() {}
                }
                while calls.join_next().await.is_some() {}
            }
        });
        Traffic {
            stop,
            samples,
            task,
        }
    }

    /// (requests, errors, p99, max) of those due in [from, to).
    fn window(&self, from: Instant, to: Instant) -> (usize, Vec<String>, Duration, Duration) {
        let s = self.samples.lock().unwrap();
        let mut took: Vec<Duration> = Vec::new();
        let mut errors = Vec::new();
        for x in s.iter().filter(|x| x.due >= from && x.due < to) {
            took.push(x.took);
            errors.extend(x.error.clone());
        }
        took.sort();
        let p99 = took
            .get((took.len() * 99 / 100).min(took.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        (
            took.len(),
            errors,
            p99,
            took.last().copied().unwrap_or_default(),
        )
    }

    async fn stop(self) -> Arc<Mutex<Vec<Sample>>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.samples
    }
}

/// Healthy replicas of digits/blue as gateway `client` sees them.
async fn healthy(client: &client::Client) -> i64 {
    client
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

async fn all_see(admins: &[client::Client], n: i64) -> bool {
    for a in admins {
        if healthy(a).await != n {
            return false;
        }
    }
    true
}

/// Requests the worker at `ip` answered OK (its plaintext metrics port).
async fn served_by(ip: &str) -> Option<u64> {
    let body = scrape::get(&format!("{ip}:9091"), "/metrics").await?;
    Some(scrape::sum(
        &body,
        "switchboard_worker_requests_total",
        &[("outcome", "ok")],
    ) as u64)
}

/// Workers registered for digits/blue.
async fn registered(conn: &mut redis_conn::Connection) -> usize {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_namespace_hosts_rolls_survives_partitions_and_leaks_no_secret() {
    let mut f = Fleet::new(Overlay::render("ha"), &HOSTS);
    f.start_redis("redis");
    let direct = f.redis_direct();
    wait_until("Redis and its Sentinel", Duration::from_secs(20), || {
        let url = format!("redis://{}:26379", f.ip("redis"));
        let want = f.ip("redis").to_string();
        async move {
            let Ok(c) = redis::Client::open(url) else {
                return false;
            };
            let Ok(mut c) = c.get_multiplexed_async_connection().await else {
                return false;
            };
            let addr: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(common::fleet::MASTER)
                .query_async(&mut c)
                .await;
            addr.is_ok_and(|a| a.first() == Some(&want))
        }
    })
    .await;
    assert!(
        f.redis_url().starts_with("redis+sentinel://"),
        "{}",
        f.redis_url()
    );
    for w in ["w1", "w2"] {
        f.start("worker", w, |_| {});
    }
    for g in ["gw1", "gw2"] {
        f.start("gateway", g, |_| {});
    }
    // The manifest's 30 s visibility timeout, shortened so that a
    // partitioned batcher's shard is taken over within the test.
    for b in ["b1", "b2"] {
        f.start("batcher", b, |r| r.set_flag("visibility-timeout", "3"));
    }
    let admin = f.client("gw1", Some(&f.admin_key)).await;
    let key = admin
        .create_endpoint("digits", pb::AuthMode::Key)
        .await
        .unwrap()
        .primary_key;
    let models = common::models().canonicalize().unwrap();
    let dep = pb::Deployment {
        name: "blue".into(),
        model_uri: models.join("digits_mlp.onnx").display().to_string(),
        ..Default::default()
    };
    admin.create_deployment("digits", dep).await.unwrap();
    admin.set_traffic("digits", &[("blue", 100)]).await.unwrap();
    f.secrets.push(key.clone());
    let admins = vec![admin.clone(), f.client("gw2", Some(&f.admin_key)).await];
    wait_every(
        "both gateways to route to both workers over mTLS",
        Duration::from_secs(60),
        POLL,
        || {
            let admins = admins.clone();
            async move { all_see(&admins, 2).await }
        },
    )
    .await;
    let workers = registry::discover(&mut redis_conn::connect(&direct).await.unwrap())
        .await
        .unwrap();
    assert!(
        workers.len() == 2 && workers.iter().all(|w| w.tls),
        "workers must advertise TLS: {workers:?}"
    );
    let clients = vec![
        f.client("gw1", Some(&key)).await,
        f.client("gw2", Some(&key)).await,
    ];
    let traffic = Traffic::start(clients);

    // 1. Rolling restart, twice over, as a Deployment's rollout does.
    let before_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await; // a measurement window, not a wait on state
    let roll_from = Instant::now();
    let conn = redis_conn::connect(&direct).await.unwrap();
    for round in 0..2 {
        for w in ["w1", "w2"] {
            let mut child = f.procs.remove(w).unwrap();
            sigterm(&child);
            wait_every(
                "the draining worker to leave the registry",
                Duration::from_secs(10),
                POLL,
                || {
                    let mut conn = conn.clone();
                    async move { registered(&mut conn).await == 1 }
                },
            )
            .await;
            let status = wait_exit(&mut child, Duration::from_secs(40)).await;
            assert!(
                status.success(),
                "round {round}, {w}: drained worker exited with {status}"
            );
            f.start("worker", w, |_| {});
            wait_every(
                "the replacement to be routable",
                Duration::from_secs(60),
                POLL,
                || {
                    let admins = admins.clone();
                    async move { all_see(&admins, 2).await }
                },
            )
            .await;
        }
    }
    let roll_to = Instant::now();
    let (n_before, e_before, p99_before, _) = traffic.window(before_from, roll_from);
    let (n_roll, e_roll, p99_roll, _) = traffic.window(roll_from, roll_to);
    eprintln!(
        "roll {:?}: before {n_before} requests p99 {p99_before:?}; during {n_roll} p99 {p99_roll:?}",
        roll_to - roll_from
    );
    assert!(
        e_before.is_empty() && e_roll.is_empty(),
        "failed: {e_before:?} {e_roll:?}"
    );
    assert!(
        p99_roll <= 2 * p99_before,
        "p99 during the roll {p99_roll:?} is over twice the p99 before it ({p99_before:?})"
    );

    // 2. A worker host cut off under load.
    let served_before = served_by(f.ip("w1")).await.expect("w1's metrics");
    let cut = Instant::now();
    f.net.set_link(&f.hosts["w1"], false);
    wait_every(
        "both gateways to stop routing to the cut worker",
        Duration::from_secs(20),
        POLL,
        || {
            let admins = admins.clone();
            async move { all_see(&admins, 1).await }
        },
    )
    .await;
    let out = Instant::now();
    // Three seconds of traffic with the host still cut off: a window of
    // measurement.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n_cut, e_cut, _, max_cut) = traffic.window(cut, out);
    let (n_out, e_out, _, max_out) = traffic.window(out, Instant::now());
    eprintln!(
        "cut: noticed in {:?}; {n_cut} requests before (max {max_cut:?}), {n_out} after (max {max_out:?})",
        out - cut
    );
    assert!(
        e_cut.is_empty() && e_out.is_empty(),
        "failed: {e_cut:?} {e_out:?}"
    );
    // Those in flight on the cut host fail when its keep-alive ping goes
    // unanswered (2 s + 2 s) and are answered by the other worker.
    assert!(
        max_cut < Duration::from_secs(6),
        "a request waited {max_cut:?} on the cut worker"
    );
    // A request sent to the cut host waits at least for a keep-alive or a
    // connect timeout (2 s): none sent after both gateways noticed does.
    assert!(
        max_out < Duration::from_secs(1),
        "a request waited {max_out:?} while w1 was out"
    );
    f.net.set_link(&f.hosts["w1"], true);
    wait_every(
        "the worker to be readmitted by both gateways",
        Duration::from_secs(30),
        POLL,
        || {
            let admins = admins.clone();
            async move { all_see(&admins, 2).await }
        },
    )
    .await;
    wait_every(
        "the readmitted worker to serve again",
        Duration::from_secs(20),
        POLL,
        || async {
            served_by(f.ip("w1"))
                .await
                .is_some_and(|n| n > served_before + 20)
        },
    )
    .await;
    let samples = traffic.stop().await;
    let failed: Vec<String> = samples
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.error.clone())
        .collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // 3. A batcher host cut off mid-job.
    let jobs = f.client("gw2", Some(&key)).await;
    let digits = Digits::load();
    let input = f.dir.0.join("rows.csv");
    const N: u64 = 200_000;
    digits.write_csv(&input, N, true);
    let output = f.dir.0.join("out");
    let mut s = spec("digits", &input, &output);
    s.shard_rows = 10_000;
    let job = jobs.submit_job(s).await.unwrap();
    wait_until(
        "b1 to count a shard and hold another",
        Duration::from_secs(120),
        || {
            let (direct, id) = (direct.clone(), job.id.clone());
            async move {
                counted_by(&direct, &id).await.contains("b1")
                    && !held_shards(&direct, "b1").await.is_empty()
            }
        },
    )
    .await;
    f.net.set_link(&f.hosts["b1"], false);
    let held = held_shards(&direct, "b1").await;
    assert!(!held.is_empty(), "b1 held no shard when it was cut off");
    let end = wait_final(&jobs, &job.id, Duration::from_secs(120)).await;
    assert_eq!(state(&end), pb::JobState::Succeeded, "{end:?}");
    assert_eq!((end.rows_done, end.rows_failed), (N, 0));
    let parts = job_hash_at(&direct, &job.id).await;
    for shard in &held {
        let by = parts
            .get(&format!("part:{shard}"))
            .and_then(|v| v.rsplit(',').next());
        assert_eq!(
            by,
            Some("b2"),
            "shard {shard}, held by the cut batcher, was counted by {by:?}"
        );
    }
    // b1 comes back with its stale shard. Once b2 has drained away, a new
    // job can only be done by b1, after it has dealt with the old one.
    f.net.set_link(&f.hosts["b1"], true);
    let mut b2 = f.procs.remove("b2").unwrap();
    sigterm(&b2);
    assert!(wait_exit(&mut b2, Duration::from_secs(40)).await.success());
    let second = f.dir.0.join("second");
    let mut s2 = spec("digits", &input, &second);
    s2.shard_rows = 100_000;
    let next = jobs.submit_job(s2).await.unwrap();
    let end2 = wait_final(&jobs, &next.id, Duration::from_secs(120)).await;
    assert_eq!(state(&end2), pb::JobState::Succeeded, "{end2:?}");
    let again = jobs.get_job(&job.id).await.unwrap();
    assert_eq!(
        (again.rows_done, again.rows_failed, again.shards_done),
        (N, 0, end.shards_done)
    );
    assert_every_row_once(&read_outputs(&output), N, &digits);
    for e in std::fs::read_dir(&output).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "left behind: {name}");
    }

    // 4. No log holds a secret.
    let logs = f.logs();
    assert!(
        logs.len() >= HOSTS.len(),
        "logs: {:?}",
        logs.iter().map(|l| &l.0).collect::<Vec<_>>()
    );
    for (name, text) in &logs {
        for secret in &f.secrets {
            assert!(!text.contains(secret.as_str()), "{name} holds a secret");
        }
    }
}
