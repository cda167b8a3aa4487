//! Request bodies for `invoke --file`: a list of rows, V2 JSON
//! (`{"inputs": [...]}`), or one of the models' `*.expected.json` fixtures.

use anyhow::{Context, Result, bail};
use client::Client;
use client::proto::inference::model_infer_request::InferInputTensor;
use client::proto::inference::{InferTensorContents, ModelInferRequest};
use serde_json::Value;

pub async fn request(c: &Client, endpoint: &str, json: &Value) -> Result<ModelInferRequest> {
    if let Some(rows) = json.as_array() {
        let rows: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| {
                r.as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_f64)
                            .map(|v| v as f32)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let meta = c.metadata(endpoint).await?;
        let input = meta
            .inputs
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_else(|| "input".into());
        return Ok(client::f32_request(endpoint, &input, &rows, false)?);
    }
    let inputs = json
        .get("inputs")
        .context("expected a list of rows or an object with \"inputs\"")?;
    // V2 JSON has a list of tensors; the fixtures a map name -> tensor.
    let tensors: Vec<(String, &Value)> = match inputs {
        Value::Array(list) => list
            .iter()
            .map(|t| {
                (
                    t.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    t,
                )
            })
            .collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        _ => bail!("\"inputs\" must be a list or an object"),
    };
    let mut req = ModelInferRequest {
        model_name: endpoint.into(),
        ..Default::default()
    };
    for (name, t) in tensors {
        let datatype = t
            .get("datatype")
            .and_then(Value::as_str)
            .unwrap_or("FP32")
            .to_string();
        let shape: Vec<i64> = t
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let data: Vec<f64> = t
            .get("data")
            .and_then(Value::as_array)
            .map(|d| d.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let mut contents = InferTensorContents::default();
        match datatype.as_str() {
            "FP32" => contents.fp32_contents = data.iter().map(|&v| v as f32).collect(),
            "FP64" => contents.fp64_contents = data,
            "INT64" => contents.int64_contents = data.iter().map(|&v| v as i64).collect(),
            "INT32" => contents.int_contents = data.iter().map(|&v| v as i32).collect(),
            other => bail!("input '{name}': datatype {other} is not supported by invoke --file"),
        }
        req.inputs.push(InferInputTensor {
            name,
            datatype,
            shape,
            contents: Some(contents),
            ..Default::default()
        });
    }
    Ok(req)
}
