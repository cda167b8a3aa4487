//! Planning: formats, row counts, piece boundaries, folders.

use std::fs;
use std::path::Path;

use batcher::io::{Format, Piece, Span, plan};

fn write(path: &Path, text: &str) {
    fs::write(path, text).expect("write test file");
}

fn numeric_csv(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let line: Vec<String> = (0..cols).map(|c| (r * 10 + c).to_string()).collect();
            line.join(",") + "\n"
        })
        .collect()
}

fn summary(pieces: &[Piece]) -> Vec<(u64, u64)> {
    pieces.iter().map(|p| (p.first_row, p.rows)).collect()
}

/// Pieces of one file cover it end to end, with no gap and no overlap.
fn assert_contiguous(pieces: &[Piece], len: u64) {
    let mut at = 0;
    for p in pieces {
        let Span::Bytes { start, end } = p.span else {
            panic!("byte span expected");
        };
        assert_eq!(start, at);
        assert!(end > start);
        at = end;
    }
    assert_eq!(at, len);
}

#[test]
fn csv_with_header_is_cut_every_n_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    write(&path, &format!("a,b,c\n{}", numeric_csv(10, 3)));
    let plan = plan(&path, None, 4).unwrap();
    assert_eq!(plan.columns, ["a", "b", "c"]);
    assert_eq!(plan.rows_total, 10);
    assert_eq!(summary(&plan.pieces), [(0, 4), (4, 4), (8, 2)]);
    assert!(
        plan.pieces
            .iter()
            .all(|p| p.header && p.format == Format::Csv)
    );
    assert_contiguous(&plan.pieces, fs::metadata(&path).unwrap().len());
    // The second piece starts right after data row 3 ("30,31,32\n").
    let text = fs::read_to_string(&path).unwrap();
    let Span::Bytes { start, .. } = plan.pieces[1].span else {
        unreachable!()
    };
    assert!(text[start as usize..].starts_with("40,41,42\n"));
}

#[test]
fn csv_without_header_gets_numbered_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    write(&path, &numeric_csv(8, 2));
    let plan = plan(&path, None, 4).unwrap();
    assert_eq!(plan.columns, ["c0", "c1"]);
    assert_eq!(summary(&plan.pieces), [(0, 4), (4, 4)]);
    assert!(plan.pieces.iter().all(|p| !p.header));
}

#[test]
fn crlf_blank_lines_and_missing_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let crlf = dir.path().join("crlf.csv");
    write(&crlf, "x,y\r\n1,2\r\n3,4\r\n\r\n\r\n");
    let p = plan(&crlf, None, 1).unwrap();
    assert_eq!(p.columns, ["x", "y"]);
    assert_eq!(summary(&p.pieces), [(0, 1), (1, 1)]);

    let open_end = dir.path().join("open.csv");
    write(&open_end, "1,2\n3,4\n5,6");
    let p = plan(&open_end, None, 2).unwrap();
    assert_eq!(summary(&p.pieces), [(0, 2), (2, 1)]);

    let header_only = dir.path().join("h.csv");
    write(&header_only, "a,b\n");
    let p = plan(&header_only, None, 2).unwrap();
    assert_eq!((p.rows_total, p.pieces.len()), (0, 0));
    assert_eq!(p.columns, ["a", "b"]);
}

#[test]
fn jsonl_columns_keep_text_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    write(
        &path,
        "{\"zeta\":1,\"alpha\":2}\n{\"zeta\":3,\"alpha\":4}\n\n",
    );
    let p = plan(&path, None, 10).unwrap();
    assert_eq!(p.columns, ["zeta", "alpha"]);
    assert_eq!(summary(&p.pieces), [(0, 2)]);
    assert_eq!(p.pieces[0].format, Format::Jsonl);
}

#[test]
fn folder_rows_continue_across_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("b.csv"),
        &format!("p,q\n{}", numeric_csv(3, 2)),
    );
    write(
        &dir.path().join("a.csv"),
        &format!("p,q\n{}", numeric_csv(5, 2)),
    );
    write(&dir.path().join(".a.csv.1-0.tmp"), "junk");
    write(&dir.path().join(".hidden.csv"), "junk");
    write(&dir.path().join("README.txt"), "not data");
    let p = plan(dir.path(), None, 2).unwrap();
    assert_eq!(p.rows_total, 8);
    assert_eq!(summary(&p.pieces), [(0, 2), (2, 2), (4, 1), (5, 2), (7, 1)]);
    assert!(p.pieces[..3].iter().all(|x| x.path.ends_with("a.csv")));
    assert!(p.pieces[3..].iter().all(|x| x.path.ends_with("b.csv")));
}

#[test]
fn folder_of_mixed_formats_or_columns_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.csv"), "p,q\n1,2\n");
    write(&dir.path().join("b.jsonl"), "{\"p\":1}\n");
    assert!(plan(dir.path(), None, 2).unwrap_err().is_invalid_input());

    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.csv"), "p,q\n1,2\n");
    write(&dir.path().join("b.csv"), "p,r\n1,2\n");
    assert!(plan(dir.path(), None, 2).unwrap_err().is_invalid_input());
}

#[test]
fn bad_arguments_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    write(&path, "1,2\n");
    assert!(plan(&path, None, 10).unwrap_err().is_invalid_input());
    assert_eq!(plan(&path, Some(Format::Csv), 10).unwrap().rows_total, 1);
    assert!(
        plan(&path, Some(Format::Csv), 0)
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        !plan(&dir.path().join("missing.csv"), None, 1)
            .unwrap_err()
            .is_invalid_input()
    );
}

#[test]
fn format_names_and_pieces_serialise() {
    assert_eq!("NDJSON".parse::<Format>().unwrap(), Format::Jsonl);
    assert_eq!("pq".parse::<Format>().unwrap(), Format::Parquet);
    assert!("xlsx".parse::<Format>().is_err());
    assert_eq!(
        Format::from_path(Path::new("x/y.JSON")),
        Some(Format::Jsonl)
    );
    assert_eq!(Format::Parquet.to_string(), "parquet");
    assert_eq!(serde_json::to_string(&Format::Csv).unwrap(), "\"csv\"");
    let piece = Piece {
        path: "/data/in.csv".into(),
        format: Format::Csv,
        first_row: 7,
        rows: 3,
        span: Span::Bytes { start: 10, end: 40 },
        header: true,
    };
    let json = serde_json::to_string(&piece).unwrap();
    assert_eq!(serde_json::from_str::<Piece>(&json).unwrap(), piece);
}
