//! Tensors as the engine sees them: a data type, a shape and little-endian
//! bytes. Keeping payloads as raw bytes lets typed and raw V2 contents share one
//! path, and makes batching a matter of concatenating byte ranges.

use bytes::Bytes;
use std::fmt;

/// Element types, named as in the KServe V2 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint16,
    Uint32,
    Uint64,
    Fp32,
    Fp64,
}

impl DataType {
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Fp32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Fp64 => 8,
        }
    }

    /// The V2 protocol's name (`"FP32"`, `"INT64"`, ...).
    pub fn v2_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    pub fn from_v2_name(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::Uint8,
            "INT8" => DataType::Int8,
            "INT16" => DataType::Int16,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "UINT16" => DataType::Uint16,
            "UINT32" => DataType::Uint32,
            "UINT64" => DataType::Uint64,
            "FP32" => DataType::Fp32,
            "FP64" => DataType::Fp64,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// A named tensor's declared type: `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

impl Tensor {
    pub fn element_count(shape: &[i64]) -> usize {
        shape.iter().map(|&d| d.max(0) as usize).product()
    }

    /// Bytes of one row (everything but dim 0).
    pub fn row_bytes(&self) -> usize {
        Self::element_count(self.shape.get(1..).unwrap_or(&[])) * self.dtype.size()
    }

    pub fn rows(&self) -> usize {
        self.shape.first().map_or(1, |&d| d.max(0) as usize)
    }

    pub fn from_f32(shape: Vec<i64>, values: &[f32]) -> Self {
        Tensor {
            dtype: DataType::Fp32,
            shape,
            data: Bytes::copy_from_slice(bytemuck::cast_slice(values)),
        }
    }

    /// The payload as a runtime may copy it: bool must be 0 or 1 in memory,
    /// while a request may carry any non-zero byte for true.
    pub fn runtime_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.dtype == DataType::Bool {
            self.data.iter().map(|&b| u8::from(b != 0)).collect()
        } else {
            std::borrow::Cow::Borrowed(&self.data)
        }
    }

    /// Copies the payload out as `T` (payload bytes need not be aligned).
    pub fn to_vec<T: bytemuck::Pod>(&self) -> Vec<T> {
        let n = self.data.len() / std::mem::size_of::<T>();
        let mut out = vec![T::zeroed(); n];
        bytemuck::cast_slice_mut::<T, u8>(&mut out)
            .copy_from_slice(&self.data[..n * std::mem::size_of::<T>()]);
        out
    }
}

/// What a model takes and gives. `batched` is true when every input and
/// output has a dynamic first dimension, so requests can be stacked on it.
#[derive(Debug, Clone)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub batched: bool,
}

impl ModelSignature {
    pub fn new(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> Self {
        let batched = !inputs.is_empty()
            && inputs
                .iter()
                .chain(&outputs)
                .all(|t| t.dims.first() == Some(&-1));
        ModelSignature {
            inputs,
            outputs,
            batched,
        }
    }
}
