//! Planning: cutting an input into pieces that batchers can take one by one.
//!
//! CSV and JSON Lines are planned in one streaming pass over each file that
//! counts rows and notes the byte offset every `rows_per_piece` rows, so that
//! planning a file of any size costs one sequential read and no memory. A
//! record is one line: CSV fields holding quoted newlines are not supported
//! (such a record is cut in two and both halves are reported as bad rows).
//! Parquet is planned from its footer alone, in whole row groups.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::columns::{csv_columns, json_keys};
use super::lines::{self, is_blank};
use super::piece::{FilePlan, Piece, Plan, Span};
use super::{Format, IoError};

/// Plans `input`: a file, or a folder whose files with a known extension
/// (not hidden, not in subfolders), sorted by name, all of one format, are
/// read in that order, row ids continuing from one file to the next. All
/// files must have the same columns. `format` overrides the extension.
pub fn plan(input: &Path, format: Option<Format>, rows_per_piece: u64) -> Result<Plan, IoError> {
    plan_with_header(input, format, rows_per_piece, None)
}

/// [`plan`], with a CSV file's first line taken as a header (`Some(true)`),
/// as data (`Some(false)`), or judged by `csv_columns` (`None`).
pub fn plan_with_header(
    input: &Path,
    format: Option<Format>,
    rows_per_piece: u64,
    header: Option<bool>,
) -> Result<Plan, IoError> {
    if rows_per_piece == 0 {
        return Err(IoError::invalid("rows_per_piece must be at least 1"));
    }
    let (files, format) = input_files(input, format)?;
    plan_files(&files, format, rows_per_piece, header)
}

/// Plans `files` in the order given, row ids continuing from one to the next.
pub(crate) fn plan_files(
    files: &[PathBuf],
    format: Format,
    rows_per_piece: u64,
    header: Option<bool>,
) -> Result<Plan, IoError> {
    if rows_per_piece == 0 {
        return Err(IoError::invalid("rows_per_piece must be at least 1"));
    }
    let mut plan = Plan {
        columns: Vec::new(),
        pieces: Vec::new(),
        rows_total: 0,
    };
    let mut seen_columns = false;
    for file in files {
        let Some(planned) = plan_file(file, format, rows_per_piece, plan.rows_total, header)?
        else {
            continue; // an empty file adds no rows and has no columns to check
        };
        if !seen_columns {
            plan.columns = planned.columns;
            seen_columns = true;
        } else if planned.columns != plan.columns {
            return Err(IoError::invalid(format!(
                "{} has columns {:?}, but {} has {:?}",
                file.display(),
                planned.columns,
                files[0].display(),
                plan.columns
            )));
        }
        plan.rows_total += planned.rows;
        plan.pieces.extend(planned.pieces);
    }
    Ok(plan)
}

