//! Mixed load: the real-time load alone, then the same load while a batch
//! job submitted through switchboard's Jobs API runs, reported side by side.
//! The job's progress counts whole shards (the unit batchers report), so a
//! short window sees it in steps of `shard_rows`.

use crate::config::LoadConfig;
use crate::report::Report;
use crate::run::{Note, run_with, window_of};
use crate::target::Target;
use anyhow::{Context, Result, anyhow, bail};
use proto::switchboard::v1::jobs_client::JobsClient;
use proto::switchboard::v1::{self as pb, JobState};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone)]
pub struct MixedConfig {
    /// The real-time load, the same in both phases.
    pub load: LoadConfig,
    /// The batch job run during the second phase.
    pub job: pb::JobSpec,
    /// Cancel the job if it still runs after the phase; else wait for it.
    pub cancel_job: bool,
    /// How long the job may stay queued before the run gives up.
    pub start_timeout: Duration,
    /// Remove the job's output folder once the job has ended (it was a
    /// temporary one; the predictions are not what a load test is for).
    pub remove_output: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub endpoint: String,
    pub deployment: String,
    /// At the end of the run, after the cancel or the wait.
    pub state: String,
    /// When the measured window closed.
    pub state_after_phase: String,
    pub rows_total: u64,
    /// At the end of the run.
    pub rows_done: u64,
    pub rows_failed: u64,
    /// Rows the job finished during the measured window (whole shards).
    pub rows_done_during_phase: u64,
    /// Those rows per second of the window the job ran in.
    pub rows_per_s_during_phase: f64,
    /// Share of the measured window the job was running (1 = all of it).
    pub overlap_fraction: f64,
    /// Seconds into the measured window when the job stopped running, if it
    /// stopped within it.
    pub ended_after_s: Option<f64>,
    pub message: String,
    /// The job's output folder, and whether the run removed it.
    pub output: String,
    pub output_removed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixedReport {
    pub alone: Report,
    pub with_job: Report,
    pub job: JobSummary,
    /// p99 with the job over p99 alone.
    pub p99_ratio: Option<f64>,
}

/// The Jobs API with the load's credential.
#[derive(Clone)]
struct Jobs {
    client: JobsClient<Channel>,
    auth: Option<AsciiMetadataValue>,
}

impl Jobs {
    async fn connect(cfg: &LoadConfig) -> Result<Self> {
        let url = if cfg.url.contains("://") {
            cfg.url.clone()
        } else {
            format!("http://{}", cfg.url)
        };
        let mut endpoint = Endpoint::from_shared(url.clone())?;
        if url.starts_with("https://") {
            let tls = match &cfg.ca_cert {
                Some(ca) => tonic::transport::ClientTlsConfig::new().ca_certificate(
                    tonic::transport::Certificate::from_pem(
                        std::fs::read(ca).with_context(|| format!("{}", ca.display()))?,
                    ),
                ),
                None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls)?;
        }
        let ch = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let auth = cfg
            .token
            .as_deref()
            .map(|t| format!("Bearer {}", t.trim()).parse::<AsciiMetadataValue>())
            .transpose()
            .context("token is not header text")?;
        Ok(Jobs {
            client: JobsClient::new(ch),
            auth,
        })
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(a) = &self.auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }

    async fn get(&self, id: &str) -> Result<pb::Job, tonic::Status> {
        let q = self.req(pb::GetJobRequest { id: id.into() });
        Ok(self.client.clone().get_job(q).await?.into_inner())
    }

