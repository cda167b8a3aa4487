//! What a reader is asked for, and what it hands back.

use engine::{DataType, Tensor};

use super::RowError;

#[derive(Clone, Debug)]
pub struct ReadSpec {
    /// One per model input, in model input order.
    pub inputs: Vec<InputColumns>,
    /// false: a NaN or infinite value makes its row an error.
    pub allow_nan: bool,
    /// Rows per chunk produced.
    pub chunk_rows: usize,
}

#[derive(Clone, Debug)]
pub struct InputColumns {
    /// Indices into `Plan::columns`.
    pub columns: Vec<usize>,
    /// The model input's dtype: any numeric one (not BOOL).
    pub dtype: DataType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub row_ids: Vec<u64>,
    /// Per model input: shape `[row_ids.len(), columns.len()]`, row-major,
    /// rows in `row_ids` order.
    pub inputs: Vec<Tensor>,
    /// Rows that could not be read, in row order.
    pub errors: Vec<RowError>,
}
