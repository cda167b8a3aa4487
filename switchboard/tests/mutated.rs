//! Random byte mutations of valid encoded ModelInfer requests, sent as they
//! are (no client-side encoding) through a real gateway to real workers.
//! Every one gets a definite status: an answer, or a refusal from the
//! error table; never UNKNOWN, UNAVAILABLE or a dropped call (what a panic
//! in either server would look like), and both still answer afterwards.
//! `SWITCHBOARD_FUZZ_CASES` sets the number sent (default 256).

mod common;

use bytes::{Buf, BufMut};
use client::f32_request;
use client::proto::inference::infer_parameter::ParameterChoice as P;
use client::proto::inference::model_infer_request::InferRequestedOutputTensor;
use client::proto::inference::{InferParameter, ModelInferResponse};
use common::*;
use prost::Message;
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends a message's bytes as they are, and reads the answer's bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn cases() -> usize {
    std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Valid requests, raw and typed, with parameters and outputs, so that
/// mutations reach every field the servers read.
fn seeds() -> Vec<Vec<u8>> {
    let raw = f32_request("digits", "input", &[vec![2.0; 64], vec![3.0; 64]], true).unwrap();
    let mut typed = f32_request("digits", "input", &[vec![1.0; 64]], false).unwrap();
    typed.model_version = "green".into();
    typed.outputs.push(InferRequestedOutputTensor {
        name: "label".into(),
        ..Default::default()
    });
    for (k, v) in [
        ("timeout", P::Int64Param(5_000_000)),
        ("priority", P::Uint64Param(1)),
        ("binary_data_output", P::BoolParam(true)),
    ] {
        typed.parameters.insert(
            k.into(),
            InferParameter {
                parameter_choice: Some(v),
            },
        );
    }
    vec![raw.encode_to_vec(), typed.encode_to_vec()]
}

fn mutate(rng: &mut impl Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..6) {
        let n = b.len();
        let at = rng.random_range(0..n.max(1));
        match rng.random_range(0..5) {
            0 if n > 0 => b[at] ^= 1 << rng.random_range(0..8),
            1 if n > 0 => b[at] = rng.random(),
            2 => b.insert(at.min(n), rng.random()),
            3 if n > 0 => {
                b.remove(at);
            }
            4 => b.truncate(at),
            _ => {}
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_get_definite_statuses_and_crash_nothing() {
    let c = Cluster::start(Options::default()).await;
    c.deploy_digits().await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    let channel = tonic::transport::Endpoint::from_shared(c.gateway_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let admin: tonic::metadata::MetadataValue<_> = format!("Bearer {ADMIN}").parse().unwrap();
    let path = PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer");
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut send = async |body: Vec<u8>| {
        grpc.ready().await.expect("the gateway accepts calls");
        let mut r = tonic::Request::new(body);
        r.metadata_mut().insert("authorization", admin.clone());
        grpc.unary(r, path.clone(), Raw).await
    };

    // Seeded: a failure names its case and can be replayed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let seeds = seeds();
    let (mut answered, mut wrong) = (0, Vec::new());
    for case in 0..cases() {
        let body = mutate(&mut rng, seeds[case % seeds.len()].clone());
        match send(body.clone()).await {
            Ok(r) => {
                ModelInferResponse::decode(r.into_inner().as_slice()).expect("an answer decodes");
                answered += 1;
            }
            // A body that is not a ModelInferRequest: tonic's codec refuses it.
            Err(s) if s.code() == Code::Internal && s.message().contains("decode") => {}
            Err(s)
                if matches!(
                    s.code(),
                    Code::InvalidArgument | Code::NotFound | Code::DeadlineExceeded
                ) && !s.message().is_empty() => {}
            Err(s) => wrong.push(format!("case {case}: {s:?} for {body:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Both servers are still up and answer a valid request.
    let body = seeds[0].clone();
    send(body)
        .await
        .expect("still answered after the mutations");
    assert!(
        answered > 0,
        "no mutation was answered: the seeds are not valid?"
    );
}
