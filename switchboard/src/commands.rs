//! Client commands over the SDK: endpoints, deployments, traffic, mirror,
//! keys, tokens and invoke. What they print is in `output`.

use crate::output::{self, OutputArgs};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::Client;
use client::proto::switchboard::v1 as pb;

/// The gateway and the credential: flags of the client commands only (the
/// server roles have none), each also read from the environment.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Gateway URL.
    #[arg(
        long,
        env = "SWITCHBOARD_URL",
        default_value = "http://127.0.0.1:8001",
        global = true
    )]
    pub url: String,
    /// Credential (endpoint key, token, or admin key); default
    /// SWITCHBOARD_KEY, then SWITCHBOARD_ADMIN_KEY.
    #[arg(long, env = "SWITCHBOARD_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// CA certificate (PEM) an `https://` gateway's certificate chains to;
    /// default: the system's roots.
    #[arg(long, env = "SWITCHBOARD_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Only the connection flags, for parsing the environment alone.
#[derive(Parser)]
struct ConnOnly {
    #[command(flatten)]
    conn: Conn,
}

impl Conn {
    /// From SWITCHBOARD_URL and SWITCHBOARD_KEY (or the defaults), as the
    /// flags would read them when absent.
    pub fn from_env() -> Result<Conn> {
        Ok(ConnOnly::try_parse_from(["switchboard"])?.conn)
    }

