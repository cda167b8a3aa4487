//! `switchboard job …`: batch scoring jobs through the gateway's Jobs API.

use crate::commands::Conn;
use crate::output::{self, OutputArgs, job_state};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use client::proto::switchboard::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DataFormat {
    Csv,
    Jsonl,
    Parquet,
}

impl From<DataFormat> for pb::DataFormat {
    fn from(f: DataFormat) -> Self {
        match f {
            DataFormat::Csv => pb::DataFormat::Csv,
            DataFormat::Jsonl => pb::DataFormat::Jsonl,
            DataFormat::Parquet => pb::DataFormat::Parquet,
        }
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[arg(long)]
    pub endpoint: String,
    /// Pin a deployment (default: chosen once by the endpoint's traffic weights).
    #[arg(long)]
    pub deployment: Option<String>,
    /// Input file or folder (CSV, JSON Lines or Parquet), or a file:// URI.
    #[arg(long)]
    pub input: String,
    /// Output folder: parts, errors.jsonl and manifest.json go there.
    #[arg(long)]
    pub output: String,
    /// Output format (default: the input's).
    #[arg(long, value_enum)]
    pub format: Option<DataFormat>,
    /// Input format (default: from the extension).
    #[arg(long, value_enum)]
    pub input_format: Option<DataFormat>,
    /// Bind columns to a model input: `INPUT=col1,col2,…` (names or 0-based
    /// indices); repeat per input. Default: all columns into the single input.
    #[arg(long = "bind")]
    pub bindings: Vec<String>,
    /// Rows per model run, or `auto` to fill the device's memory budget.
    #[arg(long, default_value = "auto")]
    pub mini_batch_size: String,
    /// Times a failed shard is tried again before it goes to dead letter.
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Failed rows allowed before the job fails (-1 = any).
    #[arg(long, allow_hyphen_values = true)]
    pub error_threshold: Option<i64>,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Accept NaN and infinity in inputs (default: such rows are errors).
    #[arg(long)]
    pub allow_nan: bool,
    /// Write no predictions, only the manifest's counts.
    #[arg(long)]
    pub summary_only: bool,
    /// Rows per shard (the unit of work and of retry).
    #[arg(long)]
    pub shard_rows: Option<u32>,
    /// CSV: the first line is a header (true) or data (false); default:
    /// detected (a header when a non-empty field is not a number).
    #[arg(long)]
    pub csv_header: Option<bool>,
    /// Follow progress until the job ends; exit non-zero unless it succeeded.
    #[arg(long)]
    pub wait: bool,
}

/// `switchboard job …`: the connection, then the subcommand. The output
/// format is a flag of the commands that show jobs, since `submit --output`
/// names the predictions' folder.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub cmd: JobCmd,
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// Queue a batch scoring job; prints its id (with --wait, the job as JSON
    /// once it ends).
    Submit(SubmitArgs),
    /// Show a job.
    Status {
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        out: OutputArgs,
        #[arg(long, default_value = "")]
        endpoint: String,
        /// queued, running, succeeded, partially_succeeded, failed, cancelling or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Ask a job to stop; it ends `cancelled` with a manifest of what was written.
    Cancel {
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Follow a job with a progress bar until it ends.
    Watch { id: String },
}

/// Local paths travel absolute: the batcher may run in another folder.
fn location(s: &str) -> Result<String> {
    if s.contains("://") {
        return Ok(s.to_string());
    }
    Ok(std::path::absolute(s)
        .with_context(|| format!("resolving {s}"))?
        .display()
        .to_string())
}

fn spec(a: &SubmitArgs) -> Result<pb::JobSpec> {
    let mini_batch_size = match a.mini_batch_size.as_str() {
        "auto" => 0,
        n => match n.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => bail!("--mini-batch-size: expected `auto` or a positive number, got '{n}'"),
        },
    };
    let bindings = a
        .bindings
        .iter()
        .map(|b| {
            let (input, cols) = b
                .split_once('=')
                .with_context(|| format!("--bind '{b}': expected INPUT=col1,col2"))?;
            Ok(pb::InputBinding {
                input: input.to_string(),
                columns: cols.split(',').map(str::to_string).collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(pb::JobSpec {
        endpoint: a.endpoint.clone(),
        deployment: a.deployment.clone().unwrap_or_default(),
        input: location(&a.input)?,
        input_format: a.input_format.map_or(0, |f| pb::DataFormat::from(f) as i32),
        bindings,
        output: location(&a.output)?,
        output_format: a.format.map_or(0, |f| pb::DataFormat::from(f) as i32),
        output_action: if a.summary_only {
            pb::OutputAction::SummaryOnly
        } else {
            pb::OutputAction::AppendRow
        } as i32,
        mini_batch_size,
        max_retries: a.max_retries,
        error_threshold: a.error_threshold,
        priority: a.priority,
        allow_nan: a.allow_nan,
        shard_rows: a.shard_rows.unwrap_or(0),
        csv_header: a.csv_header,
    })
}

pub async fn job(a: JobArgs) -> Result<()> {
    let client = a.conn.client(None).await?;
    match a.cmd {
        JobCmd::Submit(a) => {
            let job = client.submit_job(spec(&a)?).await?;
            eprintln!("submitted job {}", job.id);
            if a.wait {
                return follow(&client, &job.id).await;
            }
            println!("{}", job.id);
        }
        JobCmd::Status { id, out } => {
            output::job(&client.get_job(&id).await?).print(out.output);
        }
        JobCmd::List {
            out,
            endpoint,
            state,
            limit,
            page_token,
        } => {
            let state = match state {
                None => None,
                Some(s) => Some(
                    pb::JobState::from_str_name(&format!("JOB_STATE_{}", s.to_ascii_uppercase()))
                        .with_context(|| format!("--state '{s}': not a job state"))?,
                ),
            };
            let page = client
                .list_jobs(&endpoint, state, limit, &page_token)
                .await?;
            output::jobs(&page.jobs).print(out.output);
            if !page.next_page_token.is_empty() {
                eprintln!("more: --page-token {}", page.next_page_token);
            }
        }
        JobCmd::Cancel { id, out } => {
            output::job(&client.cancel_job(&id).await?).print(out.output);
        }
        JobCmd::Watch { id } => return follow(&client, &id).await,
    }
    Ok(())
}

/// A progress bar (rows/s, ETA) until the job ends; fails unless it succeeded.
async fn follow(client: &client::Client, id: &str) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} rows  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let end = client
        .watch_job(id, |j| {
            bar.set_length(j.rows_total);
            bar.set_position(j.rows_done + j.rows_failed);
            bar.set_message(job_state(j.state));
        })
        .await?;
    bar.finish();
    output::job(&end).print(output::Format::Json);
    if end.state != pb::JobState::Succeeded as i32 {
        bail!("job {id} ended {}: {}", job_state(end.state), end.message);
    }
    Ok(())
}
