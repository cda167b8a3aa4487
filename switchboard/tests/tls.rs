//! TLS on every hop: gateway and worker serving TLS and mTLS, the gateway
//! reaching workers over mTLS, certificate rotation without dropping
//! connections, a plaintext client told what is wrong, and every role on a
//! Redis with TLS and a password. Certificates are made with `openssl`.

mod common;

use client::proto::switchboard::v1 as pb;
use client::proto::tls::ServerTlsFiles;
use client::{Client, ClientTlsFiles, f32_request};
use common::batch::{Digits, assert_every_row_once, read_outputs, spec, state, wait_final};
use common::certs::{Ca, Leaf};
use common::tempdir::Dir;
use common::{ADMIN, models};
use gpu_worker::server::run::{DeploymentSpec, WorkerConfig};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use switchboard::redis_server::{RedisServer, free_port};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn server(leaf: &Leaf, client_ca: Option<&Ca>) -> ServerTlsFiles {
    ServerTlsFiles {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
        client_ca: client_ca.map(|c| c.cert.clone()),
    }
}

fn trusting(ca: &Ca, identity: Option<&Leaf>) -> ClientTlsFiles {
    ClientTlsFiles {
        ca: Some(ca.cert.clone()),
        identity: identity.map(|l| (l.cert.clone(), l.key.clone())),
    }
}

/// Connects and makes one call (the admin's endpoint list), so that a
/// refused handshake or certificate shows here.
fn call(url: &str, tls: ClientTlsFiles) -> impl Future<Output = Result<Client, String>> + use<> {
    let url = url.to_string();
    async move {
        let c = Client::connect_with(&url, Some(ADMIN), None, &tls)
            .await
            .map_err(|e| e.to_string())?;
        list(&c).await?;
        Ok(c)
    }
}

