//! A cluster on loopback for end-to-end tests: a real redis-server on a free
//! port, workers (in-process or as child processes), a gateway, and the
//! demo endpoint `digits` (blue = MLP, green = logistic regression).
#![allow(dead_code)]

use client::Client;
use client::proto::switchboard::v1 as pb;
use gpu_worker::scheduler::SchedulerConfig;
use gpu_worker::server::run::{DeploymentSpec, WorkerConfig};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchboard::redis_server::RedisServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const ADMIN: &str = "test-admin-key";
/// The master name of [`Cluster::start_sentinel`]'s sentinel.
pub const MASTER: &str = "sb";

/// Whether `INFO replication` of the server at `url` holds `line`.
pub async fn info_has(url: String, line: &'static str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let info: redis::RedisResult<String> = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await;
    info.map(|i| i.lines().any(|l| l.trim() == line))
        .unwrap_or(false)
}

pub fn models() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

/// Polls `check` until it holds, failing the test after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Cluster {
    /// The primary (for a Sentinel cluster, the first one: kill it to fail
    /// over).
    pub redis: RedisServer,
    /// What every role is given: the server's URL, or the sentinels'.
    pub redis_url: String,
    /// A Sentinel cluster's replica and sentinel, kept alive with it.
    pub redis_others: Vec<RedisServer>,
    pub dir: tempdir::Dir,
    pub gateway_url: String,
    stop: watch::Sender<bool>,
    pub children: Vec<tokio::process::Child>,
}

pub mod tempdir {
    /// A folder removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "sb-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub struct Options {
    pub gateway: gateway::GatewayConfig,
    /// In-process worker deployments (endpoint, deployment, model file).
    pub deployments: Vec<(&'static str, &'static str, &'static str)>,
    pub scheduler: SchedulerConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gateway: gateway::GatewayConfig::default(),
            deployments: vec![
                ("digits", "blue", "digits_mlp.onnx"),
                ("digits", "green", "digits_logreg.onnx"),
            ],
            scheduler: SchedulerConfig::default(),
        }
    }
}

impl Cluster {
    pub async fn start(opts: Options) -> Cluster {
        let dir = tempdir::Dir::new();
        let redis = RedisServer::start(&dir.0.join("redis"))
            .await
            .expect("redis-server");
        let url = redis.url();
        Self::start_on(opts, dir, redis, url, Vec::new()).await
    }

