//! Property tests of job-spec checking and decoding: specs built from
//! random parts (locations with and without schemes and extensions, limits
//! at and past their bounds, bindings) are accepted or refused with a
//! message, never a panic, and what is accepted keeps every rule; a job
//! hash whose spec JSON is mutated decodes to a record or to nothing.
//! `SWITCHBOARD_FUZZ_CASES` sets the cases (default 256).

use crate::{Binding, Format, JobRecord, JobSpec, scheme_supported};
use proptest::prelude::*;
use std::collections::HashMap;

fn cases() -> u32 {
    std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A location: maybe a scheme, a path of odd parts, maybe an extension.
fn location() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just(""),
        Just("file://"),
        Just("store+file://"),
        Just("s3://"),
        Just("memory://"),
        Just("://"),
    ];
    let part = prop_oneof![
        Just("in".to_string()),
        Just("out".to_string()),
        Just("".to_string()),
        Just(" ".to_string()),
        Just("..".to_string()),
        "[a-z]{1,4}".prop_map(|s| s),
        any::<String>(),
    ];
    let ext = prop_oneof![
        Just(""),
        Just(".csv"),
        Just(".PARQUET"),
        Just(".jsonl"),
        Just(".txt"),
        Just("."),
        Just("/"),
    ];
    (scheme, proptest::collection::vec(part, 0..4), ext)
        .prop_map(|(s, parts, e)| format!("{s}{}{e}", parts.join("/")))
}

fn format() -> impl Strategy<Value = Option<Format>> {
    proptest::option::of(prop_oneof![
        Just(Format::Csv),
        Just(Format::Jsonl),
        Just(Format::Parquet)
    ])
}

fn spec() -> impl Strategy<Value = JobSpec> {
    (
        (location(), location(), format(), format()),
        (
            prop_oneof![Just(-1i64), Just(-2), Just(0), Just(i64::MIN), any::<i64>()],
            prop_oneof![Just(0u32), Just(100), Just(101), any::<u32>()],
        ),
        proptest::collection::vec(
            (
                "[a-z]{0,3}",
                proptest::collection::vec("[a-z0-9]{0,3}", 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(
            |((input, output, fi, fo), (threshold, retries), bindings)| {
                let mut s = JobSpec::new("digits", "blue", "/m.onnx", &input, &output);
                s.input_format = fi;
                s.output_format = fo;
                s.error_threshold = threshold;
                s.max_retries = retries;
                s.bindings = bindings
                    .into_iter()
                    .map(|(input, columns)| Binding { input, columns })
                    .collect();
                s
            },
        )
}

fn spec_json() -> String {
    let mut s = JobSpec::new("digits", "blue", "/m.onnx", "in.csv", "out/");
    s.bindings = vec![Binding {
        input: "input".into(),
        columns: vec!["a".into(), "0".into()],
    }];
    serde_json::to_string(&s).unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn specs_are_accepted_only_when_every_rule_holds(s in spec()) {
        match s.check() {
            Ok(()) => {
                for loc in [&s.input, &s.output] {
                    prop_assert!(!loc.trim().is_empty());
                    if let Some((scheme, _)) = loc.split_once("://") {
                        prop_assert!(scheme_supported(scheme), "{}", loc);
                    }
                }
                prop_assert_ne!(s.input.trim_end_matches('/'), s.output.trim_end_matches('/'));
                prop_assert!(s.error_threshold >= -1 && s.max_retries <= 100);
                prop_assert!(s.bindings.iter().all(|b| !b.input.is_empty() && !b.columns.is_empty()));
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    /// A job hash as Redis might hold it after a bad write: the spec's JSON
    /// with bytes changed, counters of any text.
    #[test]
    fn mutated_job_hashes_decode_or_not(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        state in prop_oneof![Just("running".to_string()), any::<String>()],
        counter in prop_oneof![Just("12".to_string()), Just("-5".to_string()), any::<String>()],
    ) {
        let mut json = spec_json().into_bytes();
        for (at, byte) in edits {
            let i = at % json.len();
            json[i] = byte;
        }
        let h: HashMap<String, String> = [
            ("spec".to_string(), String::from_utf8_lossy(&json).into_owned()),
            ("state".to_string(), state),
            ("rows_done".to_string(), counter.clone()),
            ("shards_total".to_string(), counter),
        ]
        .into();
        if let Some(r) = JobRecord::from_hash("job-1", &h) {
            prop_assert_eq!(r.id, "job-1");
            let _ = r.spec.check();
        }
    }
}

#[test]
fn the_unmutated_hash_decodes_and_its_spec_is_valid() {
    let h: HashMap<String, String> = [
        ("spec".to_string(), spec_json()),
        ("state".to_string(), "running".to_string()),
    ]
    .into();
    let r = JobRecord::from_hash("job-1", &h).expect("decodes");
    r.spec.check().expect("valid");
}

#[test]
fn each_rule_refuses_with_its_message() {
    let ok = JobSpec::new("e", "d", "/m.onnx", "in.csv", "out");
    let refused = |f: &dyn Fn(&mut JobSpec), words: &str| {
        let mut s = ok.clone();
        f(&mut s);
        let e = s.check().expect_err(words);
        assert!(e.0.contains(words), "'{e}' lacks '{words}'");
    };
    ok.check().unwrap();
    refused(&|s| s.input = " ".into(), "input is empty");
    refused(
        &|s| s.output = "memory://x".into(),
        "scheme 'memory' is not supported",
    );
    refused(
        &|s| s.output = "in.csv/".into(),
        "output must differ from input",
    );
    refused(
        &|s| s.input = "in.txt".into(),
        "cannot tell the format from its extension",
    );
    refused(&|s| s.error_threshold = -2, "error_threshold -2");
    refused(&|s| s.max_retries = 101, "max_retries 101: at most 100");
    refused(
        &|s| {
            s.bindings = vec![Binding {
                input: "x".into(),
                columns: vec![],
            }]
        },
        "each binding names a model input",
    );
}
