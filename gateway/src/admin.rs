//! The gate in front of the management service: management is for the
//! admin key only. GetToken is the exception, because an endpoint's own key
//! may also get tokens for it; which endpoint is asked for is in the message
//! body, so GetToken checks its caller itself (`authorize_token_issue`).

use crate::auth::{Principal, authorize_admin};
use crate::gate::{Check, GateLayer};
use proto::switchboard::v1::management_server::SERVICE_NAME;
use tonic::Status;

#[cfg(test)]
mod tests;

/// The methods that the gate lets through to check their callers themselves.
const OWN_CHECK: &[&str] = &["GetToken"];

#[derive(Clone, Copy, Debug, Default)]
pub struct AdminOnly;

/// The layer to put in front of the management service.
pub fn admin_gate() -> GateLayer<AdminOnly> {
    GateLayer(AdminOnly)
}

impl Check for AdminOnly {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        if checks_itself(req.uri().path()) {
            return Ok(());
        }
        // No principal means no authentication layer ran: refuse as for no
        // credential, so that a stack built without it stays closed.
        let p = req
            .extensions()
            .get::<Principal>()
            .unwrap_or(&Principal::Anonymous);
        authorize_admin(p)
    }
}

/// Matched on the whole path, so that a method of another service or one
/// whose name merely starts the same does not slip past the gate.
fn checks_itself(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE_NAME))
        .and_then(|p| p.strip_prefix('/'))
        .is_some_and(|method| OWN_CHECK.contains(&method))
}
