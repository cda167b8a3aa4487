//! What client commands print: JSON by default, for scripts (`| jq`,
//! `| python3 -m json.tool`), or an aligned table with a header row for
//! people (`-o table`), as `az` and `kubectl` do.
//!
//! The JSON is an interface: snake_case names that do not change, enums as
//! lowercase words, times as numbers whose name carries the unit
//! (`created_unix_s`), traffic as a list of `{deployment, weight}`. Keys
//! appear as fingerprints only, except a key made by this very command
//! (`primary_key`/`secondary_key` on create, `key` on regenerate), which is
//! shown once and stored hashed.

use clap::{Args, ValueEnum};
use client::proto::switchboard::v1 as pb;
use serde_json::{Value, json};
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// json (for scripts) or table (for people).
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "json",
        global = true
    )]
    pub output: Format,
}

/// One command's answer in both forms.
pub struct View {
    json: Value,
    tables: Vec<Table>,
}

impl View {
    pub fn print(&self, format: Format) {
        match format {
            // A `Value` always serializes.
            Format::Json => println!("{:#}", self.json),
            Format::Table => {
                let text: Vec<String> = self.tables.iter().map(Table::to_string).collect();
                print!("{}", text.join("\n"));
            }
        }
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(mut self, cells: Vec<String>) -> Self {
        self.rows.push(cells);
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let mut widths = vec![0; header.len()];
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for line in lines {
            let mut text = String::new();
            for (cell, w) in line.iter().zip(&widths) {
                text += &format!("{cell:<w$}  ");
            }
            writeln!(f, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

fn auth_mode(mode: i32) -> String {
    match pb::AuthMode::try_from(mode) {
        Ok(pb::AuthMode::Key) => "key".into(),
        Ok(pb::AuthMode::Token) => "token".into(),
        Ok(pb::AuthMode::None) => "none".into(),
        Err(_) => format!("unknown ({mode})"),
    }
}

fn slot(slot: i32) -> String {
    match pb::KeySlot::try_from(slot) {
        Ok(pb::KeySlot::Primary) => "primary".into(),
        Ok(pb::KeySlot::Secondary) => "secondary".into(),
        Err(_) => format!("unknown ({slot})"),
    }
}

/// Heaviest first, then by name: the map has no order of its own.
fn traffic(e: &pb::Endpoint) -> Vec<(&str, u32)> {
    let mut t: Vec<(&str, u32)> = e.traffic.iter().map(|(d, w)| (d.as_str(), *w)).collect();
    t.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    t
}

fn endpoint_json(e: &pb::Endpoint) -> Value {
    let mirror = (!e.mirror_deployment.is_empty() && e.mirror_percent > 0)
        .then(|| json!({"deployment": e.mirror_deployment, "percent": e.mirror_percent}));
    json!({
        "name": e.name,
        "description": e.description,
        "auth_mode": auth_mode(e.auth_mode),
        "traffic": traffic(e).iter().map(|(d, w)| json!({"deployment": d, "weight": w})).collect::<Vec<_>>(),
        "mirror": mirror,
        "deployments": e.deployments.iter().map(|d| json!({
            "name": d.name,
            "model_uri": d.model_uri,
            "instances": d.instances,
            "max_batch_size": d.max_batch_size,
            "max_queue_delay_us": d.max_queue_delay_us,
            "max_queue_size": d.max_queue_size,
            "preferred_batch_sizes": d.preferred_batch_sizes,
            "replicas": d.replicas,
            "replicas_healthy": d.replicas_healthy,
        })).collect::<Vec<_>>(),
    })
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

fn endpoint_table<'a>(endpoints: impl IntoIterator<Item = &'a pb::Endpoint>) -> Table {
    let header = [
        "NAME",
        "AUTH",
        "TRAFFIC",
        "MIRROR",
        "DEPLOYMENTS",
        "DESCRIPTION",
    ];
    endpoints.into_iter().fold(Table::new(&header), |t, e| {
        let weights: Vec<String> = traffic(e).iter().map(|(d, w)| format!("{d}={w}")).collect();
        let names: Vec<&str> = e.deployments.iter().map(|d| d.name.as_str()).collect();
        let mirror = if e.mirror_percent > 0 {
            format!("{}={}", e.mirror_deployment, e.mirror_percent)
        } else {
            String::new()
        };
        t.row(vec![
            e.name.clone(),
            auth_mode(e.auth_mode),
            or_dash(weights.join(",")),
            or_dash(mirror),
            or_dash(names.join(",")),
            e.description.clone(),
        ])
    })
}

fn deployment_table(e: &pb::Endpoint) -> Table {
    let header = [
        "DEPLOYMENT",
        "WEIGHT",
        "REPLICAS",
        "HEALTHY",
        "INSTANCES",
        "MAX_BATCH_SIZE",
        "MODEL",
    ];
    e.deployments.iter().fold(Table::new(&header), |t, d| {
        let weight = e.traffic.get(&d.name).copied().unwrap_or(0);
        t.row(vec![
            d.name.clone(),
            weight.to_string(),
            d.replicas.to_string(),
            d.replicas_healthy.to_string(),
            d.instances.to_string(),
            d.max_batch_size.to_string(),
            or_dash(d.model_uri.clone()),
        ])
    })
}

/// `endpoint show`, and every command that changes an endpoint (update,
/// deployment create/delete, traffic, mirror): the endpoint as it now is.
pub fn endpoint(e: &pb::Endpoint) -> View {
    View {
        json: endpoint_json(e),
        tables: vec![endpoint_table([e]), deployment_table(e)],
    }
}

pub fn endpoints(list: &[pb::Endpoint]) -> View {
    View {
        json: Value::Array(list.iter().map(endpoint_json).collect()),
        tables: vec![endpoint_table(list)],
    }
}

pub fn created(r: &pb::CreateEndpointResponse) -> View {
    let e = r.endpoint.clone().unwrap_or_default();
    View {
        json: json!({
            "endpoint": endpoint_json(&e),
            "primary_key": r.primary_key,
            "secondary_key": r.secondary_key,
        }),
        tables: vec![
            endpoint_table([&e]),
            Table::new(&["SLOT", "KEY (SHOWN ONCE)"])
                .row(vec!["primary".into(), r.primary_key.clone()])
                .row(vec!["secondary".into(), r.secondary_key.clone()]),
        ],
    }
}

pub fn endpoint_deleted(name: &str) -> View {
    View {
        json: json!({"endpoint": name, "deleted": true}),
        tables: vec![Table::new(&["ENDPOINT", "DELETED"]).row(vec![name.into(), "true".into()])],
    }
}

/// RFC 3339 in UTC, for tables; JSON keeps the number.
fn date(unix_s: i64) -> String {
    let Ok(s) = u64::try_from(unix_s) else {
        return unix_s.to_string();
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
}

pub fn keys(k: &pb::KeysInfo) -> View {
    let json_keys: Vec<Value> = k
        .keys
        .iter()
        .map(|i| {
            json!({
                "slot": slot(i.slot),
                "fingerprint": i.fingerprint,
                "created_unix_s": i.created_unix,
            })
        })
        .collect();
    let table = k.keys.iter().fold(
        Table::new(&["ENDPOINT", "SLOT", "FINGERPRINT", "CREATED"]),
        |t, i| {
            t.row(vec![
                k.endpoint.clone(),
                slot(i.slot),
                i.fingerprint.clone(),
                date(i.created_unix),
            ])
        },
    );
    View {
        json: json!({"endpoint": k.endpoint, "keys": json_keys}),
        tables: vec![table],
    }
}

pub fn new_key(endpoint: &str, r: &pb::RegenerateKeyResponse) -> View {
    let info = r.info.clone().unwrap_or_default();
    View {
        json: json!({
            "endpoint": endpoint,
            "slot": slot(info.slot),
            "key": r.key,
            "fingerprint": info.fingerprint,
            "created_unix_s": info.created_unix,
        }),
        tables: vec![
            Table::new(&["ENDPOINT", "SLOT", "KEY (SHOWN ONCE)", "FINGERPRINT"]).row(vec![
                endpoint.into(),
                slot(info.slot),
                r.key.clone(),
                info.fingerprint,
            ]),
        ],
    }
}

pub fn token(endpoint: &str, r: &pb::GetTokenResponse) -> View {
    View {
        json: json!({
            "endpoint": endpoint,
            "token": r.token,
            "expires_unix_s": r.expires_unix,
        }),
        tables: vec![Table::new(&["ENDPOINT", "EXPIRES", "TOKEN"]).row(vec![
            endpoint.into(),
            date(r.expires_unix),
            r.token.clone(),
        ])],
    }
}

use gateway::rest::jobs::job_json;
/// One JSON per job on both protocols: the gateway's REST answers and
/// `job status --output json` print the same document.
pub use gateway::rest::jobs::job_state;

fn job_table<'a>(jobs: impl IntoIterator<Item = &'a pb::Job>) -> Table {
    let header = [
        "ID",
        "STATE",
        "ENDPOINT",
        "DEPLOYMENT",
        "ROWS_DONE",
        "ROWS_FAILED",
        "ROWS_TOTAL",
        "CREATED",
        "MESSAGE",
    ];
    jobs.into_iter().fold(Table::new(&header), |t, j| {
        t.row(vec![
            j.id.clone(),
            job_state(j.state),
            or_dash(
                j.spec
                    .as_ref()
                    .map(|s| s.endpoint.clone())
                    .unwrap_or_default(),
            ),
            or_dash(j.deployment.clone()),
            j.rows_done.to_string(),
            j.rows_failed.to_string(),
            j.rows_total.to_string(),
            date(j.created_unix_ms.div_euclid(1000)),
            j.message.clone(),
        ])
    })
}

pub fn job(j: &pb::Job) -> View {
    View {
        json: job_json(j),
        tables: vec![job_table([j])],
    }
}

/// One JSON document (an array) like `endpoint list`, not a line per job.
pub fn jobs(list: &[pb::Job]) -> View {
    View {
        json: Value::Array(list.iter().map(job_json).collect()),
        tables: vec![job_table(list)],
    }
}

/// `switchboard devices`: the GPUs this process may place models on.
pub fn devices(list: &[engine::GpuInfo]) -> View {
    let cc = |g: &engine::GpuInfo| g.compute_capability.map(|(a, b)| format!("{a}.{b}"));
    let json = list
        .iter()
        .map(|g| {
            json!({
                "device": format!("cuda:{}", g.ordinal),
                "name": g.name,
                "total_bytes": g.total_bytes,
                "free_bytes": g.free_bytes,
                "compute_capability": cc(g),
            })
        })
        .collect();
    let table = list.iter().fold(
        Table::new(&["DEVICE", "NAME", "MEMORY", "FREE", "COMPUTE"]),
        |t, g| {
            t.row(vec![
                format!("cuda:{}", g.ordinal),
                g.name.clone(),
                engine::format_bytes(g.total_bytes),
                engine::format_bytes(g.free_bytes),
                cc(g).unwrap_or_else(|| "-".into()),
            ])
        },
    );
    View {
        json: Value::Array(json),
        tables: vec![table],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> pb::Endpoint {
        pb::Endpoint {
            name: "digits".into(),
            auth_mode: pb::AuthMode::Token as i32,
            traffic: [("green".to_string(), 10), ("blue".to_string(), 90)].into(),
            mirror_deployment: "green".into(),
            mirror_percent: 5,
            deployments: vec![
                pb::Deployment {
                    name: "blue".into(),
                    model_uri: "models/digits_mlp.onnx".into(),
                    instances: 1,
                    max_batch_size: 32,
                    replicas: 2,
                    replicas_healthy: 1,
                    ..Default::default()
                },
                pb::Deployment {
                    name: "green".into(),
                    ..Default::default()
                },
            ],
            description: "hand-written digits".into(),
        }
    }

    #[test]
    fn an_endpoint_reads_as_json_with_words_and_a_weight_list() {
        let j = endpoint(&digits()).json;
        assert_eq!(j["auth_mode"], "token");
        assert_eq!(
            j["traffic"],
            json!([{"deployment": "blue", "weight": 90}, {"deployment": "green", "weight": 10}])
        );
        assert_eq!(j["mirror"], json!({"deployment": "green", "percent": 5}));
        assert_eq!(j["deployments"][0]["replicas_healthy"], 1);
        let off = pb::Endpoint {
            mirror_percent: 0,
            ..digits()
        };
        assert_eq!(endpoint(&off).json["mirror"], Value::Null);
    }

    #[test]
    fn tables_align_under_a_header() {
        let text = endpoint_table([&digits()]).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let col = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(col(lines[0], "TRAFFIC"), col(lines[1], "blue=90,green=10"));
        assert_eq!(col(lines[0], "MIRROR"), col(lines[1], "green=5"));
        assert!(lines[1].ends_with("hand-written digits"), "{text}");
        let deployments = deployment_table(&digits()).to_string();
        let rows: Vec<&str> = deployments.lines().collect();
        assert_eq!(rows.len(), 3, "{deployments}");
        assert_eq!(col(rows[0], "WEIGHT"), col(rows[2], "10"), "{deployments}");
        assert_eq!(
            col(rows[0], "MODEL"),
            col(rows[1], "models/"),
            "{deployments}"
        );
        // A deployment with no model file still fills its column.
        assert_eq!(col(rows[0], "MODEL"), rows[2].len() - 1, "{deployments}");
        assert!(rows[2].ends_with(" -"), "{deployments}");
    }

    #[test]
    fn tables_show_dates_where_json_keeps_seconds() {
        let v = token(
            "digits",
            &pb::GetTokenResponse {
                token: "sbt_x".into(),
                expires_unix: 1_700_000_000,
            },
        );
        assert_eq!(v.json["expires_unix_s"], 1_700_000_000);
        assert!(
            v.tables[0].to_string().contains("2023-11-14T22:13:20Z"),
            "{}",
            v.tables[0]
        );
    }
}
