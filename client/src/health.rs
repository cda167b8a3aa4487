//! `grpc.health.v1.Health` Check against a gateway or worker: what
//! `switchboard health` (an exec probe) asks.

use crate::{ClientError, ClientTlsFiles};
use proto::health::{HealthClient, WireStatus};
use std::time::Duration;

/// The status of `service` ("" = the server as a whole) at `url`, within
/// `timeout` (connecting included); an `https://` URL trusts `tls.ca` (the
/// system's roots without it).
pub async fn check(
    url: &str,
    service: &str,
    timeout: Duration,
    tls: &ClientTlsFiles,
) -> Result<WireStatus, ClientError> {
    let endpoint = crate::endpoint(url, tls)?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await?;
    let answer = HealthClient::new(channel)
        .check(proto::health::CheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner();
    Ok(WireStatus::try_from(answer.status).unwrap_or(WireStatus::Unknown))
}
