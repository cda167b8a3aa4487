//! Credentials. Keys are random and stored only as SHA-256 hashes; tokens
//! are HMAC-signed `endpoint + expiry` and need no storage at all.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[cfg(test)]
mod tests;

const KEY_PREFIX: &str = "sbk_";
const TOKEN_PREFIX: &str = "sbt_";
/// A token's life when GetToken asks for none.
const DEFAULT_TOKEN_TTL: u64 = 3600;
/// Nothing is stored for a token, so none can be revoked: a long-lived one
/// would be a key that regenerating cannot take back.
const MAX_TOKEN_TTL: u64 = 24 * 3600;

pub fn new_key() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{KEY_PREFIX}{}", B64.encode(b))
}

pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// Hex SHA-256: what is stored and compared instead of the key.
/// Runs on every request, so no per-byte `format!`.
pub fn hash(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(secret.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// Enough of the hash to tell keys apart in listings; not enough to matter.
pub fn fingerprint(hash: &str) -> String {
    hash.chars().take(8).collect()
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// endpoint
    e: String,
    /// expiry, unix seconds
    x: i64,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length")
}

pub fn sign_token(secret: &[u8], endpoint: &str, expires_unix: i64) -> String {
    let claims = serde_json::to_vec(&Claims {
        e: endpoint.to_string(),
        x: expires_unix,
    })
    .unwrap_or_default();
    let payload = B64.encode(claims);
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!(
        "{TOKEN_PREFIX}{payload}.{}",
        B64.encode(m.finalize().into_bytes())
    )
}

/// When a token asked for with `ttl_seconds` (0: the default) expires.
pub fn token_expiry(now_unix: i64, ttl_seconds: u64) -> i64 {
    let ttl = match ttl_seconds {
        0 => DEFAULT_TOKEN_TTL,
        t => t.min(MAX_TOKEN_TTL),
    };
    now_unix.saturating_add_unsigned(ttl)
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    NotAToken,
    Invalid,
    Expired,
    Valid { endpoint: String, expires_unix: i64 },
}

pub fn verify_token(secret: &[u8], token: &str, now_unix: i64) -> TokenCheck {
    let Some(rest) = token.strip_prefix(TOKEN_PREFIX) else {
        return TokenCheck::NotAToken;
    };
    let Some((payload, sig)) = rest.split_once('.') else {
        return TokenCheck::Invalid;
    };
    let Ok(sig) = B64.decode(sig) else {
        return TokenCheck::Invalid;
    };
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    if m.verify_slice(&sig).is_err() {
        return TokenCheck::Invalid;
    }
    let Some(claims) = B64
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok())
    else {
        return TokenCheck::Invalid;
    };
    if claims.x <= now_unix {
        return TokenCheck::Expired;
    }
    TokenCheck::Valid {
        endpoint: claims.e,
        expires_unix: claims.x,
    }
}
