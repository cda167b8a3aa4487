//! Reading a role's Prometheus text over plain HTTP, as Prometheus would.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET path` at `addr` (host:port), or None if it does not answer.
pub async fn get(addr: &str, path: &str) -> Option<String> {
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_secs(1), connect)
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(
        out.split_once("\r\n\r\n")
            .map_or(out.clone(), |(_, b)| b.to_string()),
    )
}

/// The sum of every sample of series `name` whose labels include `labels`.
pub fn sum(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Every metric name the text holds (histogram parts under their base name).
pub fn names(body: &str) -> std::collections::BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}
