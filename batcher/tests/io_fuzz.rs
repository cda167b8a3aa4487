//! Property tests of the batch readers on corrupted files: a valid CSV,
//! JSON Lines or Parquet file with random bytes changed, inserted, removed
//! or cut off is planned and read to the end. No file may panic a batcher:
//! each gives an error or rows, and every chunk's tensors match its row ids.
//! `SWITCHBOARD_FUZZ_CASES` sets the cases per format (default 256).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use batcher::io::{Format, InputColumns, ReadSpec, plan, read_piece};
use engine::DataType;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

const ROWS: usize = 12;

fn csv() -> Vec<u8> {
    let mut s = String::from("a,b,c\n");
    for r in 0..ROWS {
        s += &format!("{}.5,{r},\"x{r}\"\n", r * 3);
    }
    s.into_bytes()
}

fn jsonl() -> Vec<u8> {
    (0..ROWS)
        .map(|r| format!("{{\"a\": {}.5, \"b\": {r}, \"c\": \"x{r}\"}}\n", r * 3))
        .collect::<String>()
        .into_bytes()
}

/// Two columns and a text one, in row groups of 4, so that corrupting the
/// footer, a page header or a page all happen.
fn parquet() -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", ArrowType::Float64, true),
        Field::new("b", ArrowType::Int64, false),
        Field::new("c", ArrowType::Utf8, false),
    ]));
    let a: Float64Array = (0..ROWS)
        .map(|r| (r != 4).then_some(r as f64 * 3.5))
        .collect();
    let b: Int64Array = (0..ROWS as i64).collect();
    let c: StringArray = (0..ROWS).map(|r| Some(format!("x{r}"))).collect();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(a), Arc::new(b), Arc::new(c)])
        .expect("batch");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(4))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

/// Applies edits `(at, op, byte)`: flip a bit, set, insert or remove a
/// byte at `at` (modulo the length); then cuts the file at `cut` if given.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, op, byte) in edits {
        let n = bytes.len();
        let i = at % n.max(1);
        match op % 4 {
            0 if n > 0 => bytes[i] ^= 1 << (byte % 8),
            1 if n > 0 => bytes[i] = byte,
            2 => bytes.insert(at % (n + 1), byte),
            3 if n > 0 => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

/// Plans and reads `bytes` as `format` to the end, with the first columns
/// as FP32 and INT64 inputs. Returns the rows read and the row errors, or
/// the first error (which is an answer too: the shard fails, the batcher
/// lives).
fn read(dir: &Path, format: Format, bytes: &[u8]) -> Result<(usize, usize), String> {
    let path = dir.join(format!("in.{}", format.extension()));
    fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let plan = plan(&path, Some(format), 5).map_err(|e| e.to_string())?;
    if plan.columns.is_empty() {
        return Ok((0, 0));
    }
    let last = plan.columns.len() - 1;
    let spec = ReadSpec {
        inputs: vec![
            InputColumns {
                columns: vec![0, last.min(1)],
                dtype: DataType::Fp32,
            },
            InputColumns {
                columns: vec![last.min(1)],
                dtype: DataType::Int64,
            },
        ],
        allow_nan: false,
        chunk_rows: 4,
    };
    let (mut rows, mut errors) = (0, 0);
    for piece in &plan.pieces {
        for chunk in read_piece(piece, &spec).map_err(|e| e.to_string())? {
            let chunk = chunk.map_err(|e| e.to_string())?;
            for t in &chunk.inputs {
                assert_eq!(t.shape[0] as usize, chunk.row_ids.len(), "{format}: {t:?}");
                assert_eq!(
                    t.data.len(),
                    t.shape.iter().product::<i64>() as usize * t.dtype.size()
                );
            }
            rows += chunk.row_ids.len();
            errors += chunk.errors.len();
        }
    }
    Ok((rows, errors))
}

fn edits() -> impl Strategy<Value = (Vec<(usize, u8, u8)>, Option<usize>)> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        proptest::option::weighted(0.2, any::<usize>()),
    )
}

#[test]
fn the_unmutated_files_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Parquet's row 4 has a null in `a`: a row error, as it should be.
    for (format, bytes, want) in [
        (Format::Csv, csv(), (ROWS, 0)),
        (Format::Jsonl, jsonl(), (ROWS, 0)),
        (Format::Parquet, parquet(), (ROWS - 1, 1)),
    ] {
        assert_eq!(read(dir.path(), format, &bytes), Ok(want), "{format}");
    }
}

/// Single-byte corruptions of `parquet()` that panicked inside parquet or
/// arrow before the batcher checked the footer and caught decoding panics:
/// each must now be an error for the piece.
#[test]
fn parquet_corruptions_that_panicked_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (at, byte, was) in [
        (1046, 0xff, "column start and length should not be negative"),
        (1051, 0x7f, "column start and length should not be negative"),
        (1050, 0x80, "Decoder for dict should have been set"),
        (71, 0xff, "offset + len out of bounds"),
        (262, 0x81, "offset + len out of bounds"),
    ] {
        let file = mutate(parquet(), &[(at, 1, byte)], None);
        match read(dir.path(), Format::Parquet, &file) {
            Err(e) => assert!(e.contains("not a readable Parquet file"), "{at}: {e}"),
            Ok(rows) => panic!("byte {at} set to {byte:#x} (once: '{was}') read as {rows:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn corrupted_csv_gives_an_error_or_rows((e, cut) in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let _ = read(dir.path(), Format::Csv, &mutate(csv(), &e, cut));
    }

    #[test]
    fn corrupted_jsonl_gives_an_error_or_rows((e, cut) in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let _ = read(dir.path(), Format::Jsonl, &mutate(jsonl(), &e, cut));
    }

    #[test]
    fn corrupted_parquet_gives_an_error_or_rows((e, cut) in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let _ = read(dir.path(), Format::Parquet, &mutate(parquet(), &e, cut));
    }
}
