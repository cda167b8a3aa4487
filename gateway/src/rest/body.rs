//! Reading a request body: whole, within the gateway's message limit, and
//! decompressed when the client sent it gzip- or deflate-encoded (as
//! tritonclient.http does with `request_compression_algorithm`). The limit
//! holds for the decompressed bytes too, so a small compressed body cannot
//! expand past it.

use super::errors::RestError;
use axum::extract::Request;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use std::io::Read;

fn too_large(limit: usize) -> RestError {
    RestError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request is larger than the gateway's message limit of {limit} bytes"),
    }
}

pub async fn read(req: Request, limit: usize) -> Result<(HeaderMap, Bytes), RestError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    let encoding = parts.headers.get(header::CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let gzip = match encoding.as_deref() {
        None | Some("" | "identity") => return Ok((parts.headers, bytes)),
        Some("gzip") => true,
        // HTTP's "deflate" is the zlib format (RFC 9110), as tritonclient sends it.
        Some("deflate") => false,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "Content-Encoding '{other}' is not supported (gzip, deflate or none)"
            )));
        }
    };
    // Inflating megabytes takes milliseconds: off the async threads.
    let inflated = tokio::task::spawn_blocking(move || {
        if gzip {
            inflate(flate2::read::GzDecoder::new(&bytes[..]), limit)
        } else {
            inflate(flate2::read::ZlibDecoder::new(&bytes[..]), limit)
        }
    })
    .await
    .map_err(|e| RestError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("decompressing the body: {e}"),
    })??;
    Ok((parts.headers, inflated))
}

fn inflate(decoder: impl Read, limit: usize) -> Result<Bytes, RestError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RestError::bad_request(format!("the body does not decompress: {e}")))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn request(encoding: Option<&str>, body: Vec<u8>) -> Request {
        let mut b = http::Request::builder();
        if let Some(e) = encoding {
            b = b.header(header::CONTENT_ENCODING, e);
        }
        b.body(axum::body::Body::from(body)).unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn compressed_bodies_are_inflated_within_the_limit() {
        let (_, b) = read(request(Some("gzip"), gzip(b"{\"a\":1}")), 64)
            .await
            .unwrap();
        assert_eq!(&b[..], b"{\"a\":1}");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"hello").unwrap();
        let (_, b) = read(request(Some("deflate"), z.finish().unwrap()), 64)
            .await
            .unwrap();
        assert_eq!(&b[..], b"hello");
        // A bomb: 1 MiB of zeros compresses to ~1 KiB, and stops at the limit.
        let e = read(request(Some("gzip"), gzip(&vec![0; 1 << 20])), 4096)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = read(request(Some("gzip"), b"not gzip".to_vec()), 64)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = read(request(Some("br"), b"x".to_vec()), 64)
            .await
            .unwrap_err();
        assert!(e.message.contains("'br'"), "{}", e.message);
        let e = read(request(None, vec![1; 65]), 64).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
