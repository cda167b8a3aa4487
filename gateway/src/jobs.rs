//! switchboard.v1 Jobs: batch scoring jobs go into the Redis queue that the
//! batchers read. Credentials authorize as for inference on the job's
//! endpoint; the deployment is chosen once, at submit, by traffic weight
//! (or the pin), so a whole job is scored by one model.

use crate::auth::{Principal, authorize_infer, principal};
use crate::store::Store;
use job_queue::{self as queue, Format, JobQueue, JobRecord, JobState, QueueError};
use proto::switchboard::v1 as pb;
use proto::switchboard::v1::jobs_server::Jobs;
use router::Router;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const WATCH_EVERY: Duration = Duration::from_millis(200);
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

pub struct JobsService {
    store: Arc<Store>,
    router: Arc<Router>,
    queue: JobQueue,
}

fn status(e: QueueError) -> Status {
    match e {
        QueueError::NotFound(_) => Status::not_found(e.to_string()),
        QueueError::Corrupt(_) => Status::internal(e.to_string()),
        QueueError::OutputInUse { .. } => Status::invalid_argument(e.to_string()),
        QueueError::Redis(_) | QueueError::NotReplicated(_) => Status::unavailable(e.to_string()),
    }
}

fn bad(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn format_of(f: i32, what: &str) -> Result<Option<Format>, Status> {
    match pb::DataFormat::try_from(f) {
        Ok(pb::DataFormat::Unspecified) => Ok(None),
        Ok(pb::DataFormat::Csv) => Ok(Some(Format::Csv)),
        Ok(pb::DataFormat::Jsonl) => Ok(Some(Format::Jsonl)),
        Ok(pb::DataFormat::Parquet) => Ok(Some(Format::Parquet)),
        Err(_) => Err(bad(format!("{what}: unknown data format {f}"))),
    }
}

fn format_pb(f: Option<Format>) -> i32 {
    (match f {
        None => pb::DataFormat::Unspecified,
        Some(Format::Csv) => pb::DataFormat::Csv,
        Some(Format::Jsonl) => pb::DataFormat::Jsonl,
        Some(Format::Parquet) => pb::DataFormat::Parquet,
    }) as i32
}

fn state_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::PartiallySucceeded => pb::JobState::PartiallySucceeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelling => pb::JobState::Cancelling,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// Local paths and `file://` URIs name files the batchers open directly;
/// other schemes go through object stores, as far as this build has them.
pub fn job_pb(j: &JobRecord) -> pb::Job {
    let s = &j.spec;
    pb::Job {
        id: j.id.clone(),
        spec: Some(pb::JobSpec {
            endpoint: s.endpoint.clone(),
            deployment: if s.pinned {
                s.deployment.clone()
            } else {
                String::new()
            },
            input: s.input.clone(),
            input_format: format_pb(s.input_format),
            bindings: s
                .bindings
                .iter()
                .map(|b| pb::InputBinding {
                    input: b.input.clone(),
                    columns: b.columns.clone(),
                })
                .collect(),
            output: s.output.clone(),
            output_format: format_pb(s.output_format),
            output_action: if s.summary_only {
                pb::OutputAction::SummaryOnly
            } else {
                pb::OutputAction::AppendRow
            } as i32,
            mini_batch_size: s.mini_batch_size,
            max_retries: Some(s.max_retries),
            error_threshold: Some(s.error_threshold),
            priority: s.priority,
            allow_nan: s.allow_nan,
            shard_rows: s.shard_rows,
            csv_header: s.csv_header,
        }),
        state: state_pb(j.state) as i32,
        deployment: s.deployment.clone(),
        rows_total: j.rows_total,
        rows_done: j.rows_done,
        rows_failed: j.rows_failed,
        shards_total: j.shards_total,
        shards_done: j.shards_done,
        batch_size: j.batch_size,
        batch_fit: j.batch_fit.clone(),
        message: j.message.clone(),
        created_unix_ms: j.created_ms,
        started_unix_ms: j.started_ms,
        finished_unix_ms: j.finished_ms,
        manifest: j.manifest.clone(),
        errors: j.errors.clone(),
    }
}

impl JobsService {
    pub fn new(store: Arc<Store>, router: Arc<Router>, queue: JobQueue) -> Self {
        JobsService {
            store,
            router,
            queue,
        }
    }

    /// Validates a submitted spec and fixes its deployment and model.
    fn accept(&self, p: &Principal, spec: pb::JobSpec) -> Result<queue::JobSpec, Status> {
        let snap = self.store.snapshot();
        let ep = snap
            .endpoints
            .get(&spec.endpoint)
            .ok_or_else(|| Status::not_found(format!("unknown endpoint '{}'", spec.endpoint)))?;
        authorize_infer(p, ep)?;
        let pinned = !spec.deployment.is_empty();
        let deployment = if pinned {
            spec.deployment.clone()
        } else {
            self.router.choose(&spec.endpoint, None)?
        };
        let dep = ep.deployments.get(&deployment).ok_or_else(|| {
            Status::not_found(format!(
                "endpoint '{}' has no deployment '{deployment}'",
                ep.name
            ))
        })?;
        if dep.model_uri.is_empty() {
            return Err(bad(format!(
                "deployment '{deployment}' has no model_uri; batch jobs load the model from it"
            )));
        }
        let input_format = format_of(spec.input_format, "input_format")?;
        let bindings = spec
            .bindings
            .into_iter()
            .map(|b| queue::Binding {
                input: b.input,
                columns: b.columns,
            })
            .collect();
        let action = pb::OutputAction::try_from(spec.output_action)
            .map_err(|_| bad(format!("unknown output_action {}", spec.output_action)))?;
        let spec = queue::JobSpec {
            endpoint: spec.endpoint,
            deployment,
            pinned,
            model_uri: dep.model_uri.clone(),
            input: spec.input,
            input_format,
            bindings,
            output: spec.output,
            output_format: format_of(spec.output_format, "output_format")?,
            summary_only: action == pb::OutputAction::SummaryOnly,
            mini_batch_size: spec.mini_batch_size,
            max_retries: spec.max_retries.unwrap_or(queue::DEFAULT_MAX_RETRIES),
            error_threshold: spec.error_threshold.unwrap_or(-1),
            priority: spec.priority,
            allow_nan: spec.allow_nan,
            shard_rows: if spec.shard_rows == 0 {
                queue::DEFAULT_SHARD_ROWS
            } else {
                spec.shard_rows
            },
            csv_header: spec.csv_header,
        };
        spec.check().map_err(|e| bad(e.to_string()))?;
        Ok(spec)
    }

    /// A job, if this caller may see it: the admin, or a credential that
    /// may score on the job's endpoint.
    async fn visible(&self, p: &Principal, id: &str) -> Result<JobRecord, Status> {
        let job = self.queue.get(id).await.map_err(status)?;
        let snap = self.store.snapshot();
        match snap.endpoints.get(&job.spec.endpoint) {
            Some(ep) => authorize_infer(p, ep)?,
            None => crate::auth::authorize_admin(p)?,
        }
        Ok(job)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Job, Status>> + Send>>;

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let p = principal(&req);
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| bad("spec is missing"))?;
        let spec = self.accept(&p, spec)?;
        // The batcher's spans for this job join the caller's trace.
        let trace = proto::trace::outgoing();
        let trace = job_queue::JobTrace {
            traceparent: trace.traceparent.unwrap_or_default(),
            tracestate: trace.tracestate.unwrap_or_default(),
        };
        let job = self
            .queue
            .submit_traced(spec, &trace)
            .await
            .map_err(status)?;
        tracing::info!(job = %job.id, endpoint = %job.spec.endpoint, deployment = %job.spec.deployment, "job submitted");
        Ok(Response::new(job_pb(&job)))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let p = principal(&req);
        let job = self.visible(&p, &req.get_ref().id).await?;
        Ok(Response::new(job_pb(&job)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let p = principal(&req);
        let r = req.into_inner();
        // Endpoint credentials list their own endpoint's jobs only.
        let endpoint = match (&p, r.endpoint.as_str()) {
            (Principal::Admin, "") => None,
            (Principal::Admin, e) => Some(e.to_string()),
            (Principal::Key { endpoint, .. } | Principal::Token { endpoint, .. }, e)
                if e.is_empty() || e == endpoint =>
            {
                Some(endpoint.clone())
            }
            (Principal::Anonymous, "") => {
                return Err(Status::unauthenticated(
                    "listing all jobs needs the admin key; name an endpoint",
                ));
            }
            (_, e) => {
                let snap = self.store.snapshot();
                let ep = snap
                    .endpoints
                    .get(e)
                    .ok_or_else(|| Status::not_found(format!("unknown endpoint '{e}'")))?;
                authorize_infer(&p, ep)?;
                Some(e.to_string())
            }
        };
        let state = match pb::JobState::try_from(r.state) {
            Ok(pb::JobState::Unspecified) => None,
            Ok(s) => JobState::parse(
                s.as_str_name()
                    .trim_start_matches("JOB_STATE_")
                    .to_ascii_lowercase()
                    .as_str(),
            ),
            Err(_) => return Err(bad(format!("unknown job state {}", r.state))),
        };
        let offset = if r.page_token.is_empty() {
            0
        } else {
            // Offsets into the job index; u32 keeps them inside Redis's
            // signed range indices.
            r.page_token
                .parse::<u32>()
                .map_err(|_| bad(format!("page_token '{}' is not one we gave", r.page_token)))?
                as usize
        };
        let size = match r.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let (jobs, next) = self
            .queue
            .list(endpoint.as_deref(), state, size, offset)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(job_pb).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let p = principal(&req);
        let id = &req.get_ref().id;
        self.visible(&p, id).await?;
        let job = self.queue.cancel(id).await.map_err(status)?;
        tracing::info!(job = %job.id, state = %job.state, "job cancel requested");
        Ok(Response::new(job_pb(&job)))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let p = principal(&req);
        let first = self.visible(&p, &req.get_ref().id).await?;
        let queue = self.queue.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Progress lives in the job hash; polling it keeps batchers free of
        // any notion of who is watching.
        tokio::spawn(async move {
            let mut last = job_pb(&first);
            if tx.send(Ok(last.clone())).await.is_err() || first.state.is_final() {
                return;
            }
            let mut misses = 0;
            loop {
                // A watcher that hung up is noticed here, not only at the
                // next change: a job that never moves would keep us polling.
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = tx.closed() => return,
                }
                match queue.get(&first.id).await {
                    Ok(job) => {
                        misses = 0;
                        let now = job_pb(&job);
                        if now != last {
                            if tx.send(Ok(now.clone())).await.is_err() {
                                return;
                            }
                            last = now;
                        }
                        if job.state.is_final() {
                            return;
                        }
                    }
                    // Redis may be restarting; give it a while before
                    // ending the stream with an error.
                    Err(QueueError::Redis(e)) if misses < 150 => {
                        misses += 1;
                        tracing::debug!(error = %e, "watch: Redis unavailable");
                    }
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
