//! Property tests of V2 request decoding and validation: random byte
//! mutations of a valid encoded ModelInferRequest, decoded with prost (as
//! tonic's codec does) and checked by the functions the worker runs on every
//! request. No input may panic; every request decoded gets a definite
//! answer: accepted, or INVALID_ARGUMENT. `SWITCHBOARD_FUZZ_CASES` sets the
//! number of cases (default 256, a second or two in a debug build).

use super::*;
use crate::scheduler::validate;
use engine::{DataType, ModelSignature, TensorSpec};
use proptest::prelude::*;
use prost::Message;
use proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

fn cases() -> u32 {
    std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn digits() -> ModelSignature {
    let spec = |name: &str, dtype, dims: Vec<i64>| TensorSpec {
        name: name.into(),
        dtype,
        dims,
    };
    ModelSignature::new(
        vec![spec("input", DataType::Fp32, vec![-1, 64])],
        vec![
            spec("label", DataType::Int64, vec![-1]),
            spec("probabilities", DataType::Fp32, vec![-1, 10]),
        ],
    )
}

fn param(p: infer_parameter::ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(p),
    }
}

/// A valid request of each kind: raw, and typed with parameters and
/// requested outputs, so mutations reach every field the worker reads.
fn seeds() -> Vec<Vec<u8>> {
    use infer_parameter::ParameterChoice as P;
    let input = InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![2, 64],
        ..Default::default()
    };
    let raw = ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![input.clone()],
        raw_input_contents: vec![vec![7u8; 2 * 64 * 4].into()],
        ..Default::default()
    };
    let mut typed = ModelInferRequest {
        model_name: "digits".into(),
        model_version: "blue".into(),
        inputs: vec![InferInputTensor {
            contents: Some(InferTensorContents {
                fp32_contents: vec![1.5; 128],
                ..Default::default()
            }),
            ..input
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "label".into(),
            parameters: [("binary_data".to_string(), param(P::BoolParam(true)))].into(),
        }],
        ..Default::default()
    };
    typed.parameters = [
        ("timeout".to_string(), param(P::Int64Param(5_000))),
        ("priority".to_string(), param(P::Uint64Param(1))),
        ("binary_data_output".to_string(), param(P::BoolParam(false))),
    ]
    .into();
    vec![raw.encode_to_vec(), typed.encode_to_vec()]
}

/// What the worker does with a decoded request before it queues it.
fn check(req: &ModelInferRequest) -> Result<(), Status> {
    let sig = digits();
    let (inputs, _) = request_inputs(req).map_err(status_of)?;
    reserved(req).map_err(status_of)?;
    wanted_outputs(&sig, req)?;
    validate(&sig, 32, inputs).map_err(status_of)?;
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..12)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *byte;
            }
        }
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_requests_get_a_definite_answer(
        seed in 0usize..2,
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = seeds()[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        // An undecodable message is refused by the codec before the service.
        if let Ok(req) = ModelInferRequest::decode(bytes.as_slice())
            && let Err(s) = check(&req)
        {
            prop_assert_eq!(s.code(), tonic::Code::InvalidArgument, "{:?}", s);
            prop_assert!(!s.message().is_empty());
        }
    }

    /// Shapes and typed contents chosen at random, not only by mutation:
    /// hostile dims (negative, huge, overflowing) must be refused, never
    /// panic or allocate what they claim.
    #[test]
    fn random_shapes_and_contents_get_a_definite_answer(
        shape in proptest::collection::vec(
            prop_oneof![Just(-1i64), Just(0), 1i64..70, Just(i64::MAX), Just(1 << 40), any::<i64>()],
            0..5,
        ),
        dtype in prop_oneof![Just("FP32"), Just("INT8"), Just("UINT16"), Just("BOOL"), Just("BYTES")],
        ints in proptest::collection::vec(any::<i32>(), 0..130),
        floats in proptest::collection::vec(any::<f32>(), 0..130),
        raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600)),
    ) {
        let req = ModelInferRequest {
            model_name: "digits".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: dtype.into(),
                shape,
                contents: Some(InferTensorContents {
                    int_contents: ints,
                    fp32_contents: floats,
                    ..Default::default()
                }).filter(|_| raw.is_none()),
                ..Default::default()
            }],
            raw_input_contents: raw.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        if let Err(s) = check(&req) {
            prop_assert_eq!(s.code(), tonic::Code::InvalidArgument, "{:?}", s);
        }
    }
}

#[test]
fn the_seeds_are_accepted() {
    for s in seeds() {
        let req = ModelInferRequest::decode(s.as_slice()).unwrap();
        check(&req).unwrap();
    }
}

#[test]
fn reserved_parameters_are_strict() {
    use infer_parameter::ParameterChoice as P;
    let with = |k: &str, p: P| ModelInferRequest {
        parameters: [(k.to_string(), param(p))].into(),
        ..Default::default()
    };
    let refused = |r: ModelInferRequest, words: &str| match reserved(&r) {
        Err(EngineError::InvalidArgument(m)) => assert!(m.contains(words), "'{m}' lacks '{words}'"),
        other => panic!("expected a refusal with '{words}', got {other:?}"),
    };
    refused(
        with("timeout", P::StringParam("5".into())),
        "'timeout' must be an integer",
    );
    refused(
        with("timeout", P::Int64Param(-1)),
        "'timeout' must not be negative, got -1",
    );
    refused(with("timeout", P::DoubleParam(1.5)), "got a double_param");
    refused(
        with("priority", P::StringParam("high".into())),
        "'priority' must be an integer",
    );
    refused(
        with("priority", P::Int64Param(-2)),
        "'priority' must not be negative",
    );
    refused(
        with("binary_data_output", P::Int64Param(1)),
        "must be a bool",
    );
    let r = reserved(&with("timeout", P::Uint64Param(u64::MAX))).unwrap();
    assert_eq!(r.timeout, Some(std::time::Duration::from_micros(u64::MAX)));
    assert_eq!(
        reserved(&with("timeout", P::Int64Param(0)))
            .unwrap()
            .timeout,
        None
    );
    assert_eq!(
        reserved(&with("priority", P::Uint64Param(u64::MAX)))
            .unwrap()
            .priority,
        u32::MAX
    );
}
