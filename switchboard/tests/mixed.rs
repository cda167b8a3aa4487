//! Mixed load end to end: `loadtest mixed` against a real redis-server, the
//! gateway, an in-process worker serving digits/blue for the real-time
//! load, and a batcher process scoring a digits CSV through the Jobs API.

mod common;

use clap::Parser as _;
use client::proto::switchboard::v1 as pb;
use common::batch::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_percentiles_alone_and_while_a_job_runs() {
    let (c, client, key) = digits_jobs_on(with_digits_worker().await, &[]).await;
    c.wait_routable(&c.gateway_url, "digits", &["blue"]).await;
    // 300,000 rows in mini-batches of 256 keep a debug-build batcher busy
    // for far longer than the 0.5 s warm-up and 2 s window; shards of
    // 10,000 rows let its progress show within the window.
    let input = c.dir.0.join("rows.csv");
    Digits::load().write_csv(&input, 300_000, true);
    let report = c.dir.0.join("mixed.json");
    let report_dir = c.dir.0.join("report");
    let args = [
        "switchboard loadtest",
        "--url",
        &c.gateway_url,
        "--token",
        &key,
        "--model",
        "digits",
        "mixed",
        "--concurrency",
        "4",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--quiet",
        "--job-input",
        input.to_str().unwrap(),
        "--job-mini-batch-size",
        "256",
        "--job-shard-rows",
        "10000",
        "--report-json",
        report.to_str().unwrap(),
        "--report-dir",
        report_dir.to_str().unwrap(),
    ];
    loadtest::cli::run(loadtest::cli::Cli::parse_from(args))
        .await
        .expect("mixed run");

    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for phase in ["alone", "with_job"] {
        let p = &r[phase];
        assert!(p["requests"].as_u64().unwrap() > 0, "{phase}: {p}");
        assert_eq!(p["errors"].as_u64(), Some(0), "{phase}: {p}");
        assert!(p["latency_us"]["p99"].as_u64().unwrap() > 0, "{phase}: {p}");
        assert_eq!(p["concurrency"].as_u64(), Some(4), "{phase}");
        assert!(
            report_dir.join(phase).join("latency.hlog").exists(),
            "{phase} files"
        );
    }
    let job = &r["job"];
    let overlap = job["overlap_fraction"].as_f64().unwrap();
    assert!(overlap > 0.0, "the job ran during the window: {job}");
    // The batcher scored rows while the real-time load ran.
    assert!(
        job["rows_done_during_phase"].as_u64().unwrap() > 0
            && job["rows_per_s_during_phase"].as_f64().unwrap() > 0.0,
        "{job}"
    );
    let ratio = r["p99_ratio"].as_f64().unwrap();
    let (a, w) = (
        r["alone"]["latency_us"]["p99"].as_f64().unwrap(),
        r["with_job"]["latency_us"]["p99"].as_f64().unwrap(),
    );
    assert!((ratio - w / a).abs() < 1e-9, "{ratio} vs {w}/{a}");
    // Cancelled after the phase (the default), or done if it was that fast.
    let id = job["id"].as_str().unwrap();
    let now = wait_final(&client, id, Duration::from_secs(120)).await;
    let want = if overlap < 1.0 {
        pb::JobState::Succeeded
    } else {
        pb::JobState::Cancelled
    };
    assert_eq!(state(&now), want, "{now:?}");
    assert_eq!(
        job["state"].as_str(),
        Some(&*format!("{want:?}").to_lowercase())
    );
    assert_eq!(job["rows_done"].as_u64(), Some(now.rows_done), "{job}");
    // No --job-output: a temporary folder, gone once the job ended.
    let out = job["output"].as_str().unwrap();
    assert!(
        out.starts_with(std::env::temp_dir().to_str().unwrap()),
        "{out}"
    );
    assert_eq!(job["output_removed"].as_bool(), Some(true), "{job}");
    assert!(!std::path::Path::new(out).exists(), "{out}");
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(
        md.contains("| alone |") && md.contains("| with job |"),
        "{md}"
    );
}
