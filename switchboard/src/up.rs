//! `switchboard up`: gateway, one worker and (unless --redis is given) a
//! Redis of its own, in one process, with the demo endpoint deployed.

use crate::redis_server::RedisServer;
use crate::roles::{BatchTuning, DrainArgs, MetricsArgs, SchedulerArgs, shutdown_signal};
use anyhow::{Context, Result};
use clap::Args;
use client::Client;
use client::proto::switchboard::v1 as pb;
use gpu_worker::server::run::{DeploymentSpec, WorkerConfig};
use std::path::PathBuf;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Gateway gRPC address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub listen: String,
    /// Gateway KServe V2 REST address (`off` serves gRPC alone).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http_listen: String,
    /// Where the started Redis keeps its data (AOF).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Use this Redis instead of starting one.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,
    /// Folder with the demo models.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Largest request or answer in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_message: usize,
    /// Requests per second per credential (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    /// The gateway calls its own worker in process, without gRPC (remote
    /// workers joining the same Redis are still called over gRPC); `false`
    /// sends it over loopback gRPC like any other worker.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub in_process_hop: bool,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub batch: BatchTuning,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

fn models_dir(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| Some(PathBuf::from("models")).filter(|p| p.join("digits_mlp.onnx").is_file()))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")))
}

pub async fn up(args: UpArgs, admin_key: Option<String>) -> Result<()> {
    args.metrics.install()?;
    let devices = args.scheduler.devices()?;
    // A key the user gave is never echoed; a generated one is shown once.
    let (admin_key, shown) = match admin_key {
        Some(k) => (k, "$SWITCHBOARD_ADMIN_KEY".to_string()),
        None => {
            let k = gateway::secrets::new_key();
            println!("SWITCHBOARD_ADMIN_KEY was not set; generated admin key:\n  {k}");
            (k.clone(), k)
        }
    };
    let (_redis, redis_url) = match &args.redis {
        Some(url) => (None, url.clone()),
        None => {
            let server = RedisServer::start(&args.data_dir).await?;
            let url = server.url();
            println!(
                "started redis-server at {url} (data in {})",
                args.data_dir.display()
            );
            (Some(server), url)
        }
    };
    // Deployments record model paths for batchers, which may run elsewhere.
    let models = models_dir(args.models.clone());
    let models = std::fs::canonicalize(&models)
        .with_context(|| format!("models folder {}", models.display()))?;
    let spec = |d: &str, file: &str| DeploymentSpec {
        endpoint: "digits".into(),
        deployment: d.into(),
        model: models.join(file),
    };
    let worker_config = WorkerConfig {
        deployments: vec![
            spec("blue", "digits_mlp.onnx"),
            spec("green", "digits_logreg.onnx"),
        ],
        scheduler: args.scheduler.scheduler()?,
        ort: args.scheduler.ort(),
        devices: devices.clone(),
        redis_url: Some(redis_url.clone()),
        drain_timeout: args.drain.timeout(),
        // One process: its gateway stops routing to its worker as it drains.
        drain_grace: std::time::Duration::ZERO,
        ..Default::default()
    };
    let worker_listener = TcpListener::bind("127.0.0.1:0").await?;
    let local = args
        .in_process_hop
        .then(|| worker_listener.local_addr())
        .transpose()?
        .map(|a| client::proto::local::LocalWorker::new(a.to_string()));
    let worker_config = WorkerConfig {
        local: local.clone(),
        ..worker_config
    };
    let gateway_listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let gateway_addr = gateway_listener.local_addr()?;
    let http = match args.http_listen.as_str() {
        "off" | "" => None,
        addr => Some(crate::roles::bind_http(addr, false).await?),
    };
    let http_addr = match &http {
        Some(h) => Some(h.0.local_addr()?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Load the models before announcing anything.
    let mut worker = tokio::spawn(gpu_worker::server::run::serve(
        worker_config,
        worker_listener,
        stopped(stop_rx.clone()),
    ));
    // The batcher takes the first device: it scores one job at a time.
    let mut batch_config = args.batch.config(
        &redis_url,
        devices.first().copied().unwrap_or_default(),
        args.scheduler.intra_threads,
    );
    batch_config.drain_timeout = args.drain.timeout();
    let mut batcher = tokio::spawn(batcher::run(batch_config, stopped(stop_rx.clone())));
    let gateway_config = gateway::GatewayConfig {
        redis_url,
        admin_key: Some(admin_key.clone()),
        max_message: args.max_message,
        rate_limit: args.rate_limit,
        drain_timeout: args.drain.timeout(),
        local_worker: local,
        ..Default::default()
    };
    let mut gateway = tokio::spawn(gateway::serve_with_http(
        gateway_config,
        gateway_listener,
        http,
        stopped(stop_rx),
    ));

    let url = format!("http://{gateway_addr}");
    let key = deploy_demo(&url, &admin_key, &models).await?;
    let rest = http_addr
        .map(|a| format!(", REST on http://{a}"))
        .unwrap_or_default();
    println!(
        "\nswitchboard is up: gateway on {gateway_addr}{rest}, endpoint 'digits' (blue 90 / green 10)"
    );
    match key {
        Some(k) => println!("endpoint key for 'digits' (shown once; stored hashed):\n  {k}"),
        None => println!(
            "endpoint 'digits' already existed; its keys were shown when it was made (new one: switchboard keys regenerate digits)"
        ),
    }
    println!(
        "\ntry:\n  export SWITCHBOARD_URL={url} SWITCHBOARD_ADMIN_KEY={shown}\n  \
         switchboard invoke digits --file models/digits_mlp.expected.json\n  \
         switchboard endpoint show digits\n  \
         switchboard job submit --endpoint digits --input rows.csv --output predictions --wait\n"
    );
    // A role that stops on its own (an error) stops the whole process.
    let early = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut worker => Some(r.map(|r| r.map_err(anyhow::Error::from))),
        r = &mut batcher => Some(r.map(|r| r.map_err(anyhow::Error::from))),
        r = &mut gateway => Some(r.map(|r| r.map_err(anyhow::Error::from))),
    };
    let _ = stop_tx.send(true);
    if let Some(r) = early {
        return r?;
    }
    // Every role drains at once and within the same bound; the process
    // exits when all three are done.
    let (w, b, g) = tokio::join!(worker, batcher, gateway);
    w??;
    b??;
    g??;
    Ok(())
}

/// Creates endpoint `digits` with `blue` and `green` at 90/10 unless it
/// exists. Returns the primary key when it was created now.
async fn deploy_demo(
    url: &str,
    admin_key: &str,
    models: &std::path::Path,
) -> Result<Option<String>> {
    let client = connect_with_retry(url, admin_key).await?;
    if client.get_endpoint("digits").await.is_ok() {
        return Ok(None);
    }
    let created = client.create_endpoint("digits", pb::AuthMode::Key).await?;
    for (name, file) in [("blue", "digits_mlp.onnx"), ("green", "digits_logreg.onnx")] {
        let d = pb::Deployment {
            name: name.into(),
            model_uri: models.join(file).display().to_string(),
            ..Default::default()
        };
        client.create_deployment("digits", d).await?;
    }
    client
        .set_traffic("digits", &[("blue", 90), ("green", 10)])
        .await?;
    Ok(Some(created.primary_key))
}

async fn connect_with_retry(url: &str, key: &str) -> Result<Client> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Client::connect(url, Some(key)).await {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() > until => {
                return Err(e).context("gateway did not come up");
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
