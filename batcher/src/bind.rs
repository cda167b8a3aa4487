//! Binding a job's input columns to its model's inputs, by name or index.

use engine::ModelSignature;
use job_queue::Binding;

/// Column indices for each model input. With no bindings, a model with one
/// input takes every column in order.
pub fn bind(
    sig: &ModelSignature,
    columns: &[String],
    bindings: &[Binding],
) -> Result<Vec<Vec<usize>>, String> {
    let mut out = Vec::new();
    if bindings.is_empty() {
        if sig.inputs.len() != 1 {
            return Err(format!(
                "the model has {} inputs ({}); bind columns to each",
                sig.inputs.len(),
                sig.inputs
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push((0..columns.len()).collect::<Vec<_>>());
    } else {
        for t in &sig.inputs {
            let b = bindings
                .iter()
                .find(|b| b.input == t.name)
                .ok_or_else(|| format!("no columns bound to model input '{}'", t.name))?;
            let idx = b
                .columns
                .iter()
                .map(|c| column_index(columns, c))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(idx);
        }
        if let Some(b) = bindings
            .iter()
            .find(|b| !sig.inputs.iter().any(|t| t.name == b.input))
        {
            return Err(format!("the model has no input '{}'", b.input));
        }
    }
    for (t, cols) in sig.inputs.iter().zip(&out) {
        let row = t.dims.get(1..).unwrap_or(&[]);
        if row.iter().all(|&d| d > 0) {
            let width: i64 = row.iter().product();
            if width != cols.len() as i64 {
                return Err(format!(
                    "model input '{}' takes {width} values per row; {} columns are bound to it",
                    t.name,
                    cols.len()
                ));
            }
        }
    }
    Ok(out)
}

fn column_index(columns: &[String], c: &str) -> Result<usize, String> {
    if let Some(i) = columns.iter().position(|n| n == c) {
        return Ok(i);
    }
    match c.parse::<usize>() {
        Ok(i) if i < columns.len() => Ok(i),
        _ => Err(format!(
            "no column '{c}' in the input (it has {} columns)",
            columns.len()
        )),
    }
}