fn input_files(input: &Path, format: Option<Format>) -> Result<(Vec<PathBuf>, Format), IoError> {
    let meta = std::fs::metadata(input).map_err(|e| IoError::io(input, e))?;
    if !meta.is_dir() {
        let format = format.or_else(|| Format::from_path(input)).ok_or_else(|| {
            IoError::invalid(format!(
                "{}: cannot tell the format from the extension; name it",
                input.display()
            ))
        })?;
        return Ok((vec![input.to_path_buf()], format));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(input).map_err(|e| IoError::io(input, e))? {
        let entry = entry.map_err(|e| IoError::io(input, e))?;
        let path = entry.path();
        // Hidden files include our own temps (`crate::layout::temp_name`):
        // never inputs.
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let is_file = entry
            .file_type()
            .map_err(|e| IoError::io(&path, e))?
            .is_file();
        if let (false, true, Some(f)) = (hidden, is_file, Format::from_path(&path)) {
            files.push((path, f));
        }
    }
    folder_files(&input.display().to_string(), files, format)
}

/// A folder's input files sorted by name, and their one format.
pub(crate) fn folder_files<T>(
    folder: &str,
    mut files: Vec<(T, Format)>,
    format: Option<Format>,
) -> Result<(Vec<T>, Format), IoError>
where
    T: AsRef<Path>,
{
    files.sort_by(|a, b| a.0.as_ref().file_name().cmp(&b.0.as_ref().file_name()));
    let Some(&(_, first)) = files.first() else {
        return Err(IoError::invalid(format!(
            "{folder}: no .csv, .jsonl or .parquet file in this folder"
        )));
    };
    let format = format.unwrap_or(first);
    if let Some((path, f)) = files.iter().find(|(_, f)| *f != format) {
        return Err(IoError::invalid(format!(
            "{folder}: a folder must hold files of one format, but {} is {f}, not {format}",
            path.as_ref().display()
        )));
    }
    Ok((files.into_iter().map(|(p, _)| p).collect(), format))
}

fn plan_file(
    path: &Path,
    format: Format,
    per_piece: u64,
    first_row: u64,
    header: Option<bool>,
) -> Result<Option<FilePlan>, IoError> {
    match format {
        Format::Parquet => super::read_parquet::plan_file(path, per_piece, first_row).map(Some),
        Format::Csv | Format::Jsonl => {
            let Some(first) = lines::first_row(path)? else {
                return Ok(None);
            };
            let (columns, header) = match format {
                Format::Csv => csv_columns(&first, header),
                _ => (json_keys(&first, path)?, false),
            };
            let scan = scan_lines(path, per_piece, header)?;
            let path_str = path.to_string_lossy().into_owned();
            let pieces = scan
                .starts
                .iter()
                .enumerate()
                .map(|(i, &(start, rows))| Piece {
                    path: path_str.clone(),
                    format,
                    first_row: first_row + i as u64 * per_piece,
                    rows,
                    span: Span::Bytes {
                        start,
                        end: scan.starts.get(i + 1).map_or(scan.len, |n| n.0),
                    },
                    header,
                })
                .collect();
            Ok(Some(FilePlan {
                columns,
                pieces,
                rows: scan.rows,
            }))
        }
    }
}

struct Scan {
    /// (byte offset, rows) of each piece.
    starts: Vec<(u64, u64)>,
    rows: u64,
    len: u64,
}

/// Counts the data rows of a file and notes where every `per_piece`-th one
/// starts. Piece boundaries sit right after a row's newline, so blank lines
/// between pieces go to the later one (which skips them).
fn scan_lines(path: &Path, per_piece: u64, header: bool) -> Result<Scan, IoError> {
    let mut file = File::open(path).map_err(|e| IoError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64; // of buf[0] in the file
    let mut line_has_data = false;
    let mut skip = u64::from(header);
    let mut rows = 0u64; // data rows ended so far
    let mut starts = vec![(0u64, 0u64)];
    loop {
        let n = file.read(&mut buf).map_err(|e| IoError::io(path, e))?;
        if n == 0 {
            break;
        }
        let mut line_start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..n]) {
            let ended_row = line_has_data || !is_blank(&buf[line_start..nl]);
            line_has_data = false;
            line_start = nl + 1;
            if !ended_row {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            rows += 1;
            if rows.is_multiple_of(per_piece) {
                starts.push((offset + nl as u64 + 1, 0));
            }
        }
        line_has_data = line_has_data || !is_blank(&buf[line_start..n]);
        offset += n as u64;
    }
    if line_has_data && skip == 0 {
        rows += 1; // a last line without newline
    }
    // A boundary after the last row would open an empty piece.
    if starts.len() > 1 && rows.is_multiple_of(per_piece) {
        starts.pop();
    }
    let pieces = starts.len() as u64;
    for (i, s) in starts.iter_mut().enumerate() {
        s.1 = if i as u64 + 1 < pieces {
            per_piece
        } else {
            rows - per_piece * (pieces - 1)
        };
    }
    if rows == 0 {
        starts.clear();
    }
    Ok(Scan {
        starts,
        rows,
        len: offset,
    })
}
