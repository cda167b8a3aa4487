//! Streaming a piece as chunks of model-input tensors.

use super::convert::arrow_type;
use super::piece::{Piece, Span};
use super::spec::{Chunk, ReadSpec};
use super::{Format, IoError};
use super::{read_parquet::ParquetPiece, read_text::TextPiece};

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
