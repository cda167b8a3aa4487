//! The conv net as a TorchScript file, for the tests of the `torch`
//! feature: its weights are read out of `convnet.onnx` and the same
//! network is built with tch and traced, so the two backends check each
//! other. No Python torch: tch writes the file.

use crate::fixtures::Fixture;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{CModule, Kind, Tensor};

/// The few fields of ONNX's protobuf that hold initializers.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

fn onnx_weights(path: &Path) -> HashMap<String, Tensor> {
    use prost::Message;
    let model = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    model
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .map(|t| {
            let raw = if t.raw_data.is_empty() {
                t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                t.raw_data
            };
            (t.name, Tensor::from_data_size(&raw, &t.dims, Kind::Float))
        })
        .collect()
}

/// convnet.onnx as tch operations (see models/make_models.py).
fn convnet(w: &HashMap<String, Tensor>, x: &Tensor) -> Tensor {
    let conv = |x: &Tensor, name: &str| {
        x.conv2d(
            &w[&format!("{name}.w")],
            Some(&w[&format!("{name}.b")]),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        )
        .relu()
    };
    let x = conv(x, "conv1");
    let x = conv(&x, "conv2").max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
    let x = conv(&x, "conv3").mean_dim(&[2i64, 3][..], false, Kind::Float);
    x.linear(&w["fc.w"], Some(&w["fc.b"]))
}

/// A folder removed when dropped.
pub struct Dir(PathBuf);
impl Dir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
pub fn tempdir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("sb-torch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// Traces the conv net into `dir/convnet.pt` with its sidecar.
pub fn traced_convnet(dir: &Path, sidecar: &str) -> PathBuf {
    let fixture = Fixture::load("convnet").unwrap();
    let weights = onnx_weights(&fixture.model_path());
    let example = Tensor::zeros([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let module = CModule::create_by_tracing("convnet", "forward", &[example], &mut |xs| {
        vec![convnet(&weights, &xs[0])]
    })
    .unwrap();
    let path = dir.join("convnet.pt");
    module.save(&path).unwrap();
    std::fs::write(crate::sidecar_path(&path), sidecar).unwrap();
    path
}
