//! Wire types for Switchboard.
//!
//! `inference` is the Open Inference Protocol (KServe V2) with Triton's message
//! names and field numbers, so tritonclient and perf_analyzer talk to us
//! unchanged. `switchboard::v1` is our own management and jobs API.

#[allow(clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

pub mod channel;
pub mod drain;
pub mod health;
pub mod local;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod trace;

pub mod switchboard {
    #[allow(clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("switchboard.v1");
    }
}

/// Runs `work` against the client's deadline and answers DEADLINE_EXCEEDED
/// when it passes. tonic's own timer (from the same header) would answer
/// CANCELLED, and most clients' timers fire at the same moment, so ours
/// fires a little earlier.
pub async fn within_deadline<T>(
    deadline: Option<std::time::Instant>,
    work: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let Some(d) = deadline else { return work.await };
    // Timers tick in whole milliseconds on both sides, so "a little" is a
    // tenth of the time left, up to 5 ms.
    let left = d.saturating_duration_since(std::time::Instant::now());
    let early = d - (left / 10).min(std::time::Duration::from_millis(5));
    tokio::time::timeout_at(early.into(), work)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("deadline exceeded")))
}

/// A listener's connections for a tonic server, with TCP_NODELAY: the
/// builder's `tcp_nodelay` does not apply to a listener passed in, and
/// without it answers over ~1 KiB wait ~40 ms for delayed ACKs.
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The deadline a client set with the `grpc-timeout` header.
pub fn deadline_of<T>(req: &tonic::Request<T>) -> Option<std::time::Instant> {
    req.metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .and_then(|d| std::time::Instant::now().checked_add(d))
}

/// A `grpc-timeout` value (e.g. `"250m"`) as a duration. As the gRPC spec
/// says, at most 8 digits; longer values are ignored (no deadline).
pub fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("999999999S"), None, "over 8 digits");
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
