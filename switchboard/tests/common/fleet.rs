//! The ha overlay's fleet on network-namespace hosts: Redis and a Sentinel
//! on one host, two gateways, two workers and two batchers on a host each,
//! every role started with the command line, environment and probes-to-be
//! of its Deployment in `kubectl kustomize deploy/k8s/overlays/ha`. What is
//! mapped, and only that: Service names to the hosts' addresses, Secret
//! mounts to folders holding certificates made as cert-manager would from
//! the overlay's Certificates, `/models` to the repository's models,
//! `/cache` to a folder, and the Downward API's pod name and IP.

use super::certs::Ca;
use super::netns::{Host, Net};
use super::overlay::{Overlay, Role};
use super::tempdir::Dir;
use client::Client;
use client::proto::tls::ClientTlsFiles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Child;

pub const MASTER: &str = "switchboard";

pub struct Fleet {
    // Children first: they are killed before their hosts go.
    pub procs: HashMap<String, Child>,
    pub overlay: Overlay,
    pub roles: HashMap<&'static str, Role>,
    pub hosts: HashMap<String, Host>,
    /// Every secret the roles were given, for the test that greps logs.
    pub secrets: Vec<String>,
    pub admin_key: String,
    /// The CA every Certificate is issued from (clients trust it).
    pub ca: PathBuf,
    /// (role host name) -> its Secret folders by mount path.
    mounts: HashMap<String, Vec<(String, PathBuf)>>,
    pub dir: Dir,
    pub net: Net,
}

/// The last non-empty line of a PEM body: a piece of the key no log may hold.
fn pem_piece(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).expect("PEM");
    pem.lines()
        .rfind(|l| !l.starts_with("-----") && l.len() > 16)
        .expect("PEM body")
        .to_string()
}

impl Fleet {
    /// Hosts and certificates; no process yet.
    pub fn new(overlay: Overlay, role_hosts: &[(&str, &str)]) -> Fleet {
        let mut net = Net::new();
        let dir = Dir::new();
        let mut hosts = HashMap::new();
        for (name, _) in role_hosts {
            hosts.insert(name.to_string(), net.host(name));
        }
        let roles: HashMap<&'static str, Role> = ["gateway", "worker", "batcher"]
            .into_iter()
            .map(|r| (r, overlay.role(r)))
            .collect();
        let ca = Ca::new(&dir.0.join("ca"), "switchboard-ca");
        let mut fleet = Fleet {
            procs: HashMap::new(),
            overlay,
            roles,
            hosts,
            secrets: Vec::new(),
            admin_key: format!("fleet-admin-{}", rand::random::<u64>()),
            ca: ca.cert.clone(),
            mounts: HashMap::new(),
            dir,
            net,
        };
        fleet.secrets.push(fleet.admin_key.clone());
        for (name, role) in role_hosts {
            let secrets = fleet
                .roles
                .get(role)
                .map(|r| r.secrets.clone())
                .unwrap_or_default();
            let mut mounts = Vec::new();
            for (mount, secret) in secrets {
                let folder = fleet.issue(&ca, name, &secret);
                mounts.push((mount, folder));
            }
            fleet.mounts.insert(name.to_string(), mounts);
        }
        fleet
    }

    /// Secret `secret` for host `name`, as cert-manager fills it from its
    /// Certificate: ca.crt, tls.crt, tls.key. A gateway's serving
    /// certificate also names its host's address: the test reaches each
    /// gateway by address, where clients in a cluster use the Service name.
    fn issue(&mut self, ca: &Ca, name: &str, secret: &str) -> PathBuf {
        let spec = &self.overlay.certificate(secret)["spec"];
        let mut sans: Vec<String> = spec["dnsNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| Some(format!("DNS:{}", n.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        if secret == "gateway-tls" {
            sans.push(format!("IP:{}", self.hosts[name].ip));
        }
        if sans.is_empty() {
            let cn = spec["commonName"].as_str().unwrap_or(name);
            sans.push(format!("DNS:{cn}"));
        }
        let leaf = ca.leaf_for(&format!("{name}-{secret}"), &sans.join(","));
        let folder = self.dir.0.join("secrets").join(name).join(secret);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(&ca.cert, folder.join("ca.crt")).unwrap();
        std::fs::copy(&leaf.cert, folder.join("tls.crt")).unwrap();
        std::fs::copy(&leaf.key, folder.join("tls.key")).unwrap();
        self.secrets.push(pem_piece(&leaf.key));
        folder
    }

    pub fn ip(&self, host: &str) -> &str {
        &self.hosts[host].ip
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.0.join(format!("{name}.log"))
    }

