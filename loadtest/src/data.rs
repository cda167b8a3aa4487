//! Payload rows from a file: CSV (a header line is skipped when it is not
//! numeric), JSON Lines (one array of numbers a line) or NPY (a 2-D C-order
//! float32/float64 array). Each row is one sample's features, flattened.

use anyhow::{Context, Result, bail};
use std::path::Path;

pub fn load_rows(path: &Path) -> Result<Vec<Vec<f32>>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let rows = match ext.as_str() {
        "npy" => npy(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?,
        "csv" | "jsonl" | "ndjson" | "json" => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if ext == "csv" {
                csv(&text)?
            } else {
                jsonl(&text)?
            }
        }
        other => bail!(
            "{}: unknown data format '{other}' (csv, jsonl or npy)",
            path.display()
        ),
    };
    let width = rows.first().map_or(0, Vec::len);
    if width == 0 {
        bail!("{}: no rows", path.display());
    }
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
        bail!(
            "{}: row {i} has {} values, the first has {width}",
            path.display(),
            r.len()
        );
    }
    Ok(rows)
}

fn csv(text: &str) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed: Result<Vec<f32>, _> =
            line.split(',').map(|v| v.trim().parse::<f32>()).collect();
        match parsed {
            Ok(r) => rows.push(r),
            Err(_) if i == 0 => continue, // a header
            Err(e) => bail!("CSV line {}: {e}", i + 1),
        }
    }
    Ok(rows)
}

fn jsonl(text: &str) -> Result<Vec<Vec<f32>>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Vec<f64> = serde_json::from_str(l)
                .with_context(|| format!("JSON line {}: expected an array of numbers", i + 1))?;
            Ok(v.into_iter().map(|x| x as f32).collect())
        })
        .collect()
}

/// NPY format 1.0/2.0: magic, version, header length, a Python dict header,
/// then the data.
fn npy(bytes: &[u8]) -> Result<Vec<Vec<f32>>> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not an NPY file");
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => bail!("truncated NPY header"),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + header_len)
            .context("truncated NPY header")?,
    )?;
    if header.contains("'fortran_order': True") {
        bail!("NPY in Fortran order is not supported");
    }
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        bail!("NPY dtype must be <f4 or <f8: {header}")
    };
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .context("NPY header has no shape")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let (n, cols) = match shape.as_slice() {
        [n] => (*n, 1),
        [n, rest @ ..] => (*n, rest.iter().product()),
        [] => bail!("NPY scalar has no rows"),
    };
    let data = &bytes[start + header_len..];
    if data.len() < n * cols * width {
        bail!("NPY data shorter than its shape {shape:?}");
    }
    let value = |k: usize| -> f32 {
        let b = &data[k * width..(k + 1) * width];
        if width == 4 {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }
    };
    Ok((0..n)
        .map(|r| (0..cols).map(|c| value(r * cols + c)).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_and_without_header() {
        assert_eq!(
            csv("a,b\n1,2\n3,4\n").unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert_eq!(csv("1,2\n").unwrap(), vec![vec![1.0, 2.0]]);
        assert!(csv("1,2\nx,3\n").is_err());
    }

    #[test]
    fn jsonl_rows() {
        assert_eq!(
            jsonl("[1, 2.5]\n\n[3, 4]\n").unwrap(),
            vec![vec![1.0, 2.5], vec![3.0, 4.0]]
        );
        assert!(jsonl("{\"a\": 1}\n").is_err());
    }

    #[test]
    fn npy_f4_and_f8() {
        fn file(descr: &str, shape: &str, data: Vec<u8>) -> Vec<u8> {
            let mut header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
            while (10 + header.len() + 1) % 64 != 0 {
                header.push(' ');
            }
            header.push('\n');
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend((header.len() as u16).to_le_bytes());
            out.extend(header.as_bytes());
            out.extend(data);
            out
        }
        let f4: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            npy(&file("<f4", "2, 3", f4)).unwrap(),
            vec![vec![1., 2., 3.], vec![4., 5., 6.]]
        );
        let f8: Vec<u8> = [1f64, 2.].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            npy(&file("<f8", "2,", f8)).unwrap(),
            vec![vec![1.], vec![2.]]
        );
        assert!(npy(b"nope").is_err());
    }
}
