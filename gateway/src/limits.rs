//! The per-credential rate limit, fleet-wide: every gateway sharing a Redis
//! draws on one budget per credential per second (`lease`), and admits
//! from what it drew without asking Redis again until that is spent. The
//! layer runs it on each call; the V2 service runs it again on each message
//! of a stream.
//!
//! While Redis cannot be reached, each gateway falls back to limiting on its
//! own (a token bucket at the full limit): a fleet of N gateways then lets
//! up to N times the limit through, which beats refusing everything or
//! letting everything through while the control plane is away.

mod lease;

use crate::auth::Principal;
use futures::future::{BoxFuture, Either};
use lease::Budget;
use redis_conn::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::server::NamedService;
use tower::{Layer, Service};
use tracing::warn;

/// How long a request may wait for a draw before the gateway limits on its
/// own. A draw is one Redis round trip, well under a millisecond when Redis
/// is healthy; a busy Redis (or a busy gateway host) can take tens of
/// milliseconds, and falling back then would let each gateway admit the
/// whole limit, so only a Redis that is clearly away triggers it.
const DRAW_TIMEOUT: Duration = Duration::from_millis(250);

/// After a failed draw, how long a credential is limited locally before
/// Redis is tried again: a Redis that is down costs one timeout a second
/// per credential, not one a request.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RateLimiter {
    inner: Option<Arc<Shared>>,
}

struct Shared {
    per_second: u32,
    budget: Option<Budget>,
    credentials: Mutex<Credentials>,
}

#[derive(Default)]
struct Credentials {
    map: HashMap<String, Arc<tokio::sync::Mutex<Held>>>,
    /// Size at which the map is next swept of idle credentials.
    sweep_at: usize,
}

/// What this gateway holds for one credential.
struct Held {
    /// Drawn from the fleet budget and not yet admitted.
    tokens: u32,
    /// When the second these tokens belong to ends.
    until: Instant,
    /// The fleet budget for that second is spent: refuse until it ends
    /// without asking Redis again.
    spent: bool,
    /// Until then the budget is not asked: the last draw failed.
    away_until: Instant,
    /// The last draw failed: admitting from the local bucket.
    away: bool,
    /// The local token bucket used while Redis is away.
    local: f64,
    local_at: Instant,
}

impl RateLimiter {
    /// `per_second` 0 turns the limit off. Without `conn` the limit is this
    /// gateway's alone.
    pub fn new(per_second: u32, conn: Option<Connection>) -> Self {
        let inner = (per_second > 0).then(|| {
            Arc::new(Shared {
                per_second,
                budget: conn.map(|c| Budget::new(c, per_second)),
                credentials: Default::default(),
            })
        });
        RateLimiter { inner }
    }

    pub async fn check_principal(&self, p: &Principal) -> Result<(), Status> {
        match p.limit_key() {
            Some(key) if self.inner.is_some() => self.check_key(key).await,
            _ => Ok(()),
        }
    }

    /// `key` is the principal's `limit_key`.
    async fn check_key(&self, key: String) -> Result<(), Status> {
        let Some(shared) = &self.inner else {
            return Ok(());
        };
        if shared.admit(key).await {
            Ok(())
        } else {
            crate::telemetry::record_rate_limited();
            Err(Status::resource_exhausted(
                "rate limit for this credential exceeded",
            ))
        }
    }
}

impl Shared {
    async fn admit(&self, key: String) -> bool {
        let held = self.held(&key);
        // One request at a time per credential asks Redis; the others wait
        // for its answer and share the chunk it brings.
        let mut held = held.lock().await;
        let now = Instant::now();
        if now < held.away_until {
            return self.admit_locally(&mut held, now);
        }
        if now < held.until {
            if held.tokens > 0 {
                held.tokens -= 1;
                return true;
            }
            if held.spent {
                return false;
            }
        }
        let Some(budget) = &self.budget else {
            return self.admit_locally(&mut held, now);
        };
        let why = match tokio::time::timeout(DRAW_TIMEOUT, budget.draw(&key)).await {
            Ok(Ok(grant)) => {
                held.away = false;
                held.until = now + grant.valid_for;
                held.spent = grant.granted == 0;
                held.tokens = grant.granted.saturating_sub(1);
                return grant.granted > 0;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {DRAW_TIMEOUT:?}"),
        };
        warn!(error = %why, "rate limit budget unreachable; limiting in this gateway alone");
        if !held.away {
            // The local bucket starts empty, not with a second's worth that
            // the fleet budget may already have handed out.
            held.local = 0.0;
            held.local_at = now;
            held.away = true;
        }
        held.away_until = now + RETRY_AFTER;
        self.admit_locally(&mut held, now)
    }

    /// A token bucket holding up to one second's worth.
    fn admit_locally(&self, held: &mut Held, now: Instant) -> bool {
        let rate = f64::from(self.per_second);
        held.local =
            (held.local + now.duration_since(held.local_at).as_secs_f64() * rate).min(rate);
        held.local_at = now;
        if held.local >= 1.0 {
            held.local -= 1.0;
            true
        } else {
            false
        }
    }

    fn held(&self, key: &str) -> Arc<tokio::sync::Mutex<Held>> {
        let mut creds = match self.credentials.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(h) = creds.map.get(key) {
            return h.clone();
        }
        if creds.map.len() >= creds.sweep_at {
            sweep(&mut creds);
        }
        let now = Instant::now();
        let h = Arc::new(tokio::sync::Mutex::new(Held {
            tokens: 0,
            until: now,
            spent: false,
            away_until: now,
            away: false,
            local: f64::from(self.per_second),
            local_at: now,
        }));
        creds.map.insert(key.to_string(), h.clone());
        h
    }
}

/// Forgets credentials that hold nothing current (their second is over and
/// nobody is using them), so a gateway that has seen many keys does not
/// keep them all. The sweep runs when the map has doubled since the last,
/// so its cost spreads thin over the inserts.
fn sweep(creds: &mut Credentials) {
    let now = Instant::now();
    creds.map.retain(|_, h| match h.try_lock() {
        Ok(held) => now < held.until || held.local_at + Duration::from_secs(1) > now,
        Err(_) => true,
    });
    creds.sweep_at = (creds.map.len() * 2).max(1024);
}

/// The rate limit as a layer, after authentication (which puts the
/// caller's `Principal` in the request).
#[derive(Clone)]
pub struct RateLimitLayer(pub RateLimiter);

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S: NamedService> NamedService for RateLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.limiter.inner.is_none() {
            // Off: no key built, no wait.
            return Either::Left(self.inner.call(req));
        }
        let Some(key) = req
            .extensions()
            .get::<Principal>()
            .and_then(Principal::limit_key)
        else {
            // Anonymous or admin: nothing to count against.
            return Either::Left(self.inner.call(req));
        };
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        Either::Right(Box::pin(async move {
            match limiter.check_key(key).await {
                Ok(()) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        }))
    }
}
