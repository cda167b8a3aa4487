//! SVG charts: the latency percentile spectrum of a run, and latency
//! against throughput over a sweep.

use crate::report::Report;
use crate::sweep::SweepResult;
use plotters::prelude::*;
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// x: "nines" (0 = p0, 1 = p90, 2 = p99, 3 = p99.9 ...), y: latency in ms.
pub fn spectrum(report: &Report, path: &Path) -> Result<()> {
    let nines = |p: f64| {
        if p >= 100.0 {
            5.0
        } else {
            -(1.0 - p / 100.0).log10()
        }
    };
    let points: Vec<(f64, f64)> = report
        .spectrum
        .iter()
        .map(|&(p, us)| (nines(p).min(5.0), us as f64 / 1e3))
        .collect();
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} latency by percentile", report.model),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..5.0, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(6)
        .x_label_formatter(&|x: &f64| match x.round() as i64 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            3 => "p99.9".into(),
            4 => "p99.99".into(),
            _ => "max".into(),
        })
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    root.present()?;
    Ok(())
}

/// Each probed window: achieved throughput against p99, passing in green.
pub fn sweep(result: &SweepResult, path: &Path) -> Result<()> {
    let xmax = result
        .steps
        .iter()
        .map(|s| s.throughput_per_s)
        .fold(1.0, f64::max)
        * 1.1;
    let ymax = result
        .steps
        .iter()
        .map(|s| s.p99_us as f64 / 1e3)
        .fold(result.slo_p99_ms, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "p99 vs throughput (SLO {} ms; capacity {:.0}/s)",
                result.slo_p99_ms, result.capacity_per_s
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("throughput (requests/s)")
        .y_desc("p99 latency (ms)")
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(0.0, result.slo_p99_ms), (xmax, result.slo_p99_ms)],
        &RED,
    ))?;
    chart.draw_series(result.steps.iter().map(|s| {
        let color = if s.passed {
            GREEN.filled()
        } else {
            RED.filled()
        };
        Circle::new((s.throughput_per_s, s.p99_us as f64 / 1e3), 4, color)
    }))?;
    root.present()?;
    Ok(())
}
