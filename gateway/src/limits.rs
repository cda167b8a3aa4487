//! The per-credential rate limit: a check that the gate layer runs on each
//! call, and that the V2 service runs again on each message of a stream.

use crate::auth::Principal;
use crate::gate::Check;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::Status;

/// Token bucket per credential: `per_second` sustained, the same as burst.
#[derive(Clone)]
pub struct RateLimiter {
    per_second: f64,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

impl RateLimiter {
    /// 0 turns the limit off.
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            buckets: Default::default(),
        }
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

impl Check for RateLimiter {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        match req.extensions().get::<Principal>() {
            Some(p) => self.check_principal(p),
            None => Ok(()),
        }
    }
}
