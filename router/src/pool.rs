//! Replicas of one deployment. Picks the replica with the fewest requests in
//! flight; a replica that fails at the transport level several times in a
//! row is ejected until a health check finds it ready again.

use proto::channel::H2Channel;
use proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Consecutive transport failures that eject a replica.
pub const EJECT_AFTER: u32 = 3;

#[derive(Debug)]
pub struct Replica {
    pub id: String,
    pub address: String,
    pub tls: bool,
    client: GrpcInferenceServiceClient<H2Channel>,
    /// Set when this replica is the worker in this process.
    local: Option<proto::local::LocalWorker>,
    outstanding: AtomicUsize,
    failures: AtomicU32,
    ejected: AtomicBool,
}

impl Replica {
    pub fn new(
        id: String,
        address: String,
        max_message: usize,
        tls: Option<std::sync::Arc<proto::tls::rustls::ClientConfig>>,
        tls_name: Option<&str>,
    ) -> Result<Self, proto::channel::InvalidAddress> {
        let channel = match &tls {
            Some(config) => H2Channel::lazy_tls_named(&address, config.clone(), tls_name)?,
            None => H2Channel::lazy(&address)?,
        };
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        Ok(Replica {
            id,
            address,
            tls: tls.is_some(),
            client,
            local: None,
            outstanding: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
        })
    }

    /// This replica reached in process (`up`'s own worker).
    pub fn in_process(mut self, worker: proto::local::LocalWorker) -> Self {
        self.local = Some(worker);
        self
    }

    /// The worker's service, when it is in this process and loaded.
    pub fn local(&self) -> Option<&std::sync::Arc<proto::local::Service>> {
        self.local.as_ref().and_then(|l| l.service())
    }

    pub fn client(&self) -> GrpcInferenceServiceClient<H2Channel> {
        self.client.clone()
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Returns true when this failure ejected the replica.
    pub fn record_transport_failure(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        n >= EJECT_AFTER && !self.ejected.swap(true, Ordering::Relaxed)
    }

    pub fn readmit(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejected.store(false, Ordering::Relaxed);
    }
}

pub struct InFlight(Arc<Replica>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Pool {
    replicas: RwLock<Vec<Arc<Replica>>>,
}

impl Pool {
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set(&self, replicas: Vec<Arc<Replica>>) {
        if let Ok(mut r) = self.replicas.write() {
            *r = replicas;
        }
    }

    /// Least outstanding healthy replica, other than `exclude`.
    pub fn pick(&self, exclude: Option<&str>) -> Option<Arc<Replica>> {
        let replicas = self.replicas.read().ok()?;
        replicas
            .iter()
            .filter(|r| !r.is_ejected() && Some(r.id.as_str()) != exclude)
            .min_by_key(|r| r.outstanding())
            .cloned()
    }

    pub fn healthy(&self) -> usize {
        self.replicas().iter().filter(|r| !r.is_ejected()).count()
    }
}

#[cfg(test)]
mod tests;
