//! Baseline for BENCHMARKS.md: the model run in-process by ONNX Runtime with
//! no server, no scheduler: `instances` threads, each with its own session,
//! running batches of `batch` random FP32 rows back to back.
//!
//! cargo run --release -p engine --example raw_ort -- MODEL BATCH INSTANCES SECONDS [DEVICE]
//!
//! DEVICE is `cpu` (the default) or `cuda:N`, as `--device` takes it; a
//! `.pt` model runs through libtorch in builds with the `torch` feature.

use engine::{DeviceSpec, OrtOptions, Tensor};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .ok_or("usage: raw_ort MODEL BATCH INSTANCES SECONDS [DEVICE]")?;
    let batch: i64 = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let instances: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let seconds: f64 = args.get(4).map_or(Ok(5.0), |s| s.parse())?;
    let device = args
        .get(5)
        .map_or("cpu", String::as_str)
        .parse::<DeviceSpec>()?
        .resolve_one()?;
    let options = OrtOptions {
        device,
        ..OrtOptions::default()
    };
    let factory = engine::open_model(std::path::Path::new(model), &options)?;
    let spec = factory.signature().inputs[0].clone();
    let mut shape = spec.dims.clone();
    shape[0] = batch;
    let n = Tensor::element_count(&shape);
    let values: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 17.0).collect();
    let input = Tensor::from_f32(shape, &values);
    let rows = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..instances {
        let mut backend = factory.create()?;
        let (input, rows, measuring, stop) =
            (input.clone(), rows.clone(), measuring.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                backend.run(vec![input.clone()]).expect("run");
                if measuring.load(Ordering::Relaxed) {
                    rows.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let done = rows.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "{{\"model\": \"{model}\", \"device\": \"{device}\", \"batch\": {batch}, \"instances\": {instances}, \"rows_per_s\": {:.1}}}",
        done as f64 / elapsed
    );
    Ok(())
}
