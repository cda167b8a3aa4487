//! switchboard.v1 Management: endpoints, deployments, traffic, mirror, keys
//! and tokens. The admin gate in front of this service (admin.rs) lets only
//! the admin key in, except to GetToken, which an endpoint's own key may
//! also call and which therefore checks its caller here.

use crate::auth::{authorize_token_issue, principal};
use crate::secrets;
use crate::store::{
    AuthMode, DeploymentRecord, EndpointRecord, KeyRecord, Mirror, Store, StoreError,
};
use proto::switchboard::v1 as pb;
use proto::switchboard::v1::management_server::Management;
use router::Router;
use std::ops::Bound;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Endpoints per ListEndpoints page: unless asked, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::Exists(_) => Status::already_exists(e.to_string()),
        StoreError::Invalid(_) => Status::invalid_argument(e.to_string()),
        StoreError::Conflict => Status::aborted(e.to_string()),
        StoreError::Redis(_) => Status::unavailable(e.to_string()),
    }
}

fn auth_mode(m: i32) -> Result<AuthMode, Status> {
    match pb::AuthMode::try_from(m) {
        Ok(pb::AuthMode::Key) => Ok(AuthMode::Key),
        Ok(pb::AuthMode::Token) => Ok(AuthMode::Token),
        Ok(pb::AuthMode::None) => Ok(AuthMode::None),
        Err(_) => Err(Status::invalid_argument(format!("unknown auth mode {m}"))),
    }
}

fn valid_name(kind: &str, n: &str) -> Result<(), Status> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{kind} name '{n}' must be 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

fn new_key_record() -> (String, KeyRecord) {
    let key = secrets::new_key();
    let rec = KeyRecord {
        hash: secrets::hash(&key),
        created_unix: secrets::now_unix(),
    };
    (key, rec)
}

pub struct ManagementService {
    store: Arc<Store>,
    router: Arc<Router>,
}

impl ManagementService {
    pub fn new(store: Arc<Store>, router: Arc<Router>) -> Self {
        ManagementService { store, router }
    }

    fn to_pb(&self, e: &EndpointRecord) -> pb::Endpoint {
        let mode = match e.auth_mode {
            AuthMode::Key => pb::AuthMode::Key,
            AuthMode::Token => pb::AuthMode::Token,
            AuthMode::None => pb::AuthMode::None,
        };
        pb::Endpoint {
            name: e.name.clone(),
            auth_mode: mode as i32,
            traffic: e.traffic.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            mirror_deployment: e
                .mirror
                .as_ref()
                .map(|m| m.deployment.clone())
                .unwrap_or_default(),
            mirror_percent: e.mirror.as_ref().map_or(0, |m| m.percent),
            description: e.description.clone(),
            deployments: e
                .deployments
                .iter()
                .map(|(name, d)| {
                    let pool = self.router.pool(&e.name, name);
                    pb::Deployment {
                        name: name.clone(),
                        model_uri: d.model_uri.clone(),
                        instances: d.instances,
                        max_batch_size: d.max_batch_size,
                        max_queue_delay_us: d.max_queue_delay_us,
                        max_queue_size: d.max_queue_size,
                        preferred_batch_sizes: d.preferred_batch_sizes.clone(),
                        replicas: pool.as_ref().map_or(0, |p| p.replicas().len() as u32),
                        replicas_healthy: pool.as_ref().map_or(0, |p| p.healthy() as u32),
                    }
                })
                .collect(),
        }
    }

    /// Changes one endpoint and answers its new state.
    async fn edit(
        &self,
        endpoint: &str,
        f: impl Fn(&mut EndpointRecord) -> Result<(), StoreError>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let (rec, ()) = self.store.update(endpoint, f).await.map_err(status)?;
        Ok(self.done(&rec))
    }

    /// After a write. The store answered once this gateway's follower had
    /// applied the change, so routes already follow it.
    fn done(&self, rec: &EndpointRecord) -> Response<pb::Endpoint> {
        Response::new(self.to_pb(rec))
    }

