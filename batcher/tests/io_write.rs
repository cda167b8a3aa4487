//! Output parts: schema per format, atomic replacement, temp hygiene.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int64Type, UInt64Type};
use batcher::io::{Format, PartWriter, RowError, write_jsonl_atomic};
use bytes::Bytes;
use engine::{DataType, Tensor, TensorSpec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec {
            name: "label".into(),
            dtype: DataType::Int64,
            dims: vec![-1],
        },
        TensorSpec {
            name: "probabilities".into(),
            dtype: DataType::Fp32,
            dims: vec![-1, 3],
        },
    ]
}

fn outputs(ids: &[u64]) -> Vec<Tensor> {
    let labels: Vec<u8> = ids
        .iter()
        .flat_map(|&r| (r as i64 * 2).to_le_bytes())
        .collect();
    let probs: Vec<f32> = ids
        .iter()
        .flat_map(|&r| (0..3).map(move |k| r as f32 + k as f32 / 4.0))
        .collect();
    vec![
        Tensor {
            dtype: DataType::Int64,
            shape: vec![ids.len() as i64],
            data: Bytes::from(labels),
        },
        Tensor::from_f32(vec![ids.len() as i64, 3], &probs),
    ]
}

fn write_part(dir: &Path, name: &str, format: Format, batches: &[&[u64]]) -> u64 {
    let mut w = PartWriter::create(dir, name, format, &specs()).unwrap();
    for ids in batches {
        w.write(ids, &outputs(ids)).unwrap();
    }
    w.finish().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const IDS: [&[u64]; 2] = [&[5, 6, 9], &[12]];
const ALL: [u64; 4] = [5, 6, 9, 12];

/// Checks `row`, `label` and the three probabilities, given how to get the
/// k-th probability of row i.
fn check(batch: &RecordBatch, prob: impl Fn(usize, usize) -> f32) {
    let rows = batch
        .column_by_name("row")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert_eq!(rows.values().to_vec(), ALL);
    let labels = batch
        .column_by_name("label")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(labels.values().to_vec(), [10, 12, 18, 24]);
    for (i, &r) in ALL.iter().enumerate() {
        for k in 0..3 {
            assert_eq!(prob(i, k), r as f32 + k as f32 / 4.0);
        }
    }
}

#[test]
fn csv_part_has_header_and_flattened_columns() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        write_part(dir.path(), "part-00001.csv", Format::Csv, &IDS),
        4
    );
    let text = fs::read_to_string(dir.path().join("part-00001.csv")).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "row,label,probabilities_0,probabilities_1,probabilities_2"
    );
    let (schema, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(Cursor::new(text.as_bytes()), None)
        .unwrap();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.name().as_str() {
                    "row" => arrow::datatypes::DataType::UInt64,
                    "label" => arrow::datatypes::DataType::Int64,
                    _ => arrow::datatypes::DataType::Float32,
                };
                f.as_ref().clone().with_data_type(ty)
            })
            .collect::<Vec<_>>(),
    ));
    let batch = arrow::csv::ReaderBuilder::new(schema)
        .with_header(true)
        .build(Cursor::new(text.as_bytes()))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    check(&batch, |i, k| {
        let col = batch.column_by_name(&format!("probabilities_{k}")).unwrap();
        col.as_primitive::<Float32Type>().value(i)
    });
}

#[test]
fn jsonl_part_has_list_column() {
    let dir = tempfile::tempdir().unwrap();
    write_part(dir.path(), "part-00002.jsonl", Format::Jsonl, &IDS);
    let path = dir.path().join("part-00002.jsonl");
    let first = fs::read_to_string(&path).unwrap();
    assert_eq!(
        first.lines().next().unwrap(),
        r#"{"row":5,"label":10,"probabilities":[5.0,5.25,5.5]}"#
    );
    let (schema, _) = arrow::json::reader::infer_json_schema_from_seekable(
        std::io::BufReader::new(fs::File::open(&path).unwrap()),
        None,
    )
    .unwrap();
    let schema = std::sync::Arc::new(schema);
    let batch = arrow::json::ReaderBuilder::new(schema)
        .build(std::io::BufReader::new(fs::File::open(&path).unwrap()))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let rows = batch
        .column_by_name("row")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(rows.values().to_vec(), [5, 6, 9, 12]);
    let probs = batch
        .column_by_name("probabilities")
        .unwrap()
        .as_list::<i32>();
    for (i, &r) in ALL.iter().enumerate() {
        let v = probs.value(i);
        let v = v.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(v.len(), 3);
        assert_eq!(v.value(1), r as f64 + 0.25);
    }
}

#[test]
fn parquet_part_has_fixed_size_list_column() {
    let dir = tempfile::tempdir().unwrap();
    write_part(dir.path(), "part-00003.parquet", Format::Parquet, &IDS);
    let file = fs::File::open(dir.path().join("part-00003.parquet")).unwrap();
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let probs = batch
        .column_by_name("probabilities")
        .unwrap()
        .as_fixed_size_list();
    assert_eq!(probs.value_length(), 3);
    check(&batch, |i, k| {
        probs.value(i).as_primitive::<Float32Type>().value(k)
    });
}

#[test]
fn writing_a_part_twice_leaves_one_file_with_the_last_content() {
    let dir = tempfile::tempdir().unwrap();
    write_part(dir.path(), "part-00004.csv", Format::Csv, &[&[1, 2]]);
    write_part(dir.path(), "part-00004.csv", Format::Csv, &IDS);
    assert_eq!(files_in(dir.path()), ["part-00004.csv"]);
    let text = fs::read_to_string(dir.path().join("part-00004.csv")).unwrap();
    assert_eq!(text.lines().count(), 5);
}

#[test]
fn an_unfinished_part_leaves_no_file_and_temps_are_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let mut w =
        PartWriter::create(dir.path(), "part-00005.parquet", Format::Parquet, &specs()).unwrap();
    w.write(&[1], &outputs(&[1])).unwrap();
    let during = files_in(dir.path());
    assert_eq!(during.len(), 1);
    assert!(during[0].starts_with('.') && during[0].ends_with(".tmp"));
    drop(w);
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn empty_part_and_wrong_outputs() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(write_part(dir.path(), "e.csv", Format::Csv, &[]), 0);
    let text = fs::read_to_string(dir.path().join("e.csv")).unwrap();
    assert_eq!(text.lines().count(), 1);

    let mut w = PartWriter::create(dir.path(), "bad.jsonl", Format::Jsonl, &specs()).unwrap();
    let mut wrong = outputs(&[1, 2]);
    wrong[1] = Tensor::from_f32(vec![2, 4], &[0.0; 8]);
    assert!(w.write(&[1, 2], &wrong).unwrap_err().is_invalid_input());
    assert!(
        w.write(&[1], &outputs(&[1, 2]))
            .unwrap_err()
            .is_invalid_input()
    );
}

#[test]
fn jsonl_atomic_write_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errors.jsonl");
    let first = [RowError {
        row: 1,
        reason: "x".into(),
    }];
    write_jsonl_atomic(&path, &first).unwrap();
    let second = [
        RowError {
            row: 3,
            reason: "column a is NaN".into(),
        },
        RowError {
            row: 9,
            reason: "expected 2 columns, found 1".into(),
        },
    ];
    write_jsonl_atomic(&path, &second).unwrap();
    assert_eq!(files_in(dir.path()), ["errors.jsonl"]);
    let back: Vec<RowError> = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, second);
}
