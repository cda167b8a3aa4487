//! Batch jobs over REST: `POST /v2/jobs` submits, `GET /v2/jobs/{id}` and
//! `GET /v2/jobs` read, `DELETE /v2/jobs/{id}` cancels (also under
//! `/switchboard/v1/jobs`). Each calls the switchboard.v1 Jobs service, so a
//! job id is the same job on both protocols, and answers are the JSON that
//! `switchboard job status` prints.

use super::errors::RestError;
use super::{Rest, grpc, json_response};
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use proto::switchboard::v1 as pb;
use proto::switchboard::v1::jobs_server::Jobs;
use serde::Deserialize;
use serde_json::{Value, json};

/// The two prefixes jobs are served under.
const PREFIXES: [&str; 2] = ["/v2/jobs", "/switchboard/v1/jobs"];

pub fn routes(mut r: axum::Router<Rest>) -> axum::Router<Rest> {
    for p in PREFIXES {
        r = r
            .route(p, get(list).post(submit))
            .route(&format!("{p}/{{id}}"), get(one).delete(cancel));
    }
    r
}

/// A job state as its lower-case name (`queued`, `partially_succeeded`).
pub fn job_state(s: i32) -> String {
    pb::JobState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

/// A job as JSON: the document of `switchboard job status --output json`.
pub fn job_json(j: &pb::Job) -> Value {
    json!({
        "id": j.id,
        "state": job_state(j.state),
        "endpoint": j.spec.as_ref().map(|s| s.endpoint.clone()),
        "deployment": j.deployment,
        "rows_total": j.rows_total,
        "rows_done": j.rows_done,
        "rows_failed": j.rows_failed,
        "shards_total": j.shards_total,
        "shards_done": j.shards_done,
        "batch_size": j.batch_size,
        "batch_fit": j.batch_fit,
        "message": j.message,
        "manifest": j.manifest,
        "errors": j.errors,
        "created_unix_ms": j.created_unix_ms,
        "started_unix_ms": j.started_unix_ms,
        "finished_unix_ms": j.finished_unix_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Binding {
    input: String,
    #[serde(default)]
    columns: Vec<String>,
}

/// A submitted spec: the fields of `switchboard.v1.JobSpec`, with formats,
/// the output action and `mini_batch_size: "auto"` by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    endpoint: String,
    #[serde(default)]
    deployment: String,
    input: String,
    #[serde(default)]
    input_format: Option<String>,
    #[serde(default)]
    bindings: Vec<Binding>,
    output: String,
    #[serde(default)]
    output_format: Option<String>,
    #[serde(default)]
    output_action: Option<String>,
    #[serde(default)]
    mini_batch_size: Option<Value>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    error_threshold: Option<i64>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    allow_nan: bool,
    #[serde(default)]
    shard_rows: u32,
    #[serde(default)]
    csv_header: Option<bool>,
}

fn format(f: Option<&str>, what: &str) -> Result<i32, RestError> {
    Ok(match f.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => pb::DataFormat::Unspecified,
        Some("csv") => pb::DataFormat::Csv,
        Some("jsonl") => pb::DataFormat::Jsonl,
        Some("parquet") => pb::DataFormat::Parquet,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "{what} '{other}' is not csv, jsonl or parquet"
            )));
        }
    } as i32)
}

impl Spec {
    fn into_pb(self) -> Result<pb::JobSpec, RestError> {
        let output_action = match self.output_action.as_deref() {
            None | Some("append_row") => pb::OutputAction::AppendRow,
            Some("summary_only") => pb::OutputAction::SummaryOnly,
            Some(other) => {
                return Err(RestError::bad_request(format!(
                    "output_action '{other}' is not append_row or summary_only"
                )));
            }
        } as i32;
        let mini_batch_size = match &self.mini_batch_size {
            None => 0,
            Some(Value::String(s)) if s == "auto" => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    RestError::bad_request(format!(
                        "mini_batch_size must be a count or \"auto\", got {v}"
                    ))
                })?,
        };
        Ok(pb::JobSpec {
            input_format: format(self.input_format.as_deref(), "input_format")?,
            output_format: format(self.output_format.as_deref(), "output_format")?,
            endpoint: self.endpoint,
            deployment: self.deployment,
            input: self.input,
            bindings: self
                .bindings
                .into_iter()
                .map(|b| pb::InputBinding {
                    input: b.input,
                    columns: b.columns,
                })
                .collect(),
            output: self.output,
            output_action,
            mini_batch_size,
            max_retries: self.max_retries,
            error_threshold: self.error_threshold,
            priority: self.priority,
            allow_nan: self.allow_nan,
            shard_rows: self.shard_rows,
            csv_header: self.csv_header,
        })
    }
}

async fn submit(State(s): State<Rest>, req: Request) -> Result<Response, RestError> {
    let who = super::principal(&req);
    let (_, bytes) = super::body::read(req, s.max_message).await?;
    let spec: Spec = serde_json::from_slice(&bytes)
        .map_err(|e| RestError::bad_request(format!("malformed job spec: {e}")))?;
    let mut msg = tonic::Request::new(pb::SubmitJobRequest {
        spec: Some(spec.into_pb()?),
    });
    msg.extensions_mut().insert(who);
    let job = s.jobs.submit_job(msg).await?.into_inner();
    let mut resp = json_response(StatusCode::CREATED, &job_json(&job));
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/jobs/{}", job.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn one(
    State(s): State<Rest>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, RestError> {
    let job = s.jobs.get_job(grpc(&req, pb::GetJobRequest { id })).await?;
    Ok(json_response(StatusCode::OK, &job_json(job.get_ref())))
}

async fn cancel(
    State(s): State<Rest>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, RestError> {
    let job = s
        .jobs
        .cancel_job(grpc(&req, pb::CancelJobRequest { id }))
        .await?;
    Ok(json_response(StatusCode::OK, &job_json(job.get_ref())))
}

/// `?endpoint=&state=&page_size=&page_token=`; the answer is
/// `{"jobs": [...], "next_page_token": "..."}` (empty on the last page).
async fn list(State(s): State<Rest>, req: Request) -> Result<Response, RestError> {
    let mut msg = pb::ListJobsRequest::default();
    let query = req.uri().query().unwrap_or_default().to_string();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "endpoint" => msg.endpoint = v.into_owned(),
            "state" => {
                let name = format!("JOB_STATE_{}", v.to_ascii_uppercase());
                msg.state = pb::JobState::from_str_name(&name)
                    .ok_or_else(|| RestError::bad_request(format!("unknown job state '{v}'")))?
                    as i32;
            }
            "page_size" => {
                msg.page_size = v.parse().map_err(|_| {
                    RestError::bad_request(format!("page_size '{v}' is not a count"))
                })?;
            }
            "page_token" => msg.page_token = v.into_owned(),
            other => {
                return Err(RestError::bad_request(format!(
                    "unknown query parameter '{other}' (endpoint, state, page_size, page_token)"
                )));
            }
        }
    }
    let r = s.jobs.list_jobs(grpc(&req, msg)).await?.into_inner();
    let jobs: Vec<Value> = r.jobs.iter().map(job_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "jobs": jobs, "next_page_token": r.next_page_token }),
    ))
}
