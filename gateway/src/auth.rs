//! Who is calling, and what they may do. `Authenticator` is the check the
//! gate layer runs on every call: it reads `authorization: Bearer …`, works
//! out who is calling, and leaves a `Principal` in the request's
//! extensions. Authorization needs the endpoint, which is in the message
//! body, so the services check it with `authorize_*` after decoding.

use crate::gate::Check;
use crate::secrets::{self, TokenCheck};
use crate::store::{AuthMode, EndpointRecord, Snapshot, Store};
use std::sync::Arc;
use tonic::Status;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credential sent: only endpoints with auth mode `none` let it in.
    Anonymous,
    Admin,
    Key {
        endpoint: String,
        hash: String,
    },
    Token {
        endpoint: String,
        expires_unix: i64,
    },
}

impl Principal {
    /// What the rate limiter counts requests against: each key, and all
    /// tokens of an endpoint together (tokens are cheap to mint, so a
    /// bucket per token would be no limit at all).
    pub fn limit_key(&self) -> Option<String> {
        match self {
            Principal::Key { hash, .. } => Some(format!("key:{hash}")),
            Principal::Token { endpoint, .. } => Some(format!("tokens:{endpoint}")),
            Principal::Anonymous | Principal::Admin => None,
        }
    }
}

/// Whether a credential checked earlier (at a stream's opening) still
/// holds: the key not regenerated, the token not expired.
pub fn still_valid(p: &Principal, snap: &Snapshot) -> Result<(), Status> {
    match p {
        Principal::Key { hash, .. } if !snap.keys.contains_key(hash) => {
            Err(Status::unauthenticated("key was regenerated"))
        }
        Principal::Token { expires_unix, .. } if *expires_unix <= secrets::now_unix() => Err(
            Status::unauthenticated("token expired; get a new one with GetToken"),
        ),
        _ => Ok(()),
    }
}

#[derive(Clone)]
pub struct Authenticator {
    store: Arc<Store>,
    admin_hash: Option<Arc<str>>,
}

impl Authenticator {
    /// `admin_key` is hashed at once; the plain value is not kept.
    pub fn new(store: Arc<Store>, admin_key: Option<&str>) -> Self {
        Authenticator {
            store,
            admin_hash: admin_key.map(|k| Arc::from(secrets::hash(k.trim()))),
        }
    }
}

impl Check for Authenticator {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let _span = proto::trace::child_span!("authenticate").entered();
        let p = authenticate(
            req.headers(),
            self.admin_hash.as_deref(),
            &self.store.snapshot(),
            secrets::now_unix(),
        )
        .inspect_err(|s| crate::telemetry::record_auth_refusal(s.code()))?;
        req.extensions_mut().insert(p);
        Ok(())
    }
}

/// The caller that `headers` name, judged against the admin key's hash and
/// the control plane's keys and token secret at time `now_unix`. Kept apart
/// from the `Store` so that it can be checked without Redis.
pub(crate) fn authenticate(
    headers: &http::HeaderMap,
    admin_hash: Option<&str>,
    snap: &Snapshot,
    now_unix: i64,
) -> Result<Principal, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Principal::Anonymous);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?
        .trim();
    let credential = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <key or token>'"))?;
    let hash = secrets::hash(credential);
    if admin_hash == Some(hash.as_str()) {
        return Ok(Principal::Admin);
    }
    if let Some((endpoint, _)) = snap.keys.get(&hash) {
        return Ok(Principal::Key {
            endpoint: endpoint.clone(),
            hash,
        });
    }
    match secrets::verify_token(&snap.token_secret, credential, now_unix) {
        TokenCheck::Valid {
            endpoint,
            expires_unix,
        } => Ok(Principal::Token {
            endpoint,
            expires_unix,
        }),
        TokenCheck::Expired => Err(Status::unauthenticated(
            "token expired; get a new one with GetToken",
        )),
        TokenCheck::Invalid => Err(Status::unauthenticated("invalid token")),
        TokenCheck::NotAToken => Err(Status::unauthenticated("unknown key")),
    }
}

pub fn principal<T>(req: &tonic::Request<T>) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Anonymous)
}

/// May this caller score on this endpoint?
pub fn authorize_infer(p: &Principal, ep: &EndpointRecord) -> Result<(), Status> {
    let name = &ep.name;
    match (ep.auth_mode, p) {
        (AuthMode::None, _) | (_, Principal::Admin) => Ok(()),
        (AuthMode::Key, Principal::Key { endpoint, .. })
        | (AuthMode::Token, Principal::Token { endpoint, .. }) => {
            if endpoint == name {
                Ok(())
            } else {
                Err(Status::permission_denied(format!(
                    "credential is for endpoint '{endpoint}', not '{name}'"
                )))
            }
        }
        (_, Principal::Anonymous) => Err(Status::unauthenticated(format!(
            "endpoint '{name}' needs a credential"
        ))),
        (AuthMode::Key, Principal::Token { .. }) => Err(Status::unauthenticated(format!(
            "endpoint '{name}' takes keys, not tokens"
        ))),
        (AuthMode::Token, Principal::Key { .. }) => Err(Status::unauthenticated(format!(
            "endpoint '{name}' takes tokens; get one with GetToken"
        ))),
    }
}

/// Management is for the admin key only.
pub fn authorize_admin(p: &Principal) -> Result<(), Status> {
    match p {
        Principal::Admin => Ok(()),
        Principal::Anonymous => Err(Status::unauthenticated("management needs the admin key")),
        _ => Err(Status::permission_denied(
            "management needs the admin key; endpoint credentials may only score",
        )),
    }
}

/// Tokens are issued to the admin and to holders of the endpoint's key.
pub fn authorize_token_issue(p: &Principal, endpoint: &str) -> Result<(), Status> {
    match p {
        Principal::Admin => Ok(()),
        Principal::Key { endpoint: e, .. } if e == endpoint => Ok(()),
        Principal::Anonymous => Err(Status::unauthenticated(
            "GetToken needs the admin key or the endpoint's key",
        )),
        _ => Err(Status::permission_denied(format!(
            "credential may not issue tokens for '{endpoint}'"
        ))),
    }
}
