//! Batch jobs end to end: a real redis-server, the gateway's Jobs API over
//! gRPC, batchers as child processes running ONNX Runtime, real files.

mod common;

use client::f32_request;
use client::proto::switchboard::v1 as pb;
use common::batch::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_csv_rows_each_scored_once_as_the_real_time_path_scores_them() {
    let (c, client, key) = digits_jobs_on(with_digits_worker().await, &[]).await;
    let digits = Digits::load();
    let input = c.dir.0.join("rows.csv");
    const N: u64 = 1_000_000;
    digits.write_csv(&input, N, true);
    let out = out_dir(&c, "out-csv");
    let job = client
        .submit_job(spec("digits", &input, &out))
        .await
        .unwrap();
    assert_eq!(state(&job), pb::JobState::Queued);
    assert_eq!(job.deployment, "blue");
    let job = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::Succeeded, "{job:?}");
    assert_eq!((job.rows_total, job.rows_done, job.rows_failed), (N, N, 0));
    assert!(job.batch_size > 0 && !job.batch_fit.is_empty(), "{job:?}");
    let rows = read_outputs(&out);
    assert_every_row_once(&rows, N, &digits);
    assert_reference(&rows, &digits, 997);
    // The same rows through the real-time path give the same answers.
    c.wait_routable(&c.gateway_url, "digits", &["blue"]).await;
    let rt = connect(&c.gateway_url, Some(&key)).await;
    for &(row, label, ref probs) in rows.iter().step_by(99_991) {
        let req = f32_request("digits", "input", &[digits.row(row).to_vec()], true).unwrap();
        let resp = rt
            .inference
            .clone()
            .model_infer(req)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.model_version, "blue");
        let t = client::output_json(&resp);
        let out = |name: &str| {
            t["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .unwrap()["data"]
                .clone()
        };
        assert_eq!(out("label")[0].as_i64(), Some(label), "row {row}");
        for (k, p) in probs.iter().enumerate() {
            let want = out("probabilities")[k].as_f64().unwrap() as f32;
            assert!((p - want).abs() <= 1e-5, "row {row}: {p} vs {want}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_and_parquet_in_and_out() {
    let (c, client) = digits_jobs(&[]).await;
    let digits = Digits::load();
    const N: u64 = 200_000;
    let jsonl = c.dir.0.join("rows.jsonl");
    digits.write_jsonl(&jsonl, N);
    let parquet = c.dir.0.join("rows.parquet");
    digits.write_parquet(&parquet, N);
    let mut ids = Vec::new();
    for (input, name) in [(&jsonl, "out-jsonl"), (&parquet, "out-parquet")] {
        let mut s = spec("digits", input, &out_dir(&c, name));
        s.shard_rows = 60_000;
        ids.push(client.submit_job(s).await.unwrap().id);
    }
    // CSV in, Parquet out: the output format is the job's choice.
    let csv = c.dir.0.join("rows.csv");
    digits.write_csv(&csv, 5_000, false);
    let mut s = spec("digits", &csv, &out_dir(&c, "out-csv-parquet"));
    s.output_format = pb::DataFormat::Parquet as i32;
    ids.push(client.submit_job(s).await.unwrap().id);
    for (id, (name, n)) in ids.iter().zip([
        ("out-jsonl", N),
        ("out-parquet", N),
        ("out-csv-parquet", 5_000),
    ]) {
        let job = wait_final(&client, id, MINUTES).await;
        assert_eq!(state(&job), pb::JobState::Succeeded, "{name}: {job:?}");
        let rows = read_outputs(&out_dir(&c, name));
        assert_every_row_once(&rows, n, &digits);
        assert_reference(&rows, &digits, 101);
    }
    let manifest =
        std::fs::read_to_string(out_dir(&c, "out-parquet").join("manifest.json")).unwrap();
    assert!(manifest.contains("part-00003.parquet"), "{manifest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_reported_and_the_threshold_decides() {
    let (c, client) = digits_jobs(&[]).await;
    let digits = Digits::load();
    let input = c.dir.0.join("bad.csv");
    digits.write_csv(&input, 1_000, true);
    // Data row r is file line r + 2 (1-based, after the header).
    let mut lines: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[10 + 1] = lines[10 + 1].rsplit_once(',').unwrap().0.to_string(); // 63 columns
    lines[500 + 1] = lines[500 + 1].replacen("0", "abc", 1); // text
    lines[999 + 1] = format!(
        "NaN{}",
        &lines[999 + 1][lines[999 + 1].find(',').unwrap()..]
    );
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let bad = [10u64, 500, 999];

    let mut s = spec("digits", &input, &out_dir(&c, "lenient"));
    s.shard_rows = 300;
    let lenient = client.submit_job(s).await.unwrap();
    let mut s = spec("digits", &input, &out_dir(&c, "strict"));
    s.error_threshold = Some(2);
    s.shard_rows = 300;
    let strict = client.submit_job(s).await.unwrap();
    let mut s = spec("digits", &input, &out_dir(&c, "exact"));
    s.error_threshold = Some(3);
    let exact = client.submit_job(s).await.unwrap();

    let job = wait_final(&client, &lenient.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::PartiallySucceeded, "{job:?}");
    assert_eq!((job.rows_done, job.rows_failed), (997, 3));
    let errors = std::fs::read_to_string(&job.errors).unwrap();
    let errors: Vec<serde_json::Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows: Vec<u64> = errors.iter().map(|e| e["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, bad);
    let reasons: Vec<&str> = errors
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("63"), "{reasons:?}");
    assert!(reasons[1].contains("abc"), "{reasons:?}");
    assert!(reasons[2].contains("NaN"), "{reasons:?}");
    let out = read_outputs(&out_dir(&c, "lenient"));
    assert_eq!(out.len(), 997);
    assert!(out.iter().all(|r| !bad.contains(&r.0)));

    let job = wait_final(&client, &strict.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::Failed, "{job:?}");
    assert!(job.message.contains("error_threshold"), "{job:?}");
    let job = wait_final(&client, &exact.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::PartiallySucceeded, "{job:?}");

    // Headerless, text in its first row: told so, that row is row 0 and an
    // error, not a header silently dropped.
    let headless = c.dir.0.join("headless.csv");
    let mut first: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    first[3] = "x".into();
    let mut body: Vec<String> = lines[1..].to_vec();
    body[0] = first.join(",");
    std::fs::write(&headless, body.join("\n") + "\n").unwrap();
    let mut s = spec("digits", &headless, &out_dir(&c, "headless"));
    s.csv_header = Some(false);
    let job = client.submit_job(s).await.unwrap();
    assert_eq!(job.spec.as_ref().and_then(|s| s.csv_header), Some(false));
    let job = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::PartiallySucceeded, "{job:?}");
    assert_eq!((job.rows_total, job.rows_failed), (1_000, 4), "{job:?}");
    let errors = std::fs::read_to_string(&job.errors).unwrap();
    assert!(errors.starts_with(r#"{"row":0,"#), "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_job_leaves_a_consistent_manifest() {
    let (c, client) = digits_jobs(&["--batch-max-auto", "256"]).await;
    let digits = Digits::load();
    let input = c.dir.0.join("rows.csv");
    digits.write_csv(&input, 400_000, false);
    let out = out_dir(&c, "out");
    let mut s = spec("digits", &input, &out);
    s.shard_rows = 10_000;
    let job = client.submit_job(s).await.unwrap();
    wait_until("a shard to finish", MINUTES, || {
        let client = client.clone();
        let id = job.id.clone();
        async move { client.get_job(&id).await.is_ok_and(|j| j.shards_done >= 1) }
    })
    .await;
    let asked = client.cancel_job(&job.id).await.unwrap();
    assert!(
        matches!(
            state(&asked),
            pb::JobState::Cancelling | pb::JobState::Cancelled
        ),
        "{asked:?}"
    );
    let end = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Cancelled, "{end:?}");
    assert!(end.rows_done < 400_000, "{end:?}");
    // The manifest lists exactly the part files there are, with their rows.
    let rows = read_outputs(&out);
    assert_eq!(rows.len() as u64, end.rows_done);
    let parts = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("part-")
        })
        .count();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["parts"].as_array().unwrap().len(), parts);
    assert_eq!(manifest["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_api_answers_bad_requests_precisely() {
    let c = cluster().await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    let other = batch_endpoint(&c, "other", &[("blue", "digits_mlp.onnx")]).await;
    let client = connect(&c.gateway_url, Some(&key)).await;
    let input = c.dir.0.join("rows.csv");
    Digits::load().write_csv(&input, 10, false);
    let out = out_dir(&c, "out");
    let code = |r: Result<pb::Job, client::ClientError>| match r {
        Err(client::ClientError::Status(s)) => s.code(),
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        code(client.submit_job(spec("nope", &input, &out)).await),
        tonic::Code::NotFound
    );
    let mut s = spec("digits", &input, &out);
    s.deployment = "purple".into();
    assert_eq!(code(client.submit_job(s).await), tonic::Code::NotFound);
    let txt = c.dir.0.join("rows.txt");
    assert_eq!(
        code(client.submit_job(spec("digits", &txt, &out)).await),
        tonic::Code::InvalidArgument
    );
    let mut s = spec("digits", &input, &out);
    s.error_threshold = Some(-2);
    assert_eq!(
        code(client.submit_job(s).await),
        tonic::Code::InvalidArgument
    );
    let mut s = spec("digits", &input, &out);
    s.output = "s3://bucket/out".into();
    assert_eq!(
        code(client.submit_job(s).await),
        tonic::Code::InvalidArgument
    );
    // Another endpoint's key may not submit here, nor see this endpoint's jobs.
    let stranger = connect(&c.gateway_url, Some(&other)).await;
    assert_eq!(
        code(stranger.submit_job(spec("digits", &input, &out)).await),
        tonic::Code::PermissionDenied
    );
    let job = client
        .submit_job(spec("digits", &input, &out))
        .await
        .unwrap();
    assert_eq!(
        code(stranger.get_job(&job.id).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(client.get_job("job-nope").await),
        tonic::Code::NotFound
    );
    let anon = connect(&c.gateway_url, None).await;
    assert_eq!(
        code(anon.get_job(&job.id).await),
        tonic::Code::Unauthenticated
    );
    // Listing: the endpoint key sees its own jobs; a filter by state works.
    let mine = client.list_jobs("", None, 10, "").await.unwrap();
    assert_eq!(mine.jobs.len(), 1);
    let theirs = stranger.list_jobs("", None, 10, "").await.unwrap();
    assert!(theirs.jobs.is_empty());
    let queued = client
        .list_jobs("digits", Some(pb::JobState::Queued), 10, "")
        .await
        .unwrap();
    assert_eq!(queued.jobs.len(), 1);
    let running = client
        .list_jobs("digits", Some(pb::JobState::Running), 10, "")
        .await
        .unwrap();
    assert!(running.jobs.is_empty());
    // One live job a folder (however it is spelled): a second one there
    // would overwrite its parts.
    let same = std::path::PathBuf::from(format!("{}/", out.display()));
    match client.submit_job(spec("digits", &input, &same)).await {
        Err(client::ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(s.message().contains(&job.id), "{}", s.message());
        }
        other => panic!("a second job into a live job's folder: {other:?}"),
    }
    // Paging, newest first: two jobs in pages of one.
    let second = client
        .submit_job(spec("digits", &input, &out_dir(&c, "out2")))
        .await
        .unwrap();
    let page1 = client.list_jobs("digits", None, 1, "").await.unwrap();
    let ids: Vec<_> = page1.jobs.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, [second.id.as_str()]);
    let page2 = client
        .list_jobs("digits", None, 1, &page1.next_page_token)
        .await
        .unwrap();
    let ids: Vec<_> = page2.jobs.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, [job.id.as_str()]);
    for token in ["abc", "-1", "99999999999999999999", "18446744073709551615"] {
        assert_eq!(
            code(
                client
                    .list_jobs("digits", None, 1, token)
                    .await
                    .map(|_| pb::Job::default())
            ),
            tonic::Code::InvalidArgument,
            "{token}"
        );
    }
    // An id naming a job's companion key is no job.
    assert_eq!(
        code(client.get_job(&format!("{}:done", job.id)).await),
        tonic::Code::NotFound
    );
    client.cancel_job(&second.id).await.unwrap();
    // A job nobody has picked up yet is cancelled at once, and its folder
    // is free again.
    let cancelled = client.cancel_job(&job.id).await.unwrap();
    assert_eq!(state(&cancelled), pb::JobState::Cancelled);
    let again = client.submit_job(spec("digits", &input, &out)).await;
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_that_cannot_run_fails_the_job_with_the_reason() {
    let (c, client) = digits_jobs(&[]).await;
    let missing = c.dir.0.join("missing.csv");
    let job = client
        .submit_job(spec("digits", &missing, &out_dir(&c, "o1")))
        .await
        .unwrap();
    let job = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::Failed);
    assert!(job.message.contains("missing.csv"), "{job:?}");
    // 65 columns for a 64-value input.
    let wide = c.dir.0.join("wide.csv");
    std::fs::write(&wide, format!("{}\n", vec!["1"; 65].join(","))).unwrap();
    let job = client
        .submit_job(spec("digits", &wide, &out_dir(&c, "o2")))
        .await
        .unwrap();
    let job = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::Failed);
    assert!(job.message.contains("64"), "{job:?}");
    // An output folder holding another job's part is refused and left as
    // it was (the final step would have removed the stranger's part).
    let rows = c.dir.0.join("rows.csv");
    std::fs::write(&rows, format!("{}\n", vec!["1"; 64].join(","))).unwrap();
    let taken = out_dir(&c, "o3");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("part-00000.csv"), "row,label\n7,3\n").unwrap();
    let job = client
        .submit_job(spec("digits", &rows, &taken))
        .await
        .unwrap();
    let job = wait_final(&client, &job.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::Failed);
    assert!(
        job.message.contains("already holds 'part-00000.csv'"),
        "{job:?}"
    );
    assert_eq!(
        std::fs::read_to_string(taken.join("part-00000.csv")).unwrap(),
        "row,label\n7,3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_decides_and_a_started_job_finishes_before_the_next_is_planned() {
    // Every job is queued before the one batcher starts, so the order it
    // takes them in is the queue's alone.
    let mut c = cluster().await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    let client = connect(&c.gateway_url, Some(&key)).await;
    let input = c.dir.0.join("rows.csv");
    Digits::load().write_csv(&input, 2_000, false);
    let mut ids = std::collections::HashMap::new();
    for (name, priority) in [("a", 0), ("b", 0), ("low", -1), ("high", 1)] {
        let mut s = spec("digits", &input, &out_dir(&c, name));
        s.priority = priority;
        s.shard_rows = 500;
        ids.insert(name, client.submit_job(s).await.unwrap().id);
    }
    spawn_batcher(&mut c, "b1", &[]);
    let mut jobs = std::collections::HashMap::new();
    for (name, id) in &ids {
        let j = wait_final(&client, id, MINUTES).await;
        assert_eq!(state(&j), pb::JobState::Succeeded, "{j:?}");
        assert_eq!(j.shards_total, 4, "{j:?}");
        jobs.insert(*name, j);
    }
    // Each job runs start to end before the next one is planned: `high`
    // first, then `a` and `b` in submission order, then `low`.
    for (before, after) in [("high", "a"), ("a", "b"), ("b", "low")] {
        let (x, y) = (&jobs[before], &jobs[after]);
        assert!(
            x.finished_unix_ms <= y.started_unix_ms,
            "{before} ended at {} but {after} started at {}",
            x.finished_unix_ms,
            y.started_unix_ms
        );
    }
}
