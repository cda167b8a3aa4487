//! Client commands over the SDK: endpoints, deployments, traffic, mirror,
//! keys, tokens and invoke. Output is JSON, so scripts can read it.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use client::Client;
use client::proto::switchboard::v1 as pb;

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
}

impl Conn {
    pub async fn client(&self, pin: Option<&str>) -> Result<Client> {
        let key = self
            .key
            .clone()
            .or_else(|| std::env::var("SWITCHBOARD_ADMIN_KEY").ok());
        Client::connect_pinned(&self.url, key.as_deref(), pin)
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
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
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
    Delete {
        endpoint: String,
        name: String,
    },
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

#[derive(Debug, Args)]
pub struct InvokeArgs {
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

fn print(v: &impl std::fmt::Debug) {
    println!("{v:#?}");
}

pub async fn endpoint(conn: &Conn, cmd: EndpointCmd) -> Result<()> {
    let c = conn.client(None).await?;
    let mut m = c.management.clone();
    match cmd {
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
            println!(
                "primary key (shown once):   {}\nsecondary key (shown once): {}",
                r.primary_key, r.secondary_key
            );
            print(&r.endpoint);
        }
        EndpointCmd::Update {
            name,
            auth,
            description,
        } => {
            let auth_mode = auth.map(|a| pb::AuthMode::from(a) as i32);
            print(
                &m.update_endpoint(pb::UpdateEndpointRequest {
                    name,
                    auth_mode,
                    description,
                })
                .await?
                .into_inner(),
            );
        }
        EndpointCmd::List => {
            for e in m
                .list_endpoints(pb::ListEndpointsRequest {})
                .await?
                .into_inner()
                .endpoints
            {
                println!(
                    "{}\tauth={:?}\ttraffic={:?}",
                    e.name,
                    e.auth_mode(),
                    e.traffic
                );
            }
        }
        EndpointCmd::Show { name } => print(
            &m.get_endpoint(pb::GetEndpointRequest { name })
                .await?
                .into_inner(),
        ),
        EndpointCmd::Delete { name } => {
            m.delete_endpoint(pb::DeleteEndpointRequest { name: name.clone() })
                .await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

pub async fn deployment(conn: &Conn, cmd: DeploymentCmd) -> Result<()> {
    let c = conn.client(None).await?;
    match cmd {
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
            print(&c.create_deployment(&endpoint, d).await?);
        }
        DeploymentCmd::Delete { endpoint, name } => {
            print(
                &c.management
                    .clone()
                    .delete_deployment(pb::DeleteDeploymentRequest {
                        endpoint,
                        deployment: name,
                    })
                    .await?
                    .into_inner(),
            );
        }
    }
    Ok(())
}

/// `blue=90 green=10`
pub async fn traffic(conn: &Conn, endpoint: String, weights: Vec<String>) -> Result<()> {
    let mut parsed = Vec::new();
    for w in &weights {
        let (name, pct) = w
            .split_once('=')
            .with_context(|| format!("'{w}': expected DEPLOYMENT=PERCENT"))?;
        parsed.push((
            name,
            pct.parse::<u32>()
                .with_context(|| format!("'{w}': percent must be a number"))?,
        ));
    }
    print(
        &conn
            .client(None)
            .await?
            .set_traffic(&endpoint, &parsed)
            .await?,
    );
    Ok(())
}

pub async fn mirror(conn: &Conn, endpoint: String, deployment: String, percent: u32) -> Result<()> {
    let c = conn.client(None).await?;
    let r = c
        .management
        .clone()
        .set_mirror(pb::SetMirrorRequest {
            endpoint,
            deployment,
            percent,
        })
        .await?;
    print(&r.into_inner());
    Ok(())
}

pub async fn keys(conn: &Conn, cmd: KeysCmd) -> Result<()> {
    let mut m = conn.client(None).await?.management;
    match cmd {
        KeysCmd::Show { endpoint } => print(
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
                    endpoint,
                    slot: slot as i32,
                })
                .await?
                .into_inner();
            println!("new {} key (shown once): {}", slot.as_str_name(), r.key);
        }
    }
    Ok(())
}

pub async fn token(conn: &Conn, cmd: TokenCmd) -> Result<()> {
    let TokenCmd::Get { endpoint, ttl } = cmd;
    let r = conn.client(None).await?.get_token(&endpoint, ttl).await?;
    println!(
        "{}",
        serde_json::json!({"token": r.token, "expires_unix": r.expires_unix})
    );
    Ok(())
}

pub async fn invoke(conn: &Conn, args: InvokeArgs) -> Result<()> {
    let c = conn.client(args.deployment.as_deref()).await?;
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
