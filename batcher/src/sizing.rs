//! `mini_batch_size: auto`: the largest batch whose measured peak memory
//! stays within a share of the device's budget. Memory is measured, not
//! guessed: runs of growing size are made on the real model, their peaks read
//! from the engine's meter (every byte ONNX Runtime allocates, plus the
//! input batch we hand it), and a line bytes = fixed + per_row × n fitted.

use engine::{Backend, EngineError, MemoryMeter, Tensor};
use std::fmt;

/// The fit and the choice it led to; shown in the job record and the logs.
#[derive(Debug, Clone)]
pub struct Fit {
    pub batch: usize,
    pub fixed: f64,
    pub per_row: f64,
    pub budget: u64,
    pub target: u64,
    /// Peak measured at `measured_batch`, the size the fit chose.
    pub peak: u64,
    pub measured_batch: usize,
    /// (rows, peak bytes) of the warm-up runs.
    pub points: Vec<(usize, u64)>,
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch {}", self.batch)?;
        if self.batch != self.measured_batch {
            write!(
                f,
                " (lowered from {} after an allocation failure)",
                self.measured_batch
            )?;
        }
        write!(
            f,
            " from bytes = {:.0} + {:.1} x rows over {} runs; peak {} at {} of budget {} (target {})",
            self.fixed,
            self.per_row,
            self.points.len(),
            self.peak,
            self.measured_batch,
            self.budget,
            self.target
        )
    }
}

/// Zero-filled inputs of `rows` rows. Values do not change how much memory
/// a dense model needs, only shapes do.
pub fn zero_inputs(row_shapes: &[(engine::DataType, Vec<i64>)], rows: usize) -> Vec<Tensor> {
    row_shapes
        .iter()
        .map(|(dtype, row)| {
            let mut shape = vec![rows as i64];
            shape.extend(row);
            let bytes = Tensor::element_count(&shape) * dtype.size();
            Tensor {
                dtype: *dtype,
                shape,
                data: bytes::Bytes::from(vec![0u8; bytes]),
            }
        })
        .collect()
}

/// Peak bytes of one run at `rows`: the engine's allocations (weights
/// included, as they share the device) plus the input batch.
pub fn measure(
    backend: &mut dyn Backend,
    meter: &MemoryMeter,
    row_shapes: &[(engine::DataType, Vec<i64>)],
    rows: usize,
) -> Result<u64, EngineError> {
    let inputs = zero_inputs(row_shapes, rows);
    let input_bytes: u64 = inputs.iter().map(|t| t.data.len() as u64).sum();
    meter.reset_peak();
    backend.run(inputs)?;
    Ok(meter.peak() + input_bytes)
}

/// Least squares over the larger half of the points: small runs are
/// dominated by fixed costs and allocator rounding.
fn fit_line(points: &[(usize, u64)]) -> (f64, f64) {
    let from = points.len() / 2;
    let pts = if points.len() - from >= 2 {
        &points[from..]
    } else {
        points
    };
    let n = pts.len() as f64;
    let (sx, sy) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x as f64, b + y as f64));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = pts.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
        let dx = x as f64 - mx;
        (a + dx * (y as f64 - my), b + dx * dx)
    });
    let per_row = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
    (my - per_row * mx, per_row)
}

pub fn fit_batch(
    backend: &mut dyn Backend,
    meter: &MemoryMeter,
    row_shapes: &[(engine::DataType, Vec<i64>)],
    budget: u64,
    utilisation: f64,
    max_batch: usize,
) -> Result<Fit, EngineError> {
    let target = (budget as f64 * utilisation.clamp(0.05, 1.0)) as u64;
    let mut points = Vec::new();
    let mut rows = 16usize;
    // Grow until a run passes the target, the cap is reached, or the device
    // refuses an allocation (then fit what was seen).
    loop {
        match measure(backend, meter, row_shapes, rows) {
            Ok(peak) => points.push((rows, peak)),
            Err(EngineError::OutOfMemory(_)) if !points.is_empty() => break,
            Err(e) => return Err(e),
        }
        let last = points.last().map_or(0, |p| p.1);
        if last > target || rows >= max_batch {
            break;
        }
        rows = (rows * 2).min(max_batch);
    }
    let (fixed, per_row) = fit_line(&points);
    let mut batch = if per_row > 0.0 {
        (((target as f64 - fixed) / per_row).floor().max(1.0) as usize).min(max_batch)
    } else {
        max_batch
    };
    // Check the choice on the model itself; shrink in proportion if the line
    // was optimistic. The size returned is always one that was measured.
    let mut peak = None;
    for _ in 0..8 {
        match measure(backend, meter, row_shapes, batch) {
            Ok(p) if p <= budget || batch == 1 => {
                peak = Some(p);
                break;
            }
            Ok(p) => {
                let scaled = (batch as f64 * target as f64 / p as f64) as usize;
                batch = scaled.clamp(1, batch - 1);
            }
            Err(EngineError::OutOfMemory(_)) if batch > 1 => batch /= 2,
            Err(e) => return Err(e),
        }
    }
    let peak = peak.ok_or_else(|| {
        EngineError::OutOfMemory(format!(
            "no batch size was found whose peak fits the budget of {budget} bytes"
        ))
    })?;
    Ok(Fit {
        batch,
        measured_batch: batch,
        fixed,
        per_row,
        budget,
        target,
        peak,
        points,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fit_line_recovers_a_line() {
        let pts: Vec<(usize, u64)> = [16, 32, 64, 128, 256]
            .iter()
            .map(|&n| (n, 1000 + 50 * n as u64))
            .collect();
        let (fixed, per_row) = super::fit_line(&pts);
        assert!((per_row - 50.0).abs() < 1e-6, "{per_row}");
        assert!((fixed - 1000.0).abs() < 1e-3, "{fixed}");
    }
}
