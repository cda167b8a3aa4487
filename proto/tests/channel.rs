//! The h2 transport's failure paths, which the end-to-end tests reach only
//! by killing processes: a peer that never answers, and no peer at all.

use proto::channel::H2Channel;
use proto::inference::ServerReadyRequest;
use proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test]
async fn a_call_to_a_silent_peer_ends_at_its_deadline() {
    // Accepts connections and never reads or writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let mut client = GrpcInferenceServiceClient::new(H2Channel::lazy(&addr).unwrap());
    let mut req = tonic::Request::new(ServerReadyRequest {});
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = client.server_ready(req).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "a transport timeout keeps a source, so the router may retry it"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn no_peer_is_unavailable_with_a_cause() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let err = H2Channel::connect(&addr).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let mut client = GrpcInferenceServiceClient::new(H2Channel::lazy(&addr).unwrap());
    let err = client
        .server_ready(ServerReadyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    assert!(H2Channel::lazy("not an address").is_err());
}
