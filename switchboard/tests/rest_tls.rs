//! REST over TLS: a gateway given a certificate serves REST with it as it
//! serves gRPC (HTTP/1.1 in ALPN); `curl --cacert` scores through it, and a
//! plaintext request to the TLS port is refused, not answered.

mod common;

use client::proto::tls::ServerTlsFiles;
use common::certs::Ca;
use common::rest::rows;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-m", "10"])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_serves_tls_with_the_grpc_certificate() {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    let ca = Ca::new(&c.dir.0.join("certs"), "ca");
    let leaf = ca.leaf("gateway");
    let g = c
        .start_rest_gateway(gateway::GatewayConfig {
            tls: Some(ServerTlsFiles {
                cert: leaf.cert.clone(),
                key: leaf.key.clone(),
                client_ca: None,
            }),
            ..Default::default()
        })
        .await;
    let https = g.http.replace("http://127.0.0.1", "https://localhost");
    let cacert = ca.cert.display().to_string();
    let auth = format!("Authorization: Bearer {key}");
    let ready = format!("{https}/v2/models/digits/ready");
    wait_until(
        "digits ready over REST/TLS",
        Duration::from_secs(15),
        || {
            let (cacert, auth, ready) = (cacert.clone(), auth.clone(), ready.clone());
            async move {
                curl(&["--fail", "--cacert", &cacert, "-H", &auth, &ready])
                    .await
                    .0
            }
        },
    )
    .await;

    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": rows()[0]}]});
    let (ok, out, err) = curl(&[
        "--fail-with-body",
        "--cacert",
        &cacert,
        "-H",
        &auth,
        "-H",
        "switchboard-deployment: green",
        "-d",
        &body.to_string(),
        &format!("{https}/v2/models/digits/infer"),
    ])
    .await;
    assert!(ok, "curl over TLS: {err}");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model_version"], "green", "{v}");

    // Plaintext to the TLS port: no answer, the connection is closed.
    let (ok, out, _) = curl(&[&format!("{}/v2/health/live", g.http)]).await;
    assert!(
        !ok && out.is_empty(),
        "plaintext got {:?}",
        String::from_utf8_lossy(&out)
    );
    // A certificate the client does not trust is refused by the client.
    let (ok, _, err) = curl(&[&format!("{https}/v2/health/live")]).await;
    assert!(!ok, "untrusted certificate accepted");
    assert!(err.contains("certificate") || err.contains("SSL"), "{err}");
}
