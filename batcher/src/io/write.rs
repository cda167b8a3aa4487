//! Output parts, written so that a reader never sees half a file: rows go to
//! a temp file in the target folder, which `finish` fsyncs and renames over
//! the final name. A part written twice (a piece redelivered) is one file.
//! Temp names are [`crate::layout::temp_name`]s, so neither planning nor a
//! listing of parts mistakes a crashed writer's leftovers for output.
//!
//! Columns: `row` (UInt64, the input's row id), then the model outputs in
//! order. An output with one value per row is one column named as the
//! output; a wider one is `name_0 .. name_{w-1}` in CSV (which has no list
//! type) and one fixed-size-list column `name` in JSON Lines (a JSON array per
//! row) and Parquet.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanArray, FixedSizeListArray, PrimitiveArray, RecordBatch,
    UInt64Array,
};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use engine::{DataType, Tensor, TensorSpec};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::convert::{Le, with_arrow_type};
use super::{Format, IoError};
use crate::layout::temp_name;

/// Writes one part file atomically: to a temp name in `dir`, renamed to
/// `name` by [`PartWriter::finish`]. Dropped unfinished, it removes its temp.
pub struct PartWriter {
    inner: Option<Inner>,
}

struct Inner {
    temp: PathBuf,
    target: PathBuf,
    format: Format,
    outputs: Vec<TensorSpec>,
    /// Values per row of each output; dynamic ones are fixed by the first write.
    widths: Vec<Option<usize>>,
    /// The file until the first write fixes the schema, then its writer.
    file: Option<File>,
    sink: Option<Sink>,
    rows: u64,
}

enum Sink {
    Csv(Box<arrow::csv::Writer<BufWriter<File>>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<File>>),
}

impl PartWriter {
    pub fn create(
        dir: &Path,
        name: &str,
        format: Format,
        outputs: &[TensorSpec],
    ) -> Result<Self, IoError> {
        let temp = dir.join(temp_name(name));
        let file = File::create(&temp).map_err(|e| IoError::io(&temp, e))?;
        let widths = outputs
            .iter()
            .map(|o| {
                let rest = o.dims.get(1..).unwrap_or(&[]);
                rest.iter()
                    .all(|&d| d >= 0)
                    .then(|| Tensor::element_count(rest))
            })
            .collect();
        Ok(PartWriter {
            inner: Some(Inner {
                temp,
                target: dir.join(name),
                format,
                outputs: outputs.to_vec(),
                widths,
                file: Some(file),
                sink: None,
                rows: 0,
            }),
        })
    }

    /// Appends `row_ids.len()` rows; `outputs` in model-output order, each
    /// `[n, ...]` with `n = row_ids.len()`.
    pub fn write(&mut self, row_ids: &[u64], outputs: &[Tensor]) -> Result<(), IoError> {
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| IoError::invalid("part writer already finished"))?;
        inner.write(row_ids, outputs)
    }

    /// Flushes, fsyncs and renames the part over any file of that name.
    /// Returns the rows written.
    pub fn finish(mut self) -> Result<u64, IoError> {
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| IoError::invalid("part writer already finished"))?;
        let result = inner.finish();
        if result.is_err() {
            let _ = std::fs::remove_file(&inner.temp);
        }
        result
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // An abandoned part must not linger; failing to remove it is
            // harmless since temp names are never read as parts.
            let _ = std::fs::remove_file(&inner.temp);
        }
    }
}

