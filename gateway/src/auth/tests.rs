use super::*;
use crate::secrets::{hash, sign_token};
use crate::store::KeyRecord;
use http::{HeaderMap, HeaderValue};
use tonic::Code;

const ADMIN: &str = "sbk_admin";
const SECRET: &[u8] = b"the gateways' token secret";
/// A fixed clock: expiry is tested by where a token's expiry lies against
/// it, not by waiting.
const NOW: i64 = 1_700_000_000;

fn endpoint(name: &str, auth_mode: AuthMode, keys: [&str; 2]) -> EndpointRecord {
    EndpointRecord {
        name: name.into(),
        auth_mode,
        description: String::new(),
        deployments: Default::default(),
        traffic: Default::default(),
        mirror: None,
        keys: keys.map(|k| KeyRecord {
            hash: hash(k),
            created_unix: NOW,
        }),
    }
}

fn snapshot(endpoints: &[&EndpointRecord]) -> Snapshot {
    Snapshot::build(
        1,
        endpoints.iter().map(|&e| e.clone()).collect(),
        SECRET.to_vec(),
    )
}

fn headers(authorization: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(authorization).expect("a valid header value"),
    );
    h
}

fn who(authorization: &str, snap: &Snapshot) -> Result<Principal, Status> {
    authenticate(&headers(authorization), Some(&hash(ADMIN)), snap, NOW)
}

/// Who a token for `endpoint`, signed with the gateways' secret, is.
fn with_token(endpoint: &str, expires_unix: i64, snap: &Snapshot) -> Result<Principal, Status> {
    let token = sign_token(SECRET, endpoint, expires_unix);
    who(&format!("Bearer {token}"), snap)
}

fn key_of(endpoint: &str, key: &str) -> Principal {
    Principal::Key {
        endpoint: endpoint.into(),
        hash: hash(key),
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, fragment: &str) {
    let s = r.expect_err("refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(fragment),
        "'{}' lacks '{fragment}'",
        s.message()
    );
}

#[test]
fn both_key_slots_are_valid_and_a_regenerated_slot_refuses_its_old_key() {
    let digits = endpoint("digits", AuthMode::Key, ["sbk_primary", "sbk_secondary"]);
    let snap = snapshot(&[&digits]);
    for key in ["sbk_primary", "sbk_secondary"] {
        let p = who(&format!("Bearer {key}"), &snap).expect("a key of either slot");
        assert_eq!(p, key_of("digits", key));
        authorize_infer(&p, &digits).expect("may score on its endpoint");
        still_valid(&p, &snap).expect("not regenerated");
    }

    let mut regenerated = digits.clone();
    regenerated.keys[0] = KeyRecord {
        hash: hash("sbk_new_primary"),
        created_unix: NOW,
    };
    let after = snapshot(&[&regenerated]);
    refused(
        who("Bearer sbk_primary", &after),
        Code::Unauthenticated,
        "unknown key",
    );
    assert_eq!(
        who("Bearer sbk_new_primary", &after).expect("the new key"),
        key_of("digits", "sbk_new_primary")
    );
    assert_eq!(
        who("Bearer sbk_secondary", &after).expect("the other slot is untouched"),
        key_of("digits", "sbk_secondary")
    );
    // A stream opened with the old key stops at its next message.
    refused(
        still_valid(&key_of("digits", "sbk_primary"), &after),
        Code::Unauthenticated,
        "regenerated",
    );
    still_valid(&key_of("digits", "sbk_secondary"), &after).expect("still a key");
}

#[test]
fn a_token_is_accepted_until_its_expiry() {
    let digits = endpoint("digits", AuthMode::Token, ["sbk_1", "sbk_2"]);
    let snap = snapshot(&[&digits]);

    let p = with_token("digits", NOW + 60, &snap).expect("an unexpired token");
    assert_eq!(
        p,
        Principal::Token {
            endpoint: "digits".into(),
            expires_unix: NOW + 60
        }
    );
    authorize_infer(&p, &digits).expect("may score on its endpoint");

    for expires in [NOW - 1, NOW] {
        refused(
            with_token("digits", expires, &snap),
            Code::Unauthenticated,
            "token expired",
        );
    }
    let forged = sign_token(b"another secret", "digits", NOW + 60);
    refused(
        who(&format!("Bearer {forged}"), &snap),
        Code::Unauthenticated,
        "invalid token",
    );
}

#[test]
fn a_token_that_expires_while_its_stream_is_open_stops_working() {
    let snap = snapshot(&[]);
    let token = |expires_unix| Principal::Token {
        endpoint: "digits".into(),
        expires_unix,
    };
    refused(
        still_valid(&token(secrets::now_unix() - 1), &snap),
        Code::Unauthenticated,
        "token expired",
    );
    still_valid(&token(secrets::now_unix() + 3600), &snap).expect("an hour left");
}

#[test]
fn a_credential_for_another_endpoint_is_denied() {
    let digits = endpoint("digits", AuthMode::Token, ["sbk_d1", "sbk_d2"]);
    let other = endpoint("other", AuthMode::Token, ["sbk_o1", "sbk_o2"]);
    let snap = snapshot(&[&digits, &other]);
    let p = with_token("other", NOW + 60, &snap).expect("a valid token");
    refused(
        authorize_infer(&p, &digits),
        Code::PermissionDenied,
        "for endpoint 'other', not 'digits'",
    );
    authorize_infer(&p, &other).expect("its own endpoint");

    let keyed = endpoint("keyed", AuthMode::Key, ["sbk_k1", "sbk_k2"]);
    let p = key_of("other", "sbk_o1");
    refused(
        authorize_infer(&p, &keyed),
        Code::PermissionDenied,
        "for endpoint 'other', not 'keyed'",
    );
}

#[test]
fn each_auth_mode_takes_only_its_own_credential() {
    let by_key = endpoint("by-key", AuthMode::Key, ["sbk_1", "sbk_2"]);
    let by_token = endpoint("by-token", AuthMode::Token, ["sbk_3", "sbk_4"]);
    let open = endpoint("open", AuthMode::None, ["sbk_5", "sbk_6"]);
    let snap = snapshot(&[&by_key, &by_token, &open]);

    let key = who("Bearer sbk_3", &snap).expect("by-token's key");
    refused(
        authorize_infer(&key, &by_token),
        Code::Unauthenticated,
        "takes tokens; get one with GetToken",
    );
    let token = with_token("by-key", NOW + 60, &snap).expect("a token for by-key");
    refused(
        authorize_infer(&token, &by_key),
        Code::Unauthenticated,
        "takes keys, not tokens",
    );

    for ep in [&by_key, &by_token] {
        refused(
            authorize_infer(&Principal::Anonymous, ep),
            Code::Unauthenticated,
            "needs a credential",
        );
        authorize_infer(&Principal::Admin, ep).expect("the admin may score anywhere");
    }
    for p in [Principal::Anonymous, key, token] {
        authorize_infer(&p, &open).expect("mode none lets anyone in");
    }
}

#[test]
fn malformed_authorization_headers_are_unauthenticated() {
    let snap = snapshot(&[&endpoint("digits", AuthMode::Key, ["sbk_1", "sbk_2"])]);
    for bad in [
        "Basic sbk_1",
        "Bearer",
        "Bearer    ",
        "Bearersbk_1",
        "sbk_1",
    ] {
        refused(who(bad, &snap), Code::Unauthenticated, "must be 'Bearer");
    }
    let mut opaque = HeaderMap::new();
    opaque.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xffsbk_1").expect("opaque bytes are a header value"),
    );
    refused(
        authenticate(&opaque, None, &snap, NOW),
        Code::Unauthenticated,
        "malformed authorization header",
    );
    refused(
        who("Bearer sbk_not-a-key", &snap),
        Code::Unauthenticated,
        "unknown key",
    );
    refused(
        who("Bearer sbt_not.a-token", &snap),
        Code::Unauthenticated,
        "invalid token",
    );

    // What is accepted around the credential: either case of the scheme,
    // and white space.
    for good in ["bearer sbk_1", "  Bearer   sbk_1  "] {
        assert_eq!(who(good, &snap).expect(good), key_of("digits", "sbk_1"));
    }
    assert_eq!(
        authenticate(&HeaderMap::new(), None, &snap, NOW).expect("no header"),
        Principal::Anonymous
    );
}

