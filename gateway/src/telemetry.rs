//! The gateway's Prometheus series (names and labels: the README's metrics
//! table). Inference outcomes are recorded where the endpoint and the
//! deployment are known, after authentication; the gates count what they
//! refuse on their own series, as no endpoint is known there yet.

use metrics::{counter, gauge, histogram};
use router::Router;
use std::collections::HashSet;
use std::time::Instant;
use tonic::Code;

/// The status name as gRPC spells it, for the `code` label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One inference answered (or refused) for `endpoint`; `deployment` is the
/// one that answered, or the pinned one, or empty when none was chosen.
pub fn record_inference(endpoint: &str, deployment: &str, code: Code, started: Instant) {
    let (e, d) = (endpoint.to_string(), deployment.to_string());
    histogram!("switchboard_request_duration_seconds", "endpoint" => e.clone(), "deployment" => d.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("switchboard_requests_total", "endpoint" => e, "deployment" => d, "code" => code_name(code))
        .increment(1);
}

/// A request refused by authentication (`UNAUTHENTICATED`: no valid
/// credential; `PERMISSION_DENIED`: a valid one without rights).
pub fn record_auth_refusal(code: Code) {
    counter!("switchboard_unauthenticated_total", "code" => code_name(code)).increment(1);
}

pub fn record_rate_limited() {
    counter!("switchboard_rate_limited_total").increment(1);
}

/// Sets the replica gauges from the router's pools; a pool that went away
/// reads 0 rather than its last value.
pub fn record_replicas(router: &Router, seen: &mut HashSet<(String, String)>) {
    let now: Vec<(String, String, usize, usize)> = router.pool_health();
    let current: HashSet<(String, String)> = now
        .iter()
        .map(|(e, d, ..)| (e.clone(), d.clone()))
        .collect();
    for (e, d) in seen.difference(&current) {
        gauge!("switchboard_replicas", "endpoint" => e.clone(), "deployment" => d.clone()).set(0.0);
        gauge!("switchboard_replicas_healthy", "endpoint" => e.clone(), "deployment" => d.clone())
            .set(0.0);
    }
    for (e, d, all, healthy) in now {
        gauge!("switchboard_replicas", "endpoint" => e.clone(), "deployment" => d.clone())
            .set(all as f64);
        gauge!("switchboard_replicas_healthy", "endpoint" => e, "deployment" => d)
            .set(healthy as f64);
    }
    *seen = current;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_grpc_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }
}
