//! Control-plane benchmark for BENCHMARKS.md (scripts/bench_control_plane.sh).
//!
//! For each size N it starts a fresh redis-server, writes N endpoint records
//! straight into Redis (the bulk loader: no events, the gateways load them
//! at start), and starts two gateway processes (this binary, `gateway`
//! mode, on a current-thread runtime like `switchboard gateway` on 2
//! cores). Then, through gateway A of each size in turn (blocks of 100
//! changes, 30 rounds, so every size meets the same machine): create,
//! update and delete latency, the CPU each gateway process spends per
//! change (A writes and follows, B only follows), how long a change takes
//! to be visible on B, and each gateway's resident memory once loaded.
//!
//!   cp_bench run [SIZES...]            (default 10 10000 100000)
//!   cp_bench gateway REDIS_URL ADDR    (what `run` starts)

use client::Client;
use client::proto::switchboard::v1 as pb;
use gateway::store::{AuthMode, DeploymentRecord, EndpointRecord, KeyRecord};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin";
/// Rounds of measurement, and changes per size in each.
const ROUNDS: usize = 30;
const BLOCK: usize = 100;
/// Unmeasured changes before the measured ones.
const WARM_UP: usize = 200;
/// Changes whose visibility on the second gateway is timed.
const VISIBILITY: usize = 300;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gateway") => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(&args[2], &args[3]))
        }
        Some("run") => {
            let sizes: Vec<usize> = if args.len() > 2 {
                args[2..]
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            } else {
                vec![10, 10_000, 100_000]
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(run(&sizes))
        }
        _ => Err("usage: cp_bench run [SIZES...] | cp_bench gateway REDIS_URL ADDR".into()),
    }
}

async fn serve(redis: &str, addr: &str) -> Res<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let config = gateway::GatewayConfig {
        redis_url: redis.into(),
        admin_key: Some(ADMIN.into()),
        ..Default::default()
    };
    gateway::serve(config, listener, std::future::pending()).await?;
    Ok(())
}

/// Kills its children when dropped.
struct Procs(Vec<Child>);
impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Nanoseconds on CPU of every thread of `pid` (schedstat: finer than
/// the 10 ms ticks of /proc/PID/stat).
fn cpu_ns(pid: u32) -> Res<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let s = std::fs::read_to_string(t?.path().join("schedstat"))?;
        total += s.split_whitespace().next().unwrap_or("0").parse::<u64>()?;
    }
    Ok(total)
}

fn rss_kib(pid: u32) -> Res<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("VmRSS")?.parse()?)
}

/// An endpoint as management makes it, with one deployment taking all
/// traffic: the records a platform with many models would have.
fn record(name: &str) -> EndpointRecord {
    let key = |i: u8| KeyRecord {
        hash: gateway::secrets::hash(&format!("{name}-{i}")),
        created_unix: 1_764_633_600,
    };
    let mut deployments = litemap::LiteMap::new();
    deployments.insert(
        "blue".to_string(),
        DeploymentRecord {
            model_uri: format!("models/{name}.onnx"),
            instances: 1,
            max_batch_size: 32,
            ..Default::default()
        },
    );
    EndpointRecord {
        name: name.into(),
        auth_mode: AuthMode::Key,
        description: String::new(),
        deployments,
        traffic: [("blue".to_string(), 100)].into_iter().collect(),
        mirror: None,
        keys: [key(1), key(2)],
    }
}

