//! Batch-job helpers: input files made from the digits fixture, batchers as
//! child processes, and readers that check every output row.

use super::{ADMIN, Cluster, Options, connect, models};
use client::Client;
use client::proto::switchboard::v1 as pb;
use engine::fixtures::Fixture;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for any job of these tests on a loaded 2-core machine.
pub const MINUTES: Duration = Duration::from_secs(600);

/// A gateway and Redis with no worker: batch jobs need none.
pub async fn cluster() -> Cluster {
    Cluster::start(Options {
        deployments: vec![],
        ..Options::default()
    })
    .await
}

/// [`cluster`] with endpoint `digits` (`blue`: the MLP), one batcher `b1`
/// started with `flags`, and a client holding the endpoint's key.
pub async fn digits_jobs(flags: &[&str]) -> (Cluster, Client) {
    let (c, client, _) = digits_jobs_on(cluster().await, flags).await;
    (c, client)
}

/// The same on a given cluster (one with a real-time worker, say), also
/// answering the endpoint's key.
pub async fn digits_jobs_on(mut c: Cluster, flags: &[&str]) -> (Cluster, Client, String) {
    let key = batch_endpoint(&c, "digits", &[("blue", "digits_mlp.onnx")]).await;
    spawn_batcher(&mut c, "b1", flags);
    let client = connect(&c.gateway_url, Some(&key)).await;
    (c, client, key)
}

/// A cluster whose `digits/blue` also has a real-time worker.
pub async fn with_digits_worker() -> Cluster {
    Cluster::start(Options {
        deployments: vec![("digits", "blue", "digits_mlp.onnx")],
        ..Options::default()
    })
    .await
}

/// The 16 real digits rows and the reference outputs of the MLP.
pub struct Digits {
    pub rows: Vec<Vec<f32>>,
    pub labels: Vec<i64>,
    pub probabilities: Vec<Vec<f32>>,
}

impl Digits {
    pub fn load() -> Digits {
        let f = Fixture::load("digits_mlp").expect("fixture");
        let input = &f.inputs["input"];
        let rows = input
            .data
            .chunks(64)
            .map(|r| r.iter().map(|&v| v as f32).collect())
            .collect();
        let labels = f.outputs["label"].data.iter().map(|&v| v as i64).collect();
        let probabilities = f.outputs["probabilities"]
            .data
            .chunks(10)
            .map(|r| r.iter().map(|&v| v as f32).collect())
            .collect();
        Digits {
            rows,
            labels,
            probabilities,
        }
    }

    /// Row `i` of a generated file is fixture row `i % 16`.
    pub fn row(&self, i: u64) -> &[f32] {
        &self.rows[(i % 16) as usize]
    }

    pub fn label(&self, i: u64) -> i64 {
        self.labels[(i % 16) as usize]
    }

    fn csv_lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| format!("{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    /// A CSV of `n` rows, with a header of `f0..f63` when asked.
    pub fn write_csv(&self, path: &Path, n: u64, header: bool) {
        let lines = self.csv_lines();
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        if header {
            let h: Vec<String> = (0..64).map(|i| format!("f{i}")).collect();
            writeln!(w, "{}", h.join(",")).unwrap();
        }
        for i in 0..n {
            writeln!(w, "{}", lines[(i % 16) as usize]).unwrap();
        }
        w.flush().unwrap();
    }

    pub fn write_jsonl(&self, path: &Path, n: u64) {
        let lines: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let fields: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("\"f{i}\":{v}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            })
            .collect();
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for i in 0..n {
            writeln!(w, "{}", lines[(i % 16) as usize]).unwrap();
        }
        w.flush().unwrap();
    }

    pub fn write_parquet(&self, path: &Path, n: u64) {
        use arrow::array::{ArrayRef, Float32Array};
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow::record_batch::RecordBatch;
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(
            (0..64)
                .map(|i| Field::new(format!("f{i}"), DataType::Float32, false))
                .collect::<Vec<_>>(),
        ));
        let file = std::fs::File::create(path).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(50_000))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        let mut start = 0u64;
        while start < n {
            let end = (start + 50_000).min(n);
            let cols: Vec<ArrayRef> = (0..64)
                .map(|c| {
                    Arc::new(Float32Array::from_iter_values(
                        (start..end).map(|i| self.row(i)[c]),
                    )) as ArrayRef
                })
                .collect();
            w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
                .unwrap();
            start = end;
        }
        w.close().unwrap();
    }
}

