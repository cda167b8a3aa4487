//! Parquet pieces: ranges of whole row groups, read through parquet's Arrow
//! reader with only the needed columns decoded.

use std::fs::File;
use std::path::Path;

use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};

use super::convert::{Layout, assemble};
use super::needed::Needed;
use super::piece::{FilePlan, Piece, Span};
use super::spec::{Chunk, ReadSpec};
use super::{Format, IoError};

fn open(path: &Path) -> Result<(File, ArrowReaderMetadata), IoError> {
    let file = File::open(path).map_err(|e| IoError::io(path, e))?;
    let meta = ArrowReaderMetadata::load(&file, Default::default()).map_err(|e| {
        IoError::invalid(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    })?;
    let len = file.metadata().map_err(|e| IoError::io(path, e))?.len();
    check_chunks(path, len, &meta)?;
    Ok((file, meta))
}

/// Every column chunk the footer names lies inside the file. parquet
/// panics on a negative offset or size (`ColumnChunkMetaData::byte_range`)
/// and a corrupt footer can say anything, so it is checked once here,
/// where a bad file is still an error.
fn check_chunks(path: &Path, file_len: u64, meta: &ArrowReaderMetadata) -> Result<(), IoError> {
    for (g, group) in meta.metadata().row_groups().iter().enumerate() {
        for (c, col) in group.columns().iter().enumerate() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(col.compressed_size()).ok())
                .and_then(|(s, l)| s.checked_add(l));
            if end.is_none_or(|end| end > file_len) {
                return Err(IoError::invalid(format!(
                    "{}: not a readable Parquet file: row group {g}, column {c} \
                     claims bytes from {start}, {} long, in a file of {file_len}",
                    path.display(),
                    col.compressed_size()
                )));
            }
        }
    }
    Ok(())
}

/// Groups consecutive row groups into pieces of at most `per_piece` rows
/// (a single larger group makes a piece of its own), from the footer alone.
pub(crate) fn plan_file(path: &Path, per_piece: u64, first_row: u64) -> Result<FilePlan, IoError> {
    let (_, meta) = open(path)?;
    let columns = meta
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let path_str = path.to_string_lossy().into_owned();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut next_row = first_row;
    let mut open_piece: Option<Piece> = None;
    for (g, group) in meta.metadata().row_groups().iter().enumerate() {
        let rows = group.num_rows().max(0) as u64;
        if let Some(p) = open_piece.take_if(|p| p.rows > 0 && p.rows + rows > per_piece) {
            pieces.push(p);
        }
        let piece = open_piece.get_or_insert_with(|| Piece {
            path: path_str.clone(),
            format: Format::Parquet,
            first_row: next_row,
            rows: 0,
            span: Span::RowGroups { start: g, end: g },
            header: false,
        });
        piece.rows += rows;
        if let Span::RowGroups { end, .. } = &mut piece.span {
            *end = g + 1;
        }
        next_row += rows;
    }
    pieces.extend(open_piece.filter(|p| p.rows > 0));
    Ok(FilePlan {
        columns,
        pieces,
        rows: next_row - first_row,
    })
}

pub(crate) struct ParquetPiece {
    reader: ParquetRecordBatchReader,
    layout: Layout,
    next_row: u64,
}

impl ParquetPiece {
    pub(crate) fn open(
        piece: &Piece,
        start: usize,
        end: usize,
        spec: &ReadSpec,
    ) -> Result<Self, IoError> {
        let path = Path::new(&piece.path);
        let (file, meta) = open(path)?;
        let names: Vec<String> = meta
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let needed = Needed::new(spec, &names, "is null")?;
        let groups = meta.metadata().row_groups();
        let planned = groups
            .get(start..end)
            .map(|g| g.iter().map(|g| g.num_rows().max(0) as u64).sum::<u64>());
        if planned != Some(piece.rows) {
            return Err(IoError::invalid(format!(
                "{}: row groups {start}..{end} do not hold the {} rows planned: \
                 the file changed since planning",
                piece.path, piece.rows
            )));
        }
        let mask = ProjectionMask::roots(meta.parquet_schema(), needed.columns.iter().copied());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
            .with_row_groups((start..end).collect())
            .with_projection(mask)
            .with_batch_size(spec.chunk_rows)
            .build()?;
        Ok(ParquetPiece {
            reader,
            layout: needed.layout,
            next_row: piece.first_row,
        })
    }

    pub(crate) fn next_chunk(&mut self) -> Result<Option<Chunk>, IoError> {
        // parquet and arrow decode pages with asserts that a corrupt page
        // can trip (seen by io_fuzz: "offset + len out of bounds" in
        // arrow-buffer's bit iterator). A panic here is a bad file, not a
        // bad batcher: it becomes this piece's error, and the reader is
        // not used again (PieceReader ends after an error).
        let reader = &mut self.reader;
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.next()))
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                IoError::invalid(format!(
                    "not a readable Parquet file: decoding failed: {why}"
                ))
            })?;
        let Some(batch) = next.transpose()? else {
            return Ok(None);
        };
        let n = batch.num_rows() as u64;
        let ids = (self.next_row..self.next_row + n).collect();
        self.next_row += n;
        assemble(&self.layout, batch.columns(), ids, Vec::new()).map(Some)
    }
}
