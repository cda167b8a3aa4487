//! The router's routes, derived from the control plane. Both the refresh
//! loop and management writes apply them, so a change takes effect on the
//! gateway that made it without waiting for the next refresh.

use crate::store::Snapshot;
use router::{EndpointRoute, Router, Weighted};
use std::collections::HashMap;

/// Routes from the control plane's view of each endpoint.
pub fn apply_routes(snap: &Snapshot, router: &Router) {
    let routes: HashMap<String, EndpointRoute> = snap
        .endpoints
        .values()
        .map(|e| {
            let route = EndpointRoute {
                deployments: e.deployments.keys().cloned().collect(),
                weights: Weighted::new(e.traffic.iter().map(|(k, v)| (k.clone(), *v)).collect()),
                mirror: e.mirror.as_ref().map(|m| (m.deployment.clone(), m.percent)),
            };
            (e.name.clone(), route)
        })
        .collect();
    router.set_routes(routes);
}
