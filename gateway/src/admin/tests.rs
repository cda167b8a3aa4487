use super::*;
use crate::gate::Gate;
use crate::manage::ManagementService;
use proto::switchboard::v1::management_server::ManagementServer;
use std::convert::Infallible;
use tonic::Code;
use tonic::server::NamedService;
use tower::{Layer, ServiceExt, service_fn};

/// Every management method but GetToken.
const ADMIN_METHODS: [&str; 11] = [
    "CreateEndpoint",
    "UpdateEndpoint",
    "GetEndpoint",
    "ListEndpoints",
    "DeleteEndpoint",
    "CreateDeployment",
    "DeleteDeployment",
    "SetTraffic",
    "SetMirror",
    "GetKeys",
    "RegenerateKey",
];

const REACHED: &str = "reached the service";

/// The gate's answer for a call to `path` by `caller` (None: no
/// authentication layer ran): Ok when the call went through.
async fn through_gate(path: &str, caller: Option<Principal>) -> Result<(), Status> {
    let service = service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(REACHED.to_string()))
    });
    let mut req = http::Request::builder()
        .uri(path)
        .body(())
        .expect("a request");
    if let Some(p) = caller {
        req.extensions_mut().insert(p);
    }
    let Ok(resp) = admin_gate().layer(service).oneshot(req).await;
    match Status::from_header_map(resp.headers()) {
        Some(refusal) => {
            assert_ne!(resp.body(), REACHED, "refused, yet the service ran");
            Err(refusal)
        }
        None => {
            assert_eq!(resp.body(), REACHED);
            Ok(())
        }
    }
}

fn key() -> Principal {
    Principal::Key {
        endpoint: "digits".into(),
        hash: "h".into(),
    }
}

fn token() -> Principal {
    Principal::Token {
        endpoint: "digits".into(),
        expires_unix: i64::MAX,
    }
}

fn method(name: &str) -> String {
    format!("/{SERVICE_NAME}/{name}")
}

#[tokio::test]
async fn management_methods_take_only_the_admin_key() {
    for m in ADMIN_METHODS {
        let path = method(m);
        through_gate(&path, Some(Principal::Admin))
            .await
            .unwrap_or_else(|s| panic!("{m}: admin refused: {s:?}"));
        for caller in [None, Some(Principal::Anonymous)] {
            let s = through_gate(&path, caller).await.expect_err(m);
            assert_eq!(s.code(), Code::Unauthenticated, "{m}: {s:?}");
            assert!(s.message().contains("needs the admin key"), "{m}: {s:?}");
        }
        for caller in [key(), token()] {
            let s = through_gate(&path, Some(caller)).await.expect_err(m);
            assert_eq!(s.code(), Code::PermissionDenied, "{m}: {s:?}");
        }
    }
}

#[tokio::test]
async fn get_token_passes_to_check_its_caller_itself() {
    for caller in [None, Some(Principal::Anonymous), Some(key()), Some(token())] {
        through_gate(&method("GetToken"), caller)
            .await
            .expect("GetToken decides for itself");
    }
    // Only that method of that service: nothing that merely looks like it.
    for path in [
        "/other.Service/GetToken".to_string(),
        method("GetTokens"),
        method("GetToken/x"),
    ] {
        let s = through_gate(&path, Some(key())).await.expect_err(&path);
        assert_eq!(s.code(), Code::PermissionDenied, "{path}: {s:?}");
    }
}

#[test]
fn the_gated_service_keeps_its_name_for_routing() {
    assert_eq!(
        <Gate<ManagementServer<ManagementService>, AdminOnly> as NamedService>::NAME,
        SERVICE_NAME
    );
}
