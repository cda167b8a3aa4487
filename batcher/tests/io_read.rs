//! Reading pieces: exact row ids, values, bad rows, every format.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use batcher::io::{
    Chunk, Format, InputColumns, Plan, ReadSpec, RowError, plan, plan_with_header, read_piece,
};
use engine::DataType;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

fn value(r: usize, c: usize) -> f64 {
    (r * 10 + c) as f64
}

fn numeric_csv(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let line: Vec<String> = (0..cols).map(|c| value(r, c).to_string()).collect();
            line.join(",") + "\n"
        })
        .collect()
}

fn spec(inputs: Vec<(Vec<usize>, DataType)>, allow_nan: bool, chunk_rows: usize) -> ReadSpec {
    ReadSpec {
        inputs: inputs
            .into_iter()
            .map(|(columns, dtype)| InputColumns { columns, dtype })
            .collect(),
        allow_nan,
        chunk_rows,
    }
}

fn read_all(plan: &Plan, spec: &ReadSpec) -> Vec<Chunk> {
    plan.pieces
        .iter()
        .flat_map(|p| read_piece(p, spec).unwrap())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Row id -> values of input `k`, as f64, checking each row appears once.
fn rows_of(chunks: &[Chunk], k: usize) -> BTreeMap<u64, Vec<f64>> {
    let mut rows = BTreeMap::new();
    for chunk in chunks {
        let t = &chunk.inputs[k];
        assert_eq!(t.shape[0] as usize, chunk.row_ids.len());
        let vals: Vec<f64> = match t.dtype {
            DataType::Fp32 => t.to_vec::<f32>().into_iter().map(f64::from).collect(),
            DataType::Fp64 => t.to_vec::<f64>(),
            DataType::Int64 => t.to_vec::<i64>().into_iter().map(|v| v as f64).collect(),
            DataType::Int32 => t.to_vec::<i32>().into_iter().map(f64::from).collect(),
            other => panic!("unexpected {other}"),
        };
        let width = t.shape[1] as usize;
        for (i, &id) in chunk.row_ids.iter().enumerate() {
            let prev = rows.insert(id, vals[i * width..(i + 1) * width].to_vec());
            assert!(prev.is_none(), "row {id} read twice");
        }
    }
    rows
}

fn errors_of(chunks: &[Chunk]) -> Vec<RowError> {
    chunks.iter().flat_map(|c| c.errors.clone()).collect()
}

#[test]
fn every_row_once_with_the_values_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    let header: Vec<String> = (0..5).map(|c| format!("f{c}")).collect();
    fs::write(
        &path,
        format!("{}\n{}", header.join(","), numeric_csv(23, 5)),
    )
    .unwrap();
    let plan = plan(&path, None, 7).unwrap();
    // Two inputs sharing column 2, one of them as integers.
    let spec = spec(
        vec![
            (vec![4, 0, 2], DataType::Fp32),
            (vec![2, 3], DataType::Int64),
        ],
        false,
        3,
    );
    let chunks = read_all(&plan, &spec);
    assert!(errors_of(&chunks).is_empty());
    let a = rows_of(&chunks, 0);
    let b = rows_of(&chunks, 1);
    assert_eq!(a.len(), 23);
    for r in 0..23 {
        assert_eq!(a[&(r as u64)], [value(r, 4), value(r, 0), value(r, 2)]);
        assert_eq!(b[&(r as u64)], [value(r, 2), value(r, 3)]);
    }
    assert!(chunks.iter().all(|c| c.row_ids.len() <= 3));
}

#[test]
fn crlf_headerless_file_with_fp64_and_int32() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    fs::write(&path, "1,2.5\r\n3,4.5\r\n\r\n5,6.5\r\n").unwrap();
    let plan = plan(&path, None, 2).unwrap();
    let spec = spec(
        vec![(vec![1], DataType::Fp64), (vec![0], DataType::Int32)],
        false,
        10,
    );
    let chunks = read_all(&plan, &spec);
    let a = rows_of(&chunks, 0);
    let b = rows_of(&chunks, 1);
    assert_eq!(
        a.values().cloned().collect::<Vec<_>>(),
        [vec![2.5], vec![4.5], vec![6.5]]
    );
    assert_eq!(
        b.values().cloned().collect::<Vec<_>>(),
        [vec![1.0], vec![3.0], vec![5.0]]
    );
}