    pub async fn client(&self, pin: Option<&str>) -> Result<Client> {
        let key = self
            .key
            .clone()
            .or_else(|| std::env::var("SWITCHBOARD_ADMIN_KEY").ok());
        let tls = client::ClientTlsFiles {
            ca: self.ca_cert.clone(),
            identity: None,
        };
        Client::connect_with(&self.url, key.as_deref(), pin, &tls)
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Auth {
    Key,
    Token,
    None,
}

impl From<Auth> for pb::AuthMode {
    fn from(a: Auth) -> Self {
        match a {
            Auth::Key => pb::AuthMode::Key,
            Auth::Token => pb::AuthMode::Token,
            Auth::None => pb::AuthMode::None,
        }
    }
}

/// A client command group: the connection, the output format, then the
/// subcommand (`switchboard endpoint show NAME -o table`).
#[derive(Debug, Args)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(subcommand)]
    pub cmd: C,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Create an endpoint; prints its two keys once.
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "key")]
        auth: Auth,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change an endpoint's auth mode or description.
    Update {
        name: String,
        #[arg(long, value_enum)]
        auth: Option<Auth>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Endpoints by name, a page at a time; when there are more, stderr
    /// says how to ask for the next page.
    List {
        /// Endpoints per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Where to continue, as printed after the page before.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One endpoint: auth, traffic, mirror, deployments and their replicas.
    Show { name: String },
    /// Remove an endpoint, its deployments and keys.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCmd {
    /// Add a deployment (it starts with weight 0 unless it is the first).
    Create {
        endpoint: String,
        name: String,
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 1)]
        instances: u32,
        #[arg(long, default_value_t = 32)]
        max_batch_size: u32,
    },
    /// Remove a deployment (only once its weight is 0).
    Delete { endpoint: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Fingerprints and creation times (keys are stored hashed).
    Show { endpoint: String },
    /// New key for a slot; prints it once.
    Regenerate {
        endpoint: String,
        #[arg(long, default_value = "primary")]
        slot: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// A signed token for one endpoint.
    Get {
        endpoint: String,
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

/// `switchboard traffic digits blue=90 green=10`
#[derive(Debug, Args)]
pub struct TrafficArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub out: OutputArgs,
    pub endpoint: String,
    /// DEPLOYMENT=PERCENT, summing to 100.
    #[arg(required = true)]
    pub weights: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub out: OutputArgs,
    pub endpoint: String,
    pub deployment: String,
    pub percent: u32,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    #[command(flatten)]
    pub conn: Conn,
    pub endpoint: String,
    /// Comma-separated numbers: one row.
    #[arg(long, conflicts_with = "file")]
    pub data: Option<String>,
    /// JSON: a list of rows, or V2 `{"inputs": [{"name","shape","datatype","data"}]}`.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Pin to this deployment.
    #[arg(long)]
    pub deployment: Option<String>,
}

pub async fn endpoint(a: Group<EndpointCmd>) -> Result<()> {
    let mut m = a.conn.client(None).await?.management;
    let view = match a.cmd {
        EndpointCmd::Create {
            name,
            auth,
            description,
        } => {
            let mode: pb::AuthMode = auth.into();
            let r = m
                .create_endpoint(pb::CreateEndpointRequest {
                    name,
                    auth_mode: mode as i32,
                    description,
                })
                .await?
                .into_inner();
            output::created(&r)
        }
        EndpointCmd::Update {
            name,
            auth,
            description,
        } => {
            let auth_mode = auth.map(|a| pb::AuthMode::from(a) as i32);
            let e = m
                .update_endpoint(pb::UpdateEndpointRequest {
                    name,
                    auth_mode,
                    description,
                })
                .await?
                .into_inner();
            output::endpoint(&e)
        }
        EndpointCmd::List {
            page_size,
            page_token,
        } => {
            let page = m
                .list_endpoints(pb::ListEndpointsRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            if !page.next_page_token.is_empty() {
                eprintln!("more: --page-token {}", page.next_page_token);
            }
            output::endpoints(&page.endpoints)
        }
        EndpointCmd::Show { name } => output::endpoint(
            &m.get_endpoint(pb::GetEndpointRequest { name })
                .await?
                .into_inner(),
        ),
        EndpointCmd::Delete { name } => {
            m.delete_endpoint(pb::DeleteEndpointRequest { name: name.clone() })
                .await?;
            output::endpoint_deleted(&name)
        }
    };
    view.print(a.out.output);
    Ok(())
}

pub async fn deployment(a: Group<DeploymentCmd>) -> Result<()> {
    let c = a.conn.client(None).await?;
    let e = match a.cmd {
        DeploymentCmd::Create {
            endpoint,
            name,
            model,
            instances,
            max_batch_size,
        } => {
            let d = pb::Deployment {
                name,
                model_uri: model,
                instances,
                max_batch_size,
                ..Default::default()
            };
            c.create_deployment(&endpoint, d).await?
        }
        DeploymentCmd::Delete { endpoint, name } => c
            .management
            .clone()
            .delete_deployment(pb::DeleteDeploymentRequest {
                endpoint,
                deployment: name,
            })
            .await?
            .into_inner(),
    };
    output::endpoint(&e).print(a.out.output);
    Ok(())
}

pub async fn traffic(a: TrafficArgs) -> Result<()> {
    let mut parsed = Vec::new();
    for w in &a.weights {
        let (name, pct) = w
            .split_once('=')
            .with_context(|| format!("'{w}': expected DEPLOYMENT=PERCENT"))?;
        parsed.push((
            name,
            pct.parse::<u32>()
                .with_context(|| format!("'{w}': percent must be a number"))?,
        ));
    }
    let e = a
        .conn
        .client(None)
        .await?
        .set_traffic(&a.endpoint, &parsed)
        .await?;
    output::endpoint(&e).print(a.out.output);
    Ok(())
}

pub async fn mirror(a: MirrorArgs) -> Result<()> {
    let e = a
        .conn
        .client(None)
        .await?
        .management
        .set_mirror(pb::SetMirrorRequest {
            endpoint: a.endpoint,
            deployment: a.deployment,
            percent: a.percent,
        })
        .await?
        .into_inner();
    output::endpoint(&e).print(a.out.output);
    Ok(())
}

pub async fn keys(a: Group<KeysCmd>) -> Result<()> {
    let mut m = a.conn.client(None).await?.management;
    let view = match a.cmd {
        KeysCmd::Show { endpoint } => output::keys(
            &m.get_keys(pb::GetKeysRequest { endpoint })
                .await?
                .into_inner(),
        ),
        KeysCmd::Regenerate { endpoint, slot } => {
            let slot = match slot.as_str() {
                "primary" => pb::KeySlot::Primary,
                "secondary" => pb::KeySlot::Secondary,
                s => bail!("slot '{s}': expected primary or secondary"),
            };
            let r = m
                .regenerate_key(pb::RegenerateKeyRequest {
                    endpoint: endpoint.clone(),
                    slot: slot as i32,
                })
                .await?
                .into_inner();
            output::new_key(&endpoint, &r)
        }
    };
    view.print(a.out.output);
    Ok(())
}

pub async fn token(a: Group<TokenCmd>) -> Result<()> {
    let TokenCmd::Get { endpoint, ttl } = a.cmd;
    let r = a.conn.client(None).await?.get_token(&endpoint, ttl).await?;
    output::token(&endpoint, &r).print(a.out.output);
    Ok(())
}

pub async fn invoke(args: InvokeArgs) -> Result<()> {
    let c = args.conn.client(args.deployment.as_deref()).await?;
    let req = match (&args.data, &args.file) {
        (Some(d), _) => {
            let row: Vec<f32> = d
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .context("--data must be numbers")?;
            let meta = c.metadata(&args.endpoint).await?;
            let input = meta
                .inputs
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_else(|| "input".into());
            client::f32_request(&args.endpoint, &input, &[row], false)?
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).context("file is not JSON")?;
            crate::invoke_file::request(&c, &args.endpoint, &json).await?
        }
        (None, None) => bail!("give --data or --file"),
    };
    let resp = c.infer(req).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&client::output_json(&resp))?
    );
    Ok(())
}
