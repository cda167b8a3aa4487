//! The TorchScript backend against ONNX Runtime: the conv net's weights are
//! read out of `convnet.onnx`, the same network is built with tch and traced
//! into a TorchScript file, and both backends must give the fixture's
//! answers. No Python torch: tch writes the file.

use engine::fixtures::{Fixture, assert_close};
use engine::torch_fixtures::{tempdir, traced_convnet};
use engine::{DataType, EngineError, OrtOptions, open_model};

const SIDECAR: &str = r#"{"inputs": [{"datatype": "FP32", "dims": [-1, 3, 32, 32]}],
 "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]}]}"#;

#[test]
fn torchscript_and_onnx_runtime_give_the_fixture_answers() {
    let dir = tempdir("agree");
    let pt = traced_convnet(dir.path(), SIDECAR);
    let fixture = Fixture::load("convnet").unwrap();
    let torch = open_model(&pt, &OrtOptions::default()).unwrap();
    let ort = open_model(&fixture.model_path(), &OrtOptions::default()).unwrap();
    assert_eq!(torch.platform(), "pytorch_libtorch");
    assert_eq!(ort.platform(), "onnxruntime_onnx");
    let sig = torch.signature();
    assert_eq!(sig.inputs[0].name, "INPUT__0", "Triton's default name");
    assert_eq!(sig.outputs[0].name, "logits", "the sidecar's name");
    assert!(sig.batched);
    let (mut t, mut o) = (torch.create().unwrap(), ort.create().unwrap());
    let want = &fixture.outputs["logits"];
    // A batch of 16 and single rows: a batch must not change a row's answer.
    for (from, to) in [(0, 16), (3, 4), (15, 16)] {
        let input = fixture.inputs["input"].rows(from, to);
        let got_t = t.run(vec![input.clone()]).unwrap();
        let got_o = o.run(vec![input]).unwrap();
        assert_close("logits (torch)", &got_t[0], want, from, to, 1e-4);
        assert_close("logits (ort)", &got_o[0], want, from, to, 1e-4);
    }
}

#[test]
fn a_torchscript_model_without_a_valid_sidecar_is_refused_with_the_reason() {
    let dir = tempdir("sidecar");
    let pt = traced_convnet(dir.path(), SIDECAR);
    let cases = [
        (None, "records no input types or shapes"),
        (Some("{"), "EOF"),
        (
            Some(
                r#"{"inputs":[{"datatype":"UINT32","dims":[-1]}],"outputs":[{"datatype":"FP32","dims":[-1,10]}]}"#,
            ),
            "INPUT__0: datatype UINT32 has no libtorch type",
        ),
        (
            Some(
                r#"{"inputs":[{"datatype":"FP32","dims":[-2,3]}],"outputs":[{"datatype":"FP32","dims":[-1,10]}]}"#,
            ),
            "dims [-2, 3]",
        ),
        (Some(r#"{"inputs":[],"outputs":[]}"#), "declares no inputs"),
        (
            Some(r#"{"inputs":[{"datatype":"FP32","dims":[-1],"shape":[1]}],"outputs":[]}"#),
            "unknown field `shape`",
        ),
    ];
    for (sidecar, words) in cases {
        let side = engine::sidecar_path(&pt);
        match sidecar {
            Some(text) => std::fs::write(&side, text).unwrap(),
            None => std::fs::remove_file(&side).unwrap(),
        }
        match open_model(&pt, &OrtOptions::default()) {
            Err(EngineError::InvalidArgument(m)) => assert!(m.contains(words), "{m}"),
            Err(e) => panic!("{sidecar:?}: {e:?}"),
            Ok(_) => panic!("{sidecar:?} was accepted"),
        }
    }
}

#[test]
fn a_run_against_the_sidecar_fails_as_internal_and_the_instance_serves_on() {
    let dir = tempdir("mismatch");
    // Declares INT64 logits; the module gives FP32.
    let pt = traced_convnet(
        dir.path(),
        r#"{"inputs": [{"datatype": "FP32", "dims": [-1, 3, 32, 32]}],
            "outputs": [{"datatype": "INT64", "dims": [-1, 10]}]}"#,
    );
    let fixture = Fixture::load("convnet").unwrap();
    let factory = open_model(&pt, &OrtOptions::default()).unwrap();
    let mut b = factory.create().unwrap();
    let input = fixture.inputs["input"].rows(0, 2);
    match b.run(vec![input.clone()]) {
        Err(EngineError::Internal(m)) => assert!(m.contains("its sidecar declares INT64"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A wrong shape is libtorch's error, as INTERNAL, not a crash.
    let wrong = engine::Tensor::from_f32(vec![1, 3, 2, 2], &[0.0; 12]);
    match b.run(vec![wrong]) {
        // libtorch's message, without the C++ stack trace it appends.
        Err(EngineError::Internal(m)) => assert!(!m.contains("frame #"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(input.dtype, DataType::Fp32);
}
