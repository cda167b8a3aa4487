//! Every malformed ModelInfer request the suite knows, in one table, sent
//! through a real gateway to real workers: each row's status and the words
//! its message must contain (DESIGN.md's error table: INVALID_ARGUMENT
//! naming the input and what was expected). Valid requests at the edges of
//! each rule are answered, so strictness refuses only what it should.

mod common;

use bytes::Bytes;
use client::f32_request;
use client::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use client::proto::inference::infer_parameter::ParameterChoice as P;
use client::proto::inference::model_infer_request::InferRequestedOutputTensor;
use client::proto::inference::{InferParameter, InferTensorContents, ModelInferRequest};
use common::*;
use gpu_worker::scheduler::SchedulerConfig;
use tonic::Code;

fn row() -> Vec<Vec<f32>> {
    vec![vec![1.0; 64]]
}

/// A valid raw request for digits, changed by `f`.
fn raw(f: impl FnOnce(&mut ModelInferRequest)) -> ModelInferRequest {
    let mut r = f32_request("digits", "input", &row(), true).unwrap();
    f(&mut r);
    r
}

/// A valid typed (`contents`) request for digits, changed by `f`.
fn typed(f: impl FnOnce(&mut ModelInferRequest)) -> ModelInferRequest {
    let mut r = f32_request("digits", "input", &row(), false).unwrap();
    f(&mut r);
    r
}

fn contents(r: &mut ModelInferRequest) -> &mut InferTensorContents {
    r.inputs[0].contents.get_or_insert_with(Default::default)
}

fn param(p: P) -> InferParameter {
    InferParameter {
        parameter_choice: Some(p),
    }
}

fn set(r: &mut ModelInferRequest, key: &str, p: Option<P>) {
    r.parameters.insert(
        key.into(),
        InferParameter {
            parameter_choice: p,
        },
    );
}

fn output(name: &str) -> InferRequestedOutputTensor {
    InferRequestedOutputTensor {
        name: name.into(),
        ..Default::default()
    }
}

/// `rows` rows of digits input as raw bytes, with `shape` as given.
fn shaped(shape: Vec<i64>, bytes: usize) -> ModelInferRequest {
    raw(|r| {
        r.inputs[0].shape = shape;
        r.raw_input_contents[0] = Bytes::from(vec![0u8; bytes]);
    })
}

