//! SDK calls for batch jobs.

use crate::{Client, ClientError};
use proto::switchboard::v1 as pb;

impl Client {
    /// Queues a job; answers at once with its id and state `queued`.
    pub async fn submit_job(&self, spec: pb::JobSpec) -> Result<pb::Job, ClientError> {
        let req = pb::SubmitJobRequest { spec: Some(spec) };
        Ok(self.jobs.clone().submit_job(req).await?.into_inner())
    }

    pub async fn get_job(&self, id: &str) -> Result<pb::Job, ClientError> {
        let req = pb::GetJobRequest { id: id.into() };
        Ok(self.jobs.clone().get_job(req).await?.into_inner())
    }

    /// One page, newest first; pass the answer's `next_page_token` for more.
    pub async fn list_jobs(
        &self,
        endpoint: &str,
        state: Option<pb::JobState>,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListJobsResponse, ClientError> {
        let req = pb::ListJobsRequest {
            endpoint: endpoint.into(),
            state: state.map_or(0, |s| s as i32),
            page_size,
            page_token: page_token.into(),
        };
        Ok(self.jobs.clone().list_jobs(req).await?.into_inner())
    }

    pub async fn cancel_job(&self, id: &str) -> Result<pb::Job, ClientError> {
        let req = pb::CancelJobRequest { id: id.into() };
        Ok(self.jobs.clone().cancel_job(req).await?.into_inner())
    }

    /// Calls `each` with the job now and after every change; returns the
    /// job in its final state.
    pub async fn watch_job(
        &self,
        id: &str,
        mut each: impl FnMut(&pb::Job),
    ) -> Result<pb::Job, ClientError> {
        let req = pb::WatchJobRequest { id: id.into() };
        let mut stream = self.jobs.clone().watch_job(req).await?.into_inner();
        let mut last = None;
        while let Some(job) = stream.message().await? {
            each(&job);
            last = Some(job);
        }
        last.ok_or_else(|| ClientError::Input(format!("watch of job {id} ended without news")))
    }
}

/// Whether a job state is one a job never leaves.
pub fn is_final(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Succeeded
            | pb::JobState::PartiallySucceeded
            | pb::JobState::Failed
            | pb::JobState::Cancelled)
    )
}
