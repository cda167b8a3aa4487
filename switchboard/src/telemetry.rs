//! Log lines and traces for every role: one subscriber with a log layer
//! (text or JSON, filtered by `RUST_LOG`) and, with `--otlp-endpoint`, an
//! OpenTelemetry layer that exports the trace spans (target
//! `switchboard::trace`) over OTLP/gRPC. Each layer has its own filter, so
//! the trace spans, which are at DEBUG, cost nothing with OTLP off and do
//! not turn up in the log at the default level with it on.

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use std::sync::Arc;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Export traces over OTLP/gRPC to this collector (e.g.
    /// http://otel-collector:4317); off by default. Servers only: `up`,
    /// `gateway`, `worker`, `batcher`.
    #[arg(long, global = true, env = "SWITCHBOARD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of traces started here that are exported (0..1); a trace
    /// started by a caller follows the caller's sampled flag.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_OTLP_SAMPLE_RATIO",
        default_value_t = 1.0
    )]
    pub otlp_sample_ratio: f64,
}

/// Holds the exporter; `shutdown` (awaited, since exports run on the
/// runtime) flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is left (bounded by the SDK's export timeout).
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            // The batch thread's last export is spawned onto this runtime:
            // wait for it off the runtime's threads (one, in some builds).
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

/// Installs the subscriber. `service` names this process in traces
/// (`service.name`); `None` for client commands, which export nothing.
pub fn init(format: LogFormat, traces: &TraceArgs, service: Option<&str>) -> Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,ort=warn".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        // The event's fields at the top level, beside level, target and
        // time: what Loki or Elasticsearch index without a parser.
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    // Propagation works without export too: what comes in goes on.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let (provider, spans) = match (service, &traces.otlp_endpoint) {
        (Some(service), Some(url)) => {
            let provider = tracer_provider(url, service)?;
            trace_context::start_sampling(traces.otlp_sample_ratio);
            // The trace spans, and warnings inside them as span events.
            let wanted = Targets::new()
                .with_target(trace_context::TARGET, LevelFilter::TRACE)
                .with_default(LevelFilter::WARN);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("switchboard"))
                .with_filter(wanted);
            (Some(provider), Some(layer))
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init()
        .context("installing the log subscriber")?;
    if let (Some(url), Some(service)) = (&traces.otlp_endpoint, service) {
        tracing::info!(%url, service, ratio = traces.otlp_sample_ratio, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(url: &str, service: &str) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(url)
        .build()
        .with_context(|| format!("--otlp-endpoint {url}"))?;
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        runtime: tokio::runtime::Handle::current(),
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Sampling is decided where a trace enters (trace_context::sampled):
        // a span that exists is meant to be exported.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

/// The OTLP exporter, called on the process's runtime: the SDK's batch
/// processor exports from a thread of its own, where tonic (hyper) finds no
/// reactor and panics.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.export(batch).await })
            .await
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, while the provider is built and nothing else holds it.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}
