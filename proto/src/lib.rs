//! Wire types for Switchboard.
//!
//! `inference` is the Open Inference Protocol (KServe V2) with Triton's message
//! names and field numbers, so tritonclient and perf_analyzer talk to us
//! unchanged. `switchboard::v1` is our own management and jobs API.

#[allow(clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

pub mod stats;
pub mod stream;

pub mod switchboard {
    #[allow(clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("switchboard.v1");
    }
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
        .map(|d| std::time::Instant::now() + d)
}

/// A `grpc-timeout` value (e.g. `"250m"`) as a duration.
pub fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
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
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
