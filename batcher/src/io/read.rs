//! Streaming a piece as chunks of model-input tensors.

use arrow::datatypes::DataType as ArrowType;
use engine::{DataType, Tensor};

use super::convert::{Layout, arrow_type};
use super::{Format, IoError, Piece, RowError, Span};
use super::{read_parquet::ParquetPiece, read_text::TextPiece};

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

/// Chunks of one piece. Every row of the piece ends up exactly once in a
/// chunk's `row_ids` or `errors`; after an `Err` the iterator ends.
pub struct PieceReader {
    inner: Option<Inner>,
}

enum Inner {
    Text(Box<TextPiece>),
    Parquet(Box<ParquetPiece>),
}

impl Iterator for PieceReader {
    type Item = Result<Chunk, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.inner.as_mut()? {
            Inner::Text(t) => t.next_chunk(),
            Inner::Parquet(p) => p.next_chunk(),
        };
        match item {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => {
                self.inner = None;
                None
            }
            Err(e) => {
                self.inner = None;
                Some(Err(e))
            }
        }
    }
}

/// Opens a piece for reading; the file is streamed, never loaded whole.
pub fn read_piece(piece: &Piece, spec: &ReadSpec) -> Result<PieceReader, IoError> {
    if spec.chunk_rows == 0 {
        return Err(IoError::invalid("chunk_rows must be at least 1"));
    }
    if spec.inputs.is_empty() {
        return Err(IoError::invalid("no model input to read"));
    }
    for (k, input) in spec.inputs.iter().enumerate() {
        if input.columns.is_empty() {
            return Err(IoError::invalid(format!("input {k} names no column")));
        }
        if arrow_type(input.dtype).is_none() {
            return Err(IoError::invalid(format!(
                "input {k}: {} inputs cannot be read from files",
                input.dtype
            )));
        }
    }
    let inner = match (piece.format, &piece.span) {
        (Format::Csv | Format::Jsonl, Span::Bytes { start, end }) => {
            Inner::Text(Box::new(TextPiece::open(piece, *start, *end, spec)?))
        }
        (Format::Parquet, Span::RowGroups { start, end }) => {
            Inner::Parquet(Box::new(ParquetPiece::open(piece, *start, *end, spec)?))
        }
        (format, span) => {
            return Err(IoError::invalid(format!(
                "a {format} piece cannot have span {span:?}"
            )));
        }
    };
    Ok(PieceReader { inner: Some(inner) })
}

/// The file columns a spec needs, in ascending order, and how each input
/// maps onto them.
pub(crate) struct Needed {
    pub columns: Vec<usize>,
    pub layout: Layout,
}

impl Needed {
    pub(crate) fn new(
        spec: &ReadSpec,
        names: &[String],
        null_word: &'static str,
    ) -> Result<Needed, IoError> {
        let mut columns: Vec<usize> = spec.inputs.iter().flat_map(|i| i.columns.clone()).collect();
        columns.sort_unstable();
        columns.dedup();
        if let Some(&bad) = columns.iter().find(|&&c| c >= names.len()) {
            return Err(IoError::invalid(format!(
                "column index {bad} is out of range: the input has {} columns",
                names.len()
            )));
        }
        // Every input column is in `columns` by construction: the search hits.
        let position = |c: &usize| columns.binary_search(c).unwrap_or_default();
        let inputs = spec
            .inputs
            .iter()
            .map(|i| (i.dtype, i.columns.iter().map(position).collect()))
            .collect();
        let layout = Layout {
            names: columns.iter().map(|&c| names[c].clone()).collect(),
            inputs,
            allow_nan: spec.allow_nan,
            null_word,
        };
        Ok(Needed { columns, layout })
    }

    /// The dtypes the inputs want from needed column `pos`.
    pub(crate) fn dtypes_of(&self, pos: usize) -> impl Iterator<Item = DataType> + '_ {
        self.layout
            .inputs
            .iter()
            .filter(move |(_, p)| p.contains(&pos))
            .map(|(d, _)| *d)
    }

    /// The one dtype all users of column `pos` want, if they agree.
    pub(crate) fn common_type(&self, pos: usize) -> Option<ArrowType> {
        let mut dtypes = self.dtypes_of(pos);
        let first = dtypes.next()?;
        dtypes
            .all(|d| d == first)
            .then(|| arrow_type(first))
            .flatten()
    }
}
