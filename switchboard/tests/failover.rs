//! Redis failover under Sentinel: a real primary, replica and sentinel; the
//! primary SIGKILLed mid-job and under real-time load; every role given the
//! `redis+sentinel://` URL follows the promoted replica.

mod common;

use client::proto::switchboard::v1 as pb;
use common::batch::*;
use common::*;
use std::time::Duration;

/// Sentinel notices in 1 s and promotes in a few; a loaded machine is slower.
const FAILOVER: Duration = Duration::from_secs(40);

/// SIGKILLs the primary and waits until the replica has been promoted.
async fn kill_primary(c: &mut Cluster) {
    c.redis.kill().await;
    let replica = c.redis_others[0].url();
    wait_until("the replica to be promoted", FAILOVER, || {
        info_has(replica.clone(), "role:master")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_the_primary_being_killed_mid_job() {
    let mut c = Cluster::start_sentinel(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    spawn_batcher(&mut c, "b1", &["--visibility-timeout", "3"]);
    let client = connect(&c.gateway_url, Some(&key)).await;
    let digits = Digits::load();
    let input = c.dir.0.join("rows.csv");
    const N: u64 = 60_000;
    digits.write_csv(&input, N, true);
    let out = out_dir(&c, "out");
    let mut s = spec("digits", &input, &out);
    s.shard_rows = 2_000;
    let job = client.submit_job(s).await.unwrap();
    wait_until("a shard to be counted", MINUTES, || {
        let (c, id) = (&c, job.id.clone());
        async move {
            job_hash(c, &id)
                .await
                .keys()
                .any(|k| k.starts_with("part:"))
        }
    })
    .await;
    // A second job whose id the client holds when the primary dies: the
    // submit was acknowledged only once the replica had it.
    let out2 = out_dir(&c, "out2");
    let mut s2 = spec("digits", &input, &out2);
    s2.shard_rows = 20_000;
    let job2 = client.submit_job(s2).await.unwrap();
    let before = client.get_job(&job.id).await.unwrap();
    assert!(
        before.rows_done < N,
        "the job ended before the kill: {before:?}"
    );
    kill_primary(&mut c).await;

    let end = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Succeeded, "{end:?}");
    assert_eq!((end.rows_done, end.rows_failed), (N, 0));
    assert_every_row_once(&read_outputs(&out), N, &digits);
    let end2 = wait_final(&client, &job2.id, MINUTES).await;
    assert_eq!(state(&end2), pb::JobState::Succeeded, "{end2:?}");
    assert_every_row_once(&read_outputs(&out2), N, &digits);
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_is_answered_only_once_a_replica_holds_the_job() {
    use redis::AsyncCommands;
    use switchboard::redis_server::RedisServer;
    let dir = tempdir::Dir::new();
    let primary = RedisServer::start(&dir.0.join("primary")).await.unwrap();
    let replica = RedisServer::start_replica(&dir.0.join("replica"), primary.port)
        .await
        .unwrap();
    wait_until("the replica to sync", Duration::from_secs(20), || {
        info_has(replica.url(), "master_link_status:up")
    })
    .await;
    // The replica's side says up a moment before the primary lists it as
    // online; until then the primary has no replica to wait for.
    wait_until(
        "the primary to list its replica",
        Duration::from_secs(20),
        || {
            let url = primary.url();
            async move {
                let Ok(mut c) = redis_conn::connect(&url).await else {
                    return false;
                };
                let info: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await;
                info.is_ok_and(|i| i.contains("state=online"))
            }
        },
    )
    .await;
    let q = job_queue::JobQueue::new(redis_conn::connect(&primary.url()).await.unwrap());
    q.ensure_groups().await.unwrap();
    let out = |n: &str| dir.0.join(n).display().to_string();
    let job = q
        .submit(job_queue::JobSpec::new(
            "e",
            "d",
            "m.onnx",
            "in.csv",
            &out("a"),
        ))
        .await
        .unwrap();
    let mut r = redis::Client::open(replica.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let on_replica: bool = r.exists(format!("sb:job:{}", job.id)).await.unwrap();
    assert!(
        on_replica,
        "the submit was answered before the replica had the job"
    );
    // A replica that does not acknowledge (stopped, still connected): the
    // submit must not hand out an id that a failover could lose.
    let pid = replica.pid().expect("replica running");
    signal(pid, "-STOP");
    let refused = q
        .submit(job_queue::JobSpec::new(
            "e",
            "d",
            "m.onnx",
            "in.csv",
            &out("b"),
        ))
        .await;
    signal(pid, "-CONT");
    assert!(
        matches!(refused, Err(job_queue::QueueError::NotReplicated(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_serving_goes_on_and_follows_the_new_primary() {
    let mut opts = Options::default();
    opts.deployments.clear();
    let mut c = Cluster::start_sentinel(opts).await;
    c.spawn_worker_process("digits", "blue", "digits_mlp.onnx");
    let admin = c.admin().await;
    let key = c.create_endpoint("digits", &["blue"]).await;
    c.wait_healthy("digits", "blue", 1, Duration::from_secs(30))
        .await;

    let load = load::Load::start(&c.gateway_url, &key, 4).await;
    assert!(
        load.goes_on(100, Duration::from_secs(10)).await,
        "load did not start"
    );
    kill_primary(&mut c).await;

    // The worker's heartbeat reaches the new primary (the registry there is
    // whatever was replicated, refreshed by it).
    wait_until("the worker registered on the new primary", FAILOVER, || {
        let c = &c;
        async move { c.registered("digits", "blue").await == 1 }
    })
    .await;
    // A gateway process started now finds the new primary through the
    // sentinel; an endpoint made through it must reach the first gateway's
    // view, whose change follower has to have moved too.
    let listen = format!("127.0.0.1:{}", procs::free_port());
    let _second = procs::spawn(&["gateway", "--listen", &listen, "--redis", &c.redis_url]);
    let admin2 = connect(&format!("http://{listen}"), Some(ADMIN)).await;
    wait_until("a write through the new primary", FAILOVER, || {
        let admin2 = admin2.clone();
        async move {
            admin2
                .create_endpoint("after", pb::AuthMode::Key)
                .await
                .is_ok()
                || admin2.get_endpoint("after").await.is_ok()
        }
    })
    .await;
    wait_until("the first gateway to see it", FAILOVER, || {
        let admin = admin.clone();
        async move { admin.get_endpoint("after").await.is_ok() }
    })
    .await;
    let went_on = load.goes_on(200, Duration::from_secs(20)).await;
    let failures = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} requests failed across the failover: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(went_on, "load stopped after the failover");
}
