//! TLS flags of the server roles (`gateway`, `worker`, `up`'s gateway).

use clap::Args;
use client::proto;
use std::path::PathBuf;

/// The listener's certificate; with a client CA, client certificates are
/// required (mTLS). Files are re-read when they change.
#[derive(Debug, Clone, Args)]
pub struct ServeTlsArgs {
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServeTlsArgs {
    pub fn files(&self) -> Option<proto::tls::ServerTlsFiles> {
        Some(proto::tls::ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

/// How the gateway reaches workers that advertise TLS.
#[derive(Debug, Clone, Args)]
pub struct WorkerTlsArgs {
    /// CA (PEM) workers' certificates chain to; default: the system's roots.
    #[arg(long)]
    pub worker_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to workers that require one.
    #[arg(long, requires = "worker_tls_key")]
    pub worker_tls_cert: Option<PathBuf>,
    #[arg(long, requires = "worker_tls_cert")]
    pub worker_tls_key: Option<PathBuf>,
    /// The name workers' certificates must hold, instead of the host each
    /// advertises: pods advertise IPs, one certificate names them all.
    #[arg(long)]
    pub worker_tls_server_name: Option<String>,
}

impl WorkerTlsArgs {
    pub fn files(&self) -> Option<proto::tls::ClientTlsFiles> {
        let identity = self
            .worker_tls_cert
            .clone()
            .zip(self.worker_tls_key.clone());
        if self.worker_tls_ca.is_none() && identity.is_none() {
            return None;
        }
        Some(proto::tls::ClientTlsFiles {
            ca: self.worker_tls_ca.clone(),
            identity,
        })
    }
}
