//! The unit of work a plan is cut into, as it travels in the queue.

use serde::{Deserialize, Serialize};

use super::Format;

/// One unit of work: a row range of one file. It travels in a queue as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Piece {
    pub path: String,
    pub format: Format,
    /// Global 0-based row id of the piece's first data row.
    pub first_row: u64,
    pub rows: u64,
    pub span: Span,
    /// CSV: the file has a header line, which a piece skips only when it
    /// starts at byte 0.
    pub header: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    /// Byte range `[start, end)`, starting at a line start.
    Bytes { start: u64, end: u64 },
    /// Parquet row groups `[start, end)`.
    RowGroups { start: usize, end: usize },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Plan {
    pub columns: Vec<String>,
    pub pieces: Vec<Piece>,
    pub rows_total: u64,
}

/// One file's share of a plan, before its pieces join the others.
pub(crate) struct FilePlan {
    pub(crate) columns: Vec<String>,
    pub(crate) pieces: Vec<Piece>,
    pub(crate) rows: u64,
}