#[test]
fn bad_rows_are_reported_and_their_neighbours_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    let mut lines: Vec<String> = numeric_csv(12, 4).lines().map(String::from).collect();
    lines[2] = "20,21,22".into(); // a column short
    lines[5] = "50,abc,52,53".into(); // text in a number column
    lines[7] = "70,71,NaN,73".into();
    lines[8] = "80,,82,83".into(); // empty field
    lines[10] = "100,101,102,103,104".into(); // a column too many
    fs::write(&path, format!("a,b,c,d\n{}\n", lines.join("\n"))).unwrap();
    let plan = plan(&path, None, 5).unwrap();
    assert_eq!(plan.rows_total, 12);
    let strict = spec(vec![(vec![0, 1, 2, 3], DataType::Fp32)], false, 4);
    let chunks = read_all(&plan, &strict);
    let errors = errors_of(&chunks);
    let bad: Vec<u64> = errors.iter().map(|e| e.row).collect();
    assert_eq!(bad, [2, 5, 7, 8, 10]);
    assert_eq!(errors[0].reason, "expected 4 columns, found 3");
    assert_eq!(errors[0].to_string(), "row 2: expected 4 columns, found 3");
    assert_eq!(errors[1].reason, "column b: 'abc' is not a number");
    assert_eq!(errors[2].reason, "column c is NaN");
    assert_eq!(errors[3].reason, "column b is empty");
    assert_eq!(errors[4].reason, "expected 4 columns, found 5");
    let good = rows_of(&chunks, 0);
    let ids: Vec<u64> = good.keys().copied().collect();
    assert_eq!(ids, [0, 1, 3, 4, 6, 9, 11]);
    for (&r, v) in &good {
        let r = r as usize;
        assert_eq!(*v, [value(r, 0), value(r, 1), value(r, 2), value(r, 3)]);
    }

    // Allowed NaN keeps row 7 and its NaN.
    let lenient = spec(vec![(vec![0, 1, 2, 3], DataType::Fp32)], true, 4);
    let chunks = read_all(&plan, &lenient);
    let bad: Vec<u64> = errors_of(&chunks).iter().map(|e| e.row).collect();
    assert_eq!(bad, [2, 5, 8, 10]);
    assert!(rows_of(&chunks, 0)[&7][2].is_nan());
}

#[test]
fn a_headerless_file_with_text_in_its_first_row_keeps_that_row_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    let mut lines: Vec<String> = numeric_csv(6, 3).lines().map(String::from).collect();
    lines[0] = "0,x,2".into();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    // Detected, the first line reads as a header: one row fewer.
    assert_eq!(plan(&path, None, 4).unwrap().rows_total, 5);
    // Told there is none, row 0 is a row, and a bad one.
    let p = plan_with_header(&path, None, 4, Some(false)).unwrap();
    assert_eq!(p.rows_total, 6);
    assert_eq!(p.columns, ["c0", "c1", "c2"]);
    let chunks = read_all(&p, &spec(vec![(vec![0, 1, 2], DataType::Fp32)], false, 4));
    let errors = errors_of(&chunks);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].row, errors[0].reason.as_str()),
        (0, "column c1: 'x' is not a number")
    );
    let ids: Vec<u64> = rows_of(&chunks, 0).keys().copied().collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    // Told there is one, a numeric first line is skipped as its names.
    fs::write(&path, numeric_csv(6, 3)).unwrap();
    let p = plan_with_header(&path, None, 4, Some(true)).unwrap();
    assert_eq!(p.rows_total, 5);
    assert_eq!(p.columns, ["0", "1", "2"]);
    let ids: Vec<u64> = rows_of(
        &read_all(&p, &spec(vec![(vec![0, 1, 2], DataType::Fp32)], false, 4)),
        0,
    )
    .keys()
    .copied()
    .collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
}

#[test]
fn integer_inputs_refuse_fractions_and_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    fs::write(&path, "1,2\n3.5,4\n5,6\n3000000000,8\n9,10\n").unwrap();
    let plan = plan(&path, None, 100).unwrap();
    let spec = spec(vec![(vec![0, 1], DataType::Int32)], false, 100);
    let chunks = read_all(&plan, &spec);
    let errors = errors_of(&chunks);
    assert_eq!(errors.iter().map(|e| e.row).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(
        errors[0].reason,
        "column c0: '3.5' is not an integer that fits INT32"
    );
    let good = rows_of(&chunks, 0);
    assert_eq!(good.keys().copied().collect::<Vec<_>>(), [0, 2, 4]);
}

#[test]
fn jsonl_round_trip_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let mut text = String::new();
    for r in 0..9 {
        let line = match r {
            3 => "{\"y\": 31, \"x\": \"abc\"}".to_string(),
            4 => "not json".to_string(),
            6 => "{\"y\": 61}".to_string(),
            7 => "[1, 2]".to_string(),
            _ => format!(
                "{{\"y\": {}, \"x\": {}, \"extra\": \"s\"}}",
                value(r, 1),
                value(r, 0)
            ),
        };
        text += &line;
        text += "\n";
    }
    fs::write(&path, text).unwrap();
    let plan = plan(&path, None, 4).unwrap();
    assert_eq!(plan.columns, ["y", "x", "extra"]);
    let spec = spec(vec![(vec![1, 0], DataType::Fp32)], false, 2);
    let chunks = read_all(&plan, &spec);
    let errors = errors_of(&chunks);
    assert_eq!(
        errors.iter().map(|e| e.row).collect::<Vec<_>>(),
        [3, 4, 6, 7]
    );
    assert_eq!(errors[0].reason, "column x: \"abc\" is not a number");
    assert!(
        errors[1].reason.starts_with("invalid JSON"),
        "{}",
        errors[1].reason
    );
    assert_eq!(errors[2].reason, "column x is missing or null");
    assert_eq!(errors[3].reason, "expected a JSON object");
    let good = rows_of(&chunks, 0);
    assert_eq!(good.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 8]);
    for (&r, v) in &good {
        assert_eq!(*v, [value(r as usize, 0), value(r as usize, 1)]);
    }
}