/// Writes `n` records directly, 1,000 per pipeline, and moves the version
/// once; gateways started afterwards load them.
async fn bulk_load(redis: &str, n: usize) -> Res<()> {
    let mut conn = redis::Client::open(redis)?
        .get_multiplexed_async_connection()
        .await?;
    for start in (0..n).step_by(1000) {
        let mut p = redis::pipe();
        for i in start..(start + 1000).min(n) {
            let name = format!("bulk-{i:06}");
            p.set(
                gateway::store::key(&name),
                serde_json::to_string(&record(&name))?,
            )
            .ignore()
            .sadd(gateway::store::ENDPOINTS, &name)
            .ignore();
        }
        let () = p.query_async(&mut conn).await?;
    }
    let _: i64 = redis::cmd("INCR")
        .arg(gateway::store::VERSION)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

async fn connect(url: &str) -> Res<Client> {
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(c) = Client::connect(url, Some(ADMIN)).await
            && c.management
                .clone()
                .list_endpoints(pb::ListEndpointsRequest::default())
                .await
                .is_ok()
        {
            return Ok(c);
        }
        if Instant::now() > until {
            return Err(format!("{url} never answered").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn describe(c: &Client, name: &str, text: &str) -> Res<()> {
    c.management
        .clone()
        .update_endpoint(pb::UpdateEndpointRequest {
            name: name.into(),
            auth_mode: None,
            description: Some(text.into()),
        })
        .await?;
    Ok(())
}

/// One size's Redis and two gateways, with what was measured on them.
struct Cluster {
    n: usize,
    _procs: Procs,
    dir: std::path::PathBuf,
    a: Client,
    b: Client,
    pids: (u32, u32),
    load_s: f64,
    rss_kib: (u64, u64),
    /// Per kind of change: each change's latency, and each block's CPU
    /// per change in A and in B (µs).
    lat: [Vec<Duration>; 3],
    cpu: [(Vec<f64>, Vec<f64>); 3],
    seen: Vec<Duration>,
}

async fn start(exe: &std::path::Path, n: usize) -> Res<Cluster> {
    let dir = std::env::temp_dir().join(format!("cp-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rp = free_port()?;
    let mut procs = Procs(vec![
        Command::new("redis-server")
            .args([
                "--port",
                &rp.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()?,
    ]);
    let redis = format!("redis://127.0.0.1:{rp}");
    let until = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(redis.as_str())?
        .get_multiplexed_async_connection()
        .await
        .is_err()
    {
        if Instant::now() > until {
            return Err("redis-server did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bulk_load(&redis, n).await?;
    let t = Instant::now();
    let mut urls = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new(exe)
            .args(["gateway", &redis, &addr])
            .env("RUST_LOG", "warn")
            .spawn()?;
        pids.push(child.id());
        procs.0.push(child);
        urls.push(format!("http://{addr}"));
    }
    let (a, b) = (connect(&urls[0]).await?, connect(&urls[1]).await?);
    let load_s = t.elapsed().as_secs_f64();
    let rss_kib = (rss_kib(pids[0])?, rss_kib(pids[1])?);
    Ok(Cluster {
        n,
        _procs: procs,
        dir,
        a,
        b,
        pids: (pids[0], pids[1]),
        load_s,
        rss_kib,
        lat: Default::default(),
        cpu: Default::default(),
        seen: Vec::new(),
    })
}

/// The i-th change of a kind: 0 creates `new-i`, 1 updates it, 2 deletes it.
async fn change(c: &Cluster, kind: usize, i: usize) -> Res<()> {
    let name = format!("new-{i:05}");
    match kind {
        0 => {
            c.a.create_endpoint(&name, pb::AuthMode::Key).await?;
        }
        1 => describe(&c.a, &name, &format!("update {i}")).await?,
        _ => {
            c.a.management
                .clone()
                .delete_endpoint(pb::DeleteEndpointRequest { name })
                .await?;
        }
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every size is set up first and measured in turns (a block of changes on
/// each, round after round), so that all sizes meet the machine in the same
/// state: on a shared machine a drift in its load would otherwise land on
/// one size. CPU per change is the median over blocks.
async fn run(sizes: &[usize]) -> Res<()> {
    let exe = std::env::current_exe()?;
    let mut clusters = Vec::new();
    for &n in sizes {
        clusters.push(start(&exe, n).await?);
    }
    // Settle: right after a load the allocator is still returning the
    // load's garbage, and the first changes warm connections and the
    // script cache.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in &clusters {
        for i in 0..WARM_UP {
            describe(
                &c.a,
                &format!("bulk-{:06}", i % c.n),
                &format!("warm-up {i}"),
            )
            .await?;
        }
    }
    for kind in 0..3 {
        for round in 0..ROUNDS {
            for c in clusters.iter_mut() {
                let (a0, b0) = (cpu_ns(c.pids.0)?, cpu_ns(c.pids.1)?);
                for j in 0..BLOCK {
                    let t = Instant::now();
                    change(c, kind, round * BLOCK + j).await?;
                    c.lat[kind].push(t.elapsed());
                }
                let per = |ns: u64| ns as f64 / 1e3 / BLOCK as f64;
                let (a1, b1) = (cpu_ns(c.pids.0)?, cpu_ns(c.pids.1)?);
                c.cpu[kind].0.push(per(a1 - a0));
                c.cpu[kind].1.push(per(b1 - b0));
            }
        }
        if kind == 0 {
            // Visibility while the created endpoints exist.
            for round in 0..ROUNDS {
                for c in clusters.iter_mut() {
                    for j in 0..VISIBILITY / ROUNDS {
                        let name = format!("new-{:05}", round * BLOCK + j);
                        let text = format!("visible {round} {j}");
                        let t = Instant::now();
                        describe(&c.a, &name, &text).await?;
                        while c.b.get_endpoint(&name).await?.description != text {
                            if t.elapsed() > Duration::from_secs(10) {
                                return Err(format!("{name} never reached B").into());
                            }
                        }
                        c.seen.push(t.elapsed());
                    }
                }
            }
        }
    }
    println!(
        "| endpoints | gateways loaded in s | RSS A / B MiB | create p50 / p99 ms | update p50 / p99 ms | delete p50 / p99 ms | CPU per create A / B µs | per update A / B µs | per delete A / B µs | visible on B p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for c in clusters.iter_mut() {
        let [create, update, delete] = &mut c.lat;
        println!(
            "| {} | {:.2} | {:.1} / {:.1} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} / {:.2} |",
            c.n,
            c.load_s,
            c.rss_kib.0 as f64 / 1024.0,
            c.rss_kib.1 as f64 / 1024.0,
            pct(create, 0.5),
            pct(create, 0.99),
            pct(update, 0.5),
            pct(update, 0.99),
            pct(delete, 0.5),
            pct(delete, 0.99),
            median(&c.cpu[0].0),
            median(&c.cpu[0].1),
            median(&c.cpu[1].0),
            median(&c.cpu[1].1),
            median(&c.cpu[2].0),
            median(&c.cpu[2].1),
            pct(&mut c.seen, 0.5),
            pct(&mut c.seen, 0.99),
        );
    }
    if let (Some(small), Some(big)) = (clusters.first(), clusters.last()) {
        let per =
            |kib: u64, m: u64| (kib as f64 - m as f64) * 1024.0 / (big.n - small.n).max(1) as f64;
        println!(
            "\ngateway RSS per endpoint ({} vs {} endpoints): A {:.0} B, B {:.0} B",
            big.n,
            small.n,
            per(big.rss_kib.0, small.rss_kib.0),
            per(big.rss_kib.1, small.rss_kib.1)
        );
    }
    for c in &clusters {
        let _ = std::fs::remove_dir_all(&c.dir);
    }
    Ok(())
}
