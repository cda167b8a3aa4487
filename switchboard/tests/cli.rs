//! The client commands, run as a user would: the binary, with the gateway
//! from SWITCHBOARD_URL and the credential from --key or the environment.

mod common;

use common::batch;
use common::*;
use std::process::Output;

fn sb(url: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.env("SWITCHBOARD_URL", url)
        .env_remove("SWITCHBOARD_KEY")
        .env_remove("SWITCHBOARD_ADMIN_KEY");
    if let Some(k) = key {
        cmd.env("SWITCHBOARD_ADMIN_KEY", k);
    }
    cmd.args(args).output().expect("run switchboard")
}

fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn line_after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{prefix}' in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_end_to_end() {
    let c = Cluster::start(Options::default()).await;
    let url = c.gateway_url.clone();
    let admin = Some(ADMIN);
    let model = models().join("digits_mlp.onnx").display().to_string();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let created = ok(sb(
                &url,
                admin,
                &["endpoint", "create", "digits", "--auth", "key"],
            ));
            let key = line_after(&created, "primary key (shown once):").to_string();
            ok(sb(
                &url,
                admin,
                &["deployment", "create", "digits", "blue", "--model", &model],
            ));
            ok(sb(
                &url,
                admin,
                &["deployment", "create", "digits", "green", "--model", &model],
            ));
            let t = ok(sb(
                &url,
                admin,
                &["traffic", "digits", "blue=90", "green=10"],
            ));
            assert!(t.contains("\"blue\": 90"), "{t}");
            // Weights must sum to 100.
            let bad = sb(&url, admin, &["traffic", "digits", "blue=50", "green=10"]);
            assert!(!bad.status.success());
            assert!(String::from_utf8_lossy(&bad.stderr).contains("sum to 60"));
            ok(sb(&url, admin, &["mirror", "digits", "green", "10"]));
            let list = ok(sb(&url, admin, &["endpoint", "list"]));
            assert!(list.contains("digits"), "{list}");
            let show = ok(sb(&url, admin, &["endpoint", "show", "digits"]));
            assert!(show.contains("mirror_percent: 10"), "{show}");
            let keys = ok(sb(&url, admin, &["keys", "show", "digits"]));
            assert!(
                keys.contains(&gateway::secrets::fingerprint(&gateway::secrets::hash(
                    &key
                ))),
                "{keys}"
            );
            let token = ok(sb(
                &url,
                Some(&key),
                &["token", "get", "digits", "--ttl", "60"],
            ));
            assert!(token.contains("sbt_"), "{token}");
            (key, token)
        }
    })
    .await
    .unwrap();
    let (key, token_json) = out;
    c.wait_routable(&url, "digits", &["blue", "green"]).await;
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        let url = url2;
        let row = vec!["1"; 64].join(",");
        // Invoke with the endpoint key (--key) and a pinned deployment.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
        let o = cmd
            .env("SWITCHBOARD_URL", &url)
            .env_remove("SWITCHBOARD_ADMIN_KEY")
            .args(["--key", &key, "invoke", "digits", "--deployment", "green", "--data", &row])
            .output()
            .unwrap();
        let out = ok(o);
        assert!(out.contains("\"model_version\": \"green\""), "{out}");
        assert!(out.contains("probabilities"), "{out}");
        // A JSON file of rows, with a token from SWITCHBOARD_KEY.
        let token: serde_json::Value = serde_json::from_str(&token_json).unwrap();
        let file = std::env::temp_dir().join(format!("rows-{}.json", std::process::id()));
        std::fs::write(&file, "[[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0,1,2,3,4,5,6,7,8,9,10,11,12]]").unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .env("SWITCHBOARD_URL", &url)
            .env("SWITCHBOARD_KEY", token["token"].as_str().unwrap())
            .env_remove("SWITCHBOARD_ADMIN_KEY")
            .args(["invoke", "digits", "--file", file.to_str().unwrap()])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        // digits uses key auth: the token is refused, precisely.
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("takes keys, not tokens"), "{}", String::from_utf8_lossy(&o.stderr));
        // The load tool as the README runs it: its own --url and --token,
        // with SWITCHBOARD_URL and SWITCHBOARD_KEY also set (the wrapper must
        // not pass either twice), and with neither flag (taken from them).
        let report = std::env::temp_dir().join(format!("lt-{}.json", std::process::id()));
        for own_flags in [true, false] {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
            cmd.env("SWITCHBOARD_URL", &url).env("SWITCHBOARD_KEY", &key).arg("loadtest");
            if own_flags {
                cmd.args(["--url", &url, "--token", &key]);
            }
            let o = cmd
                .args(["--model", "digits", "--concurrency", "2", "--duration", "0.3", "--warmup", "0", "--quiet"])
                .arg("--report-json")
                .arg(&report)
                .output()
                .unwrap();
            ok(o);
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
        }
        let _ = std::fs::remove_file(&report);
        let regen = ok(sb(&url, Some(ADMIN), &["keys", "regenerate", "digits", "--slot", "secondary"]));
        assert!(regen.contains("sbk_"), "{regen}");
        ok(sb(&url, Some(ADMIN), &["traffic", "digits", "blue=100"]));
        ok(sb(&url, Some(ADMIN), &["mirror", "digits", "green", "0"]));
        ok(sb(&url, Some(ADMIN), &["deployment", "delete", "digits", "green"]));
        ok(sb(&url, Some(ADMIN), &["endpoint", "update", "digits", "--auth", "none"]));
        ok(sb(&url, None, &["invoke", "digits", "--data", &row]));
        ok(sb(&url, Some(ADMIN), &["endpoint", "delete", "digits"]));
        let gone = sb(&url, Some(ADMIN), &["endpoint", "show", "digits"]);
        assert!(!gone.status.success());
    })
    .await
    .unwrap();
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args([
            "worker",
            "--deployment",
            &format!("digits/blue={}", models().join("digits_mlp.onnx").display()),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so is not a file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn up_without_redis_server_says_how_to_get_one() {
    let dir = tempdir::Dir::new();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .env("PATH", "/nonexistent")
        .env_remove("SWITCHBOARD_REDIS")
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.0.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("redis-server not found") && err.contains("apt-get install redis-server"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_commands_end_to_end() {
    let mut c = Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await;
    let key = batch::batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    batch::spawn_batcher(&mut c, "b1", &[]);
    let digits = batch::Digits::load();
    let input = c.dir.0.join("rows.csv");
    digits.write_csv(&input, 2_000, true);
    let bad = c.dir.0.join("bad.csv");
    std::fs::write(&bad, "1,2,3\n1,2\n").unwrap();
    let url = c.gateway_url.clone();
    let dir = c.dir.0.clone();
    let (job_id, listed, failed) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
            cmd.env("SWITCHBOARD_URL", &url)
                .env("SWITCHBOARD_KEY", &key)
                .env_remove("SWITCHBOARD_ADMIN_KEY")
                .args(args)
                .output()
                .expect("run switchboard")
        };
        let out = dir.join("out").display().to_string();
        let done = ok(run(&[
            "job",
            "submit",
            "--endpoint",
            "digits",
            "--input",
            input.to_str().unwrap(),
            "--output",
            &out,
            "--format",
            "jsonl",
            "--wait",
        ]));
        let job: serde_json::Value = serde_json::from_str(&done).unwrap();
        assert_eq!(job["state"], "succeeded", "{done}");
        assert_eq!(job["rows_done"], 2_000);
        assert!(
            std::path::Path::new(&out)
                .join("part-00000.jsonl")
                .is_file()
        );
        let id = job["id"].as_str().unwrap().to_string();
        let status: serde_json::Value =
            serde_json::from_str(&ok(run(&["job", "status", &id]))).unwrap();
        assert_eq!(status["state"], "succeeded");
        let listed = ok(run(&["job", "list", "--state", "succeeded"]));
        // --wait fails unless the job succeeded (this one has a short row).
        let out2 = dir.join("out2").display().to_string();
        let failed = run(&[
            "job",
            "submit",
            "--endpoint",
            "digits",
            "--input",
            bad.to_str().unwrap(),
            "--output",
            &out2,
            "--bind",
            "input=0,1,2",
            "--wait",
        ]);
        (id, listed, failed)
    })
    .await
    .unwrap();
    assert!(listed.contains(&job_id), "{listed}");
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("failed") || err.contains("partially_succeeded"),
        "{err}"
    );
}
