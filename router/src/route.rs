//! The routing table and the forwarding of one inference request.

use crate::pool::{Pool, Replica};
use crate::weights::Weighted;
use proto::inference::{ModelInferRequest, ModelInferResponse, ServerReadyRequest};
use proto::trace::child_span;
use registry::WorkerRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tonic::{Code, Status};
use tracing::{Instrument, debug, warn};

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Largest message forwarded to or accepted from a worker.
    pub max_message: usize,
    /// How to reach workers that advertise TLS: the CA their certificates
    /// chain to and this gateway's client identity. Without it such
    /// workers are trusted by the system's roots.
    pub worker_tls: Option<Arc<proto::tls::rustls::ClientConfig>>,
    /// The name every worker's certificate must hold, instead of the host
    /// it advertises (a pod IP no certificate names).
    pub worker_tls_name: Option<String>,
    /// The worker in this process, called directly rather than over gRPC.
    pub local_worker: Option<proto::local::LocalWorker>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_message: 64 << 20,
            worker_tls: None,
            worker_tls_name: None,
            local_worker: None,
        }
    }
}

/// How one endpoint's traffic is split, as the control plane says.
#[derive(Debug)]
pub struct EndpointRoute {
    pub deployments: Vec<String>,
    pub weights: Weighted,
    /// Shadow deployment and the percent of requests copied to it.
    pub mirror: Option<(String, u32)>,
}

impl EndpointRoute {
    fn same_split(&self, other: &EndpointRoute) -> bool {
        self.deployments == other.deployments
            && self.mirror == other.mirror
            && self.weights.entries() == other.weights.entries()
    }
}

#[derive(Default)]
pub struct Router {
    config: RouterConfig,
    /// Built on first need: a client config trusting the system's roots.
    system_roots: std::sync::OnceLock<Option<Arc<proto::tls::rustls::ClientConfig>>>,
    routes: RwLock<HashMap<String, Arc<EndpointRoute>>>,
    pools: RwLock<HashMap<(String, String), Arc<Pool>>>,
    mirror_seq: AtomicU64,
}

/// Whether a failure happened before any model saw the request: a
/// transport error (the status carries its cause) or a worker saying it is
/// unavailable. Inference is side-effect free, so such requests are retried.
fn never_reached(s: &Status) -> bool {
    // A worker dying mid-request shows as CANCELLED with a transport cause:
    // that is retried. A client-side timeout looks alike; `forward` answers
    // it as DEADLINE_EXCEEDED before asking this.
    s.code() != Code::DeadlineExceeded
        && (s.code() == Code::Unavailable || std::error::Error::source(s).is_some())
}

