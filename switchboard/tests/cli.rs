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

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The lines of a table, with the header first, and each line's cells.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn fingerprint(key: &str) -> String {
    gateway::secrets::fingerprint(&gateway::secrets::hash(key))
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
            let created = json(&ok(sb(
                &url,
                admin,
                &["endpoint", "create", "digits", "--auth", "key"],
            )));
            assert_eq!(created["endpoint"]["name"], "digits", "{created}");
            assert_eq!(created["endpoint"]["auth_mode"], "key", "{created}");
            let key = created["primary_key"].as_str().unwrap().to_string();
            let secondary = created["secondary_key"].as_str().unwrap();
            assert!(key.starts_with("sbk_") && secondary.starts_with("sbk_") && key != secondary);
            ok(sb(
                &url,
                admin,
                &["deployment", "create", "digits", "blue", "--model", &model],
            ));
            let d = json(&ok(sb(
                &url,
                admin,
                &["deployment", "create", "digits", "green", "--model", &model],
            )));
            // The endpoint as it now is: the first deployment took all traffic.
            assert_eq!(
                d["traffic"],
                serde_json::json!([{"deployment": "blue", "weight": 100}, {"deployment": "green", "weight": 0}]),
                "{d}"
            );
            let t = json(&ok(sb(
                &url,
                admin,
                &["traffic", "digits", "blue=90", "green=10"],
            )));
            assert_eq!(
                t["traffic"],
                serde_json::json!([{"deployment": "blue", "weight": 90}, {"deployment": "green", "weight": 10}]),
                "{t}"
            );
            // Weights must sum to 100.
            let bad = sb(&url, admin, &["traffic", "digits", "blue=50", "green=10"]);
            assert!(!bad.status.success());
            assert!(String::from_utf8_lossy(&bad.stderr).contains("sum to 60"));
            let m = json(&ok(sb(&url, admin, &["mirror", "digits", "green", "10"])));
            assert_eq!(m["mirror"], serde_json::json!({"deployment": "green", "percent": 10}));

            let show = json(&ok(sb(&url, admin, &["endpoint", "show", "digits"])));
            assert_eq!(show["name"], "digits");
            assert_eq!(show["auth_mode"], "key");
            assert_eq!(show["description"], "");
            assert_eq!(show["traffic"], t["traffic"]);
            assert_eq!(show["mirror"], m["mirror"]);
            let deployments = show["deployments"].as_array().unwrap();
            let names: Vec<&str> = deployments.iter().map(|d| d["name"].as_str().unwrap()).collect();
            assert_eq!(names, ["blue", "green"], "{show}");
            assert_eq!(deployments[0]["model_uri"], model.as_str());
            assert_eq!(deployments[0]["max_batch_size"], 32);
            assert!(deployments[0]["replicas"].is_u64(), "{show}");
            let shown = ok(sb(&url, admin, &["endpoint", "show", "digits", "-o", "table"]));
            let tables: Vec<&str> = shown.split("\n\n").collect();
            assert_eq!(tables.len(), 2, "{shown}");
            let e = table(tables[0]);
            assert_eq!(e[0], ["NAME", "AUTH", "TRAFFIC", "MIRROR", "DEPLOYMENTS", "DESCRIPTION"], "{shown}");
            assert_eq!(e[1], ["digits", "key", "blue=90,green=10", "green=10", "blue,green"], "{shown}");
            assert_eq!(e.len(), 2, "{shown}");
            let d = table(tables[1]);
            assert_eq!(d[0][..3], ["DEPLOYMENT", "WEIGHT", "REPLICAS"], "{shown}");
            assert_eq!((d[1][..2].join(" "), d[2][..2].join(" ")), ("blue 90".into(), "green 10".into()));
            assert_eq!(d[1].last().unwrap(), &model);
            assert_eq!(d.len(), 3, "{shown}");

            // A second endpoint: a list has a row (and an element) per endpoint.
            let fraud = json(&ok(sb(
                &url,
                admin,
                &["endpoint", "create", "fraud", "--auth", "token", "--description", "card fraud"],
            )));
            assert_eq!(fraud["endpoint"]["auth_mode"], "token");
            let list = json(&ok(sb(&url, admin, &["endpoint", "list"])));
            let mut names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
            names.sort();
            assert_eq!(names, ["digits", "fraud"], "{list}");
            // A page at a time: the first page names where the next starts.
            let first = sb(&url, admin, &["endpoint", "list", "--page-size", "1"]);
            let names: Vec<String> = json(&ok(first.clone())).as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
            assert_eq!(names, ["digits"]);
            let more = String::from_utf8_lossy(&first.stderr).to_string();
            assert!(more.contains("more: --page-token digits"), "{more}");
            let second = sb(&url, admin, &["endpoint", "list", "--page-size", "1", "--page-token", "digits"]);
            assert!(!String::from_utf8_lossy(&second.stderr).contains("more:"), "no page after the last");
            assert_eq!(json(&ok(second))[0]["name"], "fraud");
            let rows = table(&ok(sb(&url, admin, &["endpoint", "list", "--output", "table"])));
            assert_eq!(rows.len(), 3, "{rows:?}");
            assert_eq!(rows[0][0], "NAME");
            let fraud_row = rows.iter().find(|r| r[0] == "fraud").unwrap();
            assert_eq!(fraud_row[1..], ["token", "-", "-", "-", "card", "fraud"], "{rows:?}");
            let deleted = json(&ok(sb(&url, admin, &["endpoint", "delete", "fraud"])));
            assert_eq!(deleted, serde_json::json!({"endpoint": "fraud", "deleted": true}));

            // Keys: fingerprints only, never the key itself.
            let keys_out = ok(sb(&url, admin, &["keys", "show", "digits"]));
            assert!(!keys_out.contains("sbk_"), "{keys_out}");
            let keys = json(&keys_out);
            assert_eq!(keys["endpoint"], "digits");
            assert_eq!(keys["keys"][0]["slot"], "primary", "{keys}");
            assert_eq!(keys["keys"][0]["fingerprint"], fingerprint(&key).as_str(), "{keys}");
            assert_eq!(keys["keys"][1]["fingerprint"], fingerprint(secondary).as_str(), "{keys}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let created_s = keys["keys"][0]["created_unix_s"].as_i64().unwrap();
            assert!((now - 600..=now + 60).contains(&created_s), "{keys}");
            let key_rows = table(&ok(sb(&url, admin, &["keys", "show", "digits", "-o", "table"])));
            assert_eq!(key_rows[0], ["ENDPOINT", "SLOT", "FINGERPRINT", "CREATED"]);
            assert_eq!(key_rows[1][..3], ["digits".to_string(), "primary".into(), fingerprint(&key)]);
            assert_eq!(key_rows.len(), 3, "{key_rows:?}");

            let token = json(&ok(sb(
                &url,
                Some(&key),
                &["token", "get", "digits", "--ttl", "60"],
            )));
            assert!(token["token"].as_str().unwrap().starts_with("sbt_"), "{token}");
            let expires = token["expires_unix_s"].as_i64().unwrap();
            assert!((now + 30..=now + 120).contains(&expires), "{token}");
            (key, token["token"].as_str().unwrap().to_string())
        }
    })
    .await
    .unwrap();
    let (key, token) = out;
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
            .args(["invoke", "--key", &key, "digits", "--deployment", "green", "--data", &row])
            .output()
            .unwrap();
        let out = ok(o);
        assert!(out.contains("\"model_version\": \"green\""), "{out}");
        assert!(out.contains("probabilities"), "{out}");
        // A JSON file of rows, with a token from SWITCHBOARD_KEY.
        let file = std::env::temp_dir().join(format!("rows-{}.json", std::process::id()));
        std::fs::write(&file, "[[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,0,1,2,3,4,5,6,7,8,9,10,11,12]]").unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .env("SWITCHBOARD_URL", &url)
            .env("SWITCHBOARD_KEY", &token)
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
        // Durations with units in one form, bare seconds in the other.
        let report = std::env::temp_dir().join(format!("lt-{}.json", std::process::id()));
        for own_flags in [true, false] {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
            cmd.env("SWITCHBOARD_URL", &url).env("SWITCHBOARD_KEY", &key).arg("loadtest");
            if own_flags {
                cmd.args(["--url", &url, "--token", &key, "--duration", "300ms", "--warmup", "0s"]);
            } else {
                cmd.args(["--duration", "0.3", "--warmup", "0"]);
            }
            let o = cmd
                .args(["--model", "digits", "--concurrency", "2", "--quiet"])
                .arg("--report-json")
                .arg(&report)
                .output()
                .unwrap();
            ok(o);
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
            assert_eq!(r["duration_s"].as_f64(), Some(0.3), "{r}");
        }
        let _ = std::fs::remove_file(&report);
        let regen = json(&ok(sb(&url, Some(ADMIN), &["keys", "regenerate", "digits", "--slot", "secondary"])));
        let new_key = regen["key"].as_str().unwrap();
        assert!(new_key.starts_with("sbk_"), "{regen}");
        assert_eq!(regen["slot"], "secondary", "{regen}");
        assert_eq!(regen["fingerprint"], fingerprint(new_key).as_str(), "{regen}");
        ok(sb(&url, Some(ADMIN), &["traffic", "digits", "blue=100"]));
        let m = json(&ok(sb(&url, Some(ADMIN), &["mirror", "digits", "green", "0"])));
        assert_eq!(m["mirror"], serde_json::Value::Null, "{m}");
        ok(sb(&url, Some(ADMIN), &["deployment", "delete", "digits", "green"]));
        let updated = json(&ok(sb(&url, Some(ADMIN), &["endpoint", "update", "digits", "--auth", "none"])));
        assert_eq!(updated["auth_mode"], "none", "{updated}");
        ok(sb(&url, None, &["invoke", "digits", "--data", &row]));
        ok(sb(&url, Some(ADMIN), &["endpoint", "delete", "digits"]));
        let gone = sb(&url, Some(ADMIN), &["endpoint", "show", "digits"]);
        assert!(!gone.status.success());
    })
    .await
    .unwrap();
}

