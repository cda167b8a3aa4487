//! GPUs on a machine without one: `switchboard devices`, `--device
//! cuda:all` and `cuda:N` placement, and a batcher's budget and its
//! out-of-memory halving on a GPU, all against SWITCHBOARD_SIMULATED_GPUS:
//! the same `Gpus` trait the CUDA driver implements, with models run on the
//! CPU by ONNX Runtime, metered and capped at each simulated GPU's size.

mod common;

use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::inference::*;
use client::proto::switchboard::v1 as pb;
use common::batch::*;
use common::procs::free_port;
use common::*;
use std::process::Output;
use std::time::Duration;
use tonic::transport::Channel;

const SIM: &str = "SWITCHBOARD_SIMULATED_GPUS";

/// `switchboard ARGS…` run to its end (within 60 s), with `sim` as the
/// simulated GPUs (None: the variable unset).
async fn run(args: &[&str], sim: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args).env("RUST_LOG", "warn").kill_on_drop(true);
    match sim {
        Some(s) => cmd.env(SIM, s),
        None => cmd.env_remove(SIM),
    };
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("switchboard ran past 60 s")
        .expect("run switchboard")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn devices_lists_the_gpus_or_says_why_there_are_none() {
    let out = run(&["devices"], Some("2x512MiB")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    for (i, g) in list.iter().enumerate() {
        assert_eq!(g["device"], format!("cuda:{i}"));
        assert_eq!(g["name"], "Simulated GPU (512 MiB)");
        assert_eq!(g["total_bytes"], 512u64 << 20);
        assert!(g["free_bytes"].as_u64().unwrap() <= 512 << 20, "{g}");
        assert!(g["compute_capability"].is_null(), "{g}");
    }
    let table = run(&["devices", "-o", "table"], Some("16GiB,8GiB")).await;
    let table = text(&table.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("DEVICE  NAME"), "{table}");
    let cells: Vec<&str> = lines[2]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "cuda:1",
            "Simulated GPU (8.0 GiB)",
            "8.0 GiB",
            "8.0 GiB",
            "-"
        ],
        "{table}"
    );

    // Without GPUs: a non-zero exit and the reason, not an empty list.
    let none = run(&["devices"], None).await;
    assert!(!none.status.success());
    let why = text(&none.stderr);
    assert!(
        why.contains("this build has no `cuda` feature") || why.contains("no NVIDIA driver"),
        "{why}"
    );
    let bad = run(&["devices"], Some("2xlots")).await;
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("SWITCHBOARD_SIMULATED_GPUS: 'lots': expected a size"),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test]
async fn a_device_that_is_not_there_stops_the_worker_at_start() {
    let spec = format!("digits/blue={}", models().join("digits_mlp.onnx").display());
    for (device, words) in [
        (
            "cuda:2",
            "cuda:2: no such GPU; there are 2, cuda:0 to cuda:1",
        ),
        ("cuda:1,1", "cuda:1 is named twice"),
        ("gpu:0", "expected cpu, cuda:N, cuda:N,M or cuda:all"),
    ] {
        let args = ["worker", "--device", device, "--deployment", &spec];
        let out = run(&args, Some("2x1GiB")).await;
        assert!(!out.status.success(), "{device}");
        let err = text(&out.stderr);
        assert!(err.contains(words), "{device}: {err}");
    }
    // A batcher scores on one device.
    let out = run(&["batcher", "--device", "cuda:all"], Some("2x1GiB")).await;
    let err = text(&out.stderr);
    assert!(err.contains("a batcher uses one device"), "{err}");
}

