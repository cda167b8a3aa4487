//! The metered CPU allocator over real ONNX Runtime sessions of the committed
//! models. The meter is process-wide, so every test here holds `METER_LOCK`
//! while it runs anything that could move it.

use engine::fixtures::models_dir;
use engine::{
    Backend, BackendFactory, DataType, EngineError, MemoryMeter, OrtFactory, OrtOptions, Tensor,
    cpu_meter,
};
use std::sync::{Mutex, MutexGuard};

static METER_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    // One failed test poisons the lock; the others should still report.
    METER_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn backend(model: &str, metered: bool) -> Box<dyn Backend> {
    let options = OrtOptions {
        metered,
        ..OrtOptions::default()
    };
    OrtFactory::new(models_dir().join(model), options)
        .expect("load model")
        .create()
        .expect("create instance")
}

/// A batch of `rows` for the model's inputs (all FP32 in these models).
fn batch(b: &dyn Backend, rows: usize) -> Vec<Tensor> {
    b.signature()
        .inputs
        .iter()
        .map(|spec| {
            assert_eq!(spec.dtype, DataType::Fp32, "{}", spec.name);
            let mut shape = spec.dims.clone();
            shape[0] = rows as i64;
            let n = Tensor::element_count(&shape);
            let values: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 8.0).collect();
            Tensor::from_f32(shape, &values)
        })
        .collect()
}

/// Bytes one run of `rows` takes above what the session holds at rest.
fn run_peak(meter: &MemoryMeter, b: &mut dyn Backend, rows: usize) -> u64 {
    let inputs = batch(b, rows);
    let resting = meter.in_use();
    meter.reset_peak();
    let out = b.run(inputs).expect("run");
    assert_eq!(out[0].rows(), rows);
    assert_eq!(meter.in_use(), resting, "the run kept buffers");
    assert!(!meter.refused());
    meter.peak() - resting
}

#[test]
fn metered_peak_grows_linearly_with_the_batch() {
    let _g = lock();
    let meter = cpu_meter().unwrap();
    meter.set_limit(None);
    for (model, small, large) in [("digits_mlp.onnx", 256, 4096), ("convnet.onnx", 16, 256)] {
        let before = meter.in_use();
        let mut b = backend(model, true);
        let small_peak = run_peak(meter, b.as_mut(), small);
        let large_peak = run_peak(meter, b.as_mut(), large);
        assert!(small_peak > 0, "{model}: nothing went through the meter");
        assert!(
            large_peak > small_peak,
            "{model}: {large_peak} <= {small_peak}"
        );
        let ratio = large_peak as f64 / small_peak as f64;
        let rows = (large / small) as f64;
        assert!(
            (ratio - rows).abs() < 0.1 * rows,
            "{model}: {small} rows peak {small_peak} B, {large} rows peak {large_peak} B"
        );
        // Without memory patterns every run of a shape allocates alike, so
        // a warm-up measurement holds for later runs.
        assert_eq!(run_peak(meter, b.as_mut(), large), large_peak, "{model}");
        drop(b);
        assert_eq!(meter.in_use(), before, "{model}: the session kept buffers");
    }
}

#[test]
fn over_the_limit_is_out_of_memory_and_the_session_recovers() {
    let _g = lock();
    let meter = cpu_meter().unwrap();
    let mut b = backend("digits_mlp.onnx", true);
    let rows = 4096;
    let need = run_peak(meter, b.as_mut(), rows);

    meter.set_limit(Some(meter.in_use() + need / 2));
    meter.reset_peak();
    let refused = b.run(batch(b.as_ref(), rows));
    let flagged = meter.refused();
    meter.set_limit(None);
    match refused {
        Err(EngineError::OutOfMemory(m)) => assert!(m.contains("limit"), "{m}"),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert!(flagged);
    meter.reset_peak();
    assert!(!meter.refused());

    // The same session runs the batch again, and gets what an unmetered one does.
    let out = b.run(batch(b.as_ref(), rows)).expect("run after a refusal");
    let reference = backend("digits_mlp.onnx", false)
        .run(batch(b.as_ref(), rows))
        .unwrap();
    assert_eq!(out, reference);
    assert!(!meter.refused());
}

#[test]
fn a_limit_under_the_batch_fails_convnet_too() {
    let _g = lock();
    let meter = cpu_meter().unwrap();
    let mut b = backend("convnet.onnx", true);
    let need = run_peak(meter, b.as_mut(), 8);
    meter.set_limit(Some(meter.in_use() + need / 4));
    let refused = b.run(batch(b.as_ref(), 8));
    meter.set_limit(None);
    assert!(
        matches!(refused, Err(EngineError::OutOfMemory(_))),
        "{refused:?}"
    );
    // Half the batch fits where the whole did not.
    meter.set_limit(Some(meter.in_use() + need / 2 + need / 8));
    let half = b.run(batch(b.as_ref(), 4));
    meter.set_limit(None);
    assert_eq!(half.expect("half the batch")[0].rows(), 4);
}

#[test]
fn unmetered_sessions_leave_the_meter_alone() {
    let _g = lock();
    // Registered, so an unmetered session could pick the allocator up.
    let meter = cpu_meter().unwrap();
    let before = meter.in_use();
    meter.reset_peak();
    for model in ["digits_mlp.onnx", "convnet.onnx"] {
        let mut b = backend(model, false);
        let rows = if model == "convnet.onnx" { 64 } else { 4096 };
        b.run(batch(b.as_ref(), rows)).unwrap();
    }
    assert_eq!(meter.in_use(), before);
    assert_eq!(meter.peak(), before);
}
