//! Triton's binary tensor data extension: a body is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by the tensors' bytes,
//! each input naming its share with the `binary_data_size` parameter, in
//! the order of the inputs. Answers use the same layout for the outputs
//! asked for with `binary_data` (or `binary_data_output` for all).

use super::errors::RestError;
use bytes::Bytes;
use http::HeaderMap;

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The JSON header and the binary section of a request body.
pub fn split(headers: &HeaderMap, body: Bytes) -> Result<(Bytes, Bytes), RestError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, Bytes::new()));
    };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| RestError::bad_request(format!("{HEADER_LENGTH} must be a byte count")))?;
    if n > body.len() {
        return Err(RestError::bad_request(format!(
            "{HEADER_LENGTH} is {n}, the body only {} bytes",
            body.len()
        )));
    }
    let mut json = body;
    let rest = json.split_off(n);
    Ok((json, rest))
}

/// Hands out the binary section input by input, each its declared size.
pub struct Section {
    rest: Bytes,
}

impl Section {
    pub fn new(rest: Bytes) -> Self {
        Section { rest }
    }

    pub fn take(&mut self, input: &str, size: usize) -> Result<Bytes, RestError> {
        if size > self.rest.len() {
            return Err(RestError::bad_request(format!(
                "input '{input}': binary_data_size is {size}, {} bytes of binary data are left",
                self.rest.len()
            )));
        }
        Ok(self.rest.split_to(size))
    }

    /// Every byte must belong to an input.
    pub fn finish(self) -> Result<(), RestError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(RestError::bad_request(format!(
                "{} bytes of binary data are not claimed by any input's binary_data_size",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_declared_length() {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, "2".parse().unwrap());
        let (json, rest) = split(&h, Bytes::from_static(b"{}abcd")).unwrap();
        assert_eq!((&json[..], &rest[..]), (&b"{}"[..], &b"abcd"[..]));
        let mut s = Section::new(rest);
        assert_eq!(&s.take("a", 3).unwrap()[..], b"abc");
        assert!(s.take("b", 2).is_err());
        assert!(s.finish().is_err());
        h.insert(HEADER_LENGTH, "9".parse().unwrap());
        assert!(split(&h, Bytes::from_static(b"{}")).is_err());
        h.insert(HEADER_LENGTH, "x".parse().unwrap());
        assert!(split(&h, Bytes::from_static(b"{}")).is_err());
    }
}
