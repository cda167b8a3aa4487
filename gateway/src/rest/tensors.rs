//! Tensor data between JSON and the V2 raw layout (little-endian elements,
//! row-major; BYTES as a 4-byte little-endian length before each element),
//! so that every REST request reaches the router as `raw_input_contents`,
//! whatever the client sent.

use bytes::{BufMut, Bytes, BytesMut};
use proto::inference::InferTensorContents;
use serde::Serialize;
use serde_json::Value;

/// Bytes per element of a fixed-size V2 datatype; `None` for BYTES and
/// for names that are not V2 datatypes.
pub fn element_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

pub fn is_datatype(dtype: &str) -> bool {
    dtype == "BYTES" || element_size(dtype).is_some()
}

/// The elements that a shape holds, or why it holds none.
pub fn element_count(shape: &[i64]) -> Result<usize, String> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d =
            usize::try_from(d).map_err(|_| format!("shape {shape:?} has a negative dimension"))?;
        n.checked_mul(d)
            .ok_or_else(|| format!("shape {shape:?} is too large"))
    })
}

/// Nested arrays flattened row-major, as Triton accepts them.
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// JSON `data` of `count` elements of `dtype` in the raw layout.
pub fn json_to_raw(data: &Value, dtype: &str, count: usize) -> Result<Bytes, String> {
    // Sized by what was sent, never by the shape: a shape may claim more
    // elements than memory holds.
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    if flat.len() != count {
        return Err(format!(
            "data holds {} elements, the shape {count}",
            flat.len()
        ));
    }
    let mut out = BytesMut::with_capacity(count * element_size(dtype).unwrap_or(8));
    for (i, v) in flat.into_iter().enumerate() {
        put(&mut out, v, dtype).map_err(|want| format!("element {i} is {v}, expected {want}"))?;
    }
    Ok(out.freeze())
}

fn int(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
}

fn put(out: &mut BytesMut, v: &Value, dtype: &str) -> Result<(), &'static str> {
    macro_rules! int_as {
        ($t:ty, $put:ident, $what:literal) => {{
            let n = int(v).and_then(|n| <$t>::try_from(n).ok()).ok_or($what)?;
            out.$put(n);
        }};
    }
    match dtype {
        "BOOL" => out.put_u8(match v {
            Value::Bool(b) => u8::from(*b),
            _ => match int(v) {
                Some(0) => 0,
                Some(1) => 1,
                _ => return Err("a boolean"),
            },
        }),
        "UINT8" => int_as!(u8, put_u8, "an integer in UINT8's range"),
        "INT8" => int_as!(i8, put_i8, "an integer in INT8's range"),
        "UINT16" => int_as!(u16, put_u16_le, "an integer in UINT16's range"),
        "INT16" => int_as!(i16, put_i16_le, "an integer in INT16's range"),
        "UINT32" => int_as!(u32, put_u32_le, "an integer in UINT32's range"),
        "INT32" => int_as!(i32, put_i32_le, "an integer in INT32's range"),
        "UINT64" => int_as!(u64, put_u64_le, "an integer in UINT64's range"),
        "INT64" => int_as!(i64, put_i64_le, "an integer in INT64's range"),
        "FP16" => out.put_u16_le(half::f16::from_f64(v.as_f64().ok_or("a number")?).to_bits()),
        "BF16" => out.put_u16_le(half::bf16::from_f64(v.as_f64().ok_or("a number")?).to_bits()),
        "FP32" => out.put_f32_le(v.as_f64().ok_or("a number")? as f32),
        "FP64" => out.put_f64_le(v.as_f64().ok_or("a number")?),
        "BYTES" => {
            let s = v.as_str().ok_or("a string")?;
            let len = u32::try_from(s.len()).map_err(|_| "a string under 4 GiB")?;
            out.put_u32_le(len);
            out.put_slice(s.as_bytes());
        }
        _ => return Err("a known datatype"),
    }
    Ok(())
}

/// An output's elements as JSON writes them: f32 stays f32, so that its
/// shortest form is written (0.1, not 0.10000000149011612).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Data {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Uint(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Str(Vec<String>),
}

/// Raw output bytes of `dtype` as JSON data.
pub fn raw_to_json(raw: &[u8], dtype: &str) -> Result<Data, String> {
    macro_rules! each {
        ($n:literal, $f:expr) => {{
            if raw.len() % $n != 0 {
                return Err(format!(
                    "{} bytes are not whole {dtype} elements",
                    raw.len()
                ));
            }
            raw.chunks_exact($n)
                .map(|c| $f(c.try_into().unwrap_or([0; $n])))
                .collect()
        }};
    }
    Ok(match dtype {
        "BOOL" => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        "UINT8" => Data::Uint(raw.iter().map(|&b| u64::from(b)).collect()),
        "INT8" => Data::Int(raw.iter().map(|&b| i64::from(b as i8)).collect()),
        "UINT16" => Data::Uint(each!(2, |c| u64::from(u16::from_le_bytes(c)))),
        "INT16" => Data::Int(each!(2, |c| i64::from(i16::from_le_bytes(c)))),
        "UINT32" => Data::Uint(each!(4, |c| u64::from(u32::from_le_bytes(c)))),
        "INT32" => Data::Int(each!(4, |c| i64::from(i32::from_le_bytes(c)))),
        "UINT64" => Data::Uint(each!(8, u64::from_le_bytes)),
        "INT64" => Data::Int(each!(8, i64::from_le_bytes)),
        "FP16" => Data::F32(each!(2, |c| half::f16::from_le_bytes(c).to_f32())),
        "BF16" => Data::F32(each!(2, |c| half::bf16::from_le_bytes(c).to_f32())),
        "FP32" => Data::F32(each!(4, f32::from_le_bytes)),
        "FP64" => Data::F64(each!(8, f64::from_le_bytes)),
        "BYTES" => Data::Str(split_bytes(raw)?),
        _ => return Err(format!("unknown datatype '{dtype}'")),
    })
}

