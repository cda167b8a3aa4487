//! Errors over REST as Triton and KServe answer them: an HTTP status and a
//! JSON body `{"error": "..."}`. The gRPC status of the shared code path
//! decides the HTTP status, so both protocols refuse the same cases.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tonic::{Code, Status};

/// A refusal or failure on the REST front door.
#[derive(Debug)]
pub struct RestError {
    pub status: StatusCode,
    pub message: String,
}

impl RestError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        RestError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        RestError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

/// The HTTP status for a gRPC code. Only a model that failed on valid
/// input (INTERNAL) is a 500; a request larger than the message limit is
/// 413 (gRPC says RESOURCE_EXHAUSTED for it, HTTP has its own code).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Status> for RestError {
    fn from(s: Status) -> Self {
        RestError {
            status: http_status(s.code()),
            message: s.message().to_string(),
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The gates of the gRPC stack (authentication, rate limit) refuse with a
/// gRPC trailers-only answer; in front of REST, that answer becomes the
/// REST error it stands for. Answers of the REST handlers pass unchanged.
pub async fn refusal_to_rest(resp: Response<Body>) -> Response<Body> {
    let is_grpc = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return resp;
    }
    match Status::from_header_map(resp.headers()) {
        Some(s) if s.code() != Code::Ok => RestError::from(s).into_response(),
        _ => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_table_maps_as_triton_does() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[tokio::test]
    async fn a_gate_refusal_becomes_json() {
        let grpc = Status::unauthenticated("unknown key").into_http::<Body>();
        let resp = refusal_to_rest(grpc.map(|_| Body::empty())).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 10)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"], "unknown key");
    }
}
