//! From decoded Arrow columns to model-input tensors: type conversion, row
//! validation, and the column-major to row-major copy.

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray};
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::{DataType as ArrowType, Float32Type, Float64Type};
use arrow::util::display::array_value_to_string;
use bytes::Bytes;
use engine::{DataType, Tensor};

use super::spec::Chunk;
use super::{IoError, RowError};

/// Calls `$body` with `$T` bound to the Arrow primitive type of a numeric
/// model dtype; `$other` for dtypes that have none (BOOL).
macro_rules! with_arrow_type {
    ($dtype:expr, $T:ident => $body:expr, _ => $other:expr) => {{
        use arrow::datatypes as adt;
        match $dtype {
            DataType::Int8 => {
                type $T = adt::Int8Type;
                $body
            }
            DataType::Int16 => {
                type $T = adt::Int16Type;
                $body
            }
            DataType::Int32 => {
                type $T = adt::Int32Type;
                $body
            }
            DataType::Int64 => {
                type $T = adt::Int64Type;
                $body
            }
            DataType::Uint8 => {
                type $T = adt::UInt8Type;
                $body
            }
            DataType::Uint16 => {
                type $T = adt::UInt16Type;
                $body
            }
            DataType::Uint32 => {
                type $T = adt::UInt32Type;
                $body
            }
            DataType::Uint64 => {
                type $T = adt::UInt64Type;
                $body
            }
            DataType::Fp32 => {
                type $T = adt::Float32Type;
                $body
            }
            DataType::Fp64 => {
                type $T = adt::Float64Type;
                $body
            }
            DataType::Bool => $other,
        }
    }};
}
pub(crate) use with_arrow_type;

/// Little-endian encoding of the tensor element types, so tensor bytes are
/// right whatever the host's byte order.
pub(crate) trait Le: Copy {
    const SIZE: usize;
    fn put(self, dst: &mut [u8]);
    fn get(src: &[u8]) -> Self;
}

macro_rules! impl_le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn put(self, dst: &mut [u8]) {
                dst.copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn get(src: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(src);
                <$t>::from_le_bytes(b)
            }
        }
    )*};
}
impl_le!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

pub(crate) fn arrow_type(dtype: DataType) -> Option<ArrowType> {
    with_arrow_type!(dtype, T => Some(T::DATA_TYPE), _ => None)
}

pub(crate) fn is_float(dtype: DataType) -> bool {
    matches!(dtype, DataType::Fp32 | DataType::Fp64)
}

/// What a reader knows about the columns it feeds to `assemble`.
pub(crate) struct Layout {
    /// Name of each decoded column (the file columns the inputs need, in
    /// the order the decoder returns them).
    pub names: Vec<String>,
    /// Per model input: its dtype and the positions of its columns among
    /// the decoded ones.
    pub inputs: Vec<(DataType, Vec<usize>)>,
    pub allow_nan: bool,
    /// How a null is described in this format ("is empty" in CSV...).
    pub null_word: &'static str,
}

/// Builds a chunk from decoded columns whose rows have ids `row_ids`: rows
/// with a bad value move to the errors, the rest become the tensors.
pub(crate) fn assemble(
    layout: &Layout,
    arrays: &[ArrayRef],
    row_ids: Vec<u64>,
    mut errors: Vec<RowError>,
) -> Result<Chunk, IoError> {
    let n = row_ids.len();
    let mut bad: Vec<(usize, String)> = Vec::new();
    let mut typed: Vec<Vec<ArrayRef>> = Vec::with_capacity(layout.inputs.len());
    for (dtype, positions) in &layout.inputs {
        let cols = positions
            .iter()
            .map(|&p| convert(&arrays[p], *dtype, &layout.names[p], layout, &mut bad))
            .collect::<Result<Vec<_>, _>>()?;
        typed.push(cols);
    }
    // Stable sort: the first reason found for a row is the one reported.
    bad.sort_by_key(|b| b.0);
    bad.dedup_by_key(|b| b.0);
    let good: Option<Vec<usize>> = (!bad.is_empty()).then(|| {
        let mut is_bad = vec![false; n];
        bad.iter().for_each(|b| is_bad[b.0] = true);
        (0..n).filter(|&i| !is_bad[i]).collect()
    });
    let rows = good.as_ref().map_or(n, Vec::len);
    let mut inputs = Vec::with_capacity(typed.len());
    for ((dtype, _), cols) in layout.inputs.iter().zip(&typed) {
        let data = with_arrow_type!(*dtype, T => interleave::<T>(cols, good.as_deref(), rows),
            _ => return Err(IoError::invalid(format!("{dtype} inputs are not supported"))));
        inputs.push(Tensor {
            dtype: *dtype,
            shape: vec![rows as i64, cols.len() as i64],
            data: Bytes::from(data),
        });
    }
    if !bad.is_empty() {
        errors.extend(bad.into_iter().map(|(i, reason)| RowError {
            row: row_ids[i],
            reason,
        }));
        errors.sort_by_key(|e| e.row);
    }
    let row_ids = match &good {
        Some(g) => g.iter().map(|&i| row_ids[i]).collect(),
        None => row_ids,
    };
    Ok(Chunk {
        row_ids,
        inputs,
        errors,
    })
}

