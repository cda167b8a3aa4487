//! One measured run. Requests whose (intended) start falls in the measured
//! window are recorded, however late they finish: a request stuck behind a
//! stall is counted with its whole wait. Warm-up is excluded.

use crate::config::{LoadConfig, Mode};
use crate::cpu::{cpu_of, cpu_us};
use crate::report::Report;
use crate::target::Target;
use anyhow::Result;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latencies and outcomes of the requests started in the window.
struct Recorder {
    window: (Instant, Instant),
    hist: Mutex<Histogram<u64>>,
    /// How long each failure took to come back, by status (its length is
    /// the count).
    error_hists: Mutex<BTreeMap<String, Histogram<u64>>>,
    done: AtomicU64,
    sent: AtomicU64,
    late: Mutex<Histogram<u64>>,
}

impl Recorder {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.window.0 && t < self.window.1
    }

    fn record(&self, started: Instant, result: Result<(), tonic::Code>) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !self.in_window(started) {
            return;
        }
        let us = started.elapsed().as_micros().max(1) as u64;
        match result {
            Ok(()) => {
                if let Ok(mut h) = self.hist.lock() {
                    let _ = h.record(us);
                }
            }
            Err(code) => {
                let code = format!("{code:?}");
                if let Ok(mut h) = self.error_hists.lock() {
                    h.entry(code)
                        .or_insert_with(histogram)
                        .saturating_record(us);
                }
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(cfg: LoadConfig) -> Result<Report> {
    let target = Target::connect(&cfg).await?;
    run_on(&target, &cfg).await
}

/// A run on an already connected target (sweeps reuse one).
pub async fn run_on(target: &Target, cfg: &LoadConfig) -> Result<Report> {
    run_with(
        target,
        cfg,
        Instant::now() + Duration::from_millis(20),
        None,
    )
    .await
}

/// Text appended to the progress line, updated by the caller while the run
/// goes on (mixed load shows the job's progress there).
pub type Note = Arc<Mutex<String>>;

/// The measured window of a run that starts at `begin`: warm-up first.
pub fn window_of(cfg: &LoadConfig, begin: Instant) -> (Instant, Instant) {
    (begin + cfg.warmup, begin + cfg.warmup + cfg.duration)
}

/// A run whose load starts at `begin` (so the caller knows its window, see
/// [`window_of`]), with `note` on the progress line.
pub async fn run_with(
    target: &Target,
    cfg: &LoadConfig,
    begin: Instant,
    note: Option<Note>,
) -> Result<Report> {
    let window = window_of(cfg, begin);
    let rec = Arc::new(Recorder {
        window,
        hist: Mutex::new(histogram()),
        error_hists: Mutex::new(BTreeMap::new()),
        done: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        late: Mutex::new(histogram()),
    });
    let progress = cfg
        .progress
        .then(|| tokio::spawn(progress_line(rec.clone(), note)));
    let sampler = tokio::spawn(sample_window(
        target.clone(),
        cfg.server_pids.clone(),
        window,
    ));
    let scraper = tokio::spawn(scrape_window(cfg.server_metrics.clone(), window));
    let stop = window.1;
    match cfg.mode {
        Mode::Closed { concurrency } => {
            closed(target, &rec, begin, stop, concurrency, cfg.deadline).await
        }
        Mode::Open { rate, poisson } => {
            let pace = (rate, poisson);
            open(target, &rec, begin, stop, pace, cfg.drain, cfg.deadline).await
        }
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let (server_cpu, client_cpu, batches) = sampler.await?;
    let server_metrics = scraper.await?;
    let mut report = Report::build(
        cfg,
        &rec.hist
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| histogram()),
        rec.error_hists
            .lock()
            .map(|h| h.iter().map(|(c, h)| (c.clone(), h.len())).collect())
            .unwrap_or_default(),
        &rec.late
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| histogram()),
        server_cpu,
        client_cpu,
        batches,
    );
    report.server_metrics = server_metrics;
    if let Ok(h) = rec.error_hists.lock() {
        report.error_latency_us = h
            .iter()
            .map(|(code, h)| (code.clone(), crate::report::Latency::of(h)))
            .collect();
    }
    Ok(report)
}

/// `--server-metrics` read at the window's edges.
async fn scrape_window(
    urls: Vec<String>,
    window: (Instant, Instant),
) -> Option<crate::scrape::ServerMetrics> {
    if urls.is_empty() {
        return None;
    }
    tokio::time::sleep_until(window.0.into()).await;
    let before = crate::scrape::read_all(&urls).await;
    tokio::time::sleep_until(window.1.into()).await;
    let after = crate::scrape::read_all(&urls).await;
    Some(crate::scrape::between(before?, after?))
}

/// CPU and server batch counters at the window's edges.
async fn sample_window(
    target: Target,
    pids: Vec<u32>,
    window: (Instant, Instant),
) -> (
    Option<(u64, u64)>,
    Option<(u64, u64)>,
    (BTreeMap<u64, u64>, BTreeMap<u64, u64>),
) {
    tokio::time::sleep_until(window.0.into()).await;
    let (s0, c0) = (cpu_of(&pids), cpu_us("self"));
    let b0 = target.batch_counts().await;
    tokio::time::sleep_until(window.1.into()).await;
    let (s1, c1) = (cpu_of(&pids), cpu_us("self"));
    let b1 = target.batch_counts().await;
    let pair = |a: Option<u64>, b: Option<u64>| a.zip(b);
    (
        if pids.is_empty() { None } else { pair(s0, s1) },
        pair(c0, c1),
        (b0, b1),
    )
}

async fn closed(
    target: &Target,
    rec: &Arc<Recorder>,
    begin: Instant,
    stop: Instant,
    concurrency: usize,
    deadline: Option<Duration>,
) {
    tokio::time::sleep_until(begin.into()).await;
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency.max(1) {
        let (target, rec) = (target.clone(), rec.clone());
        let mut client = target.client(i);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let started = Instant::now();
                let sent_here = rec.sent.fetch_add(1, Ordering::Relaxed) as usize;
                let d = deadline.map(|d| started + d);
                let r = target.infer(client.as_mut(), sent_here, d).await;
                rec.record(started, r);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Sends on schedule, whatever the server does: request i is due at
/// begin + the sum of the first i gaps. Its latency counts from that
/// intended time (wrk2's rule against coordinated omission); how late the
/// generator itself sent it is recorded separately. Pacing runs on its own
/// thread with the OS's sleep (tokio's timer ticks in whole milliseconds,
/// which would make most sends late), and hands each wake-up's due sends to
/// the runtime in one message, so high rates cost few cross-thread wakes.
async fn open(
    target: &Target,
    rec: &Arc<Recorder>,
    begin: Instant,
    stop: Instant,
    (rate, poisson): (f64, bool),
    drain: Duration,
    deadline: Option<Duration>,
) {
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Instant>>();
    let pacer = {
        let rec = rec.clone();
        std::thread::spawn(move || {
            let gap = 1.0 / rate.max(1e-3);
            let mut due = begin;
            while due < stop {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let now = Instant::now();
                let mut batch = Vec::new();
                while due <= now && due < stop {
                    if rec.in_window(due)
                        && let Ok(mut l) = rec.late.lock()
                    {
                        let _ =
                            l.record(now.saturating_duration_since(due).as_micros().max(1) as u64);
                    }
                    batch.push(due);
                    let step = if poisson {
                        -gap * (1.0 - rand::random::<f64>()).ln()
                    } else {
                        gap
                    };
                    due += Duration::from_secs_f64(step);
                }
                if due_tx.send(batch).is_err() {
                    return;
                }
            }
        })
    };
    let mut outstanding = tokio::task::JoinSet::new();
    let mut i: usize = 0;
    while let Some(batch) = due_rx.recv().await {
        for intended in batch {
            let (target_c, rec_c) = (target.clone(), rec.clone());
            let mut client = target.client(i);
            let n = i;
            i += 1;
            rec.sent.fetch_add(1, Ordering::Relaxed);
            outstanding.spawn(async move {
                let d = deadline.map(|d| intended + d);
                let r = target_c.infer(client.as_mut(), n, d).await;
                rec_c.record(intended, r);
            });
        }
        // Reap finished sends as we go so the set stays small.
        while outstanding.try_join_next().is_some() {}
    }
    let _ = pacer.join();
    // Answers still out count, stall included; give up after `drain`.
    let _ = tokio::time::timeout(drain, async {
        while outstanding.join_next().await.is_some() {}
    })
    .await;
}

async fn progress_line(rec: Arc<Recorder>, note: Option<Note>) {
    let start = Instant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = rec.done.load(Ordering::Relaxed);
        let sent = rec.sent.load(Ordering::Relaxed);
        let errors: u64 = rec
            .error_hists
            .lock()
            .map(|h| h.values().map(Histogram::len).sum())
            .unwrap_or(0);
        let phase = if Instant::now() < rec.window.0 {
            "warm-up"
        } else if Instant::now() < rec.window.1 {
            "measuring"
        } else {
            "draining"
        };
        let note = note
            .as_ref()
            .and_then(|n| n.lock().ok().map(|n| format!("  {n}")))
            .unwrap_or_default();
        eprint!(
            "\r[{:>5.1}s {phase:>9}] sent {sent}  answered {done}  in flight {}  {}/s  errors {errors}{note}   ",
            start.elapsed().as_secs_f64(),
            sent.saturating_sub(done),
            done - last
        );
        last = done;
    }
}