impl Inner {
    fn write(&mut self, row_ids: &[u64], outputs: &[Tensor]) -> Result<(), IoError> {
        let n = row_ids.len();
        if outputs.len() != self.outputs.len() {
            return Err(IoError::invalid(format!(
                "expected {} outputs, got {}",
                self.outputs.len(),
                outputs.len()
            )));
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(row_ids.to_vec()))];
        for (i, (spec, t)) in self.outputs.iter().zip(outputs).enumerate() {
            let rest = t.shape.get(1..).unwrap_or(&[]);
            let width = Tensor::element_count(rest);
            let expected_bytes = n * width * spec.dtype.size();
            if t.dtype != spec.dtype
                || t.shape.first() != Some(&(n as i64))
                || rest.iter().any(|&d| d < 0)
                || t.data.len() != expected_bytes
                || self.widths[i].is_some_and(|w| w != width)
            {
                return Err(IoError::invalid(format!(
                    "output {}: expected {} [{n}, {}] ({expected_bytes} bytes), got {} {:?} ({} bytes)",
                    spec.name,
                    spec.dtype,
                    self.widths[i].map_or("?".to_string(), |w| w.to_string()),
                    t.dtype,
                    t.shape,
                    t.data.len()
                )));
            }
            self.widths[i] = Some(width);
            columns.extend(output_columns(spec.dtype, &t.data, width, self.flatten())?);
        }
        let schema = self.schema()?;
        let batch = RecordBatch::try_new(schema, columns)?;
        self.sink()?.write(&batch)?;
        self.rows += n as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<u64, IoError> {
        if self.sink.is_none() {
            // No rows: still a valid file of the right schema (CSV: a header).
            let schema = self.schema()?;
            let empty = RecordBatch::new_empty(schema);
            self.sink()?.write(&empty)?;
        }
        let file = match self.sink.take() {
            Some(Sink::Csv(w)) => buffered_file(w.into_inner(), &self.temp)?,
            Some(Sink::Json(mut w)) => {
                w.finish()?;
                buffered_file(w.into_inner(), &self.temp)?
            }
            Some(Sink::Parquet(w)) => w.into_inner()?,
            None => return Err(IoError::invalid("part writer has no file")),
        };
        commit(file, &self.temp, &self.target)?;
        Ok(self.rows)
    }

    /// CSV has no list type, so wide outputs become one column per value.
    fn flatten(&self) -> bool {
        self.format == Format::Csv
    }

