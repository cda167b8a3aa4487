//! Read throughput on a digits-shaped Parquet file (1M rows x 64 columns).
//! Ignored by default; run with
//! `cargo test --release -p batcher --test io_bench -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType as ArrowType, Field, Schema};
use batcher::io::{InputColumns, ReadSpec, plan, read_piece};
use engine::DataType;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

#[test]
#[ignore]
fn parquet_1m_rows_64_columns() {
    const ROWS: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digits.parquet");
    let schema = Arc::new(Schema::new(
        (0..64)
            .map(|c| Field::new(format!("pixel_{c}"), ArrowType::Int64, false))
            .collect::<Vec<_>>(),
    ));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = std::fs::File::create(&path).unwrap();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
    let mut seed = 1u64;
    for _ in 0..ROWS / 100_000 {
        let columns: Vec<ArrayRef> = (0..64)
            .map(|_| {
                let values = (0..100_000).map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) % 17) as i64
                });
                Arc::new(Int64Array::from_iter_values(values)) as ArrayRef
            })
            .collect();
        w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    w.close().unwrap();

    let started = Instant::now();
    let plan = plan(&path, None, 100_000).unwrap();
    let spec = ReadSpec {
        inputs: vec![InputColumns {
            columns: (0..64).collect(),
            dtype: DataType::Fp32,
        }],
        allow_nan: false,
        chunk_rows: 4096,
    };
    let mut rows = 0;
    for piece in &plan.pieces {
        for chunk in read_piece(piece, &spec).unwrap() {
            rows += chunk.unwrap().row_ids.len();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(rows, ROWS);
    println!(
        "{{\"format\":\"parquet\",\"rows\":{rows},\"plan_read_s\":{secs:.3},\"rows_per_s\":{:.0}}}",
        rows as f64 / secs
    );
}
