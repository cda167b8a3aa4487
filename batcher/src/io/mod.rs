//! Batch-job file I/O: planning an input into pieces, streaming a piece as
//! model-input chunks, and writing output parts atomically.
//!
//! Locations are local paths, `file://` URIs, or object-store URIs
//! (see [`Stores`]), which are staged to and from local files so that the
//! readers and writers below only ever see local files.
//!
//! Inputs are CSV, JSON Lines or Parquet, as one file or a folder of files
//! of one format. Bad rows never fail a piece: they come back as
//! [`RowError`]s with their global row id, and the rows around them are kept.
//!
//! Files, each depending only on those listed before it: `error`, `piece`
//! and `spec` (the types the others share), `lines` and `columns` (text
//! files line by line, and their column names), `convert` and `needed`
//! (Arrow columns to tensors), `read_text` and `read_parquet` (one reader
//! per format, Parquet's planning included), `read` (a piece's reader),
//! `plan`, `write`, and `remote` (object stores, staged to local files).

mod columns;
mod convert;
mod error;
mod lines;
mod needed;
mod piece;
mod plan;
mod read;
mod read_parquet;
mod read_text;
mod remote;
mod spec;
mod write;

pub use error::{IoError, RowError};
pub use job_queue::Format;
pub use piece::{Piece, Plan, Span};
pub use plan::{plan, plan_with_header};
pub use read::{PieceReader, read_piece};
pub(crate) use remote::escape as cache_name;
pub use remote::{Location, OutputDir, Remote, Staged, Stores};
pub use spec::{Chunk, InputColumns, ReadSpec};
pub use write::{PartWriter, write_jsonl_atomic};
