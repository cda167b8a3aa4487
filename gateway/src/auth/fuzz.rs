//! Property tests of credential parsing: `authorization` headers of any
//! bytes, and tokens and keys with characters changed, inserted or removed.
//! No header may panic the gateway; a refusal is always UNAUTHENTICATED;
//! and a credential changed in any way is never accepted as what it was.
//! `SWITCHBOARD_FUZZ_CASES` sets the cases (default 256).

use super::*;
use crate::secrets::{hash, sign_token, verify_token};
use crate::store::KeyRecord;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tonic::Code;

const ADMIN: &str = "sbk_admin";
const KEY: &str = "sbk_Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
const SECRET: &[u8] = b"the gateways' token secret";
const NOW: i64 = 1_700_000_000;

fn cases() -> u32 {
    std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn snapshot() -> Snapshot {
    let ep = EndpointRecord {
        name: "digits".into(),
        auth_mode: AuthMode::Key,
        description: String::new(),
        deployments: Default::default(),
        traffic: Default::default(),
        mirror: None,
        keys: [KEY, "sbk_other"].map(|k| KeyRecord {
            hash: hash(k),
            created_unix: NOW,
        }),
    };
    Snapshot::build(1, vec![ep], SECRET.to_vec())
}

fn token() -> String {
    sign_token(SECRET, "digits", NOW + 60)
}

/// Applies edits `(at, op, char)` to `s`: replace, insert or remove the
/// char at `at` (modulo the length).
fn mutate(s: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for &(at, op, c) in edits {
        let n = chars.len();
        match op % 3 {
            0 if n > 0 => chars[at % n] = c,
            1 => chars.insert(at % (n + 1), c),
            2 if n > 0 => {
                chars.remove(at % n);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Characters a credential is made of, and some that it is not.
fn credential_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::char::range('A', 'Z'),
        proptest::char::range('a', 'z'),
        proptest::char::range('0', '9'),
        Just('_'),
        Just('-'),
        Just('.'),
        Just('='),
        Just(' '),
        Just('+'),
        Just('/'),
        any::<char>(),
    ]
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), credential_char()), 1..6)
}

fn check(value: &[u8]) -> Option<Result<Principal, Status>> {
    let v = HeaderValue::from_bytes(value).ok()?;
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, v);
    Some(authenticate(&h, Some(&hash(ADMIN)), &snapshot(), NOW))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any bytes that make a header value: a principal or UNAUTHENTICATED.
    #[test]
    fn any_header_is_a_principal_or_unauthenticated(
        value in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        if let Some(Err(s)) = check(&value) {
            prop_assert_eq!(s.code(), Code::Unauthenticated);
        }
    }

    /// A token changed anywhere is refused (UNAUTHENTICATED), never read
    /// as a valid token, even when the change leaves it well formed.
    #[test]
    fn a_changed_token_is_never_valid(e in edits()) {
        let good = token();
        let bad = mutate(&good, &e);
        prop_assume!(bad.trim() != good);
        prop_assert!(
            !matches!(verify_token(SECRET, &bad, NOW), crate::secrets::TokenCheck::Valid { .. }),
            "{} accepted", bad
        );
        if let Some(r) = check(format!("Bearer {bad}").as_bytes()) {
            match r {
                Err(s) => prop_assert_eq!(s.code(), Code::Unauthenticated),
                Ok(p) => prop_assert!(false, "{} accepted as {:?}", bad, p),
            }
        }
    }

    /// A key changed anywhere is refused, whatever it now looks like.
    #[test]
    fn a_changed_key_is_refused(e in edits()) {
        let bad = mutate(KEY, &e);
        prop_assume!(bad.trim() != KEY);
        if let Some(r) = check(format!("Bearer {bad}").as_bytes()) {
            match r {
                Err(s) => prop_assert_eq!(s.code(), Code::Unauthenticated),
                Ok(p) => prop_assert!(false, "{} accepted as {:?}", bad, p),
            }
        }
    }
}

#[test]
fn the_unchanged_credentials_are_accepted() {
    let ok = |c: &str| check(format!("Bearer {c}").as_bytes()).unwrap().unwrap();
    assert_eq!(
        ok(KEY),
        Principal::Key {
            endpoint: "digits".into(),
            hash: hash(KEY)
        }
    );
    assert!(matches!(ok(&token()), Principal::Token { .. }));
    assert_eq!(ok(ADMIN), Principal::Admin);
}