fn split_bytes(mut raw: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let (len, rest) = raw
            .split_first_chunk::<4>()
            .ok_or("BYTES output ends inside a length")?;
        let len = u32::from_le_bytes(*len) as usize;
        let item = rest
            .get(..len)
            .ok_or("BYTES output ends inside an element")?;
        out.push(String::from_utf8_lossy(item).into_owned());
        raw = &rest[len..];
    }
    Ok(out)
}

/// Typed contents in the raw layout, for an answer that came back typed.
pub fn typed_to_raw(c: &InferTensorContents, dtype: &str) -> Bytes {
    let mut out = BytesMut::new();
    match dtype {
        "BOOL" => c
            .bool_contents
            .iter()
            .for_each(|&b| out.put_u8(u8::from(b))),
        "UINT8" => c.uint_contents.iter().for_each(|&v| out.put_u8(v as u8)),
        "UINT16" => c
            .uint_contents
            .iter()
            .for_each(|&v| out.put_u16_le(v as u16)),
        "UINT32" => c.uint_contents.iter().for_each(|&v| out.put_u32_le(v)),
        "INT8" => c.int_contents.iter().for_each(|&v| out.put_i8(v as i8)),
        "INT16" => c
            .int_contents
            .iter()
            .for_each(|&v| out.put_i16_le(v as i16)),
        "INT32" => c.int_contents.iter().for_each(|&v| out.put_i32_le(v)),
        "UINT64" => c.uint64_contents.iter().for_each(|&v| out.put_u64_le(v)),
        "INT64" => c.int64_contents.iter().for_each(|&v| out.put_i64_le(v)),
        "FP32" => c.fp32_contents.iter().for_each(|&v| out.put_f32_le(v)),
        "FP64" => c.fp64_contents.iter().for_each(|&v| out.put_f64_le(v)),
        "BYTES" => c.bytes_contents.iter().for_each(|b| {
            out.put_u32_le(b.len() as u32);
            out.put_slice(b);
        }),
        _ => {}
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_and_flat_data_agree() {
        let a = json_to_raw(&json!([[1.0, 2.0], [3.0, 4.5]]), "FP32", 4).unwrap();
        let b = json_to_raw(&json!([1, 2, 3, 4.5]), "FP32", 4).unwrap();
        assert_eq!(a, b);
        let back = serde_json::to_string(&raw_to_json(&a, "FP32").unwrap()).unwrap();
        assert_eq!(back, "[1.0,2.0,3.0,4.5]");
    }

    #[test]
    fn counts_ranges_and_kinds_are_checked() {
        let e = json_to_raw(&json!([1, 2]), "FP32", 3).unwrap_err();
        assert!(e.contains("2 elements"), "{e}");
        let e = json_to_raw(&json!([300]), "UINT8", 1).unwrap_err();
        assert!(e.contains("UINT8"), "{e}");
        let e = json_to_raw(&json!(["x"]), "INT64", 1).unwrap_err();
        assert!(e.contains("element 0"), "{e}");
        assert!(element_count(&[2, -1]).is_err());
        // A shape far larger than its data is refused without allocating it.
        let huge = element_count(&[1 << 30, 1 << 30]).unwrap();
        assert!(json_to_raw(&json!([1.0]), "FP32", huge).is_err());
        assert!(element_count(&[i64::MAX, 4]).is_err());
        assert_eq!(element_count(&[]).unwrap(), 1);
    }

    #[test]
    fn bytes_round_trip() {
        let raw = json_to_raw(&json!(["ab", ""]), "BYTES", 2).unwrap();
        assert_eq!(&raw[..], b"\x02\0\0\0ab\0\0\0\0");
        let back = serde_json::to_string(&raw_to_json(&raw, "BYTES").unwrap()).unwrap();
        assert_eq!(back, r#"["ab",""]"#);
        assert!(raw_to_json(b"\x05\0\0\0a", "BYTES").is_err());
    }

    #[test]
    fn every_fixed_type_round_trips() {
        for (dtype, v) in [
            ("BOOL", json!([true, false])),
            ("INT8", json!([-1, 2])),
            ("UINT16", json!([65535, 0])),
            ("INT32", json!([-7, 7])),
            ("UINT64", json!([u64::MAX, 1])),
            ("INT64", json!([i64::MIN, 1])),
            ("FP16", json!([0.5, -2.0])),
            ("BF16", json!([0.5, -2.0])),
            ("FP64", json!([0.25, 1e300])),
        ] {
            let raw = json_to_raw(&v, dtype, 2).unwrap();
            assert_eq!(raw.len(), 2 * element_size(dtype).unwrap());
            let back: Value = serde_json::to_value(raw_to_json(&raw, dtype).unwrap()).unwrap();
            assert_eq!(back, v, "{dtype}");
        }
    }
}
