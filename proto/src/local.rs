//! A worker in the same process as its gateway (`switchboard up`): the
//! gateway calls the worker's KServe service directly, with the same
//! `tonic::Request` it would send (deadline and trace context in its
//! metadata), so no HTTP/2 stream and no protobuf encoding stand between
//! them. Workers elsewhere are still reached over gRPC.

use crate::inference::grpc_inference_service_server::GrpcInferenceService;
use std::sync::{Arc, OnceLock};

/// A KServe service as the worker implements it.
pub type Service = dyn GrpcInferenceService<ModelStreamInferStream = crate::stream::Answers>;

/// Where the in-process worker listens (the address it registers under, by
/// which the gateway knows it), and its service once it has loaded.
#[derive(Clone)]
pub struct LocalWorker {
    pub address: String,
    slot: Arc<OnceLock<Arc<Service>>>,
}

impl LocalWorker {
    pub fn new(address: impl Into<String>) -> Self {
        LocalWorker {
            address: address.into(),
            slot: Arc::new(OnceLock::new()),
        }
    }

    /// The worker hands over its service before it registers, so a gateway
    /// that learns of it finds the service there.
    pub fn set(&self, service: Arc<Service>) {
        let _ = self.slot.set(service);
    }

    pub fn service(&self) -> Option<&Arc<Service>> {
        self.slot.get()
    }
}

impl std::fmt::Debug for LocalWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWorker")
            .field("address", &self.address)
            .field("loaded", &self.slot.get().is_some())
            .finish()
    }
}
