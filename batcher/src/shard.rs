//! One shard, start to finish: read, score, write, overlapped on three
//! threads (reading and writing are as costly as scoring for small models,
//! so doing them in turn would leave the engine idle most of the time).
//! The part file appears only when the whole shard is written, under a name
//! fixed by the shard, so a shard run twice still leaves one part.

use crate::io::{
    self, Chunk, Format, InputColumns, IoError, PartWriter, Piece, ReadSpec, RowError,
};
use crate::layout::{shard_errors_name, shard_errors_path};
use engine::{Backend, DataType, EngineError, ModelSignature, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use thiserror::Error;

// Their paths from before the output layout had a module of its own.
pub use crate::layout::{
    part_name, shard_errors_name as errors_name, shard_errors_path as errors_path,
};

/// What a shard entry on the queue carries: self-contained, so any batcher
/// can run it without re-planning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardTask {
    pub piece: Piece,
    /// Column indices per model input, in model input order.
    pub inputs: Vec<Vec<usize>>,
    pub output_format: Format,
}

#[derive(Debug, Error)]
pub enum ShardError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Lost(String),
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub done: u64,
    pub failed: u64,
    /// Cancelled (or the job failed) while running: nothing was kept.
    pub stopped: bool,
    /// The batch size it ended with, after any halving.
    pub batch: usize,
    pub halvings: u32,
}

pub struct ShardRun<'a> {
    /// Maps a remote piece to its staged local file.
    pub stores: &'a io::Stores,
    pub backend: &'a mut dyn Backend,
    pub task: &'a ShardTask,
    pub index: u32,
    pub out_dir: &'a Path,
    pub summary_only: bool,
    pub allow_nan: bool,
    pub batch: usize,
    pub stop: &'a AtomicBool,
}

/// Puts a finished shard's files in a remote output (a no-op for a local
/// one, where they are written in place). Each is one atomic put under a
/// name fixed by the shard, so a shard published twice is still one part.
pub fn publish(
    out: &io::OutputDir<'_>,
    index: u32,
    format: Format,
    summary_only: bool,
    failed: u64,
) -> Result<(), IoError> {
    if !out.is_remote() {
        return Ok(());
    }
    let errors = shard_errors_name(index);
    if failed > 0 {
        out.publish(&errors)?;
    } else {
        out.remove(&errors)?;
    }
    if !summary_only {
        out.publish(&part_name(index, format))?;
    }
    Ok(())
}

type Scored = (Vec<u64>, Vec<Tensor>);

impl ShardRun<'_> {
    pub fn run(self) -> Result<Outcome, ShardError> {
        let sig = self.backend.signature().clone();
        let spec = ReadSpec {
            inputs: self
                .task
                .inputs
                .iter()
                .zip(&sig.inputs)
                .map(|(cols, t)| InputColumns {
                    columns: cols.clone(),
                    dtype: t.dtype,
                })
                .collect(),
            allow_nan: self.allow_nan,
            chunk_rows: self.batch.max(1),
        };
        let shapes = row_shapes(&sig, &self.task.inputs);
        let piece = self.stores.localize(&self.task.piece)?;
        let reader = io::read_piece(&piece, &spec)?;
        let mut outcome = Outcome {
            batch: self.batch.max(1),
            ..Outcome::default()
        };
        let mut errors: Vec<RowError> = Vec::new();
        let stop = self.stop;
        let backend = self.backend;
        let written = std::thread::scope(|s| -> Result<u64, ShardError> {
            let (chunk_tx, chunk_rx) = sync_channel::<Result<Chunk, IoError>>(2);
            s.spawn(move || {
                for c in reader {
                    if stop.load(Ordering::Relaxed) || chunk_tx.send(c).is_err() {
                        return;
                    }
                }
            });
            let (out_tx, out_rx) = sync_channel::<Scored>(2);
            let writer = (!self.summary_only).then(|| {
                let name = part_name(self.index, self.task.output_format);
                let (dir, format, outputs) = (self.out_dir, self.task.output_format, &sig.outputs);
                s.spawn(move || -> Result<Option<PartWriter>, IoError> {
                    let mut w = PartWriter::create(dir, &name, format, outputs)?;
                    for (ids, outs) in out_rx {
                        w.write(&ids, &outs)?;
                    }
                    Ok(Some(w))
                })
            });
            let mut scored = 0u64;
            let mut emit = |ids: Vec<u64>, outs: Vec<Tensor>| -> bool {
                scored += ids.len() as u64;
                writer.is_none() || out_tx.send((ids, outs)).is_ok()
            };
            let mut result = Ok(());
            for chunk in chunk_rx {
                if stop.load(Ordering::Relaxed) {
                    outcome.stopped = true;
                    break;
                }
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                };
                let mut chunk = chunk;
                errors.extend(std::mem::take(&mut chunk.errors));
                for (t, (_, row)) in chunk.inputs.iter_mut().zip(&shapes) {
                    let n = t.shape.first().copied().unwrap_or(0);
                    t.shape = std::iter::once(n).chain(row.iter().copied()).collect();
                }
                if let Err(e) = score(
                    backend,
                    &chunk.inputs,
                    &chunk.row_ids,
                    &mut outcome,
                    &mut errors,
                    &mut emit,
                ) {
                    result = Err(e);
                    break;
                }
            }
            // The reader stops sending when `stop` is set, which also ends
            // the loop above without a chunk to notice it by: without this
            // a part cut short would be renamed into place as complete.
            if stop.load(Ordering::Relaxed) {
                outcome.stopped = true;
            }
            drop(out_tx);
            let part = match writer {
                Some(w) => w
                    .join()
                    .map_err(|_| ShardError::Lost("writer thread panicked".into()))??,
                None => None,
            };
            result?;
            if outcome.stopped {
                // Dropping the writer leaves only a temp file, which the
                // job's final step removes.
                return Ok(0);
            }
            match part {
                Some(w) => Ok(w.finish()?),
                None => Ok(scored),
            }
        })?;
        if outcome.stopped {
            return Ok(outcome);
        }
        errors.sort_by_key(|e| e.row);
        outcome.done = written;
        outcome.failed = errors.len() as u64;
        let expected = self.task.piece.rows;
        if outcome.done + outcome.failed != expected {
            return Err(ShardError::Lost(format!(
                "shard {} accounted for {} rows, expected {expected}",
                self.index,
                outcome.done + outcome.failed
            )));
        }
        let path = shard_errors_path(self.out_dir, self.index);
        if errors.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| IoError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            io::write_jsonl_atomic(&path, &errors)?;
        }
        Ok(outcome)
    }
}