#[test]
fn the_admin_key_is_known_only_when_one_is_configured() {
    let snap = snapshot(&[]);
    assert_eq!(
        who(&format!("Bearer {ADMIN}"), &snap).expect("the admin key"),
        Principal::Admin
    );
    refused(
        authenticate(&headers(&format!("Bearer {ADMIN}")), None, &snap, NOW),
        Code::Unauthenticated,
        "unknown key",
    );
}

#[test]
fn management_takes_only_the_admin_key() {
    authorize_admin(&Principal::Admin).expect("the admin");
    refused(
        authorize_admin(&Principal::Anonymous),
        Code::Unauthenticated,
        "needs the admin key",
    );
    let token = Principal::Token {
        endpoint: "digits".into(),
        expires_unix: NOW,
    };
    for p in [key_of("digits", "sbk_1"), token] {
        refused(
            authorize_admin(&p),
            Code::PermissionDenied,
            "endpoint credentials may only score",
        );
    }
}

#[test]
fn tokens_are_issued_to_the_admin_and_the_endpoints_own_keys() {
    authorize_token_issue(&Principal::Admin, "digits").expect("the admin");
    authorize_token_issue(&key_of("digits", "sbk_1"), "digits").expect("its own key");
    refused(
        authorize_token_issue(&key_of("other", "sbk_1"), "digits"),
        Code::PermissionDenied,
        "may not issue tokens for 'digits'",
    );
    let token = Principal::Token {
        endpoint: "digits".into(),
        expires_unix: NOW + 60,
    };
    refused(
        authorize_token_issue(&token, "digits"),
        Code::PermissionDenied,
        "may not issue tokens",
    );
    refused(
        authorize_token_issue(&Principal::Anonymous, "digits"),
        Code::Unauthenticated,
        "admin key or the endpoint's key",
    );
}
