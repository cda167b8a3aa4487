//! `switchboard health`: one `grpc.health.v1` Check, for exec probes and
//! scripts. Exits 0 when SERVING and 1 otherwise (not serving, unknown
//! service, unreachable), printing what it found.

use crate::output::Format;
use clap::Args;
use client::proto::health::WireStatus;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Gateway or worker URL.
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:8001")]
    pub url: String,
    /// CA certificate (PEM) an `https://` server's certificate chains to;
    /// default: the system's roots.
    #[arg(long, env = "SWITCHBOARD_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Service to ask about; "" (the default) is the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for the answer, connecting included.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// json (for scripts) or table (for people).
    #[arg(short = 'o', long = "output", value_enum, default_value = "json")]
    pub output: Format,
}

/// Prints the status; returns whether the server is SERVING.
pub async fn health(args: HealthArgs) -> bool {
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.001, 3600.0));
    let tls = client::ClientTlsFiles {
        ca: args.ca_cert.clone(),
        identity: None,
    };
    let (status, error) = match client::health::check(&args.url, &args.service, timeout, &tls).await
    {
        Ok(s) => (word(s), None),
        Err(client::ClientError::Status(s)) if s.code() == tonic::Code::NotFound => {
            ("service_unknown", Some(s.message().to_string()))
        }
        Err(e) => ("unreachable", Some(e.to_string())),
    };
    match args.output {
        Format::Json => {
            let mut v = json!({"url": args.url, "service": args.service, "status": status});
            if let Some(e) = &error {
                v["error"] = json!(e);
            }
            say(&format!("{v:#}"));
        }
        Format::Table => {
            say("URL  SERVICE  STATUS");
            let service = if args.service.is_empty() {
                "-"
            } else {
                &args.service
            };
            say(&format!("{}  {service}  {status}", args.url));
            if let Some(e) = error {
                eprintln!("{e}");
            }
        }
    }
    status == "serving"
}

/// A probe piped into `head` must still exit by its status, not panic on
/// the closed pipe as `println!` does.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn word(s: WireStatus) -> &'static str {
    match s {
        WireStatus::Serving => "serving",
        WireStatus::NotServing => "not_serving",
        WireStatus::ServiceUnknown => "service_unknown",
        WireStatus::Unknown => "unknown",
    }
}
