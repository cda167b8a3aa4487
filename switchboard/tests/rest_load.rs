//! `loadtest --protocol http`: the load tool drives the gateway's REST front
//! door (binary tensors and JSON data) as it drives gRPC, so each
//! protocol's cost is measured with one tool.

mod common;

use common::rest::digits_cluster;
use loadtest::{LoadConfig, Mode, Protocol};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_drives_grpc_and_rest_alike() {
    let (_c, g, key) = digits_cluster(Default::default()).await;
    let base = LoadConfig {
        model: "digits".into(),
        token: Some(key.clone()),
        pin: Some("blue".into()),
        mode: Mode::Closed { concurrency: 4 },
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        batch: 8,
        ..Default::default()
    };
    for (url, protocol, raw, name) in [
        (&g.grpc, Protocol::Grpc, true, "grpc"),
        (&g.http, Protocol::Http, true, "http-binary"),
        (&g.http, Protocol::Http, false, "http-json"),
    ] {
        let r = loadtest::run(LoadConfig {
            url: url.clone(),
            protocol,
            raw,
            ..base.clone()
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(r.protocol, name);
        assert_eq!(r.errors, 0, "{name}: {:?}", r.errors_by_code);
        assert!(r.requests > 0, "{name}: nothing answered");
        // The server's batch statistics come over the same protocol.
        assert!(
            !r.server_batches.is_empty() && r.server_batches.keys().all(|&b| b % 8 == 0),
            "{name}: 8-row requests, batches {:?}",
            r.server_batches
        );
    }

    // Refusals count by the gRPC code their HTTP status stands for; a bad
    // key already fails the metadata call, before any load.
    let err = loadtest::run(LoadConfig {
        url: g.http.clone(),
        protocol: Protocol::Http,
        token: Some("sbk_wrong".into()),
        ..base.clone()
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    let err = loadtest::run(LoadConfig {
        url: g.http.replace("http://", "https://"),
        protocol: Protocol::Http,
        ..base
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("plaintext"), "{err:#}");
}