    fn get(&self, name: &str) -> Result<EndpointRecord, Status> {
        self.store
            .snapshot()
            .endpoints
            .get(name)
            .map(|e| EndpointRecord::clone(e))
            .ok_or_else(|| Status::not_found(format!("endpoint '{name}' not found")))
    }
}

#[tonic::async_trait]
impl Management for ManagementService {
    async fn create_endpoint(
        &self,
        r: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::CreateEndpointResponse>, Status> {
        let r = r.into_inner();
        valid_name("endpoint", &r.name)?;
        let (primary, k1) = new_key_record();
        let (secondary, k2) = new_key_record();
        let record = EndpointRecord {
            name: r.name,
            auth_mode: auth_mode(r.auth_mode)?,
            description: r.description,
            deployments: Default::default(),
            traffic: Default::default(),
            mirror: None,
            keys: [k1, k2],
        };
        self.store.create(record.clone()).await.map_err(status)?;
        Ok(Response::new(pb::CreateEndpointResponse {
            endpoint: Some(self.to_pb(&record)),
            primary_key: primary,
            secondary_key: secondary,
        }))
    }

    async fn update_endpoint(
        &self,
        r: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = r.into_inner();
        let mode = r.auth_mode.map(auth_mode).transpose()?;
        self.edit(&r.name, |e| {
            if let Some(m) = mode {
                e.auth_mode = m;
            }
            if let Some(d) = &r.description {
                e.description = d.clone();
            }
            Ok(())
        })
        .await
    }

    async fn get_endpoint(
        &self,
        r: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        Ok(Response::new(self.to_pb(&self.get(&r.into_inner().name)?)))
    }

    async fn list_endpoints(
        &self,
        r: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let r = r.into_inner();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        // The token is the last name of the page before: the view is
        // ordered by name, so the next page starts just after it, in
        // O(log N), and endpoints created or deleted in between shift no
        // page boundary.
        let after = match r.page_token.as_str() {
            "" => Bound::Unbounded,
            t => Bound::Excluded(t),
        };
        let snap = self.store.snapshot();
        let mut page = snap.endpoints.range::<_, str>((after, Bound::Unbounded));
        let endpoints: Vec<pb::Endpoint> = page
            .by_ref()
            .take(size)
            .map(|(_, e)| self.to_pb(e))
            .collect();
        let next_page_token = match (page.next(), endpoints.last()) {
            (Some(_), Some(last)) => last.name.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints,
            next_page_token,
        }))
    }

    async fn delete_endpoint(
        &self,
        r: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        self.store
            .delete(&r.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn create_deployment(
        &self,
        r: Request<pb::CreateDeploymentRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = r.into_inner();
        let d = r
            .deployment
            .ok_or_else(|| Status::invalid_argument("deployment is required"))?;
        valid_name("deployment", &d.name)?;
        let record = DeploymentRecord {
            model_uri: d.model_uri,
            instances: d.instances,
            max_batch_size: d.max_batch_size,
            max_queue_delay_us: d.max_queue_delay_us,
            max_queue_size: d.max_queue_size,
            preferred_batch_sizes: d.preferred_batch_sizes,
        };
        self.edit(&r.endpoint, |e| {
            if e.deployments.contains_key(&d.name) {
                return Err(StoreError::Invalid(format!(
                    "deployment '{}' already exists",
                    d.name
                )));
            }
            e.deployments.insert(d.name.clone(), record.clone());
            // The first deployment takes all traffic; later ones start at 0.
            let first = e.traffic.is_empty();
            e.traffic
                .insert(d.name.clone(), if first { 100 } else { 0 });
            Ok(())
        })
        .await
    }

    async fn delete_deployment(
        &self,
        r: Request<pb::DeleteDeploymentRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = r.into_inner();
        self.edit(&r.endpoint, |e| {
            if !e.deployments.contains_key(&r.deployment) {
                return Err(StoreError::Invalid(format!(
                    "no deployment '{}'",
                    r.deployment
                )));
            }
            if e.traffic.get(&r.deployment).copied().unwrap_or(0) > 0 {
                return Err(StoreError::Invalid(format!(
                    "deployment '{}' still takes traffic; set its weight to 0 first",
                    r.deployment
                )));
            }
            e.deployments.remove(&r.deployment);
            e.traffic.remove(&r.deployment);
            if e.mirror
                .as_ref()
                .is_some_and(|m| m.deployment == r.deployment)
            {
                e.mirror = None;
            }
            Ok(())
        })
        .await
    }

    async fn set_traffic(
        &self,
        r: Request<pb::SetTrafficRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = r.into_inner();
        self.edit(&r.endpoint, |e| {
            let names: Vec<&str> = e.deployments.keys().map(String::as_str).collect();
            router::weights::validate(r.traffic.iter(), &names)
                .map_err(|x| StoreError::Invalid(x.to_string()))?;
            // Deployments left out of the request get 0.
            e.traffic = e
                .deployments
                .keys()
                .map(|d| (d.clone(), r.traffic.get(d).copied().unwrap_or(0)))
                .collect();
            Ok(())
        })
        .await
    }

    async fn set_mirror(
        &self,
        r: Request<pb::SetMirrorRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let r = r.into_inner();
        if r.percent > 100 {
            return Err(Status::invalid_argument("mirror percent must be 0-100"));
        }
        self.edit(&r.endpoint, |e| {
            if r.deployment.is_empty() || r.percent == 0 {
                e.mirror = None;
                return Ok(());
            }
            if !e.deployments.contains_key(&r.deployment) {
                return Err(StoreError::Invalid(format!(
                    "no deployment '{}' to mirror to",
                    r.deployment
                )));
            }
            e.mirror = Some(Mirror {
                deployment: r.deployment.clone(),
                percent: r.percent,
            });
            Ok(())
        })
        .await
    }

    async fn get_keys(
        &self,
        r: Request<pb::GetKeysRequest>,
    ) -> Result<Response<pb::KeysInfo>, Status> {
        let e = self.get(&r.into_inner().endpoint)?;
        let keys = e
            .keys
            .iter()
            .enumerate()
            .map(|(slot, k)| pb::KeyInfo {
                slot: slot as i32,
                fingerprint: secrets::fingerprint(&k.hash),
                created_unix: k.created_unix,
            })
            .collect();
        Ok(Response::new(pb::KeysInfo {
            endpoint: e.name,
            keys,
        }))
    }

    async fn regenerate_key(
        &self,
        r: Request<pb::RegenerateKeyRequest>,
    ) -> Result<Response<pb::RegenerateKeyResponse>, Status> {
        let r = r.into_inner();
        let slot = usize::from(
            pb::KeySlot::try_from(r.slot)
                .map_err(|_| Status::invalid_argument("unknown key slot"))?
                == pb::KeySlot::Secondary,
        );
        let (key, rec) = new_key_record();
        let info = pb::KeyInfo {
            slot: slot as i32,
            fingerprint: secrets::fingerprint(&rec.hash),
            created_unix: rec.created_unix,
        };
        self.store
            .update(&r.endpoint, |e| {
                e.keys[slot] = rec.clone();
                Ok(())
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RegenerateKeyResponse {
            key,
            info: Some(info),
        }))
    }

    async fn get_token(
        &self,
        r: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::GetTokenResponse>, Status> {
        let p = principal(&r);
        let r = r.into_inner();
        authorize_token_issue(&p, &r.endpoint)?;
        self.get(&r.endpoint)?;
        let expires_unix = secrets::token_expiry(secrets::now_unix(), r.ttl_seconds);
        let token = secrets::sign_token(
            &self.store.snapshot().token_secret,
            &r.endpoint,
            expires_unix,
        );
        Ok(Response::new(pb::GetTokenResponse {
            token,
            expires_unix,
        }))
    }
}
