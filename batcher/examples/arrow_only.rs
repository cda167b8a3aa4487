//! The "Arrow alone" baseline of the batch benchmark: plans an input, reads
//! every piece in order on one thread, and writes parts shaped like the
//! digits model's outputs (INT64 `label`, 10 FP32 `probabilities`) with values
//! copied from the input, so that what remains of a batch job's time beyond
//! this is queueing and inference.
//!
//! cargo run --release -p batcher --example arrow_only -- INPUT [--out DIR]
//!     [--format csv|jsonl|parquet] [--rows-per-piece N] [--chunk-rows N] [--no-write]
//!
//! Prints one JSON line with rows, errors, timings and rows/s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use batcher::io::{Format, InputColumns, PartWriter, ReadSpec, plan, read_piece};
use batcher::layout::part_name;
use bytes::Bytes;
use engine::{DataType, Tensor, TensorSpec};

struct Args {
    input: PathBuf,
    out: Option<PathBuf>,
    format: Option<Format>,
    rows_per_piece: u64,
    chunk_rows: usize,
    write: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        input: PathBuf::new(),
        out: None,
        format: None,
        rows_per_piece: 100_000,
        chunk_rows: 4096,
        write: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--out" => args.out = Some(value()?.into()),
            "--format" => args.format = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--rows-per-piece" => {
                args.rows_per_piece = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--chunk-rows" => args.chunk_rows = value()?.parse().map_err(|e| format!("{e}"))?,
            "--no-write" => args.write = false,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => args.input = a.into(),
        }
    }
    if args.input.as_os_str().is_empty() {
        return Err("usage: arrow_only INPUT [--out DIR] [--format F] [--rows-per-piece N] [--chunk-rows N] [--no-write]".into());
    }
    Ok(args)
}

fn output_specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec {
            name: "label".into(),
            dtype: DataType::Int64,
            dims: vec![-1],
        },
        TensorSpec {
            name: "probabilities".into(),
            dtype: DataType::Fp32,
            dims: vec![-1, 10],
        },
    ]
}

/// Stand-in model outputs: label = first feature, probabilities = the first
/// ten features (cycled when there are fewer).
fn fake_outputs(features: &Tensor) -> Vec<Tensor> {
    let rows = features.rows();
    let width = features.shape.get(1).copied().unwrap_or(1).max(1) as usize;
    let x = features.to_vec::<f32>();
    let mut labels = Vec::with_capacity(rows * 8);
    let mut probs = Vec::with_capacity(rows * 10);
    for row in x.chunks_exact(width) {
        labels.extend_from_slice(&(row[0] as i64).to_le_bytes());
        probs.extend((0..10).map(|k| row[k % width]));
    }
    vec![
        Tensor {
            dtype: DataType::Int64,
            shape: vec![rows as i64],
            data: Bytes::from(labels),
        },
        Tensor::from_f32(vec![rows as i64, 10], &probs),
    ]
}

fn run(args: &Args) -> Result<serde_json::Value, batcher::io::IoError> {
    let started = Instant::now();
    let plan = plan(&args.input, args.format, args.rows_per_piece)?;
    let plan_time = started.elapsed();
    let spec = ReadSpec {
        inputs: vec![InputColumns {
            columns: (0..plan.columns.len()).collect(),
            dtype: DataType::Fp32,
        }],
        allow_nan: false,
        chunk_rows: args.chunk_rows,
    };
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("arrow_only-{}", std::process::id())),
    };
    if args.write {
        std::fs::create_dir_all(&out_dir).map_err(|e| batcher::io::IoError::Io {
            path: out_dir.display().to_string(),
            source: e,
        })?;
    }
    let out_format = plan.pieces.first().map_or(Format::Csv, |p| p.format);
    let (mut read_time, mut write_time) = (Duration::ZERO, Duration::ZERO);
    let (mut rows, mut errors, mut written) = (0u64, 0u64, 0u64);
    for (i, piece) in plan.pieces.iter().enumerate() {
        let mut writer = args
            .write
            .then(|| {
                let name = part_name(i as u32, out_format);
                PartWriter::create(&out_dir, &name, out_format, &output_specs())
            })
            .transpose()?;
        let mut reader = read_piece(piece, &spec)?;
        loop {
            let t = Instant::now();
            let Some(chunk) = reader.next().transpose()? else {
                read_time += t.elapsed();
                break;
            };
            read_time += t.elapsed();
            rows += chunk.row_ids.len() as u64;
            errors += chunk.errors.len() as u64;
            if let Some(w) = writer.as_mut() {
                let t = Instant::now();
                w.write(&chunk.row_ids, &fake_outputs(&chunk.inputs[0]))?;
                write_time += t.elapsed();
            }
        }
        if let Some(w) = writer {
            let t = Instant::now();
            written += w.finish()?;
            write_time += t.elapsed();
        }
    }
    let total = started.elapsed().as_secs_f64();
    let plan_read = (plan_time + read_time).as_secs_f64();
    Ok(serde_json::json!({
        "input": args.input.display().to_string(),
        "format": plan.pieces.first().map(|p| p.format.to_string()),
        "columns": plan.columns.len(),
        "pieces": plan.pieces.len(),
        "rows": rows,
        "row_errors": errors,
        "rows_written": written,
        "plan_s": plan_time.as_secs_f64(),
        "read_s": read_time.as_secs_f64(),
        "write_s": write_time.as_secs_f64(),
        "total_s": total,
        "plan_read_rows_per_s": (rows + errors) as f64 / plan_read,
        "rows_per_s": (rows + errors) as f64 / total,
        "out": args.write.then(|| out_dir.display().to_string()),
    }))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("arrow_only: {e}");
            std::process::exit(1);
        }
    }
}
