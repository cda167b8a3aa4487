//! Traces from client to model (gRPC and REST): a gateway, a worker and a batcher as
//! processes, each exporting over OTLP to a receiver this test runs. A
//! request sent with a known `traceparent` comes back as spans from the
//! gateway and the worker in that trace, one parent chain from the
//! caller's span to the model's execution; a job submitted with one gets
//! the batcher's plan, shard and finalize spans in its trace; a caller's
//! "not sampled" is obeyed by every process, and with a sampling ratio of
//! 0 a request that brings no trace is traced by none (no fragment of it
//! starts at the worker).

mod common;

use client::f32_request;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::switchboard::v1 as pb;
use client::proto::switchboard::v1::jobs_client::JobsClient;
use common::otlp::{Receiver, Span};
use common::procs::free_port;
use common::*;
use std::time::Duration;
use switchboard::redis_server::RedisServer;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";
const JOB_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const UNSAMPLED: &str = "11111111111111111111111111111111";
const REST_TRACE: &str = "22222222222222222222222222222222";

fn role(args: &[&str], otlp: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        // No trace starts here: only what callers sample is exported.
        .args(["--otlp-endpoint", otlp, "--otlp-sample-ratio", "0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN)
        // Export within 100 ms of a span's end, not the SDK's 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard")
}

fn with_trace<T>(msg: T, key: &str, traceparent: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let md = r.metadata_mut();
    md.insert("authorization", format!("Bearer {key}").parse().unwrap());
    md.insert("traceparent", traceparent.parse().unwrap());
    md.insert("tracestate", "caller=1".parse().unwrap());
    r
}

fn one<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {service} '{name}' span in {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [Span], of: &Span, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent == of.span_id && s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_and_a_job_are_traced_across_processes() {
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let dir = tempdir::Dir::new();
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let model = models().join("digits_mlp.onnx").canonicalize().unwrap();
    let spec = format!("digits/blue={}", model.display());
    let (worker, gateway, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let url_redis = redis.url();
    let _roles = [
        role(
            &[
                "worker",
                "--listen",
                &worker,
                "--deployment",
                &spec,
                "--redis",
                &url_redis,
            ],
            &otlp,
        ),
        role(
            &[
                "gateway",
                "--listen",
                &gateway,
                "--http-listen",
                &http,
                "--redis",
                &url_redis,
            ],
            &otlp,
        ),
        role(&["batcher", "--id", "b1", "--redis", &url_redis], &otlp),
    ];
    let url = format!("http://{gateway}");
    let admin = connect(&url, Some(ADMIN)).await;
    let key = create_digits(&admin, &model).await;
    let client = connect(&url, Some(&key)).await;
    wait_first_answer(&client).await;

    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut v2 = GrpcInferenceServiceClient::new(channel.clone());
    let req = || f32_request("digits", "input", &[vec![0.5; 64]], true).unwrap();
    // Not sampled by the caller: nobody may export it.
    v2.model_infer(with_trace(
        req(),
        &key,
        &format!("00-{UNSAMPLED}-{CALLER}-00"),
    ))
    .await
    .unwrap();
    v2.model_infer(with_trace(req(), &key, &format!("00-{TRACE}-{CALLER}-01")))
        .await
        .unwrap();
    // The REST front door takes the same header.
    let answer = common::rest::post_json(
        &format!("http://{http}{}", common::rest::INFER),
        Some(&format!("Bearer {key}")),
        &[("traceparent", &format!("00-{REST_TRACE}-{CALLER}-01"))],
        &common::rest::json_request(false),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.json());

    let digits = common::batch::Digits::load();
    let input = dir.0.join("rows.csv");
    digits.write_csv(&input, 50, true);
    let job_spec = common::batch::spec("digits", &input, &dir.0.join("out"));
    let submit = pb::SubmitJobRequest {
        spec: Some(job_spec),
    };
    let job = JobsClient::new(channel)
        .submit_job(with_trace(
            submit,
            &key,
            &format!("00-{JOB_TRACE}-{CALLER}-01"),
        ))
        .await
        .unwrap()
        .into_inner();
    let end = common::batch::wait_final(&client, &job.id, Duration::from_secs(60)).await;
    assert_eq!(end.rows_done, 50, "{end:?}");

    // The request: both processes' spans arrive within a few exports.
    let worker_svc = "switchboard-worker";
    let gateway_svc = "switchboard-gateway";
    wait_until(
        "the request's spans from both processes",
        Duration::from_secs(20),
        || {
            let t = receiver.trace(TRACE);
            async move {
                let has =
                    |svc: &str, name: &str| t.iter().any(|s| s.service == svc && s.name == name);
                has(gateway_svc, "attempt") && has(worker_svc, "execute")
            }
        },
    )
    .await;
    let t = receiver.trace(TRACE);
    let infer = "/inference.GRPCInferenceService/ModelInfer";
    let g = one(&t, gateway_svc, infer);
    assert_eq!(g.parent, CALLER, "the gateway's span is the caller's child");
    assert_eq!(children(&t, g, "authenticate").len(), 1, "{t:#?}");
    assert_eq!(children(&t, g, "route").len(), 1, "{t:#?}");
    let attempts = children(&t, g, "attempt");
    assert_eq!(attempts.len(), 1, "one attempt: {t:#?}");
    let w = one(&t, worker_svc, infer);
    assert_eq!(
        w.parent, attempts[0].span_id,
        "the worker's span is the attempt's child"
    );
    assert_eq!(children(&t, w, "queue wait").len(), 1, "{t:#?}");
    let exec = children(&t, w, "execute");
    assert_eq!(exec.len(), 1, "{t:#?}");
    // Over REST: the same chain, under the route's span.
    wait_until("the REST request's spans", Duration::from_secs(20), || {
        let t = receiver.trace(REST_TRACE);
        async move {
            t.iter()
                .any(|s| s.service == worker_svc && s.name == "execute")
        }
    })
    .await;
    let r = receiver.trace(REST_TRACE);
    let g_rest = one(&r, gateway_svc, common::rest::INFER);
    assert_eq!(g_rest.parent, CALLER);
    let attempt = children(&r, g_rest, "attempt");
    assert_eq!(attempt.len(), 1, "{r:#?}");
    assert_eq!(
        one(&r, worker_svc, infer).parent,
        attempt[0].span_id,
        "{r:#?}"
    );
    // The batch is a span of its own, linked both ways with the request.
    let all = receiver.spans();
    let batch = all
        .iter()
        .find(|s| {
            s.name == "batch execution" && s.links.contains(&(TRACE.into(), w.span_id.clone()))
        })
        .unwrap_or_else(|| panic!("no batch linked to the worker's request span: {all:#?}"));
    assert_eq!(batch.service, worker_svc);
    assert_eq!(batch.parent, "", "a batch has no parent");
    assert!(
        exec[0]
            .links
            .contains(&(batch.trace_id.clone(), batch.span_id.clone())),
        "execute links to its batch: {exec:#?}"
    );

    // The job: plan, shard and finalize in the submitter's trace, children
    // of the gateway's SubmitJob span.
    wait_until("the job's batcher spans", Duration::from_secs(20), || {
        let t = receiver.trace(JOB_TRACE);
        async move { t.iter().any(|s| s.name == "finalize") }
    })
    .await;
    let t = receiver.trace(JOB_TRACE);
    let submit = one(&t, gateway_svc, "/switchboard.v1.Jobs/SubmitJob");
    assert_eq!(submit.parent, CALLER);
    for step in ["plan", "shard", "finalize"] {
        let s = one(&t, "switchboard-batcher", step);
        assert_eq!(
            s.parent, submit.span_id,
            "{step} is SubmitJob's child: {t:#?}"
        );
    }

    // Spans end in order and are exported in order: by now the unsampled
    // request's would have arrived.
    assert!(
        receiver.trace(UNSAMPLED).is_empty(),
        "an unsampled trace was exported: {:#?}",
        receiver.trace(UNSAMPLED)
    );
    // The warm-up requests came with no trace: nothing of theirs, except
    // batches that also served the sampled request.
    let stray: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| ![TRACE, JOB_TRACE, REST_TRACE].contains(&s.trace_id.as_str()))
        .filter(|s| {
            !(s.name == "batch execution"
                && s.links.iter().all(|l| l.0 == TRACE || l.0 == REST_TRACE))
        })
        .collect();
    assert!(stray.is_empty(), "spans of untraced calls: {stray:#?}");
}
