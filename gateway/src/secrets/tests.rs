use super::*;

#[test]
fn tokens_verify_expire_and_resist_tampering() {
    let t = sign_token(b"s", "digits", 100);
    assert_eq!(
        verify_token(b"s", &t, 99),
        TokenCheck::Valid {
            endpoint: "digits".into(),
            expires_unix: 100
        }
    );
    assert_eq!(verify_token(b"s", &t, 100), TokenCheck::Expired);
    assert_eq!(verify_token(b"other", &t, 99), TokenCheck::Invalid);
    // Another endpoint's claims under this token's signature.
    let forged = sign_token(b"s", "other", 100);
    let (p, _) = forged.split_once('.').unwrap();
    let (_, s) = t.split_once('.').unwrap();
    assert_eq!(
        verify_token(b"s", &format!("{p}.{s}"), 99),
        TokenCheck::Invalid
    );
    assert_eq!(verify_token(b"s", "sbk_abc", 0), TokenCheck::NotAToken);
}

#[test]
fn keys_are_random_and_hash_stably() {
    assert_ne!(new_key(), new_key());
    assert_eq!(hash("a"), hash("a"));
    assert_eq!(fingerprint(&hash("a")).len(), 8);
    assert_eq!(
        hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn token_life_defaults_to_an_hour_and_is_capped_at_a_day() {
    let now = 1_000_000;
    assert_eq!(token_expiry(now, 0), now + 3600);
    assert_eq!(token_expiry(now, 60), now + 60);
    assert_eq!(token_expiry(now, 24 * 3600), now + 24 * 3600);
    assert_eq!(token_expiry(now, 24 * 3600 + 1), now + 24 * 3600);
    assert_eq!(token_expiry(now, u64::MAX), now + 24 * 3600);
    // The cap holds for the token itself, not just the number answered.
    let t = sign_token(b"s", "digits", token_expiry(now, 7 * 24 * 3600));
    assert!(matches!(
        verify_token(b"s", &t, now + 24 * 3600 - 1),
        TokenCheck::Valid { .. }
    ));
    assert_eq!(verify_token(b"s", &t, now + 24 * 3600), TokenCheck::Expired);
}
