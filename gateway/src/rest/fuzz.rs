//! Property tests of the REST request parsing: bodies of any bytes, with
//! any `Inference-Header-Content-Length`, and valid requests with bytes
//! changed. No body may panic the gateway; every refusal is a 400 that says
//! what is wrong; and a request that parses has one raw content per input
//! (the binary section's every byte claimed: `Section::finish`).
//! `SWITCHBOARD_FUZZ_CASES` sets the cases (default 256).

use super::binary;
use super::json;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

const VALID: &str = r#"{"id":"x","parameters":{"timeout":10,"binary_data_output":true},"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]},{"name":"b","shape":[1],"datatype":"BYTES","data":["hi"]},{"name":"c","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}}],"outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#;

/// Parses `body` as the REST handler does; refusals must be 400s.
fn parse(body: Vec<u8>, header_length: Option<String>) -> Result<(), String> {
    let mut h = HeaderMap::new();
    if let Some(v) = header_length.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(binary::HEADER_LENGTH, v);
    }
    let result = binary::split(&h, Bytes::from(body))
        .and_then(|(head, rest)| json::request("m", None, &head, rest));
    match result {
        Ok((req, _)) => prop_assert_or(
            req.inputs.len() == req.raw_input_contents.len()
                && req.inputs.iter().all(|t| t.contents.is_none()),
            "one raw content per input, no typed contents",
        ),
        Err(e) if e.status == StatusCode::BAD_REQUEST && !e.message.is_empty() => Ok(()),
        Err(e) => Err(format!("refused with {} '{}'", e.status, e.message)),
    }
}

fn prop_assert_or(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_string()) }
}

fn valid_body() -> Vec<u8> {
    let mut b = VALID.as_bytes().to_vec();
    b.extend_from_slice(&[7; 16]);
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_bytes_are_answered_not_panicked_on(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        length in proptest::option::of(0usize..600),
    ) {
        parse(body, length.map(|l| l.to_string())).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn a_changed_valid_request_is_parsed_or_refused(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        length in proptest::option::of(0usize..VALID.len() + 32),
    ) {
        let mut body = valid_body();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if let Some(c) = cut {
            body.truncate(c.index(body.len()));
        }
        let length = length.unwrap_or(VALID.len()).to_string();
        parse(body, Some(length)).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_unchanged_request_parses() {
    assert_eq!(parse(valid_body(), Some(VALID.len().to_string())), Ok(()));
}