#[test]
fn jsonl_integer_input_refuses_fractions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    fs::write(&path, "{\"a\": 1}\n{\"a\": 2.5}\n{\"a\": \"3\"}\n").unwrap();
    let plan = plan(&path, None, 10).unwrap();
    let chunks = read_all(&plan, &spec(vec![(vec![0], DataType::Int64)], false, 10));
    let errors = errors_of(&chunks);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].row, 1);
    assert_eq!(
        rows_of(&chunks, 0).keys().copied().collect::<Vec<_>>(),
        [0, 2]
    );
}

fn write_parquet(path: &Path, rows: std::ops::Range<usize>, group: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", ArrowType::Float64, true),
        Field::new("b", ArrowType::Int64, false),
    ]));
    let a: Float64Array = rows
        .clone()
        .map(|r| if r == 4 { None } else { Some(value(r, 0)) })
        .collect();
    let b: Int64Array = rows.map(|r| value(r, 1) as i64).collect();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(a), Arc::new(b)]).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let mut w = ArrowWriter::try_new(fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_pieces_are_row_group_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.parquet");
    write_parquet(&path, 0..10, 3); // groups of 3, 3, 3, 1
    let plan = plan(&path, None, 6).unwrap();
    assert_eq!(plan.columns, ["a", "b"]);
    assert_eq!(plan.rows_total, 10);
    let spans: Vec<_> = plan
        .pieces
        .iter()
        .map(|p| (p.first_row, p.rows, p.span.clone()))
        .collect();
    use batcher::io::Span::RowGroups;
    assert_eq!(
        spans,
        [
            (0, 6, RowGroups { start: 0, end: 2 }),
            (6, 4, RowGroups { start: 2, end: 4 })
        ]
    );
    let spec = spec(vec![(vec![1, 0], DataType::Fp32)], false, 2);
    let chunks = read_all(&plan, &spec);
    let errors = errors_of(&chunks);
    assert_eq!(
        errors,
        [RowError {
            row: 4,
            reason: "column a is null".into()
        }]
    );
    let good = rows_of(&chunks, 0);
    assert_eq!(good.len(), 9);
    for (&r, v) in &good {
        assert_eq!(*v, [value(r as usize, 1), value(r as usize, 0)]);
    }
}

#[test]
fn folder_of_parquet_files_continues_row_ids() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("part-0.parquet"), 0..5, 2);
    write_parquet(&dir.path().join("part-1.pq"), 5..12, 4);
    let plan = plan(dir.path(), None, 4).unwrap();
    assert_eq!(plan.rows_total, 12);
    let chunks = read_all(&plan, &spec(vec![(vec![1], DataType::Int64)], false, 3));
    let good = rows_of(&chunks, 0);
    assert_eq!(good.len(), 12);
    for (&r, v) in &good {
        assert_eq!(*v, [value(r as usize, 1)]);
    }
}

#[test]
fn folder_of_csv_files_continues_row_ids() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("1.csv"), numeric_csv(5, 2)).unwrap();
    let second: String = numeric_csv(9, 2)
        .lines()
        .skip(5)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(dir.path().join("2.csv"), second).unwrap();
    let plan = plan(dir.path(), Some(Format::Csv), 2).unwrap();
    let chunks = read_all(&plan, &spec(vec![(vec![0, 1], DataType::Fp64)], false, 64));
    let good = rows_of(&chunks, 0);
    assert_eq!(good.len(), 9);
    for (&r, v) in &good {
        assert_eq!(*v, [value(r as usize, 0), value(r as usize, 1)]);
    }
}

#[test]
fn a_file_changed_since_planning_is_an_error_not_lost_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    fs::write(&path, numeric_csv(6, 2)).unwrap();
    let plan = plan(&path, None, 10).unwrap();
    fs::write(&path, numeric_csv(4, 2)).unwrap();
    let spec = spec(vec![(vec![0], DataType::Fp32)], false, 10);
    let results: Vec<_> = read_piece(&plan.pieces[0], &spec).unwrap().collect();
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.is_invalid_input()))
    );
}

#[test]
fn bad_specs_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    fs::write(&path, numeric_csv(3, 2)).unwrap();
    let plan = plan(&path, None, 10).unwrap();
    let piece = &plan.pieces[0];
    for bad in [
        spec(vec![(vec![2], DataType::Fp32)], false, 10),
        spec(vec![(vec![], DataType::Fp32)], false, 10),
        spec(vec![(vec![0], DataType::Bool)], false, 10),
        spec(vec![(vec![0], DataType::Fp32)], false, 0),
    ] {
        assert!(
            read_piece(piece, &bad)
                .err()
                .is_some_and(|e| e.is_invalid_input())
        );
    }
}