    /// Redis with the overlay's redis.conf and one Sentinel with its
    /// sentinel.conf, both on `host`, the primary's name mapped to it.
    pub fn start_redis(&mut self, host: &str) {
        let h = self.hosts[host].clone();
        let data = self.dir.0.join("redis-data");
        std::fs::create_dir_all(&data).unwrap();
        let conf = self
            .overlay
            .config("redis-config", "redis.conf")
            .replace("dir /data", &format!("dir {}", data.display()));
        let path = self.dir.0.join("redis.conf");
        std::fs::write(&path, conf).unwrap();
        let child = h.spawn(
            Path::new("redis-server"),
            &[path.display().to_string()],
            &[],
            &self.log("redis"),
        );
        self.procs.insert("redis".into(), child);
        let sentinel = self
            .overlay
            .config("sentinel-config", "sentinel.conf")
            .replace("redis-0.redis-headless", &h.ip)
            // One Sentinel here: failover itself is tested in failover.rs.
            .replace(
                &format!("{MASTER} {} 6379 2", h.ip),
                &format!("{MASTER} {} 6379 1", h.ip),
            );
        let path = self.dir.0.join("sentinel.conf");
        std::fs::write(&path, format!("{sentinel}dir {}\n", self.dir.0.display())).unwrap();
        let child = h.spawn(
            Path::new("redis-sentinel"),
            &[path.display().to_string()],
            &[],
            &self.log("sentinel"),
        );
        self.procs.insert("sentinel".into(), child);
    }

    /// What the roles are given for SWITCHBOARD_REDIS, mapped.
    pub fn redis_url(&self) -> String {
        let gw = &self.roles["gateway"];
        let (_, env) = gw.resolve(|_| String::new(), |s| self.map("redis", s));
        env.into_iter()
            .find(|(k, _)| k == "SWITCHBOARD_REDIS")
            .map(|(_, v)| v)
            .expect("SWITCHBOARD_REDIS")
    }

    /// The primary, straight (for the test's own reads of the queue).
    pub fn redis_direct(&self) -> String {
        format!("redis://{}:6379", self.ip("redis"))
    }

    /// A manifest string with Service names, mounts and paths mapped for
    /// the role on host `me`.
    fn map(&self, me: &str, s: &str) -> String {
        let mut s = s
            .replace("sentinel:26379", &format!("{}:26379", self.ip("redis")))
            .replace("redis:6379", &format!("{}:6379", self.ip("redis")));
        for (mount, folder) in self.mounts.get(me).into_iter().flatten() {
            s = s.replace(&format!("{mount}/"), &format!("{}/", folder.display()));
        }
        let models = super::models().canonicalize().unwrap();
        if let Some(rest) = s.strip_prefix("--cache-dir=/cache") {
            s = format!(
                "--cache-dir={}{rest}",
                self.dir.0.join(format!("cache-{me}")).display()
            );
        }
        s.replace("=/models/", &format!("={}/", models.display()))
    }

    /// Starts role `role` (gateway, worker, batcher) on host `name`, with
    /// the manifest's command line; `edit` may change flags it names.
    pub fn start(&mut self, role: &'static str, name: &str, edit: impl FnOnce(&mut Role)) {
        let mut r = self.roles[role].clone();
        edit(&mut r);
        let ip = self.ip(name).to_string();
        let admin = self.admin_key.clone();
        let (argv, env) = r.resolve(
            |source| match source {
                "fieldRef:status.podIP" => ip.clone(),
                "fieldRef:metadata.name" => name.to_string(),
                "secretKeyRef:switchboard-admin/SWITCHBOARD_ADMIN_KEY" => admin.clone(),
                other => panic!("{role}: no value for {other}"),
            },
            |s| self.map(name, s),
        );
        assert_eq!(
            argv[0], "switchboard",
            "{role}: the image's binary is switchboard"
        );
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_switchboard"));
        let child = self.hosts[name].spawn(&bin, &argv[1..], &env, &self.log(name));
        self.procs.insert(name.to_string(), child);
    }

    /// A client of gateway `name` over TLS, trusting the fleet's CA.
    pub async fn client(&self, name: &str, key: Option<&str>) -> Client {
        let url = self.gateway_url(name);
        let tls = ClientTlsFiles {
            ca: Some(self.ca.clone()),
            identity: None,
        };
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect_with(&url, key, None, &tls).await {
                Ok(c) => return c,
                Err(e) => assert!(
                    std::time::Instant::now() < until,
                    "cannot connect to {url}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn gateway_url(&self, name: &str) -> String {
        let port = self.roles["gateway"]
            .flag("listen")
            .and_then(|l| l.rsplit(':').next())
            .expect("--listen")
            .to_string();
        format!("https://{}:{port}", self.ip(name))
    }

    /// Every role's log, for the secrets check.
    pub fn logs(&self) -> Vec<(String, String)> {
        let mut logs = Vec::new();
        for e in std::fs::read_dir(&self.dir.0).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                logs.push((
                    p.file_name().unwrap().to_string_lossy().to_string(),
                    std::fs::read_to_string(&p).unwrap_or_default(),
                ));
            }
        }
        logs
    }
}

impl Drop for Fleet {
    /// A failed run leaves no folder behind: show the end of each log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, text) in self.logs() {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                eprintln!("--- {name} (last lines)\n{tail}");
            }
        }
    }
}