fn help(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    ok(o)
}

#[test]
fn client_flags_belong_to_client_commands_only() {
    for role in ["gateway", "worker", "batcher", "up"] {
        let h = help(&[role]);
        assert!(
            h.contains("--listen") || h.contains("--redis"),
            "{role}: {h}"
        );
        assert!(!h.contains("--url") && !h.contains("--key"), "{role}: {h}");
        assert!(!h.contains("SWITCHBOARD_URL"), "{role}: {h}");
    }
    for cmd in [
        &["endpoint"][..],
        &["endpoint", "show"],
        &["deployment", "create"],
        &["traffic"],
        &["mirror"],
        &["keys", "show"],
        &["token", "get"],
        &["invoke"],
        &["job"],
        &["job", "list"],
    ] {
        let h = help(cmd);
        assert!(
            h.contains("--url <URL>") && h.contains("--key <KEY>"),
            "{cmd:?}: {h}"
        );
    }
    for cmd in [
        &["endpoint", "show"][..],
        &["traffic"],
        &["keys"],
        &["job", "status"],
    ] {
        assert!(help(cmd).contains("-o, --output <OUTPUT>"), "{cmd:?}");
    }
    // `job submit --output` is the predictions' folder.
    assert!(help(&["job", "submit"]).contains("--output <OUTPUT>"));
    assert!(!help(&["job", "submit"]).contains("-o, --output"));
    let lt = help(&["loadtest"]);
    assert!(
        lt.contains("--url <URL>") && lt.contains("--token <TOKEN>"),
        "{lt}"
    );
    // Not a flag of the program as a whole any more.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--url", "http://127.0.0.1:1", "endpoint", "list"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unexpected argument '--url'"));
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
        let listed = json(&ok(run(&["job", "list", "--state", "succeeded"])));
        let rows = table(&ok(run(&["job", "list", "-o", "table"])));
        assert_eq!(rows[0][..3], ["ID", "STATE", "ENDPOINT"], "{rows:?}");
        assert!(
            rows[1..]
                .iter()
                .any(|r| r[..3] == [id.clone(), "succeeded".into(), "digits".into()]),
            "{rows:?}"
        );
        let one = table(&ok(run(&["job", "status", &id, "-o", "table"])));
        assert_eq!(one.len(), 2, "{one:?}");
        assert_eq!(one[1][4..7], ["2000", "0", "2000"], "{one:?}");
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
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [job_id.as_str()], "{listed}");
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("failed") || err.contains("partially_succeeded"),
        "{err}"
    );
}