/// The deployment for a request: the pinned one, else the next by weight.
fn pick(route: &EndpointRoute, endpoint: &str, pinned: Option<&str>) -> Result<String, Status> {
    match pinned {
        Some(p) if route.deployments.iter().any(|d| d == p) => Ok(p.to_string()),
        Some(p) => Err(Status::not_found(format!(
            "endpoint '{endpoint}' has no deployment '{p}'"
        ))),
        None => route.weights.next().map(str::to_string).ok_or_else(|| {
            Status::unavailable(format!(
                "endpoint '{endpoint}' has no deployment taking traffic"
            ))
        }),
    }
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Router {
            config,
            ..Default::default()
        }
    }

    /// Replaces the routing table. Requests in flight keep the route they
    /// took; the next request sees the new weights.
    /// An endpoint whose split did not change keeps its route, and with it
    /// the round-robin's position: restarting it at every control-plane
    /// change would favour the heavier deployment.
    pub fn set_routes(&self, routes: HashMap<String, EndpointRoute>) {
        let Ok(mut current) = self.routes.write() else {
            return;
        };
        let next = routes
            .into_iter()
            .map(|(k, v)| {
                let keep = current.get(&k).filter(|old| old.same_split(&v)).cloned();
                (k, keep.unwrap_or_else(|| Arc::new(v)))
            })
            .collect();
        *current = next;
    }

    /// Replaces (Some) or removes (None) one endpoint's route, keeping its
    /// round-robin position when the split did not change, as `set_routes`.
    pub fn set_route(&self, endpoint: &str, route: Option<EndpointRoute>) {
        let Ok(mut current) = self.routes.write() else {
            return;
        };
        match route {
            Some(r) if current.get(endpoint).is_some_and(|old| old.same_split(&r)) => {}
            Some(r) => {
                current.insert(endpoint.to_string(), Arc::new(r));
            }
            None => {
                current.remove(endpoint);
            }
        }
    }

    /// Rebuilds the replica pools from the registry, keeping existing
    /// replicas (their connections and counters) where the worker is the same.
    pub fn set_workers(&self, workers: &[WorkerRecord]) {
        let existing: HashMap<String, Arc<Replica>> = self
            .pools
            .read()
            .map(|p| {
                p.values()
                    .flat_map(|pool| pool.replicas())
                    .map(|r| (replica_key(&r.id, &r.address, r.tls), r))
                    .collect()
            })
            .unwrap_or_default();
        let mut next: HashMap<(String, String), Vec<Arc<Replica>>> = HashMap::new();
        for w in workers {
            let key = replica_key(&w.id, &w.address, w.tls);
            let replica = match existing.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let tls = match (w.tls, &self.config.worker_tls) {
                        (false, _) => None,
                        (true, Some(c)) => Some(c.clone()),
                        (true, None) => match self.system_roots() {
                            Some(c) => Some(c),
                            None => continue,
                        },
                    };
                    match Replica::new(
                        w.id.clone(),
                        w.address.clone(),
                        self.config.max_message,
                        tls,
                        self.config.worker_tls_name.as_deref(),
                    ) {
                        Ok(r) => Arc::new(match &self.config.local_worker {
                            Some(l) if !w.tls && l.address == w.address => r.in_process(l.clone()),
                            _ => r,
                        }),
                        Err(e) => {
                            warn!(worker = %w.id, address = %w.address, error = %e, "bad worker address");
                            continue;
                        }
                    }
                }
            };
            for d in &w.deployments {
                next.entry((d.endpoint.clone(), d.deployment.clone()))
                    .or_default()
                    .push(replica.clone());
            }
        }
        let Ok(mut pools) = self.pools.write() else {
            return;
        };
        pools.retain(|k, _| next.contains_key(k));
        for (k, replicas) in next {
            pools.entry(k).or_default().set(replicas);
        }
    }

    /// For a worker that speaks TLS when no worker CA was given.
    fn system_roots(&self) -> Option<Arc<proto::tls::rustls::ClientConfig>> {
        self.system_roots
            .get_or_init(|| {
                proto::tls::client_config(&Default::default())
                    .inspect_err(|e| warn!(error = %e, "no TLS config for workers"))
                    .ok()
            })
            .clone()
    }

    /// (endpoint, deployment, replicas, healthy replicas) of every pool.
    pub fn pool_health(&self) -> Vec<(String, String, usize, usize)> {
        self.pools
            .read()
            .map(|p| {
                p.iter()
                    .map(|((e, d), pool)| {
                        (e.clone(), d.clone(), pool.replicas().len(), pool.healthy())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn pool(&self, endpoint: &str, deployment: &str) -> Option<Arc<Pool>> {
        let pools = self.pools.read().ok()?;
        pools
            .get(&(endpoint.to_string(), deployment.to_string()))
            .cloned()
    }

    fn route(&self, endpoint: &str) -> Result<Arc<EndpointRoute>, Status> {
        self.routes
            .read()
            .ok()
            .and_then(|r| r.get(endpoint).cloned())
            .ok_or_else(|| Status::not_found(format!("unknown endpoint '{endpoint}'")))
    }

    /// The deployment for the next request: the pinned one, else by weight.
    pub fn choose(&self, endpoint: &str, pinned: Option<&str>) -> Result<String, Status> {
        pick(&*self.route(endpoint)?, endpoint, pinned)
    }

    /// Routes one request and returns the answer of the deployment that
    /// served it (named in `model_version`).
    pub async fn infer(
        self: &Arc<Self>,
        endpoint: &str,
        pinned: Option<&str>,
        req: ModelInferRequest,
        deadline: Option<Instant>,
    ) -> Result<ModelInferResponse, Status> {
        let route = self.route(endpoint)?;
        let deployment =
            child_span!("route", endpoint, pinned).in_scope(|| pick(&route, endpoint, pinned))?;
        let Some(shadow) = self.mirror_for(&route, pinned) else {
            return self.forward(endpoint, &deployment, req, deadline).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.mirror(shadow, endpoint, &req, deadline, rx);
        let result = self.forward(endpoint, &deployment, req, deadline).await;
        let _ = tx.send(result.as_ref().ok().cloned());
        result
    }

    /// The shadow deployment this request is copied to, if any. Pinned
    /// requests are never copied. Every other request to an endpoint with a
    /// mirror gets a sequence number; N of each 100 are copied.
    fn mirror_for(&self, route: &EndpointRoute, pinned: Option<&str>) -> Option<String> {
        if pinned.is_some() {
            return None;
        }
        let (shadow, percent) = route.mirror.as_ref()?;
        if self.mirror_seq.fetch_add(1, Ordering::Relaxed) % 100 >= u64::from(*percent) {
            return None;
        }
        Some(shadow.clone())
    }

    /// Sends a copy to `shadow` and, once both have answered, counts
    /// whether the shadow's outputs are the primary's (`same`), are not
    /// (`differs`), or it failed (`error`); `ok` when the primary failed
    /// and there is nothing to compare with.
    fn mirror(
        self: &Arc<Self>,
        shadow: String,
        endpoint: &str,
        req: &ModelInferRequest,
        deadline: Option<Instant>,
        primary: tokio::sync::oneshot::Receiver<Option<ModelInferResponse>>,
    ) {
        let (router, endpoint, req) = (self.clone(), endpoint.to_string(), req.clone());
        let span = child_span!("mirror", deployment = %shadow);
        let copy = async move {
            let answer = router.forward(&endpoint, &shadow, req, deadline).await;
            let primary = primary.await.ok().flatten();
            let outcome = match (&answer, &primary) {
                (Err(_), _) => "error",
                (Ok(_), None) => "ok",
                (Ok(a), Some(p)) if same_outputs(a, p) => "same",
                (Ok(_), Some(_)) => "differs",
            };
            metrics::counter!("switchboard_mirror_total", "endpoint" => endpoint, "deployment" => shadow, "outcome" => outcome)
                .increment(1);
        };
        tokio::spawn(copy.instrument(span));
    }

    /// Sends to the least busy healthy replica; once more to another replica
    /// if the first attempt never reached a model.
    pub async fn forward(
        &self,
        endpoint: &str,
        deployment: &str,
        mut req: ModelInferRequest,
        deadline: Option<Instant>,
    ) -> Result<ModelInferResponse, Status> {
        let pool = self.pool(endpoint, deployment).ok_or_else(|| {
            Status::unavailable(format!(
                "no replica of deployment '{deployment}' is registered"
            ))
        })?;
        req.model_name = endpoint.to_string();
        req.model_version = deployment.to_string();
        let mut tried: Option<String> = None;
        let mut last: Option<Status> = None;
        for attempt in 1..=2u32 {
            let Some(replica) = pool.pick(tried.as_deref()) else {
                break;
            };
            // One span per try, the parent of the worker's: a retry shows
            // as a second attempt on another replica.
            let span = child_span!(
                "attempt",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                attempt,
                deployment,
                replica = %replica.id,
                address = %replica.address,
            );
            let mut r = tonic::Request::new(req.clone());
            span.in_scope(|| proto::trace::inject(&mut r));
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Status::deadline_exceeded(
                        "deadline passed before the request was sent",
                    ));
                }
                r.set_timeout(left);
            }
            let _in_flight = replica.start();
            let answer = match replica.local() {
                Some(worker) => worker.model_infer(r).instrument(span.clone()).await,
                None => {
                    let mut client = replica.client();
                    client.model_infer(r).instrument(span.clone()).await
                }
            };
            if answer.is_err() {
                span.record("otel.status_code", "ERROR");
            }
            match answer {
                Ok(resp) => {
                    replica.record_success();
                    return Ok(resp.into_inner());
                }
                // Our own timer on the client's deadline: no replica's fault.
                Err(s)
                    if s.code() == Code::Cancelled
                        && deadline.is_some_and(|d| Instant::now() >= d) =>
                {
                    return Err(Status::deadline_exceeded("deadline exceeded"));
                }
                Err(s) if never_reached(&s) => {
                    let labels = [
                        ("endpoint", endpoint.to_string()),
                        ("deployment", deployment.to_string()),
                    ];
                    if replica.record_transport_failure() {
                        metrics::counter!("switchboard_ejections_total", &labels).increment(1);
                        warn!(replica = %replica.id, address = %replica.address, "replica ejected after consecutive failures");
                    }
                    metrics::counter!("switchboard_retries_total", &labels).increment(1);
                    debug!(replica = %replica.id, status = %s, "retrying on another replica");
                    tried = Some(replica.id.clone());
                    last = Some(s);
                }
                Err(s) => {
                    replica.record_success();
                    return Err(s);
                }
            }
        }
        Err(match last {
            Some(s) => Status::unavailable(format!(
                "no healthy replica of '{deployment}' answered: {}",
                s.message()
            )),
            None => Status::unavailable(format!("no healthy replica of deployment '{deployment}'")),
        })
    }

    /// Asks every ejected replica whether it is ready; readmits those that are.
    pub async fn check_ejected(&self) {
        let replicas: Vec<Arc<Replica>> = self
            .pools
            .read()
            .map(|p| {
                p.values()
                    .flat_map(|pool| pool.replicas())
                    .filter(|r| r.is_ejected())
                    .collect()
            })
            .unwrap_or_default();
        // All at once, each bounded: one frozen replica must not hold up
        // the others' readmission (or the caller's loop).
        let checks = replicas.into_iter().map(|r| async move {
            let ready = tokio::time::timeout(
                Duration::from_millis(500),
                r.client().server_ready(ServerReadyRequest {}),
            )
            .await;
            if let Ok(Ok(resp)) = ready
                && resp.get_ref().ready
            {
                r.readmit();
                debug!(replica = %r.id, "replica readmitted");
            }
        });
        futures::future::join_all(checks).await;
    }
}

/// Whether two answers hold the same outputs (names, types, shapes and
/// bytes), whatever deployment each names.
fn same_outputs(a: &ModelInferResponse, b: &ModelInferResponse) -> bool {
    a.raw_output_contents == b.raw_output_contents
        && a.outputs.len() == b.outputs.len()
        && a.outputs.iter().zip(&b.outputs).all(|(x, y)| {
            x.name == y.name
                && x.datatype == y.datatype
                && x.shape == y.shape
                && x.contents == y.contents
        })
}

/// A replica is kept across registry reads while this stays the same.
fn replica_key(id: &str, address: &str, tls: bool) -> String {
    format!("{id}@{address}{}", if tls { " tls" } else { "" })
}

#[cfg(test)]
mod tests;