    /// The same over a primary, one replica and one sentinel watching them
    /// as [`MASTER`]; every role is given the `redis+sentinel://` URL.
    pub async fn start_sentinel(opts: Options) -> Cluster {
        let dir = tempdir::Dir::new();
        let primary = RedisServer::start(&dir.0.join("primary"))
            .await
            .expect("redis-server");
        let replica = RedisServer::start_replica(&dir.0.join("replica"), primary.port)
            .await
            .expect("replica");
        wait_until("the replica to sync", Duration::from_secs(20), || {
            info_has(replica.url(), "master_link_status:up")
        })
        .await;
        let sentinel = RedisServer::start_sentinel(&dir.0.join("sentinel"), primary.port, MASTER)
            .await
            .expect("redis-sentinel");
        // Sentinel learns of replicas from the primary's INFO; until it has,
        // it has nothing to promote.
        let surl = sentinel.url();
        wait_until(
            "the sentinel to see the replica",
            Duration::from_secs(30),
            || {
                let surl = surl.clone();
                async move {
                    let Ok(client) = redis::Client::open(surl) else {
                        return false;
                    };
                    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                        return false;
                    };
                    let r: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(MASTER)
                        .query_async(&mut c)
                        .await;
                    r.map(|v| v.len() == 1).unwrap_or(false)
                }
            },
        )
        .await;
        let url = format!("redis+sentinel://127.0.0.1:{}/{MASTER}", sentinel.port);
        Self::start_on(opts, dir, primary, url, vec![replica, sentinel]).await
    }

    async fn start_on(
        opts: Options,
        dir: tempdir::Dir,
        redis: RedisServer,
        redis_url: String,
        redis_others: Vec<RedisServer>,
    ) -> Cluster {
        let (stop, _) = watch::channel(false);
        let mut c = Cluster {
            redis,
            redis_url,
            redis_others,
            dir,
            gateway_url: String::new(),
            stop,
            children: Vec::new(),
        };
        if !opts.deployments.is_empty() {
            c.start_worker(&opts.deployments, opts.scheduler.clone())
                .await;
        }
        c.gateway_url = c.start_gateway(opts.gateway).await;
        c
    }

    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// A gateway on this cluster's Redis; returns its URL.
    pub async fn start_gateway(&self, mut config: gateway::GatewayConfig) -> String {
        config.redis_url = self.redis_url.clone();
        config.admin_key = Some(ADMIN.into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(gateway::serve(config, listener, self.stopped()));
        url
    }

    pub async fn start_worker(
        &self,
        deployments: &[(&str, &str, &str)],
        scheduler: SchedulerConfig,
    ) -> String {
        let config = WorkerConfig {
            deployments: deployments
                .iter()
                .map(|(e, d, m)| DeploymentSpec {
                    endpoint: e.to_string(),
                    deployment: d.to_string(),
                    model: models().join(m),
                })
                .collect(),
            scheduler,
            redis_url: Some(self.redis_url.clone()),
            ..Default::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(gpu_worker::server::run::serve(
            config,
            listener,
            self.stopped(),
        ));
        addr
    }

    /// A worker as its own process (for SIGKILL), serving `spec`
    /// (`ENDPOINT/DEPLOYMENT=FILE` with FILE under models/).
    pub fn spawn_worker_process(&mut self, endpoint: &str, deployment: &str, model: &str) {
        let spec = format!("{endpoint}/{deployment}={}", models().join(model).display());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([
                "worker",
                "--listen",
                "127.0.0.1:0",
                "--redis",
                &self.redis_url,
                "--deployment",
                &spec,
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker");
        self.children.push(child);
    }

    pub async fn admin(&self) -> Client {
        connect(&self.gateway_url, Some(ADMIN)).await
    }

    /// Workers registered for endpoint/deployment right now.
    pub async fn registered(&self, endpoint: &str, deployment: &str) -> usize {
        let Ok(mut conn) = redis_conn::connect(&self.redis_url).await else {
            return 0;
        };
        registry::discover(&mut conn)
            .await
            .map(|ws| {
                ws.iter()
                    .filter(|w| {
                        w.deployments
                            .iter()
                            .any(|d| d.endpoint == endpoint && d.deployment == deployment)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Creates an endpoint (key auth) with the named deployments; the first
    /// takes all traffic. Returns the primary key.
    pub async fn create_endpoint(&self, name: &str, deployments: &[&str]) -> String {
        let admin = self.admin().await;
        let created = admin
            .create_endpoint(name, pb::AuthMode::Key)
            .await
            .unwrap();
        for d in deployments {
            admin
                .create_deployment(
                    name,
                    pb::Deployment {
                        name: d.to_string(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
        created.primary_key
    }

    /// Creates `digits` with blue and green at 90/10; returns the primary key.
    pub async fn deploy_digits(&self) -> String {
        let key = self.create_endpoint("digits", &["blue", "green"]).await;
        self.admin()
            .await
            .set_traffic("digits", &[("blue", 90), ("green", 10)])
            .await
            .unwrap();
        key
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Creates the `digits` endpoint (key auth) with the deployment `blue`
/// serving `model` (a path the roles can read); returns its key.
pub async fn create_digits(admin: &Client, model: &std::path::Path) -> String {
    let key = admin
        .create_endpoint("digits", pb::AuthMode::Key)
        .await
        .unwrap()
        .primary_key;
    let dep = pb::Deployment {
        name: "blue".into(),
        model_uri: model.display().to_string(),
        ..Default::default()
    };
    admin.create_deployment("digits", dep).await.unwrap();
    key
}

/// Waits until `client` gets an answer from `digits` (the gateway has
/// found a worker).
pub async fn wait_first_answer(client: &Client) {
    wait_until("a first answer", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let req = client::f32_request("digits", "input", &[vec![1.0; 64]], true).unwrap();
            client.infer(req).await.is_ok()
        }
    })
    .await;
}

pub async fn connect(url: &str, key: Option<&str>) -> Client {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(url, key).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < until, "cannot connect to {url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn connect_pinned(url: &str, key: Option<&str>, pin: &str) -> Client {
    Client::connect_pinned(url, key, Some(pin))
        .await
        .expect("connect")
}

impl Cluster {
    /// Waits until the gateway at `url` routes to a healthy replica of each
    /// named deployment.
    pub async fn wait_routable(&self, url: &str, endpoint: &str, deployments: &[&str]) {
        let admin = connect(url, Some(ADMIN)).await;
        wait_until(
            "deployments to have healthy replicas",
            Duration::from_secs(15),
            || {
                let admin = admin.clone();
                async move {
                    let Ok(e) = admin.get_endpoint(endpoint).await else {
                        return false;
                    };
                    deployments.iter().all(|d| {
                        e.deployments
                            .iter()
                            .any(|x| x.name == *d && x.replicas_healthy > 0)
                    })
                }
            },
        )
        .await;
    }
}
pub mod batch;
pub mod certs;
pub mod fleet;
pub mod load;
pub mod netns;
pub mod otlp;
pub mod overlay;
pub mod procs;
pub mod rest;
pub mod scrape;