    fn schema(&self) -> Result<SchemaRef, IoError> {
        let mut fields = vec![Field::new("row", ArrowType::UInt64, false)];
        for (spec, width) in self.outputs.iter().zip(&self.widths) {
            let ty = element_type(spec.dtype)?;
            match width.unwrap_or(1) {
                1 => fields.push(Field::new(&spec.name, ty, false)),
                w if self.flatten() => fields.extend(
                    (0..w).map(|k| Field::new(format!("{}_{k}", spec.name), ty.clone(), false)),
                ),
                w => fields.push(Field::new(
                    &spec.name,
                    ArrowType::FixedSizeList(
                        Arc::new(Field::new_list_field(ty, false)),
                        list_len(w)?,
                    ),
                    false,
                )),
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    fn sink(&mut self) -> Result<&mut Sink, IoError> {
        if self.sink.is_none() {
            let schema = self.schema()?;
            let file = self
                .file
                .take()
                .ok_or_else(|| IoError::invalid("part writer has no file"))?;
            self.sink = Some(match self.format {
                Format::Csv => Sink::Csv(Box::new(
                    arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(BufWriter::new(file)),
                )),
                Format::Jsonl => {
                    Sink::Json(arrow::json::LineDelimitedWriter::new(BufWriter::new(file)))
                }
                Format::Parquet => {
                    let props = WriterProperties::builder()
                        .set_compression(Compression::SNAPPY)
                        .build();
                    Sink::Parquet(Box::new(ArrowWriter::try_new(file, schema, Some(props))?))
                }
            });
        }
        self.sink
            .as_mut()
            .ok_or_else(|| IoError::invalid("part writer has no file"))
    }
}

impl Sink {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), IoError> {
        match self {
            Sink::Csv(w) => w.write(batch)?,
            Sink::Json(w) => w.write(batch)?,
            Sink::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }
}

fn list_len(width: usize) -> Result<i32, IoError> {
    i32::try_from(width)
        .map_err(|_| IoError::invalid(format!("an output row of {width} values is too wide")))
}

fn element_type(dtype: DataType) -> Result<ArrowType, IoError> {
    match dtype {
        DataType::Bool => Ok(ArrowType::Boolean),
        d => super::convert::arrow_type(d)
            .ok_or_else(|| IoError::invalid(format!("cannot write {d}"))),
    }
}

/// The Arrow columns of one output: one per value when `flatten` (or when
/// there is one value per row), else one fixed-size-list column.
fn output_columns(
    dtype: DataType,
    data: &[u8],
    width: usize,
    flatten: bool,
) -> Result<Vec<ArrayRef>, IoError> {
    if dtype == DataType::Bool {
        let column = |k: usize| -> ArrayRef {
            let values: Vec<bool> = data
                .iter()
                .skip(k)
                .step_by(width.max(1))
                .map(|&b| b != 0)
                .collect();
            Arc::new(BooleanArray::from(values))
        };
        return match (width, flatten) {
            (1, _) => Ok(vec![column(0)]),
            (w, true) => Ok((0..w).map(column).collect()),
            (w, false) => {
                let values = Arc::new(BooleanArray::from(
                    data.iter().map(|&b| b != 0).collect::<Vec<_>>(),
                ));
                fixed_list(ArrowType::Boolean, w, values)
            }
        };
    }
    with_arrow_type!(dtype, T => match (width, flatten) {
        (1, _) => Ok(vec![strided::<T>(data, 0, 1)]),
        (w, true) => Ok((0..w).map(|k| strided::<T>(data, k, w)).collect()),
        (w, false) => fixed_list(T::DATA_TYPE, w, strided::<T>(data, 0, 1)),
    }, _ => Err(IoError::invalid(format!("cannot write {dtype}"))))
}

/// Values `k, k + step, ...` of little-endian `data` as an Arrow array.
fn strided<T>(data: &[u8], k: usize, step: usize) -> ArrayRef
where
    T: ArrowPrimitiveType,
    T::Native: Le,
{
    let size = <T::Native as Le>::SIZE;
    let values: Vec<T::Native> = data
        .chunks_exact(size * step)
        .map(|row| <T::Native as Le>::get(&row[k * size..(k + 1) * size]))
        .collect();
    Arc::new(PrimitiveArray::<T>::from_iter_values(values))
}

fn fixed_list(ty: ArrowType, width: usize, values: ArrayRef) -> Result<Vec<ArrayRef>, IoError> {
    let field = Arc::new(Field::new_list_field(ty, false));
    let list = FixedSizeListArray::try_new(field, list_len(width)?, values, None)?;
    Ok(vec![Arc::new(list)])
}

/// Writes `items` as JSON Lines to `path` atomically (temp + rename), for
/// error files and manifests that readers may open at any moment.
pub fn write_jsonl_atomic<T: Serialize>(path: &Path, items: &[T]) -> Result<(), IoError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| IoError::invalid(format!("{}: not a file path", path.display())))?;
    let temp = dir.join(temp_name(&name.to_string_lossy()));
    let result = (|| {
        let file = File::create(&temp).map_err(|e| IoError::io(&temp, e))?;
        let mut out = BufWriter::new(file);
        for item in items {
            serde_json::to_writer(&mut out, item)?;
            out.write_all(b"\n").map_err(|e| IoError::io(&temp, e))?;
        }
        let file = buffered_file(out, &temp)?;
        commit(file, &temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn buffered_file(w: BufWriter<File>, path: &Path) -> Result<File, IoError> {
    w.into_inner()
        .map_err(|e| IoError::io(path, e.into_error()))
}

/// Makes `temp` durable and visible as `target`, replacing any older one.
fn commit(file: File, temp: &Path, target: &Path) -> Result<(), IoError> {
    file.sync_all().map_err(|e| IoError::io(temp, e))?;
    drop(file);
    std::fs::rename(temp, target).map_err(|e| IoError::io(target, e))?;
    // The rename itself is only durable once the folder is synced.
    #[cfg(unix)]
    if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| IoError::io(dir, e))?;
    }
    Ok(())
}
