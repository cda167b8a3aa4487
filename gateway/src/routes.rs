//! The router's routes, derived from the control plane: all of them after a
//! full load, one endpoint's for each change the follower applies
//! (changes.rs), so a change costs the router O(1) whatever the number of
//! endpoints.

use crate::store::{EndpointRecord, Snapshot};
use router::{EndpointRoute, Router, Weighted};
use std::collections::HashMap;

fn route(e: &EndpointRecord) -> EndpointRoute {
    EndpointRoute {
        deployments: e.deployments.keys().cloned().collect(),
        weights: Weighted::new(e.traffic.iter().map(|(k, v)| (k.clone(), *v)).collect()),
        mirror: e.mirror.as_ref().map(|m| (m.deployment.clone(), m.percent)),
    }
}

/// Routes from the control plane's view of each endpoint.
pub fn apply_routes(snap: &Snapshot, router: &Router) {
    let routes: HashMap<String, EndpointRoute> = snap
        .endpoints
        .values()
        .map(|e| (e.name.clone(), route(e)))
        .collect();
    router.set_routes(routes);
}

/// One endpoint's route: replaced, or removed when the endpoint is gone.
pub fn apply_route(router: &Router, name: &str, record: Option<&EndpointRecord>) {
    router.set_route(name, record.map(route));
}
