use super::*;
use std::convert::Infallible;
use tonic::{Code, Status};
use tower::{ServiceExt, service_fn};

/// What a client reads from the layer when the service answers `status`.
async fn seen(status: Status) -> Status {
    let service = service_fn(move |_: http::Request<()>| {
        let answer = status.clone().into_http::<()>();
        async move { Ok::<_, Infallible>(answer) }
    });
    let Ok(resp) = OversizeStatusLayer
        .layer(service)
        .oneshot(http::Request::new(()))
        .await;
    Status::from_header_map(resp.headers()).expect("a status in the headers")
}

#[tokio::test]
async fn tonics_oversize_refusal_becomes_resource_exhausted() {
    // tonic's own wording (codec/decode.rs and encode.rs).
    for message in [
        "Error, decoded message length too large: found 20 bytes, the limit is: 10 bytes",
        "Error, encoded message length too large: found 20 bytes, the limit is: 10 bytes",
    ] {
        let s = seen(Status::out_of_range(message)).await;
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert_eq!(s.message(), message);
    }
}

#[tokio::test]
async fn other_statuses_pass_unchanged() {
    let s = seen(Status::out_of_range("index 7 is past the end")).await;
    assert_eq!(s.code(), Code::OutOfRange);
    let s = seen(Status::invalid_argument("message too large")).await;
    assert_eq!(s.code(), Code::InvalidArgument);
}
