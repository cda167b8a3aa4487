//! The committed `models/*.expected.json` files: real input rows and the
//! outputs ONNX Runtime gave for them. Tests across crates compare against
//! these, so the loader lives with the engine.

use crate::{DataType, Tensor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
pub struct FixtureTensor {
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Vec<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub model: String,
    pub inputs: BTreeMap<String, FixtureTensor>,
    pub outputs: BTreeMap<String, FixtureTensor>,
}

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

impl Fixture {
    pub fn load(name: &str) -> Result<Fixture, String> {
        let path = models_dir().join(format!("{name}.expected.json"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn model_path(&self) -> PathBuf {
        models_dir().join(&self.model)
    }

    /// Rows `from..to` of every input, as engine tensors.
    pub fn input_rows(&self, from: usize, to: usize) -> Vec<(String, Tensor)> {
        self.inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.rows(from, to)))
            .collect()
    }
}

impl FixtureTensor {
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product::<i64>() as usize
    }

    pub fn rows(&self, from: usize, to: usize) -> Tensor {
        let n = self.row_len();
        let values = &self.data[from * n..to * n];
        let mut shape = self.shape.clone();
        shape[0] = (to - from) as i64;
        let dtype = DataType::from_v2_name(&self.datatype).unwrap_or(DataType::Fp32);
        let data: Vec<u8> = match dtype {
            DataType::Int64 => values
                .iter()
                .flat_map(|&v| (v as i64).to_le_bytes())
                .collect(),
            DataType::Fp64 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
            _ => values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
        };
        Tensor {
            dtype,
            shape,
            data: data.into(),
        }
    }
}

/// Compares an output tensor with the expected rows, within `tol`.
pub fn assert_close(
    name: &str,
    got: &Tensor,
    want: &FixtureTensor,
    from: usize,
    to: usize,
    tol: f64,
) {
    let expected = want.rows(from, to);
    assert_eq!(got.shape, expected.shape, "output {name}: shape");
    assert_eq!(got.dtype, expected.dtype, "output {name}: dtype");
    let (g, e): (Vec<f64>, Vec<f64>) = match got.dtype {
        DataType::Int64 => (
            got.to_vec::<i64>().iter().map(|&v| v as f64).collect(),
            expected.to_vec::<i64>().iter().map(|&v| v as f64).collect(),
        ),
        _ => (
            got.to_vec::<f32>().iter().map(|&v| f64::from(v)).collect(),
            expected
                .to_vec::<f32>()
                .iter()
                .map(|&v| f64::from(v))
                .collect(),
        ),
    };
    for (i, (a, b)) in g.iter().zip(&e).enumerate() {
        assert!(
            (a - b).abs() <= tol,
            "output {name}[{i}]: got {a}, expected {b}"
        );
    }
}