/// Each input's row shape: the model's own when it is fixed (a `[n,1,8,8]`
/// image model fed 64 columns), else one dimension of the bound columns.
pub fn row_shapes(sig: &ModelSignature, inputs: &[Vec<usize>]) -> Vec<(DataType, Vec<i64>)> {
    sig.inputs
        .iter()
        .zip(inputs)
        .map(|(t, cols)| {
            let row = t.dims.get(1..).unwrap_or(&[]);
            if !row.is_empty() && row.iter().all(|&d| d > 0) {
                (t.dtype, row.to_vec())
            } else {
                (t.dtype, vec![cols.len() as i64])
            }
        })
        .collect()
}

fn slice_rows(inputs: &[Tensor], start: usize, end: usize) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| {
            let rb = t.row_bytes();
            let mut shape = t.shape.clone();
            if let Some(d) = shape.first_mut() {
                *d = (end - start) as i64;
            }
            Tensor {
                dtype: t.dtype,
                shape,
                data: t.data.slice(start * rb..end * rb),
            }
        })
        .collect()
}

/// Scores a chunk in mini-batches. An allocation failure halves the batch
/// and retries the same rows; a model failure is narrowed to the rows that
/// cause it, which go to the errors file while the others are kept.
fn score(
    backend: &mut dyn Backend,
    inputs: &[Tensor],
    row_ids: &[u64],
    outcome: &mut Outcome,
    errors: &mut Vec<RowError>,
    emit: &mut impl FnMut(Vec<u64>, Vec<Tensor>) -> bool,
) -> Result<(), ShardError> {
    let rows = row_ids.len();
    let mut start = 0;
    while start < rows {
        let end = (start + outcome.batch).min(rows);
        match backend.run(slice_rows(inputs, start, end)) {
            Ok(out) => {
                if !emit(row_ids[start..end].to_vec(), out) {
                    return Err(ShardError::Lost("the part writer stopped".into()));
                }
                start = end;
            }
            Err(EngineError::OutOfMemory(msg)) if outcome.batch > 1 => {
                outcome.batch = ((end - start) / 2).max(1);
                outcome.halvings += 1;
                tracing::warn!(batch = outcome.batch, %msg, "allocation failed; halving the mini-batch");
            }
            Err(EngineError::Internal(_)) => {
                for (r, &id) in row_ids.iter().enumerate().take(end).skip(start) {
                    match backend.run(slice_rows(inputs, r, r + 1)) {
                        Ok(out) => {
                            if !emit(vec![id], out) {
                                return Err(ShardError::Lost("the part writer stopped".into()));
                            }
                        }
                        Err(e @ EngineError::Internal(_)) => errors.push(RowError {
                            row: id,
                            reason: e.to_string(),
                        }),
                        Err(e) => return Err(e.into()),
                    }
                }
                start = end;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