async fn list(c: &Client) -> Result<(), String> {
    c.management
        .clone()
        .list_endpoints(pb::ListEndpointsRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

struct Stop(watch::Sender<bool>);

impl Stop {
    fn new() -> Stop {
        Stop(watch::channel(false).0)
    }
    fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

async fn gateway(
    redis: &str,
    tls: Option<ServerTlsFiles>,
    worker_tls: Option<ClientTlsFiles>,
    stop: &Stop,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let config = gateway::GatewayConfig {
        redis_url: redis.into(),
        admin_key: Some(ADMIN.into()),
        tls,
        worker_tls,
        ..Default::default()
    };
    tokio::spawn(gateway::serve(config, listener, stop.signal()));
    url
}

async fn worker(redis: Option<String>, tls: ServerTlsFiles, stop: &Stop) -> String {
    let config = WorkerConfig {
        deployments: vec![DeploymentSpec {
            endpoint: "digits".into(),
            deployment: "blue".into(),
            model: models().join("digits_mlp.onnx"),
        }],
        redis_url: redis,
        tls: Some(tls),
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(gpu_worker::server::run::serve(
        config,
        listener,
        stop.signal(),
    ));
    addr
}

/// Waits until `f` succeeds, and answers its value.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < until, "timed out waiting for {what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_mtls_and_reaches_its_worker_over_mtls() {
    let dir = Dir::new();
    let ca = Ca::new(&dir.0.join("certs"), "fleet-ca");
    let (gw, wk, user) = (ca.leaf("gateway"), ca.leaf("worker"), ca.leaf("user"));
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let stop = Stop::new();
    // The worker lets in only holders of a certificate the CA signed.
    worker(Some(redis.url()), server(&wk, Some(&ca)), &stop).await;
    let url = gateway(
        &redis.url(),
        Some(server(&gw, Some(&ca))),
        Some(trusting(&ca, Some(&gw))),
        &stop,
    )
    .await;

    let admin = eventually("the gateway over mTLS", Duration::from_secs(15), || {
        call(&url, trusting(&ca, Some(&user)))
    })
    .await;
    // mTLS on the gateway: no client certificate, no service.
    let refused = call(&url, trusting(&ca, None)).await.err();
    assert!(
        refused.is_some(),
        "a client without a certificate was served"
    );
    // Plaintext against the TLS port fails rather than hangs.
    let plain = url.replace("https://", "http://");
    let started = Instant::now();
    assert!(call(&plain, ClientTlsFiles::default()).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));

    // The worker advertised TLS in the registry.
    let conn = redis_conn::connect(&redis.url()).await.unwrap();
    let workers = eventually("the worker's record", Duration::from_secs(20), || {
        let mut conn = conn.clone();
        async move {
            match registry::discover(&mut conn).await {
                Ok(w) if !w.is_empty() => Ok(w),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(workers.len(), 1);
    assert!(workers[0].tls, "{workers:?}");

    let created = admin
        .create_endpoint("digits", pb::AuthMode::Key)
        .await
        .unwrap();
    admin
        .create_deployment(
            "digits",
            pb::Deployment {
                name: "blue".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin.set_traffic("digits", &[("blue", 100)]).await.unwrap();
    let key = created.primary_key;
    let tls = trusting(&ca, Some(&user));
    let user = Client::connect_with(&url, Some(&key), None, &tls)
        .await
        .unwrap();
    let row = Digits::load().rows[0].clone();
    // Answered by the worker, so the gateway → worker hop spoke mTLS.
    let resp = eventually(
        "an answer through the worker",
        Duration::from_secs(20),
        || {
            let (user, row) = (user.clone(), row.clone());
            async move {
                let req =
                    f32_request("digits", "input", &[row], true).map_err(|e| e.to_string())?;
                user.infer(req).await.map_err(|e| e.to_string())
            }
        },
    )
    .await;
    assert_eq!(resp.model_name, "digits");
    assert!(!resp.outputs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_client_ca_refuses_clients_without_a_certificate() {
    let dir = Dir::new();
    let ca = Ca::new(&dir.0.join("certs"), "fleet-ca");
    let other = Ca::new(&dir.0.join("other"), "other-ca");
    let (wk, gw, stranger) = (
        ca.leaf("worker"),
        ca.leaf("gateway"),
        other.leaf("stranger"),
    );
    let stop = Stop::new();
    let addr = worker(None, server(&wk, Some(&ca)), &stop).await;
    let url = format!("https://{addr}");
    let metadata = |tls: ClientTlsFiles| {
        let url = url.clone();
        async move {
            let c = Client::connect_with(&url, None, None, &tls)
                .await
                .map_err(|e| e.to_string())?;
            c.metadata("digits").await.map_err(|e| e.to_string())
        }
    };
    // A gateway's certificate (signed by the CA) gets in ...
    let m = eventually("the worker over mTLS", Duration::from_secs(20), || {
        metadata(trusting(&ca, Some(&gw)))
    })
    .await;
    assert!(!m.inputs.is_empty());
    // ... no certificate, or one from another CA, does not.
    assert!(metadata(trusting(&ca, None)).await.is_err());
    assert!(metadata(trusting(&ca, Some(&stranger))).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_while_old_ones_carry_on() {
    let dir = Dir::new();
    let (old_ca, new_ca) = (
        Ca::new(&dir.0.join("old"), "old-ca"),
        Ca::new(&dir.0.join("new"), "new-ca"),
    );
    let (old, new) = (old_ca.leaf("gateway"), new_ca.leaf("gateway"));
    // The files the gateway reads, rewritten in place as cert-manager does.
    let live = Leaf {
        cert: dir.0.join("tls.crt"),
        key: dir.0.join("tls.key"),
    };
    std::fs::copy(&old.cert, &live.cert).unwrap();
    std::fs::copy(&old.key, &live.key).unwrap();
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let stop = Stop::new();
    let url = gateway(&redis.url(), Some(server(&live, None)), None, &stop).await;
    let before = eventually("the gateway over TLS", Duration::from_secs(15), || {
        call(&url, trusting(&old_ca, None))
    })
    .await;

    std::fs::copy(&new.cert, &live.cert).unwrap();
    std::fs::copy(&new.key, &live.key).unwrap();
    // Only the new certificate chains to the new CA.
    eventually("the new certificate", Duration::from_secs(10), || {
        call(&url, trusting(&new_ca, None))
    })
    .await;
    assert!(
        call(&url, trusting(&old_ca, None)).await.is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the rotation is still up: had it been
    // dropped, reconnecting while trusting only the old CA would fail.
    list(&before).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tells_a_plaintext_client_of_a_tls_gateway_what_is_wrong() {
    let dir = Dir::new();
    let ca = Ca::new(&dir.0.join("certs"), "ca");
    let gw = ca.leaf("gateway");
    let redis = RedisServer::start(&dir.0.join("redis")).await.unwrap();
    let stop = Stop::new();
    let url = gateway(&redis.url(), Some(server(&gw, None)), None, &stop).await;
    eventually("the gateway", Duration::from_secs(15), || {
        call(&url, trusting(&ca, None))
    })
    .await;
    let cli = |url: String, ca: Option<&Path>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["endpoint", "list", "--url", &url])
            .env("SWITCHBOARD_ADMIN_KEY", ADMIN)
            .env_remove("SWITCHBOARD_KEY")
            .env_remove("SWITCHBOARD_CA_CERT")
            .kill_on_drop(true);
        if let Some(ca) = ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        async move {
            tokio::time::timeout(Duration::from_secs(20), cmd.output())
                .await
                .expect("the CLI answered within 20 s")
                .unwrap()
        }
    };
    let plain = cli(url.replace("https://", "http://"), None).await;
    assert!(!plain.status.success());
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("TLS") && err.contains("https://"), "{err}");
    let ok = cli(url.clone(), Some(&ca.cert)).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The exec probe reaches a TLS gateway on a private CA too.
    let probe = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["health", "--url", &url, "--ca-cert"])
        .arg(&ca.cert)
        .env_remove("SWITCHBOARD_CA_CERT")
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success() && out.contains("\"serving\""),
        "{out}"
    );
}

/// A redis-server that speaks only TLS and wants a password.
struct TlsRedis {
    _child: tokio::process::Child,
    port: u16,
}

async fn tls_redis(dir: &Path, ca: &Ca, password: &str) -> TlsRedis {
    let leaf = ca.leaf("redis");
    let port = free_port().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let child = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&leaf.cert)
        .arg("--tls-key-file")
        .arg(&leaf.key)
        .arg("--tls-ca-cert-file")
        .arg(&ca.cert)
        .args([
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
            // An ACL user as well, for the batcher.
            "--user",
            "sb-batcher",
            "on",
            &format!(">{ACL_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", "redis.log"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server");
    let url = format!("rediss://:{password}@localhost:{port}");
    eventually("redis over TLS", Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let mut c = redis_conn::connect(&url).await.map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    TlsRedis {
        _child: child,
        port,
    }
}

const ACL_PASSWORD: &str = "acl-pw-for-batchers-55e0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_runs_on_redis_over_tls_with_a_password() {
    const PASSWORD: &str = "s3cret-redis-pw-7f1c";
    let dir = Dir::new();
    let ca = Ca::new(&dir.0.join("certs"), "redis-ca");
    redis_conn::use_ca_cert(&ca.cert).unwrap();
    let redis = tls_redis(&dir.0.join("redis"), &ca, PASSWORD).await;
    let url = format!("rediss://:{PASSWORD}@localhost:{}", redis.port);
    let logs = dir.0.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let spawn = |name: &str, args: &[&str]| {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env("SWITCHBOARD_REDIS", &url)
            .env("SWITCHBOARD_REDIS_CA_CERT", &ca.cert)
            .env("SWITCHBOARD_ADMIN_KEY", ADMIN)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let port = free_port().unwrap().to_string();
    let listen = format!("127.0.0.1:{port}");
    let acl_url = format!(
        "rediss://sb-batcher:{ACL_PASSWORD}@localhost:{}",
        redis.port
    );
    let spec_arg = format!("digits/blue={}", models().join("digits_mlp.onnx").display());
    let _children = [
        spawn("gateway", &["gateway", "--listen", &listen]),
        spawn("worker", &["worker", "--deployment", &spec_arg]),
        spawn("batcher", &["batcher", "--id", "b1", "--redis", &acl_url]),
    ];
    let gw = format!("http://{listen}");
    let plain = ClientTlsFiles::default();
    let admin = eventually("the gateway", Duration::from_secs(20), || {
        call(&gw, plain.clone())
    })
    .await;
    let model = models().join("digits_mlp.onnx").canonicalize().unwrap();
    let key = common::create_digits(&admin, &model).await;
    admin.set_traffic("digits", &[("blue", 100)]).await.unwrap();
    let user = Client::connect(&gw, Some(&key)).await.unwrap();
    let digits = Digits::load();
    // Real time: the worker registered through Redis, the gateway found it.
    eventually("an answer from the worker", Duration::from_secs(20), || {
        let (user, row) = (user.clone(), digits.rows[0].clone());
        async move {
            let req = f32_request("digits", "input", &[row], true).map_err(|e| e.to_string())?;
            user.infer(req).await.map_err(|e| e.to_string())
        }
    })
    .await;
    // Batch: the gateway queued it, the batcher ran it.
    let input = dir.0.join("rows.csv");
    digits.write_csv(&input, 500, true);
    let out = dir.0.join("out");
    let job = user.submit_job(spec("digits", &input, &out)).await.unwrap();
    let job = wait_final(&user, &job.id, Duration::from_secs(120)).await;
    assert_eq!(state(&job), pb::JobState::Succeeded, "{job:?}");
    assert_every_row_once(&read_outputs(&out), 500, &digits);

    // A wrong password: a clear error, at once, and the password unprinted.
    let wrong = format!("rediss://:not-the-pw-91d2@localhost:{}", redis.port);
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["gateway", "--listen", "127.0.0.1:0", "--redis", &wrong])
            .env("SWITCHBOARD_REDIS_CA_CERT", &ca.cert)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("a wrong password fails within 20 s")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.contains("not-the-pw-91d2"), "{err}");
    // No role logged the password.
    for name in ["gateway", "worker", "batcher"] {
        let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
        assert!(
            !log.contains(PASSWORD) && !log.contains(ACL_PASSWORD),
            "{name} logged the Redis password:\n{log}"
        );
    }
    let batcher = std::fs::read_to_string(logs.join("batcher.log")).unwrap();
    assert!(batcher.contains("rediss://sb-batcher:***@"), "{batcher}");
}