    async fn cancel(&self, id: &str) -> Result<pb::Job, tonic::Status> {
        let q = self.req(pb::CancelJobRequest { id: id.into() });
        Ok(self.client.clone().cancel_job(q).await?.into_inner())
    }
}

fn state_of(j: &pb::Job) -> JobState {
    JobState::try_from(j.state).unwrap_or(JobState::Unspecified)
}

fn is_final(s: JobState) -> bool {
    matches!(
        s,
        JobState::Succeeded | JobState::PartiallySucceeded | JobState::Failed | JobState::Cancelled
    )
}

fn state_name(s: JobState) -> String {
    s.as_str_name()
        .trim_start_matches("JOB_STATE_")
        .to_ascii_lowercase()
}

fn progress(j: &pb::Job) -> String {
    format!(
        "job {} {}/{} rows",
        state_name(state_of(j)),
        j.rows_done,
        j.rows_total
    )
}

fn set(note: &Note, text: String) {
    if let Ok(mut n) = note.lock() {
        *n = text;
    }
}

/// Share of `window` before `ended` (all of it when the job never stopped).
fn overlap(window: (Instant, Instant), ended: Option<Instant>) -> f64 {
    let len = window.1.saturating_duration_since(window.0).as_secs_f64();
    if len <= 0.0 {
        return 0.0;
    }
    let end = ended.unwrap_or(window.1).clamp(window.0, window.1);
    end.saturating_duration_since(window.0).as_secs_f64() / len
}

/// What the job did during the measured window, sampled every 100 ms.
struct PhaseWatch {
    last: pb::Job,
    rows_at_start: Option<u64>,
    ended: Option<Instant>,
}

async fn watch_phase(
    jobs: Jobs,
    first: pb::Job,
    window: (Instant, Instant),
    note: Note,
) -> PhaseWatch {
    let mut w = PhaseWatch {
        last: first,
        rows_at_start: None,
        ended: None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failed poll keeps the last answer; the next one may get through.
        if let Ok(j) = jobs.get(&w.last.id).await {
            w.last = j;
        }
        let now = Instant::now();
        if now >= window.0 && w.rows_at_start.is_none() {
            w.rows_at_start = Some(w.last.rows_done);
        }
        set(&note, format!("| with {}", progress(&w.last)));
        if state_of(&w.last) != JobState::Running {
            w.ended = Some(now);
            return w;
        }
        if now >= window.1 {
            return w;
        }
    }
}

/// Polls until the job runs; an error if it ends (or fails) first.
async fn wait_running(jobs: &Jobs, mut job: pb::Job, within: Duration) -> Result<pb::Job> {
    let until = Instant::now() + within;
    loop {
        match state_of(&job) {
            JobState::Running => return Ok(job),
            JobState::Succeeded | JobState::PartiallySucceeded => bail!(
                "job {} finished ({} rows) before the real-time load could overlap it; \
                 give it a bigger input (more rows) or smaller --job-mini-batch-size",
                job.id,
                job.rows_done
            ),
            s if is_final(s) || s == JobState::Cancelling => bail!(
                "job {} ended {} before it ran: {}",
                job.id,
                state_name(s),
                job.message
            ),
            _ => {}
        }
        if Instant::now() >= until {
            let _ = jobs.cancel(&job.id).await;
            bail!(
                "job {} was still {} after {:.0} s (are batchers running?); cancelled it",
                job.id,
                state_name(state_of(&job)),
                within.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        job = jobs
            .get(&job.id)
            .await
            .with_context(|| format!("GetJob {}", job.id))?;
    }
}

/// Cancels the job (or, with `cancel` false, lets it run) and waits until
/// it is final.
async fn finish(
    jobs: &Jobs,
    mut job: pb::Job,
    cancel: bool,
    progress_line: bool,
) -> Result<pb::Job> {
    if cancel && !is_final(state_of(&job)) {
        job = jobs
            .cancel(&job.id)
            .await
            .with_context(|| format!("CancelJob {}", job.id))?;
    }
    // Cancelling stops within one mini-batch; a finishing job may take long.
    let until = cancel.then(|| Instant::now() + Duration::from_secs(120));
    let mut shown = false;
    while !is_final(state_of(&job)) {
        if until.is_some_and(|u| Instant::now() >= u) {
            bail!("job {} did not end within 120 s of its cancel", job.id);
        }
        if progress_line {
            eprint!("\r[waiting for the job] {}   ", progress(&job));
            shown = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        job = jobs
            .get(&job.id)
            .await
            .with_context(|| format!("GetJob {}", job.id))?;
    }
    if shown {
        eprintln!();
    }
    Ok(job)
}

/// Both phases, the job between them, and the report.
pub async fn mixed(cfg: MixedConfig) -> Result<MixedReport> {
    let target = Target::connect(&cfg.load).await?;
    let jobs = Jobs::connect(&cfg.load).await?;
    let say = |s: &str| {
        if cfg.load.progress {
            eprintln!("{s}");
        }
    };
    let note: Note = Arc::new(Mutex::new("| alone".into()));
    say("phase 1/2: real-time load alone");
    let begin = Instant::now() + Duration::from_millis(20);
    let alone = run_with(&target, &cfg.load, begin, Some(note.clone())).await?;

    let submit = jobs.req(pb::SubmitJobRequest {
        spec: Some(cfg.job.clone()),
    });
    let job = jobs
        .client
        .clone()
        .submit_job(submit)
        .await
        .context("SubmitJob")?
        .into_inner();
    say(&format!(
        "submitted job {} (input {}, output {}); waiting for it to run",
        job.id, cfg.job.input, cfg.job.output
    ));
    let job = wait_running(&jobs, job, cfg.start_timeout).await?;

    say("phase 2/2: real-time load with the job running");
    let begin = Instant::now() + Duration::from_millis(20);
    let window = window_of(&cfg.load, begin);
    let watcher = tokio::spawn(watch_phase(jobs.clone(), job.clone(), window, note.clone()));
    let phase = run_with(&target, &cfg.load, begin, Some(note));
    let with_job = tokio::select! {
        r = phase => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let with_job = match with_job {
        Ok(r) => r,
        Err(e) => {
            watcher.abort();
            if cfg.cancel_job {
                let _ = jobs.cancel(&job.id).await;
                return Err(e.context(format!("cancelled job {}", job.id)));
            }
            return Err(e.context(format!("job {} goes on", job.id)));
        }
    };
    let w = watcher.await.map_err(|e| anyhow!("job watcher: {e}"))?;
    let after_phase = state_of(&w.last);
    let done = finish(&jobs, w.last.clone(), cfg.cancel_job, cfg.load.progress).await?;
    let output_removed = cfg.remove_output
        && !cfg.job.output.contains("://")
        && std::fs::remove_dir_all(&cfg.job.output).is_ok();

    let ran_in_window = w.ended.filter(|e| *e < window.1);
    let overlap_fraction = overlap(window, ran_in_window);
    let rows_during = match (w.rows_at_start, ran_in_window) {
        // Ended in the window: what it finished after the window opened.
        (Some(start), Some(_)) => done.rows_done.saturating_sub(start),
        (Some(start), None) => w.last.rows_done.saturating_sub(start),
        (None, _) => 0,
    };
    let ran_s = overlap_fraction * cfg.load.duration.as_secs_f64();
    let p99_ratio = (alone.latency_us.p99 > 0)
        .then(|| with_job.latency_us.p99 as f64 / alone.latency_us.p99 as f64);
    Ok(MixedReport {
        job: JobSummary {
            id: done.id.clone(),
            endpoint: cfg.job.endpoint.clone(),
            deployment: done.deployment.clone(),
            state: state_name(state_of(&done)),
            state_after_phase: state_name(after_phase),
            rows_total: done.rows_total,
            rows_done: done.rows_done,
            rows_failed: done.rows_failed,
            rows_done_during_phase: rows_during,
            rows_per_s_during_phase: if ran_s > 0.0 {
                rows_during as f64 / ran_s
            } else {
                0.0
            },
            overlap_fraction,
            ended_after_s: ran_in_window
                .map(|e| e.saturating_duration_since(window.0).as_secs_f64()),
            message: done.message.clone(),
            output: cfg.job.output.clone(),
            output_removed,
        },
        alone,
        with_job,
        p99_ratio,
    })
}

impl MixedReport {
    pub fn markdown(&self) -> String {
        let a = &self.alone;
        let load = a.load_label();
        let mut s = format!(
            "## {} — mixed load: {load}, batch {}, {:.0} s a phase\n\n\
             | phase | throughput | requests | errors | p50 | p90 | p99 | p99.9 | max |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            a.model, a.batch, a.duration_s
        );
        for (name, r) in [("alone", a), ("with job", &self.with_job)] {
            let l = &r.latency_us;
            s += &format!(
                "| {name} | {:.1}/s | {} | {} | {} µs | {} µs | {} µs | {} µs | {} µs |\n",
                r.throughput_per_s, r.requests, r.errors, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        if let Some(x) = self.p99_ratio {
            s += &format!("\np99 with the job is {x:.2}× p99 alone.\n");
        }
        let j = &self.job;
        s += &format!(
            "\nJob `{}` (endpoint {}, deployment {}): {} rows done during the measured window \
             ({:.0} rows/s; progress counts whole shards); {}/{} rows by the end; \
             {} after the phase, {} at the end.\n",
            j.id,
            j.endpoint,
            j.deployment,
            j.rows_done_during_phase,
            j.rows_per_s_during_phase,
            j.rows_done,
            j.rows_total,
            j.state_after_phase,
            j.state
        );
        match j.ended_after_s {
            Some(t) => {
                s += &format!(
                    "\n**The job stopped running {t:.1} s into the {:.0} s window** (overlap {:.0} %): \
                     the with-job figures mix load with and without it; give it more rows.\n",
                    self.with_job.duration_s,
                    j.overlap_fraction * 100.0
                )
            }
            None => s += "\nThe job ran through the whole measured window.\n",
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_share_of_the_window_before_the_end() {
        let t0 = Instant::now();
        let w = (t0, t0 + Duration::from_secs(10));
        assert_eq!(overlap(w, None), 1.0);
        assert!((overlap(w, Some(t0 + Duration::from_millis(2500))) - 0.25).abs() < 1e-9);
        assert_eq!(overlap(w, Some(t0 + Duration::from_secs(20))), 1.0);
        assert_eq!(
            overlap(
                (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2)),
                Some(t0)
            ),
            0.0
        );
    }

    #[test]
    fn states_read_as_words() {
        assert_eq!(
            state_name(JobState::PartiallySucceeded),
            "partially_succeeded"
        );
        assert!(is_final(JobState::Cancelled) && !is_final(JobState::Cancelling));
    }
}