/// Creates `name` (key auth) whose deployments load the given model files;
/// the first deployment takes all traffic. Returns the primary key.
pub async fn batch_endpoint(c: &Cluster, name: &str, deployments: &[(&str, &str)]) -> String {
    let admin = c.admin().await;
    let created = admin
        .create_endpoint(name, pb::AuthMode::Key)
        .await
        .unwrap();
    for (d, file) in deployments {
        let dep = pb::Deployment {
            name: d.to_string(),
            model_uri: models()
                .join(file)
                .canonicalize()
                .unwrap()
                .display()
                .to_string(),
            ..Default::default()
        };
        admin.create_deployment(name, dep).await.unwrap();
    }
    admin
        .set_traffic(name, &[(deployments[0].0, 100)])
        .await
        .unwrap();
    created.primary_key
}

/// A batcher as its own process (so it can be SIGKILLed).
pub fn spawn_batcher(c: &mut Cluster, id: &str, extra: &[&str]) {
    spawn_batcher_with(c, id, extra, &[]);
}

/// As `spawn_batcher`, with environment variables set.
pub fn spawn_batcher_with(c: &mut Cluster, id: &str, extra: &[&str], env: &[(&str, &str)]) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["batcher", "--redis", &c.redis_url, "--id", id])
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn,batcher=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn batcher");
    c.children.push(child);
}

/// Convnet rows (3x32x32 values) as CSV: 3072 small integers per line.
pub fn write_convnet_csv(path: &Path, n: usize) {
    let line: Vec<String> = (0..3072).map(|i| ((i * 7) % 17).to_string()).collect();
    let line = line.join(",") + "\n";
    std::fs::write(path, line.repeat(n)).unwrap();
}

pub fn spec(endpoint: &str, input: &Path, output: &Path) -> pb::JobSpec {
    pb::JobSpec {
        endpoint: endpoint.into(),
        input: input.display().to_string(),
        output: output.display().to_string(),
        ..Default::default()
    }
}

pub async fn wait_final(client: &Client, id: &str, within: Duration) -> pb::Job {
    let until = std::time::Instant::now() + within;
    loop {
        if let Ok(j) = client.get_job(id).await
            && client::is_final(j.state)
        {
            return j;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for job {id} to end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn state(j: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(j.state).unwrap()
}

/// One output row: its input row id, label and probabilities.
pub type OutRow = (u64, i64, Vec<f32>);

/// Every row of every part file listed in the job's manifest.
pub fn read_outputs(out: &Path) -> Vec<OutRow> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut rows = Vec::new();
    for p in manifest["parts"].as_array().unwrap() {
        let path = out.join(p["file"].as_str().unwrap());
        let before = rows.len();
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => read_csv(&path, &mut rows),
            Some("jsonl") => read_jsonl(&path, &mut rows),
            Some("parquet") => read_parquet(&path, &mut rows),
            other => panic!("unexpected part {other:?}"),
        }
        assert_eq!(
            (rows.len() - before) as u64,
            p["rows"].as_u64().unwrap(),
            "rows of {}",
            path.display()
        );
    }
    rows
}

fn read_csv(path: &Path, rows: &mut Vec<OutRow>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("row,label,probabilities_0"), "{header}");
    for l in lines {
        let mut f = l.split(',');
        let row = f.next().unwrap().parse().unwrap();
        let label = f.next().unwrap().parse().unwrap();
        let probs = f.map(|v| v.parse().unwrap()).collect();
        rows.push((row, label, probs));
    }
}

