//! KServe V2 messages to engine tensors and back. Typed `contents` and
//! `raw_input_contents` both become little-endian bytes; answers mirror the
//! request's choice.

use bytes::Bytes;
use engine::{DataType, EngineError, Tensor};
use proto::inference::model_infer_request::InferInputTensor;
use proto::inference::model_infer_response::InferOutputTensor;
use proto::inference::{InferTensorContents, ModelInferRequest};

fn le_bytes<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Bytes {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        out.extend_from_slice(&to(v));
    }
    out.into()
}

/// The `contents` field that carries `dtype` (Triton's table: 8/16-bit
/// integers travel widened in `int_contents` / `uint_contents`).
fn field_of(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Int64 => "int64_contents",
        DataType::Int32 | DataType::Int16 | DataType::Int8 => "int_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Uint32 | DataType::Uint16 | DataType::Uint8 => "uint_contents",
        DataType::Bool => "bool_contents",
    }
}

/// Fields of `c` that hold values, with their counts.
fn filled(c: &InferTensorContents) -> Vec<(&'static str, usize)> {
    [
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("bool_contents", c.bool_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

/// A narrow integer widened for the wire, narrowed back; a value that does
/// not fit is refused rather than wrapped.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>>(
    name: &str,
    dtype: DataType,
    values: &[W],
) -> Result<Vec<T>, EngineError> {
    values
        .iter()
        .map(|&v| {
            T::try_from(v).map_err(|_| {
                EngineError::InvalidArgument(format!(
                    "input '{name}': value {v} in {} is out of range for {dtype}",
                    field_of(dtype)
                ))
            })
        })
        .collect()
}

/// Bytes of a typed `contents` field, converted to `dtype`'s width. Only
/// the field that carries `dtype` may hold values, and as many as the shape
/// has elements (when the shape's size can be computed at all; a shape
/// that cannot is refused later, against the model).
fn typed_bytes(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    c: &InferTensorContents,
) -> Result<Bytes, EngineError> {
    let want = field_of(dtype);
    let filled = filled(c);
    if let Some((other, _)) = filled.iter().find(|(f, _)| *f != want) {
        return Err(EngineError::InvalidArgument(format!(
            "input '{name}': {other} given for a {dtype} input; expected {want}"
        )));
    }
    let got = filled.first().map_or(0, |(_, n)| *n);
    let elements = shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    if let Some(elements) = elements.filter(|&e| e != got) {
        return Err(EngineError::InvalidArgument(format!(
            "input '{name}': shape {shape:?} has {elements} elements, {want} has {got}"
        )));
    }
    Ok(match dtype {
        DataType::Fp32 => le_bytes(&c.fp32_contents, f32::to_le_bytes),
        DataType::Fp64 => le_bytes(&c.fp64_contents, f64::to_le_bytes),
        DataType::Int64 => le_bytes(&c.int64_contents, i64::to_le_bytes),
        DataType::Int32 => le_bytes(&c.int_contents, i32::to_le_bytes),
        DataType::Int16 => le_bytes(
            &narrow::<i32, i16>(name, dtype, &c.int_contents)?,
            i16::to_le_bytes,
        ),
        DataType::Int8 => le_bytes(
            &narrow::<i32, i8>(name, dtype, &c.int_contents)?,
            i8::to_le_bytes,
        ),
        DataType::Uint64 => le_bytes(&c.uint64_contents, u64::to_le_bytes),
        DataType::Uint32 => le_bytes(&c.uint_contents, u32::to_le_bytes),
        DataType::Uint16 => le_bytes(
            &narrow::<u32, u16>(name, dtype, &c.uint_contents)?,
            u16::to_le_bytes,
        ),
        DataType::Uint8 => le_bytes(&narrow::<u32, u8>(name, dtype, &c.uint_contents)?, |v| [v]),
        DataType::Bool => le_bytes(&c.bool_contents, |v| [u8::from(v)]),
    })
}

/// The request's inputs as named engine tensors, and whether it used raw
/// contents (so the answer can do the same).
pub fn request_inputs(
    req: &ModelInferRequest,
) -> Result<(Vec<(String, Tensor)>, bool), EngineError> {
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(EngineError::InvalidArgument(format!(
            "{} inputs but {} raw_input_contents; expected one per input",
            req.inputs.len(),
            req.raw_input_contents.len()
        )));
    }
    if req.inputs.is_empty() {
        return Err(EngineError::InvalidArgument("request has no inputs".into()));
    }
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(req.inputs.len());
    for (i, t) in req.inputs.iter().enumerate() {
        // As Triton: the two ways of sending data exclude each other, per
        // input, so no request is ever read two ways.
        if raw && t.contents.is_some() {
            return Err(EngineError::InvalidArgument(format!(
                "input '{}': contents must not be given along with raw_input_contents",
                t.name
            )));
        }
        if out.iter().any(|(n, _)| *n == t.name) {
            return Err(EngineError::InvalidArgument(format!(
                "input '{}' is given more than once",
                t.name
            )));
        }
        let data = req.raw_input_contents.get(i).filter(|_| raw).cloned();
        out.push((t.name.clone(), input_tensor(t, data)?));
    }
    Ok((out, raw))
}

fn input_tensor(t: &InferInputTensor, raw: Option<Bytes>) -> Result<Tensor, EngineError> {
    let dtype = DataType::from_v2_name(&t.datatype).ok_or_else(|| {
        EngineError::InvalidArgument(format!(
            "input '{}': unsupported datatype '{}'",
            t.name, t.datatype
        ))
    })?;
    let data = match (raw, &t.contents) {
        (Some(raw), _) => raw,
        (None, Some(c)) => typed_bytes(&t.name, dtype, &t.shape, c)?,
        (None, None) => {
            return Err(EngineError::InvalidArgument(format!(
                "input '{}': no data (neither contents nor raw_input_contents)",
                t.name
            )));
        }
    };
    Ok(Tensor {
        dtype,
        shape: t.shape.clone(),
        data,
    })
}

/// One output for the answer; with `raw`, its bytes go to `raw_output_contents`.
pub fn output_tensor(name: &str, t: Tensor, raw: bool) -> (InferOutputTensor, Option<Bytes>) {
    let mut out = InferOutputTensor {
        name: name.to_string(),
        datatype: t.dtype.v2_name().to_string(),
        shape: t.shape.clone(),
        ..Default::default()
    };
    if raw {
        return (out, Some(t.data));
    }
    let mut c = InferTensorContents::default();
    match t.dtype {
        DataType::Fp32 => c.fp32_contents = t.to_vec::<f32>(),
        DataType::Fp64 => c.fp64_contents = t.to_vec::<f64>(),
        DataType::Int64 => c.int64_contents = t.to_vec::<i64>(),
        DataType::Int32 => c.int_contents = t.to_vec::<i32>(),
        DataType::Int16 => c.int_contents = t.to_vec::<i16>().into_iter().map(i32::from).collect(),
        DataType::Int8 => c.int_contents = t.to_vec::<i8>().into_iter().map(i32::from).collect(),
        DataType::Uint64 => c.uint64_contents = t.to_vec::<u64>(),
        DataType::Uint32 => c.uint_contents = t.to_vec::<u32>(),
        DataType::Uint16 => {
            c.uint_contents = t.to_vec::<u16>().into_iter().map(u32::from).collect()
        }
        DataType::Uint8 => c.uint_contents = t.data.iter().map(|&b| u32::from(b)).collect(),
        DataType::Bool => c.bool_contents = t.data.iter().map(|&b| b != 0).collect(),
    }
    out.contents = Some(c);
    (out, None)
}

/// Triton's `model_config.proto` DataType numbers.
pub fn config_dtype(d: DataType) -> i32 {
    match d {
        DataType::Bool => 1,
        DataType::Uint8 => 2,
        DataType::Uint16 => 3,
        DataType::Uint32 => 4,
        DataType::Uint64 => 5,
        DataType::Int8 => 6,
        DataType::Int16 => 7,
        DataType::Int32 => 8,
        DataType::Int64 => 9,
        DataType::Fp32 => 11,
        DataType::Fp64 => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_raw_give_the_same_bytes() {
        let typed = InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            contents: Some(InferTensorContents {
                fp32_contents: vec![1.5, -2.0],
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = input_tensor(&typed, None).unwrap();
        let raw = Bytes::from([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        let b = input_tensor(
            &InferInputTensor {
                contents: None,
                ..typed
            },
            Some(raw),
        )
        .unwrap();
        assert_eq!(a, b);
        let (out, none) = output_tensor("y", a, false);
        assert!(none.is_none());
        assert_eq!(out.contents.unwrap().fp32_contents, vec![1.5, -2.0]);
    }
}