/// (what, request, status, words its message must contain)
fn table() -> Vec<(&'static str, ModelInferRequest, Code, &'static str)> {
    use Code::{InvalidArgument as Bad, NotFound, ResourceExhausted};
    let wide = |mut r: ModelInferRequest| {
        r.model_name = "wide".into();
        r
    };
    vec![
        // Names.
        (
            "unknown endpoint",
            raw(|r| r.model_name = "nope".into()),
            NotFound,
            "unknown endpoint 'nope'",
        ),
        (
            "empty model name",
            raw(|r| r.model_name.clear()),
            NotFound,
            "unknown endpoint ''",
        ),
        (
            "unknown deployment",
            raw(|r| r.model_version = "purple".into()),
            NotFound,
            "no deployment 'purple'",
        ),
        (
            "wrong input name",
            raw(|r| r.inputs[0].name = "pixels".into()),
            Bad,
            "missing input 'input'",
        ),
        (
            "empty input name",
            raw(|r| r.inputs[0].name.clear()),
            Bad,
            "missing input 'input'",
        ),
        (
            "an extra input",
            raw(|r| {
                let mut extra = r.inputs[0].clone();
                extra.name = "bias".into();
                r.inputs.push(extra);
                r.raw_input_contents.push(r.raw_input_contents[0].clone());
            }),
            Bad,
            "expected inputs [\"input\"], got [\"input\", \"bias\"]",
        ),
        (
            "the same input twice",
            raw(|r| {
                r.inputs.push(r.inputs[0].clone());
                r.raw_input_contents.push(r.raw_input_contents[0].clone());
            }),
            Bad,
            "input 'input' is given more than once",
        ),
        (
            "unknown output",
            raw(|r| r.outputs.push(output("logits"))),
            Bad,
            "unknown output 'logits'",
        ),
        (
            "an output twice",
            raw(|r| r.outputs.extend([output("label"), output("label")])),
            Bad,
            "output 'label' is requested more than once",
        ),
        (
            "no inputs",
            raw(|r| {
                r.inputs.clear();
                r.raw_input_contents.clear();
            }),
            Bad,
            "no inputs",
        ),
        // Datatypes.
        (
            "FP64 for FP32",
            shaped(vec![1, 64], 64 * 8).tap(|r| r.inputs[0].datatype = "FP64".into()),
            Bad,
            "input 'input': expected datatype FP32, got FP64",
        ),
        (
            "INT64 for FP32",
            shaped(vec![1, 64], 64 * 8).tap(|r| r.inputs[0].datatype = "INT64".into()),
            Bad,
            "input 'input': expected datatype FP32, got INT64",
        ),
        (
            "lowercase datatype",
            raw(|r| r.inputs[0].datatype = "fp32".into()),
            Bad,
            "input 'input': unsupported datatype 'fp32'",
        ),
        (
            "empty datatype",
            raw(|r| r.inputs[0].datatype.clear()),
            Bad,
            "input 'input': unsupported datatype ''",
        ),
        (
            "BYTES datatype",
            raw(|r| r.inputs[0].datatype = "BYTES".into()),
            Bad,
            "unsupported datatype 'BYTES'",
        ),
        (
            "FP16 datatype",
            raw(|r| r.inputs[0].datatype = "FP16".into()),
            Bad,
            "unsupported datatype 'FP16'",
        ),
        // Shapes.
        (
            "one column short",
            shaped(vec![1, 63], 63 * 4),
            Bad,
            "input 'input': expected shape [-1, 64] (-1 = any), got [1, 63]",
        ),
        (
            "one column over",
            shaped(vec![1, 65], 65 * 4),
            Bad,
            "expected shape [-1, 64] (-1 = any), got [1, 65]",
        ),
        (
            "rank 1",
            shaped(vec![64], 256),
            Bad,
            "input 'input': expected shape",
        ),
        ("rank 3", shaped(vec![1, 1, 64], 256), Bad, "got [1, 1, 64]"),
        ("rank 0", shaped(vec![], 256), Bad, "got []"),
        (
            "negative batch",
            shaped(vec![-1, 64], 256),
            Bad,
            "got [-1, 64]",
        ),
        (
            "negative width",
            shaped(vec![1, -64], 256),
            Bad,
            "got [1, -64]",
        ),
        (
            "empty batch",
            shaped(vec![0, 64], 0),
            Bad,
            "input 'input': empty batch",
        ),
        (
            "batch over max_batch_size",
            shaped(vec![33, 64], 33 * 256),
            Bad,
            "input 'input': batch of 33 exceeds max_batch_size 32",
        ),
        // Dims whose product overflows or is absurd (`wide` has no batch cap).
        (
            "i64::MAX rows, capped",
            shaped(vec![i64::MAX, 64], 256),
            Bad,
            "batch of 9223372036854775807 exceeds max_batch_size 32",
        ),
        (
            "i64::MAX rows",
            wide(shaped(vec![i64::MAX, 64], 256)),
            Bad,
            "input 'input': shape [9223372036854775807, 64] is too large",
        ),
        (
            "2^58 rows: bytes wrap past 2^64",
            wide(shaped(vec![1 << 58, 64], 256)),
            Bad,
            "is too large",
        ),
        (
            "2^40 rows: 2^48 bytes",
            wide(shaped(vec![1 << 40, 64], 256)),
            Bad,
            "is too large",
        ),
        (
            "2^40 rows, typed",
            wide(typed(|r| r.inputs[0].shape = vec![1 << 40, 64])),
            Bad,
            "shape [1099511627776, 64] has 70368744177664 elements, fp32_contents has 64",
        ),
        // Byte lengths.
        (
            "raw bytes short",
            shaped(vec![1, 64], 100),
            Bad,
            "input 'input': shape [1, 64] of FP32 needs 256 bytes, got 100",
        ),
        (
            "raw bytes over by one",
            shaped(vec![1, 64], 257),
            Bad,
            "needs 256 bytes, got 257",
        ),
        (
            "raw bytes empty",
            shaped(vec![1, 64], 0),
            Bad,
            "needs 256 bytes, got 0",
        ),
        (
            "two rows, one row of bytes",
            shaped(vec![2, 64], 256),
            Bad,
            "shape [2, 64] of FP32 needs 512 bytes, got 256",
        ),
        (
            "more raw contents than inputs",
            raw(|r| r.raw_input_contents.push(Bytes::new())),
            Bad,
            "1 inputs but 2 raw_input_contents",
        ),
        // Contents fields.
        (
            "contents and raw",
            raw(|r| contents(r).fp32_contents = vec![1.0; 64]),
            Bad,
            "input 'input': contents must not be given along with raw_input_contents",
        ),
        (
            "empty contents and raw",
            raw(|r| r.inputs[0].contents = Some(Default::default())),
            Bad,
            "contents must not be given along with raw_input_contents",
        ),
        (
            "no data at all",
            typed(|r| r.inputs[0].contents = None),
            Bad,
            "input 'input': no data",
        ),
        (
            "int_contents for FP32",
            typed(|r| {
                let c = contents(r);
                c.fp32_contents.clear();
                c.int_contents = vec![1; 64];
            }),
            Bad,
            "input 'input': int_contents given for a FP32 input; expected fp32_contents",
        ),
        (
            "bytes_contents for FP32",
            typed(|r| contents(r).bytes_contents = vec![Bytes::from_static(b"x")]),
            Bad,
            "bytes_contents given for a FP32 input",
        ),
        (
            "two fields",
            typed(|r| contents(r).fp64_contents = vec![1.0; 64]),
            Bad,
            "fp64_contents given for a FP32 input",
        ),
        (
            "typed values short",
            typed(|r| {
                contents(r).fp32_contents.pop();
            }),
            Bad,
            "input 'input': shape [1, 64] has 64 elements, fp32_contents has 63",
        ),
        (
            "typed values over",
            typed(|r| contents(r).fp32_contents.push(0.5)),
            Bad,
            "has 64 elements, fp32_contents has 65",
        ),
        (
            "typed values empty",
            typed(|r| contents(r).fp32_contents.clear()),
            Bad,
            "has 64 elements, fp32_contents has 0",
        ),
        (
            "INT8 value out of range",
            typed(|r| {
                r.inputs[0].datatype = "INT8".into();
                let c = contents(r);
                c.fp32_contents.clear();
                c.int_contents = vec![300; 64];
            }),
            Bad,
            "input 'input': value 300 in int_contents is out of range for INT8",
        ),
        (
            "UINT8 value out of range",
            typed(|r| {
                r.inputs[0].datatype = "UINT8".into();
                let c = contents(r);
                c.fp32_contents.clear();
                c.uint_contents = vec![256; 64];
            }),
            Bad,
            "value 256 in uint_contents is out of range for UINT8",
        ),
        // Reserved parameters.
        (
            "timeout as a string",
            raw(|r| set(r, "timeout", Some(P::StringParam("100".into())))),
            Bad,
            "parameter 'timeout' must be an integer (int64_param or uint64_param), got a string_param",
        ),
        (
            "timeout negative",
            raw(|r| set(r, "timeout", Some(P::Int64Param(-1)))),
            Bad,
            "parameter 'timeout' must not be negative, got -1",
        ),
        (
            "timeout as a double",
            raw(|r| set(r, "timeout", Some(P::DoubleParam(1e6)))),
            Bad,
            "parameter 'timeout' must be an integer (int64_param or uint64_param), got a double_param",
        ),
        (
            "timeout as a bool",
            raw(|r| set(r, "timeout", Some(P::BoolParam(true)))),
            Bad,
            "'timeout' must be an integer (int64_param or uint64_param), got a bool_param",
        ),
        (
            "timeout without a value",
            raw(|r| set(r, "timeout", None)),
            Bad,
            "'timeout' must be an integer (int64_param or uint64_param), got no value",
        ),
        (
            "priority as a string",
            raw(|r| set(r, "priority", Some(P::StringParam("1".into())))),
            Bad,
            "parameter 'priority' must be an integer (int64_param or uint64_param), got a string_param",
        ),
        (
            "priority negative",
            raw(|r| set(r, "priority", Some(P::Int64Param(-5)))),
            Bad,
            "parameter 'priority' must not be negative, got -5",
        ),
        (
            "binary_data_output as an int",
            raw(|r| set(r, "binary_data_output", Some(P::Int64Param(1)))),
            Bad,
            "parameter 'binary_data_output' must be a bool (bool_param), got an int64_param",
        ),
        (
            "binary_data_output as a string",
            raw(|r| set(r, "binary_data_output", Some(P::StringParam("true".into())))),
            Bad,
            "parameter 'binary_data_output' must be a bool (bool_param), got a string_param",
        ),
        (
            "output binary_data as a string",
            raw(|r| {
                let mut o = output("label");
                o.parameters
                    .insert("binary_data".into(), param(P::StringParam("yes".into())));
                r.outputs.push(o);
            }),
            Bad,
            "output 'label': parameter 'binary_data' must be a bool (bool_param), got a string_param",
        ),
        // Sizes: 2 MiB against the gateway's 1 MiB limit.
        (
            "message over --max-message",
            f32_request("digits", "input", &vec![vec![0.0; 64]; 8192], true).unwrap(),
            ResourceExhausted,
            "too large",
        ),
    ]
}

