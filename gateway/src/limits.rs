//! Request limits as tower layers: a per-credential rate limit, and the
//! status for an oversize message.

use crate::auth::Principal;
use crate::gate::{Check, GateLayer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Status;
use tower::{Layer, Service};

/// Token bucket per credential: `per_second` sustained, the same as burst.
#[derive(Clone)]
pub struct RateLimitLayer {
    per_second: f64,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

impl RateLimitLayer {
    /// 0 turns the limit off.
    pub fn new(per_second: u32) -> Self {
        RateLimitLayer {
            per_second: f64::from(per_second),
            buckets: Default::default(),
        }
    }

    pub fn layer(&self) -> GateLayer<Self> {
        GateLayer(self.clone())
    }

    pub fn check_principal(&self, p: &Principal) -> Result<(), Status> {
        // Off by default: no per-request key to build then.
        if self.per_second <= 0.0 {
            return Ok(());
        }
        match p.limit_key() {
            Some(key) if !self.admit(&key) => Err(Status::resource_exhausted(
                "rate limit for this credential exceeded",
            )),
            _ => Ok(()),
        }
    }

    fn admit(&self, key: &str) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let now = Instant::now();
        let (tokens, last) = buckets
            .entry(key.to_string())
            .or_insert((self.per_second, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second)
            .min(self.per_second);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Check for RateLimitLayer {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        match req.extensions().get::<Principal>() {
            Some(p) => self.check_principal(p),
            None => Ok(()),
        }
    }
}

/// tonic refuses an oversize message with OUT_OF_RANGE; gRPC's own servers
/// (and DESIGN.md) say RESOURCE_EXHAUSTED. The refusal comes back as a
/// trailers-only response, so its status is in the headers to rewrite.
#[derive(Clone, Default)]
pub struct OversizeStatusLayer;

impl<S> Layer<S> for OversizeStatusLayer {
    type Service = OversizeStatus<S>;
    fn layer(&self, inner: S) -> OversizeStatus<S> {
        OversizeStatus { inner }
    }
}

#[derive(Clone)]
pub struct OversizeStatus<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for OversizeStatus<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let h = resp.headers_mut();
            let oversize = h.get("grpc-status").is_some_and(|v| v == "11")
                && h.get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
            if oversize {
                h.insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            Ok(resp)
        })
    }
}