/// A worker without a registry on a port of its own, answering once its
/// models are loaded.
async fn sim_worker(device: &str) -> (tokio::process::Child, GrpcInferenceServiceClient<Channel>) {
    let spec = format!("digits/blue={}", models().join("digits_mlp.onnx").display());
    let addr = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["worker", "--listen", &addr, "--deployment", &spec])
        .args(["--device", device, "--instances", "2"])
        .env(SIM, "2x1GiB")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{addr}");
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut w) = GrpcInferenceServiceClient::connect(url.clone()).await
            && w.model_ready(ModelReadyRequest {
                name: "digits".into(),
                version: String::new(),
            })
            .await
            .is_ok_and(|r| r.into_inner().ready)
        {
            return (child, w);
        }
        assert!(
            std::time::Instant::now() < until,
            "the worker did not serve within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn instance_groups(
    w: &mut GrpcInferenceServiceClient<Channel>,
) -> Vec<(String, i32, Vec<i32>)> {
    let cfg = w
        .model_config(ModelConfigRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    cfg.instance_group
        .into_iter()
        .inspect(|g| assert_eq!(g.kind, model_instance_group::Kind::Gpu as i32, "{g:?}"))
        .map(|g| (g.name, g.count, g.gpus))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_all_places_a_set_of_instances_on_every_gpu_behind_one_queue() {
    let (_w, mut w) = sim_worker("cuda:all").await;
    assert_eq!(
        instance_groups(&mut w).await,
        vec![
            ("digits_cuda0".to_string(), 2, vec![0]),
            ("digits_cuda1".to_string(), 2, vec![1])
        ]
    );
    // 32 concurrent one-row requests, answered right by the four instances.
    let digits = Digits::load();
    let calls = (0..32u64).map(|i| {
        let mut w = w.clone();
        let req = client::f32_request("digits", "input", &[digits.row(i).to_vec()], true).unwrap();
        async move { (i, w.model_infer(req).await) }
    });
    for (i, resp) in futures::future::join_all(calls).await {
        let out = client::output_json(&resp.unwrap().into_inner());
        assert_eq!(
            out["outputs"][0]["data"][0],
            digits.label(i),
            "row {i}: {out}"
        );
    }

    let (_w1, mut w1) = sim_worker("cuda:1").await;
    assert_eq!(
        instance_groups(&mut w1).await,
        vec![("digits_cuda1".to_string(), 2, vec![1])]
    );
}

/// The `budget B` a job's batch fit was sized against.
fn budget_of(fit: &str) -> u64 {
    fit.split("of budget ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no budget in '{fit}'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_on_a_small_gpu_sizes_to_its_free_memory_and_halves_when_it_runs_out() {
    let mut c = cluster().await;
    let key = batch_endpoint(&c, "conv", &[("a", "convnet.onnx")]).await;
    // No --batch-memory-budget: the budget is what cuda:1 has free, less
    // than its 32 MiB, nowhere near this machine's memory.
    spawn_batcher_with(
        &mut c,
        "b1",
        &["--device", "cuda:1"],
        &[(SIM, "1GiB,32MiB")],
    );
    let client = connect(&c.gateway_url, Some(&key)).await;
    let input = c.dir.0.join("images.csv");
    write_convnet_csv(&input, 600);

    let auto = client
        .submit_job(spec("conv", &input, &out_dir(&c, "auto")))
        .await
        .unwrap();
    let end = wait_final(&client, &auto.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Succeeded, "{end:?}");
    assert_eq!(end.rows_done, 600);
    let budget = budget_of(&end.batch_fit);
    assert!(budget <= 32 << 20 && budget > 16 << 20, "{}", end.batch_fit);
    assert!(!end.batch_fit.contains("halved"), "{}", end.batch_fit);

    // A fixed batch the GPU cannot hold: the allocator refuses at its
    // size, and the batch is halved until it fits; no row is lost.
    let fixed = client
        .submit_job(pb::JobSpec {
            mini_batch_size: 600,
            ..spec("conv", &input, &out_dir(&c, "fixed"))
        })
        .await
        .unwrap();
    let end = wait_final(&client, &fixed.id, MINUTES).await;
    assert_eq!(state(&end), pb::JobState::Succeeded, "{end:?}");
    assert_eq!((end.rows_done, end.rows_failed), (600, 0));
    assert!(end.batch_fit.contains("halved"), "{}", end.batch_fit);
    assert!(end.batch_size < 600 && end.batch_size > 0, "{end:?}");
    assert_eq!(job_hash(&c, &fixed.id).await["halved_shards"], "1");
}
