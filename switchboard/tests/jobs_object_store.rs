//! Batch jobs whose input and output are object-store URIs. `store+file://`
//! opens the local filesystem through object_store's LocalFileSystem by the
//! same code as s3:// or gs://, so staging, uploads and the final listing
//! run for real without a cloud; the results are then read from disk.

mod common;

use client::proto::switchboard::v1 as pb;
use common::batch::*;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MINUTES: Duration = Duration::from_secs(600);

fn url(p: &Path) -> String {
    format!("store+file://{}", p.display())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_parquet_through_the_object_store_path() {
    let mut c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    let cache = c.dir.0.join("cache");
    let cache_arg = cache.display().to_string();
    spawn_batcher(&mut c, "b1", &["--cache-dir", &cache_arg]);
    let client = connect(&c.gateway_url, Some(&key)).await;
    let digits = Digits::load();

    // One CSV object.
    const N_CSV: u64 = 20_000;
    let csv = c.dir.0.join("in-csv").join("rows.csv");
    std::fs::create_dir_all(csv.parent().unwrap()).unwrap();
    digits.write_csv(&csv, N_CSV, true);
    let out_csv = out_dir(&c, "out-csv");
    let mut s = spec("digits", &csv, &out_csv);
    (s.input, s.output) = (url(&csv), url(&out_csv));
    s.shard_rows = 6_000;
    let csv_job = client.submit_job(s).await.unwrap();

    // A prefix of Parquet objects: row ids continue from one to the next
    // (both sizes are multiples of 16, so fixture rows line up).
    let pq = c.dir.0.join("in-parquet");
    std::fs::create_dir_all(&pq).unwrap();
    digits.write_parquet(&pq.join("b.parquet"), 16_000);
    digits.write_parquet(&pq.join("a.parquet"), 32_000);
    std::fs::write(pq.join("notes.txt"), "not an input").unwrap();
    let out_pq = out_dir(&c, "out-parquet");
    let mut s = spec("digits", &pq, &out_pq);
    (s.input, s.output) = (format!("{}/", url(&pq)), url(&out_pq));
    let pq_job = client.submit_job(s).await.unwrap();

    // A bad row: its error is uploaded per shard and merged through the store.
    let bad = c.dir.0.join("in-bad").join("bad.csv");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    digits.write_csv(&bad, 1_000, false);
    let text = std::fs::read_to_string(&bad).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[10] = "1,2,3";
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let out_bad = out_dir(&c, "out-bad");
    let mut s = spec("digits", &bad, &out_bad);
    (s.input, s.output) = (url(&bad), url(&out_bad));
    s.shard_rows = 300;
    let bad_job = client.submit_job(s).await.unwrap();

    for (id, out, n, parts) in [
        (&csv_job.id, &out_csv, N_CSV, 4),
        (&pq_job.id, &out_pq, 48_000, 2),
    ] {
        let job = wait_final(&client, id, MINUTES).await;
        assert_eq!(state(&job), pb::JobState::Succeeded, "{job:?}");
        assert_eq!((job.rows_total, job.rows_done, job.rows_failed), (n, n, 0));
        assert_eq!(job.manifest, format!("{}/manifest.json", url(out)));
        let rows = read_outputs(out);
        assert_every_row_once(&rows, n, &digits);
        assert_reference(&rows, &digits, 97);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let listed: Vec<&str> = manifest["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["file"].as_str().unwrap())
            .collect();
        assert_eq!(listed.len(), parts, "{manifest}");
        // Nothing but the parts and the manifest: no temp file, no upload
        // left half-way.
        let mut names: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        want.push("manifest.json".into());
        want.sort();
        assert_eq!(names, want);
    }

    let job = wait_final(&client, &bad_job.id, MINUTES).await;
    assert_eq!(state(&job), pb::JobState::PartiallySucceeded, "{job:?}");
    assert_eq!((job.rows_done, job.rows_failed), (999, 1));
    assert_eq!(job.errors, format!("{}/errors.jsonl", url(&out_bad)));
    let errors = std::fs::read_to_string(out_bad.join("errors.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(errors.lines().next().unwrap()).unwrap();
    assert_eq!(
        (errors.lines().count(), first["row"].as_u64()),
        (1, Some(10))
    );
    let rows = read_outputs(&out_bad);
    assert_eq!(rows.len(), 999);
    assert!(rows.iter().all(|r| r.0 != 10));

    // Inputs were staged in the batcher's cache; outputs left it once uploaded.
    let staged = files_under(&cache.join("in"));
    for name in ["rows.csv", "a.parquet", "b.parquet", "bad.csv"] {
        assert!(
            staged.iter().any(|p| p.file_name().unwrap() == name),
            "{name} not staged: {staged:?}"
        );
    }
    let left: Vec<PathBuf> = files_under(&cache.join("out"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemes_this_build_cannot_open_are_refused_at_submit() {
    let c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    let client = connect(&c.gateway_url, Some(&key)).await;
    let input = c.dir.0.join("rows.csv");
    let mut s = spec("digits", &input, &out_dir(&c, "out"));
    s.input = "memory:///rows.csv".into();
    match client.submit_job(s).await {
        Err(client::ClientError::Status(st)) => {
            assert_eq!(st.code(), tonic::Code::InvalidArgument);
            assert!(st.message().contains("'memory'"), "{}", st.message());
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}
