//! Line-oriented access to CSV and JSON Lines files.
//!
//! Both formats are planned and read as "one record per line": a line holding
//! only ASCII whitespace is not a row (so a blank trailing line is not one
//! either), and a line ends at `\n`, with an optional `\r` before it.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use super::IoError;

/// Bytes asked of the OS at a time: large enough that syscalls vanish from
/// profiles, small enough that many readers can run side by side.
const READ_SIZE: u64 = 1 << 20;

pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

pub(crate) fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Iterates the rows (non-blank lines, without terminator) of a block.
pub(crate) fn rows(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block
        .split(|&b| b == b'\n')
        .map(trim_cr)
        .filter(|l| !is_blank(l))
}

/// The first non-blank line of a file, if it has one.
pub(crate) fn first_row(path: &Path) -> Result<Option<Vec<u8>>, IoError> {
    let mut src = LineSource::open(path, 0, u64::MAX)?;
    Ok(src
        .next_block(1)?
        .and_then(|b| rows(b.bytes).next().map(<[u8]>::to_vec)))
}

/// Splits one CSV record into fields, undoing RFC 4180 quoting. Only `,` is a
/// delimiter; a record never spans lines (see the module doc).
pub(crate) fn split_csv(line: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        if line.get(i) == Some(&b'"') {
            let mut field = Vec::new();
            i += 1;
            while i < line.len() {
                match (line[i], line.get(i + 1)) {
                    (b'"', Some(b'"')) => {
                        field.push(b'"');
                        i += 2;
                    }
                    (b'"', _) => {
                        i += 1;
                        break;
                    }
                    (b, _) => {
                        field.push(b);
                        i += 1;
                    }
                }
            }
            // Whatever sits between the closing quote and the delimiter is
            // kept, as lenient CSV readers do.
            let rest_end =
                memchr::memchr(b',', &line[i.min(line.len())..]).map_or(line.len(), |p| i + p);
            field.extend_from_slice(&line[i.min(rest_end)..rest_end]);
            fields.push(Cow::Owned(field));
            i = rest_end;
        } else {
            let end = memchr::memchr(b',', &line[i..]).map_or(line.len(), |p| i + p);
            fields.push(Cow::Borrowed(&line[i..end]));
            i = end;
        }
        if i >= line.len() {
            return fields;
        }
        i += 1; // the delimiter
        if i == line.len() {
            fields.push(Cow::Borrowed(&line[i..]));
            return fields;
        }
    }
}

/// A run of whole lines holding `rows` rows (blank lines may sit between).
pub(crate) struct Block<'a> {
    pub bytes: &'a [u8],
    pub rows: usize,
}

/// Reads whole lines from a byte range of a file, in blocks of a bounded
/// number of rows, so that memory stays at one block whatever the file size.
pub(crate) struct LineSource {
    path: PathBuf,
    file: Take<File>,
    buf: Vec<u8>,
    /// First byte of `buf` not yet handed out.
    start: usize,
    eof: bool,
}

impl LineSource {
    pub(crate) fn open(path: &Path, start: u64, end: u64) -> Result<Self, IoError> {
        let mut file = File::open(path).map_err(|e| IoError::io(path, e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| IoError::io(path, e))?;
        Ok(LineSource {
            path: path.to_path_buf(),
            file: file.take(end.saturating_sub(start)),
            buf: Vec::new(),
            start: 0,
            eof: false,
        })
    }

    /// The next block of at most `max_rows` rows; `None` once the range is
    /// exhausted. A final line without terminator counts as a line.
    pub(crate) fn next_block(&mut self, max_rows: usize) -> Result<Option<Block<'_>>, IoError> {
        let mut scan = self.start;
        let mut rows = 0;
        loop {
            while rows < max_rows {
                let Some(nl) = memchr::memchr(b'\n', &self.buf[scan..]) else {
                    break;
                };
                if !is_blank(&self.buf[scan..scan + nl]) {
                    rows += 1;
                }
                scan += nl + 1;
            }
            if rows == max_rows {
                break;
            }
            if self.eof {
                if !is_blank(&self.buf[scan..]) {
                    rows += 1;
                }
                scan = self.buf.len();
                break;
            }
            // Keep only the unfinished block, then read more behind it.
            self.buf.drain(..self.start);
            scan -= self.start;
            self.start = 0;
            let got = (&mut self.file)
                .take(READ_SIZE)
                .read_to_end(&mut self.buf)
                .map_err(|e| IoError::io(&self.path, e))?;
            self.eof = got == 0;
        }
        let bytes = &self.buf[self.start..scan];
        self.start = scan;
        Ok((rows > 0).then_some(Block { bytes, rows }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(line: &str) -> Vec<String> {
        split_csv(line.as_bytes())
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    #[test]
    fn splits_plain_quoted_and_empty_fields() {
        assert_eq!(strs("a,b,c"), ["a", "b", "c"]);
        assert_eq!(strs("a,,"), ["a", "", ""]);
        assert_eq!(strs(""), [""]);
        assert_eq!(strs(r#""x,y",2,"say ""hi""""#), ["x,y", "2", r#"say "hi""#]);
    }

    #[test]
    fn blank_lines_are_not_rows() {
        let got: Vec<&[u8]> = rows(b"1,2\r\n\r\n  \n3,4\n\n").collect();
        assert_eq!(got, [&b"1,2"[..], &b"3,4"[..]]);
    }
}
