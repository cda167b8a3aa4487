//! A Kubernetes overlay as rendered by `kubectl kustomize`
//! (scripts/render_overlay.sh), read for the command lines of its roles:
//! so that a fleet test starts each role exactly as the manifests do, with
//! only addresses and paths mapped to the test's hosts and files.

use serde_json::Value;
use std::collections::HashMap;

pub struct Overlay {
    objs: Vec<Value>,
}

/// One container as the manifest runs it.
#[derive(Clone, Debug)]
pub struct Role {
    /// `command` + `args`, the image's binary first.
    pub argv: Vec<String>,
    /// `env`: (name, value); `valueFrom` entries hold their source
    /// (`fieldRef:status.podIP`, `secretKeyRef:SECRET/KEY`).
    pub env: Vec<(String, String)>,
    /// Secret volumes: (mount path, secret name).
    pub secrets: Vec<(String, String)>,
}

impl Overlay {
    pub fn render(name: &str) -> Overlay {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/render_overlay.sh");
        let out = std::process::Command::new(script)
            .arg(name)
            .output()
            .expect("scripts/render_overlay.sh runs");
        assert!(
            out.status.success(),
            "render_overlay.sh {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Overlay {
            objs: serde_json::from_slice(&out.stdout).expect("rendered objects as JSON"),
        }
    }

    pub fn find(&self, kind: &str, name: &str) -> &Value {
        self.objs
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} is not rendered"))
    }

    /// A file of a ConfigMap.
    pub fn config(&self, map: &str, key: &str) -> String {
        self.find("ConfigMap", map)["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap/{map} has no {key}"))
            .to_string()
    }

    /// The Certificate that fills Secret `secret`.
    pub fn certificate(&self, secret: &str) -> &Value {
        self.objs
            .iter()
            .find(|o| o["kind"] == "Certificate" && o["spec"]["secretName"] == secret)
            .unwrap_or_else(|| panic!("no Certificate fills Secret/{secret}"))
    }

    /// The first container of Deployment `name`.
    pub fn role(&self, name: &str) -> Role {
        let pod = &self.find("Deployment", name)["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut argv = strings(&c["command"]);
        argv.extend(strings(&c["args"]));
        let env = c["env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let name = e["name"].as_str().unwrap_or_default().to_string();
                        let value = if let Some(v) = e["value"].as_str() {
                            v.to_string()
                        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                            format!("fieldRef:{f}")
                        } else {
                            let s = &e["valueFrom"]["secretKeyRef"];
                            format!(
                                "secretKeyRef:{}/{}",
                                s["name"].as_str().unwrap_or_default(),
                                s["key"].as_str().unwrap_or_default()
                            )
                        };
                        (name, value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let volumes: HashMap<&str, &str> = pod["volumes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| {
                        Some((v["name"].as_str()?, v["secret"]["secretName"].as_str()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let secrets = c["volumeMounts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        let secret = volumes.get(m["name"].as_str()?)?;
                        Some((m["mountPath"].as_str()?.to_string(), secret.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Role { argv, env, secrets }
    }
}

impl Role {
    /// The value of `--name=VALUE` (the manifests use the `=` form).
    pub fn flag(&self, name: &str) -> Option<&str> {
        let prefix = format!("--{name}=");
        self.argv.iter().find_map(|a| a.strip_prefix(&prefix))
    }

    /// Replaces `--name=…` with `--name=value`, failing if the manifest
    /// does not set it (a test that shortens a timeout says so here).
    pub fn set_flag(&mut self, name: &str, value: &str) {
        let prefix = format!("--{name}=");
        let a = self
            .argv
            .iter_mut()
            .find(|a| a.starts_with(&prefix))
            .unwrap_or_else(|| panic!("the manifest sets no --{name}"));
        *a = format!("{prefix}{value}");
    }

    /// The environment with `valueFrom` entries resolved by `source`, and
    /// the arguments with `$(VAR)` expanded from it as Kubernetes does;
    /// `map` then rewrites every argument and value (addresses, paths).
    pub fn resolve(
        &self,
        source: impl Fn(&str) -> String,
        map: impl Fn(&str) -> String,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| {
                let v = if v.starts_with("fieldRef:") || v.starts_with("secretKeyRef:") {
                    source(v)
                } else {
                    v.clone()
                };
                (k.clone(), map(&v))
            })
            .collect();
        let expand = |a: &str| {
            env.iter()
                .fold(a.to_string(), |a, (k, v)| a.replace(&format!("$({k})"), v))
        };
        let argv = self.argv.iter().map(|a| map(&expand(a))).collect();
        (argv, env)
    }
}
