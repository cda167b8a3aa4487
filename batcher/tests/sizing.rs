//! `auto` mini-batches on the real conv net with ONNX Runtime: the chosen
//! batch's measured peak lands within 85-100 % of a 64 MiB budget. One test
//! in its own binary, because the engine's memory meter is process-wide.

use batcher::sizing::{fit_batch, measure};
use engine::fixtures::models_dir;
use engine::{BackendFactory, DataType, EngineError, OrtFactory, OrtOptions, cpu_meter};

#[test]
fn auto_batch_peaks_within_85_to_100_percent_of_the_budget_and_halving_recovers() {
    let factory = OrtFactory::new(
        models_dir().join("convnet.onnx"),
        OrtOptions {
            metered: true,
            ..OrtOptions::default()
        },
    )
    .unwrap();
    let mut backend = factory.create().unwrap();
    let meter = cpu_meter().unwrap();
    let shapes = vec![(DataType::Fp32, vec![3, 32, 32])];
    const BUDGET: u64 = 64 << 20;
    let fit = fit_batch(backend.as_mut(), meter, &shapes, BUDGET, 0.9, 65_536).unwrap();
    assert!(fit.points.len() >= 3, "{fit}");
    assert!(fit.per_row > 0.0, "{fit}");
    // Measured again, independently of the fit.
    let peak = measure(backend.as_mut(), meter, &shapes, fit.batch).unwrap();
    let share = peak as f64 / BUDGET as f64;
    assert!(
        (0.85..=1.0).contains(&share),
        "peak {peak} is {share:.3} of the budget; {fit}"
    );
    // One row more than twice the batch cannot fit: the fit is not loose.
    let over = measure(backend.as_mut(), meter, &shapes, fit.batch * 2 + 1).unwrap();
    assert!(over > BUDGET, "{over}");

    // A device with less memory than measured: the run fails as out of
    // memory, and half the batch fits.
    meter.set_limit(Some(peak * 3 / 4));
    let r = measure(backend.as_mut(), meter, &shapes, fit.batch);
    assert!(matches!(r, Err(EngineError::OutOfMemory(_))), "{r:?}");
    let half = measure(backend.as_mut(), meter, &shapes, fit.batch / 2).unwrap();
    assert!(half <= peak * 3 / 4, "{half}");
    meter.set_limit(None);
}