/// Requests at the edges of the rules above, all answered.
fn accepted() -> Vec<(&'static str, ModelInferRequest)> {
    vec![
        ("raw", raw(|_| ())),
        ("typed", typed(|_| ())),
        ("32 rows (max_batch_size)", shaped(vec![32, 64], 32 * 256)),
        (
            "timeout 0 (none)",
            raw(|r| set(r, "timeout", Some(P::Int64Param(0)))),
        ),
        (
            "timeout as uint64, huge",
            raw(|r| set(r, "timeout", Some(P::Uint64Param(u64::MAX)))),
        ),
        (
            "timeout 10 s",
            raw(|r| set(r, "timeout", Some(P::Int64Param(10_000_000)))),
        ),
        (
            "priority 1",
            raw(|r| set(r, "priority", Some(P::Uint64Param(1)))),
        ),
        (
            "priority past the levels",
            raw(|r| set(r, "priority", Some(P::Int64Param(i64::MAX)))),
        ),
        (
            "binary_data_output",
            typed(|r| set(r, "binary_data_output", Some(P::BoolParam(true)))),
        ),
        (
            "other parameters pass",
            raw(|r| set(r, "my_tag", Some(P::StringParam("x".into())))),
        ),
        (
            "outputs named",
            raw(|r| {
                let mut o = output("probabilities");
                o.parameters
                    .insert("binary_data".into(), param(P::BoolParam(true)));
                r.outputs.extend([output("label"), o]);
            }),
        ),
    ]
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for ModelInferRequest {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_its_status_and_words() {
    let mut opts = Options::default();
    opts.gateway.max_message = 1 << 20;
    let c = Cluster::start(opts).await;
    c.deploy_digits().await;
    // `wide`: the digits model with no batch cap, so only the size checks
    // stand between a hostile first dimension and an allocation.
    let uncapped = SchedulerConfig {
        max_batch_size: 0,
        ..Default::default()
    };
    c.start_worker(&[("wide", "a", "digits_mlp.onnx")], uncapped)
        .await;
    c.create_endpoint("wide", &["a"]).await;
    c.wait_routable(&c.gateway_url, "digits", &["blue", "green"])
        .await;
    c.wait_routable(&c.gateway_url, "wide", &["a"]).await;
    let mut client = GrpcInferenceServiceClient::connect(c.gateway_url.clone())
        .await
        .unwrap()
        .max_encoding_message_size(4 << 20);
    let admin: tonic::metadata::MetadataValue<_> = format!("Bearer {ADMIN}").parse().unwrap();
    let mut call = async |req: ModelInferRequest| {
        let mut r = tonic::Request::new(req);
        r.metadata_mut().insert("authorization", admin.clone());
        client.model_infer(r).await
    };

    let table = table();
    assert!(table.len() >= 40, "only {} cases", table.len());
    let mut wrong = Vec::new();
    for (what, req, code, words) in table {
        match call(req).await {
            Ok(_) => wrong.push(format!("{what}: answered, expected {code:?}")),
            Err(s) if s.code() != code || !s.message().contains(words) => wrong.push(format!(
                "{what}: {:?} '{}', expected {code:?} with '{words}'",
                s.code(),
                s.message()
            )),
            Err(_) => {}
        }
    }
    for (what, req) in accepted() {
        if let Err(s) = call(req).await {
            wrong.push(format!("{what}: refused with {s:?}, expected an answer"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
