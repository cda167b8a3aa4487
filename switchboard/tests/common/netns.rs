//! Hosts for fleet tests: Linux network namespaces, each with its own
//! address on a bridge the test makes (and an address of the bridge's own,
//! so the test process reaches them). A host is partitioned by setting its
//! link down: packets to and from it are dropped, as when a node's network
//! fails, and connections to it hang rather than being refused.
//!
//! Every name carries the subnet's octet, picked so that no address this
//! machine already has is used; everything made is removed on drop, and a
//! target is only ever one of these hosts.

use std::path::Path;
use std::process::{Command, Stdio};
use tokio::process::Child;

pub struct Net {
    tag: String,
    subnet: String,
    hosts: Vec<Host>,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// The namespace (`ip netns exec NS …`).
    pub ns: String,
    pub ip: String,
    /// The host's end of its link, on the bridge.
    link: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("{e}"));
}

impl Net {
    /// A bridge on a /24 of 10.231.0.0/16 that this machine does not use.
    pub fn new() -> Net {
        let addrs = String::from_utf8(
            Command::new("ip")
                .args(["-o", "addr"])
                .output()
                .expect("ip -o addr (iproute2)")
                .stdout,
        )
        .unwrap();
        let links = String::from_utf8(
            Command::new("ip")
                .args(["-o", "link"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let octet = (1..=254u16)
            .map(|i| ((std::process::id() as u16).wrapping_add(i) % 254) + 1)
            .find(|o| {
                !addrs.contains(&format!("10.231.{o}.")) && !links.contains(&format!("sbf{o}br"))
            })
            .expect("a free 10.231.N.0/24");
        let net = Net {
            tag: format!("sbf{octet}"),
            subnet: format!("10.231.{octet}"),
            hosts: Vec::new(),
        };
        let br = net.bridge();
        must(&["link", "add", &br, "type", "bridge"]);
        must(&["addr", "add", &format!("{}.1/24", net.subnet), "dev", &br]);
        must(&["link", "set", &br, "up"]);
        net
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The address of the test process on the bridge.
    pub fn gateway_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// A new host `name`, with address .N (N from 10 up, in order).
    pub fn host(&mut self, name: &str) -> Host {
        let n = self.hosts.len() + 10;
        let host = Host {
            name: name.to_string(),
            ns: format!("{}-{name}", self.tag),
            ip: format!("{}.{n}", self.subnet),
            link: format!("{}h{n}", self.tag),
        };
        must(&["netns", "add", &host.ns]);
        self.hosts.push(host.clone());
        must(&[
            "link", "add", &host.link, "type", "veth", "peer", "name", "eth0", "netns", &host.ns,
        ]);
        must(&["link", "set", &host.link, "master", &self.bridge(), "up"]);
        let cidr = format!("{}/24", host.ip);
        must(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"]);
        must(&["-n", &host.ns, "link", "set", "eth0", "up"]);
        must(&["-n", &host.ns, "link", "set", "lo", "up"]);
        host
    }

    /// Cuts `host` off (its link down) or joins it again.
    pub fn set_link(&self, host: &Host, up: bool) {
        must(&["link", "set", &host.link, if up { "up" } else { "down" }]);
    }
}

impl Host {
    /// `program args…` inside this host, its output appended to `log`.
    pub fn spawn(
        &self,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        // `ip netns exec` execs the program: the child's pid is the role's,
        // so signals reach the role itself.
        tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("ip netns exec")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Processes still inside a namespace keep it alive after `netns
        // del`: kill them first (children the test holds die with it too).
        for h in &self.hosts {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &h.ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = ip(&["link", "del", &h.link]);
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