fn read_jsonl(path: &Path, rows: &mut Vec<OutRow>) {
    let text = std::fs::read_to_string(path).unwrap();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let probs = v["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        rows.push((
            v["row"].as_u64().unwrap(),
            v["label"].as_i64().unwrap(),
            probs,
        ));
    }
}

fn read_parquet(path: &Path, rows: &mut Vec<OutRow>) {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float32Type, Int64Type, UInt64Type};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    for batch in reader {
        let b = batch.unwrap();
        let row = b
            .column_by_name("row")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let label = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int64Type>();
        let probs = b
            .column_by_name("probabilities")
            .unwrap()
            .as_fixed_size_list();
        for i in 0..b.num_rows() {
            let p = probs.value(i);
            let p = p.as_primitive::<Float32Type>();
            rows.push((row.value(i), label.value(i), p.values().to_vec()));
            assert!(!p.is_empty());
        }
    }
}

/// Each of rows 0..n exactly once, with the reference label; returns the
/// rows for further checks.
pub fn assert_every_row_once(rows: &[OutRow], n: u64, digits: &Digits) {
    assert_eq!(rows.len() as u64, n, "output rows");
    let mut seen = vec![false; n as usize];
    for (row, label, probs) in rows {
        let i = *row as usize;
        assert!(i < seen.len(), "row id {row} out of range");
        assert!(!seen[i], "row {row} appears twice");
        seen[i] = true;
        assert_eq!(*label, digits.label(*row), "label of row {row}");
        assert_eq!(probs.len(), 10, "probabilities of row {row}");
    }
}

/// Probabilities equal the reference within 1e-5 for every `step`-th row.
pub fn assert_reference(rows: &[OutRow], digits: &Digits, step: usize) {
    for (row, _, probs) in rows.iter().step_by(step) {
        let want = &digits.probabilities[(row % 16) as usize];
        for (a, b) in probs.iter().zip(want) {
            assert!((a - b).abs() <= 1e-5, "row {row}: {probs:?} vs {want:?}");
        }
    }
}

pub fn out_dir(c: &Cluster, name: &str) -> PathBuf {
    c.dir.0.join(name)
}

pub async fn admin_client(c: &Cluster) -> Client {
    super::connect(&c.gateway_url, Some(ADMIN)).await
}

/// Reads a field of a job's hash straight from Redis (fields the API does
/// not show, such as which batcher counted each shard).
pub async fn job_hash(c: &Cluster, id: &str) -> std::collections::HashMap<String, String> {
    job_hash_at(&c.redis_url, id).await
}

/// `job_hash` of the Redis at `url`.
pub async fn job_hash_at(url: &str, id: &str) -> std::collections::HashMap<String, String> {
    let client = redis_conn::current_client(url).await.unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGETALL")
        .arg(format!("sb:job:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The batchers that counted each shard, from the job hash.
pub async fn counted_by(url: &str, id: &str) -> std::collections::HashSet<String> {
    job_hash_at(url, id)
        .await
        .iter()
        .filter(|(k, _)| k.starts_with("part:"))
        .filter_map(|(_, v)| v.rsplit(',').next().map(str::to_string))
        .collect()
}

/// Entry ids a consumer holds unacknowledged, with their streams, over all
/// work streams.
pub async fn pending_entries(url: &str, consumer: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let mut held = Vec::new();
    for s in job_queue::STREAMS {
        let r: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(s)
            .arg(job_queue::GROUP)
            .arg("-")
            .arg("+")
            .arg(100)
            .arg(consumer)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        held.extend(r.into_iter().map(|(id, ..)| (s.to_string(), id)));
    }
    held
}

/// The shard indices of the shard entries a consumer holds.
pub async fn held_shards(url: &str, consumer: &str) -> Vec<u32> {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let mut shards = Vec::new();
    for (stream, id) in pending_entries(url, consumer).await {
        let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&id)
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        shards.extend(
            r.ids
                .iter()
                .filter_map(|e| e.get::<String>("shard")?.parse::<u32>().ok()),
        );
    }
    shards
}
