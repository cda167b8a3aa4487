//! Routing for the gateway: which deployment of an endpoint serves a request
//! (weights, a pinned name, a mirrored copy) and which replica of that
//! deployment (least outstanding requests, skipping ejected ones), with one
//! retry on another replica when the request never reached a model.

pub mod pool;
mod route;
pub mod weights;

pub use pool::{Pool, Replica};
pub use route::{EndpointRoute, Router, RouterConfig};
pub use weights::{WeightError, Weighted};
