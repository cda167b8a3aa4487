use super::*;
use proto::inference::model_infer_response::InferOutputTensor;

#[test]
fn json_and_binary_inputs_become_raw_contents() {
    let json = br#"{"id":"r1","parameters":{"timeout":5000,"binary_data_output":true},
        "inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[[1,2]]},
                  {"name":"b","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}],
        "outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#;
    let bin = Bytes::from_static(&[1, 0, 0, 0, 2, 0, 0, 0]);
    let (req, shown) = request("digits", Some("blue"), json, bin).unwrap();
    assert_eq!(req.model_name, "digits");
    assert_eq!(req.model_version, "blue");
    assert_eq!(req.id, "r1");
    assert_eq!(req.raw_input_contents.len(), 2);
    assert_eq!(
        &req.raw_input_contents[0][..],
        &[0, 0, 128, 63, 0, 0, 0, 64]
    );
    assert_eq!(&req.raw_input_contents[1][..], &[1, 0, 0, 0, 2, 0, 0, 0]);
    assert!(
        req.inputs[1].parameters.is_empty(),
        "binary_data_size stays here"
    );
    assert!(!req.parameters.contains_key(BINARY_OUTPUT));
    assert!(req.outputs[0].parameters.is_empty());
    assert_eq!(timeout(&req), Some(std::time::Duration::from_millis(5)));
    assert!(!shown.binary("y"));
    assert!(shown.binary("z"));
}

#[test]
fn malformed_requests_name_what_is_wrong() {
    for (json, fragment) in [
        (&br#"{"inputs":[{"#[..], "malformed"),
        (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP33","data":[1]}]}"#, "unknown datatype"),
        (br#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1]}]}"#, "input 'a'"),
        (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#, "neither"),
        (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#, "bytes of binary data are left"),
        (br#"{"parameters":{"x":[1]},"inputs":[]}"#, "parameter 'x'"),
        (br#"{"parameters":{"binary_data_output":1},"inputs":[]}"#, "must be a bool"),
    ] {
        let e = request("m", None, json, Bytes::new()).expect_err("refused");
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains(fragment), "'{}' lacks '{fragment}'", e.message);
    }
}

#[test]
fn answers_put_binary_outputs_after_the_json() {
    let resp = ModelInferResponse {
        model_name: "digits".into(),
        model_version: "blue".into(),
        outputs: vec![
            InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1],
                ..Default::default()
            },
            InferOutputTensor {
                name: "z".into(),
                datatype: "INT64".into(),
                shape: vec![1],
                ..Default::default()
            },
        ],
        raw_output_contents: vec![
            Bytes::from_static(&[0, 0, 128, 63]),
            Bytes::from_static(&[7, 0, 0, 0, 0, 0, 0, 0]),
        ],
        ..Default::default()
    };
    let shown = Presentation {
        all_binary: false,
        binary: [("z".to_string(), true)].into(),
    };
    let body = answer(&resp, &shown).unwrap();
    let n = body.header_length.unwrap();
    let v: Value = serde_json::from_slice(&body.bytes[..n]).unwrap();
    assert_eq!(v["model_version"], "blue");
    assert_eq!(v["outputs"][0]["data"], serde_json::json!([1.0]));
    assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert_eq!(&body.bytes[n..], &[7, 0, 0, 0, 0, 0, 0, 0]);
    let plain = answer(&resp, &Presentation::default()).unwrap();
    assert!(plain.header_length.is_none());
}