/// Casts one column to the input's type, noting rows whose value is missing,
/// does not fit, or is NaN/inf when those are not allowed.
fn convert(
    arr: &ArrayRef,
    dtype: DataType,
    name: &str,
    layout: &Layout,
    bad: &mut Vec<(usize, String)>,
) -> Result<ArrayRef, IoError> {
    let target = arrow_type(dtype)
        .ok_or_else(|| IoError::invalid(format!("{dtype} inputs are not supported")))?;
    if !is_float(dtype) && arr.data_type().is_floating() {
        // Arrow truncates 3.7 to 3 when casting to an integer; a model that
        // takes integers must not get silently rounded data.
        let f = cast(arr, &ArrowType::Float64)?;
        for (i, v) in f.as_primitive::<Float64Type>().iter().enumerate() {
            if let Some(v) = v.filter(|v| v.fract() != 0.0 || !v.is_finite()) {
                bad.push((i, format!("column {name}: {v} is not an integer")));
            }
        }
    }
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let out = cast_with_options(arr, &target, &safe).map_err(|e| {
        IoError::invalid(format!(
            "column {name}: cannot read {} as {dtype}: {e}",
            arr.data_type()
        ))
    })?;
    if out.null_count() > 0 {
        for i in (0..out.len()).filter(|&i| out.is_null(i)) {
            let reason = if arr.is_null(i) {
                format!("column {name} {}", layout.null_word)
            } else {
                let v = array_value_to_string(arr, i).unwrap_or_default();
                let what = if is_float(dtype) {
                    "a number".to_string()
                } else {
                    format!("an integer that fits {dtype}")
                };
                format!("column {name}: '{v}' is not {what}")
            };
            bad.push((i, reason));
        }
    }
    if !layout.allow_nan {
        match dtype {
            DataType::Fp32 => non_finite::<Float32Type>(&out, name, bad),
            DataType::Fp64 => non_finite::<Float64Type>(&out, name, bad),
            _ => {}
        }
    }
    Ok(out)
}

fn non_finite<T>(arr: &ArrayRef, name: &str, bad: &mut Vec<(usize, String)>)
where
    T: ArrowPrimitiveType,
    T::Native: Into<f64>,
{
    let arr = arr.as_primitive::<T>();
    let values = arr.values();
    // Whole-column check first: it vectorises, and it almost always passes.
    if values.iter().all(|&v| v.into().is_finite()) {
        return;
    }
    for (i, &v) in values.iter().enumerate() {
        let v: f64 = v.into();
        if !v.is_finite() && arr.is_valid(i) {
            let what = if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            bad.push((i, format!("column {name} is {what}")));
        }
    }
}

/// Row-major copy of `cols` (all of type `T`), keeping rows `good` (all when
/// `None`). Rows outer, columns inner: the output is written once, in order,
/// while the column reads are sequential streams.
fn interleave<T>(cols: &[ArrayRef], good: Option<&[usize]>, rows: usize) -> Vec<u8>
where
    T: ArrowPrimitiveType,
    T::Native: Le,
{
    let size = <T::Native as Le>::SIZE;
    let width = cols.len() * size;
    let mut out = vec![0u8; rows * width];
    if width == 0 {
        return out;
    }
    let values: Vec<&[T::Native]> = cols
        .iter()
        .map(|c| c.as_primitive::<T>().values().as_ref())
        .collect();
    match good {
        None => {
            for (r, dst) in out.chunks_exact_mut(width).enumerate() {
                for (d, col) in dst.chunks_exact_mut(size).zip(&values) {
                    col[r].put(d);
                }
            }
        }
        Some(good) => {
            for (&r, dst) in good.iter().zip(out.chunks_exact_mut(width)) {
                for (d, col) in dst.chunks_exact_mut(size).zip(&values) {
                    col[r].put(d);
                }
            }
        }
    }
    out
}
