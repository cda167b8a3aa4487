//! Batch jobs over REST: submitted, read, listed and cancelled through
//! `/v2/jobs`, the same jobs (same ids, same JSON) as over gRPC.

mod common;

use common::batch::{Digits, MINUTES, batch_endpoint, cluster, spawn_batcher};
use common::rest::{get, post_json, send};
use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_over_rest_are_the_jobs_of_grpc() {
    let mut c = cluster().await;
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    let g = c.start_rest_gateway(Default::default()).await;
    let bearer = format!("Bearer {key}");
    let auth = Some(bearer.as_str());
    let grpc = connect(&g.grpc, Some(&key)).await;
    let dir = c.dir.0.clone();
    let input = dir.join("rows.csv");
    Digits::load().write_csv(&input, 16, false);
    let spec = |out: &str| {
        json!({
            "endpoint": "digits",
            "input": input.display().to_string(),
            "output": dir.join(out).display().to_string(),
            "mini_batch_size": "auto",
        })
    };

    // No batcher yet: the job waits in the queue, and a DELETE cancels it.
    let a = post_json(&format!("{}/v2/jobs", g.http), auth, &[], &spec("first")).await;
    assert_eq!(a.status, 201, "{a:?}");
    let first = a.json();
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["state"], "queued");
    assert_eq!(first["deployment"], "blue");
    assert_eq!(a.headers["location"], format!("/v2/jobs/{id}"));
    // The same job over gRPC, and the same JSON as `job status` prints.
    let over_grpc = grpc.get_job(&id).await.unwrap();
    let rest = get(&format!("{}/v2/jobs/{id}", g.http), auth).await.json();
    assert_eq!(rest, gateway::rest::jobs::job_json(&over_grpc));
    let alias = get(&format!("{}/switchboard/v1/jobs/{id}", g.http), auth)
        .await
        .json();
    assert_eq!(alias["id"], json!(id));
    let list = get(
        &format!("{}/v2/jobs?endpoint=digits&state=queued", g.http),
        auth,
    )
    .await
    .json();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["jobs"][0]["id"], json!(id));
    let cancelled = send(
        "DELETE",
        &format!("{}/v2/jobs/{id}", g.http),
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    let state = cancelled.json()["state"].as_str().unwrap().to_string();
    assert!(
        ["cancelled", "cancelling"].contains(&state.as_str()),
        "{state}"
    );
    let over_grpc = grpc.get_job(&id).await.unwrap();
    assert_eq!(
        gateway::rest::jobs::job_json(&over_grpc)["state"],
        json!(state)
    );

    // Refusals: the error table holds for jobs too.
    let jobs_url = format!("{}/v2/jobs", g.http);
    let bad = |v: Value| {
        let url = jobs_url.clone();
        async move { post_json(&url, auth, &[], &v).await }
    };
    let e = bad(json!({"endpoint": "digits", "input": "x.csv", "output": "o", "colour": 1}))
        .await
        .error(400);
    assert!(e.contains("colour"), "{e}");
    let mut s = spec("x");
    s["input_format"] = json!("xls");
    assert!(bad(s).await.error(400).contains("xls"));
    let mut s = spec("x");
    s["endpoint"] = json!("nope");
    assert!(bad(s).await.error(404).contains("nope"));
    assert!(
        get(&format!("{}/v2/jobs/nope", g.http), auth)
            .await
            .error(404)
            .contains("nope")
    );
    let none = post_json(&format!("{}/v2/jobs", g.http), None, &[], &spec("x")).await;
    assert_eq!(none.status, 401, "{none:?}");
    assert!(
        get(&format!("{}/v2/jobs?state=sleeping", g.http), auth)
            .await
            .error(400)
            .contains("sleeping")
    );

    // With a batcher, a job submitted over REST is scored; gRPC sees it done.
    spawn_batcher(&mut c, "b1", &[]);
    let a = post_json(&format!("{}/v2/jobs", g.http), auth, &[], &spec("second")).await;
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.json()["id"].as_str().unwrap().to_string();
    let url = format!("{}/v2/jobs/{id}", g.http);
    wait_until("the REST job to succeed", MINUTES, || {
        let url = url.clone();
        async move { get(&url, auth).await.json()["state"] == "succeeded" }
    })
    .await;
    let done = get(&url, auth).await.json();
    assert_eq!(
        (done["rows_done"].clone(), done["rows_failed"].clone()),
        (json!(16), json!(0))
    );
    let over_grpc = grpc.get_job(&id).await.unwrap();
    assert_eq!(done, gateway::rest::jobs::job_json(&over_grpc));
}
