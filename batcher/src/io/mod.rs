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

mod convert;
mod error;
mod lines;
mod plan;
mod read;
mod read_parquet;
mod read_text;
mod remote;
mod write;

pub use error::{IoError, RowError};
pub use job_queue::Format;
pub use plan::{Piece, Plan, Span, plan, plan_with_header};
pub use read::{Chunk, InputColumns, PieceReader, ReadSpec, read_piece};
pub(crate) use remote::escape as cache_name;
pub use remote::{Location, OutputDir, Remote, Staged, Stores};
pub use write::{PartWriter, write_jsonl_atomic};
