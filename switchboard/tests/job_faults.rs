//! Batch jobs under faults: batchers SIGKILLed mid-shard, Redis killed and
//! restarted from its AOF, shards that keep failing, memory that runs out.

mod common;

use client::proto::switchboard::v1 as pb;
use common::batch::*;
use common::*;
use switchboard::redis_server::RedisServer;

async fn pending_of(c: &Cluster, consumer: &str) -> usize {
    pending_entries(&c.redis.url(), consumer).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batchers_share_a_job_and_one_is_killed_mid_shard() {
    let mut c = cluster().await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    let fast = ["--visibility-timeout", "2", "--batch-max-auto", "512"];
    spawn_batcher(&mut c, "b1", &fast);
    spawn_batcher(&mut c, "b2", &fast);
    let client = connect(&c.gateway_url, Some(&key)).await;
    let digits = Digits::load();
    let input = c.dir.0.join("rows.csv");
    const N: u64 = 600_000;
    digits.write_csv(&input, N, true);
    let out = out_dir(&c, "out");
    let mut s = spec("digits", &input, &out);
    s.shard_rows = 15_000;
    let job = client.submit_job(s).await.unwrap();
    // Both batchers have counted shards, and b2 is in the middle of another.
    wait_until("both batchers to work on the job", MINUTES, || {
        let (c, id) = (&c, job.id.clone());
        async move {
            let by = counted_by(&c.redis_url, &id).await;
            by.contains("b1") && by.contains("b2") && pending_of(c, "b2").await > 0
        }
    })
    .await;
    c.children[1].start_kill().unwrap();
    c.children[1].wait().await.unwrap();
    let end = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Succeeded, "{end:?}");
    assert_eq!((end.rows_done, end.rows_failed), (N, 0));
    let rows = read_outputs(&out);
    assert_every_row_once(&rows, N, &digits);
    // No temp file of the killed writer is left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_job_loses_no_job_and_no_row() {
    let (mut c, client) = digits_jobs(&["--visibility-timeout", "3"]).await;
    let digits = Digits::load();
    let input = c.dir.0.join("rows.csv");
    const N: u64 = 300_000;
    digits.write_csv(&input, N, false);
    let mut s = spec("digits", &input, &out_dir(&c, "first"));
    s.shard_rows = 20_000;
    let first = client.submit_job(s).await.unwrap();
    wait_until("a shard to be counted", MINUTES, || {
        let (client, id) = (client.clone(), first.id.clone());
        async move { client.get_job(&id).await.is_ok_and(|j| j.shards_done >= 1) }
    })
    .await;
    // A job answered just before the crash must survive it too.
    let second = client
        .submit_job(spec("digits", &input, &out_dir(&c, "second")))
        .await
        .unwrap();
    let port = c.redis.port;
    c.redis.kill().await;
    c.redis = RedisServer::start_on(&c.dir.0.join("redis"), port)
        .await
        .unwrap();
    for (id, name) in [(&first.id, "first"), (&second.id, "second")] {
        let end = wait_final(&client, id, MINUTES).await;
        assert_eq!(state(&end), pb::JobState::Succeeded, "{name}: {end:?}");
        assert_eq!((end.rows_done, end.rows_failed), (N, 0), "{name}");
        assert_every_row_once(&read_outputs(&out_dir(&c, name)), N, &digits);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_keeps_failing_goes_to_dead_letter_and_its_rows_count_as_failed() {
    let (c, client) = digits_jobs(&[]).await;
    let digits = Digits::load();
    // Two row groups of 50,000; the first one's pages are overwritten, so
    // planning (which reads only the footer) succeeds and reading fails.
    let input = c.dir.0.join("rows.parquet");
    digits.write_parquet(&input, 100_000);
    let mut bytes = std::fs::read(&input).unwrap();
    for b in &mut bytes[64..4096] {
        *b = 0xA5;
    }
    std::fs::write(&input, bytes).unwrap();
    let mut s = spec("digits", &input, &out_dir(&c, "out"));
    s.shard_rows = 50_000;
    s.max_retries = Some(1);
    let job = client.submit_job(s).await.unwrap();
    let end = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::PartiallySucceeded, "{end:?}");
    assert_eq!((end.rows_done, end.rows_failed), (50_000, 50_000));
    let errors = std::fs::read_to_string(&end.errors).unwrap();
    let first: serde_json::Value = serde_json::from_str(errors.lines().next().unwrap()).unwrap();
    assert_eq!(first["row"], 0);
    assert!(
        first["reason"].as_str().unwrap().contains("failed 2 times"),
        "{first}"
    );
    assert_eq!(errors.lines().count(), 50_000);
    let h = job_hash(&c, &job.id).await;
    assert_eq!(h.get("attempts:0").map(String::as_str), Some("2"));
    let r = redis::Client::open(c.redis.url()).unwrap();
    let mut conn = r.get_multiplexed_async_connection().await.unwrap();
    let dead: usize = redis::cmd("XLEN")
        .arg(job_queue::DEAD_LETTER)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, 1);
    let rows = read_outputs(&out_dir(&c, "out"));
    assert_eq!(rows.len(), 50_000);
    assert!(rows.iter().all(|r| r.0 >= 50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_batch_fits_the_memory_budget_and_an_allocation_failure_halves_it() {
    let mut c = cluster().await;
    let key = batch_endpoint(&c, "conv", &[("a", "convnet.onnx")]).await;
    // Sizing measures without the cap (the batch it picks peaks near 0.9 x
    // 64 MiB); the cap of 40 MiB then makes the first run of that size fail.
    spawn_batcher(
        &mut c,
        "b1",
        &[
            "--batch-memory-budget",
            "64MiB",
            "--batch-memory-limit",
            "40MiB",
        ],
    );
    let client = connect(&c.gateway_url, Some(&key)).await;
    let input = c.dir.0.join("images.csv");
    write_convnet_csv(&input, 1_000);
    // Four shards: the first finds the size that fits; the others start
    // from it instead of failing and halving (and noting it) again.
    let job = client
        .submit_job(pb::JobSpec {
            shard_rows: 250,
            ..spec("conv", &input, &out_dir(&c, "out"))
        })
        .await
        .unwrap();
    let end = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Succeeded, "{end:?}");
    assert_eq!(end.rows_done, 1_000);
    // The fit says what it chose and why; the halving is recorded after it.
    let fit = &end.batch_fit;
    assert!(fit.contains("budget 67108864"), "{fit}");
    let chosen: u32 = fit
        .strip_prefix("batch ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{fit}"));
    assert_eq!(fit.matches("halved").count(), 1, "{fit}");
    // Only the first shard had to halve: the others started from its size.
    assert_eq!(job_hash(&c, &job.id).await["halved_shards"], "1");
    assert!(
        end.batch_size <= chosen / 2 && end.batch_size > 0,
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_final_step_cannot_write_fails_the_job_with_the_reason() {
    let (c, client) = digits_jobs(&[]).await;
    let input = c.dir.0.join("rows.csv");
    Digits::load().write_csv(&input, 300_000, false);
    let out = out_dir(&c, "out");
    let mut s = spec("digits", &input, &out);
    s.shard_rows = 10_000;
    s.max_retries = Some(1);
    let job = client.submit_job(s).await.unwrap();
    wait_until("the job to be planned", MINUTES, || {
        let (client, id) = (client.clone(), job.id.clone());
        async move {
            client
                .get_job(&id)
                .await
                .is_ok_and(|j| state(&j) == pb::JobState::Running)
        }
    })
    .await;
    // Frozen, the batcher cannot finish the job while the folder is set up.
    let pid = c.children[0].id().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let now = client.get_job(&job.id).await.unwrap();
    assert_eq!(state(&now), pb::JobState::Running, "{now:?}");
    // After planning (which refuses a folder that holds a manifest), a
    // folder where the manifest should go: renaming onto it fails, as a
    // lost mount or a full disk would make writing fail (root ignores
    // permission bits, so a read-only folder would not).
    std::fs::create_dir_all(out.join("manifest.json").join("blocked")).unwrap();
    signal("-CONT");
    let end = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Failed, "{end:?}");
    assert!(
        end.message.starts_with("cannot write the job's output"),
        "{end:?}"
    );
    // Every shard ran; only the final step failed, and not for ever.
    assert_eq!((end.rows_done, end.rows_failed), (300_000, 0), "{end:?}");
    let tries = job_hash(&c, &job.id).await["attempts:final"].clone();
    assert_eq!(tries, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sent_twice_queues_the_entry_once() {
    // A retry whose reply is lost (the connection dropped after Redis ran
    // it) is sent again by the batcher; it must not queue a second copy.
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let conn = redis_conn::connect(&redis.url()).await.unwrap();
    let q = job_queue::JobQueue::new(conn);
    q.ensure_groups().await.unwrap();
    let out = dir.0.join("out").display().to_string();
    let spec = job_queue::JobSpec::new("e", "d", "m.onnx", "in.csv", &out);
    let job = q.submit(spec).await.unwrap();
    let wait = std::time::Duration::from_millis(200);
    let first = q.next("t", wait).await.unwrap().expect("the plan entry");
    q.retry(&first, "try again").await.unwrap();
    q.retry(&first, "try again").await.unwrap();
    let copy = q.next("t", wait).await.unwrap().expect("one copy");
    assert_eq!(copy.job, job.id);
    assert_ne!(copy.id, first.id);
    assert!(
        q.next("t", wait).await.unwrap().is_none(),
        "a second copy was queued"
    );
}
