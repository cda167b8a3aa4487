//! The V2 REST inference request and answer, translated to and from the
//! gRPC `ModelInferRequest` / `ModelInferResponse` that the shared code path
//! routes. JSON `data` and binary sections both become `raw_input_contents`;
//! what the answer carries as JSON or binary is chosen per output.

use super::binary::Section;
use super::errors::RestError;
use super::tensors::{self, Data};
use bytes::{BufMut, Bytes, BytesMut};
use proto::inference::infer_parameter::ParameterChoice as P;
use proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Vec<Output>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct Output {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// How the answer is to be written: which outputs go binary.
#[derive(Debug, Default)]
pub struct Presentation {
    all_binary: bool,
    binary: HashMap<String, bool>,
}

impl Presentation {
    fn binary(&self, output: &str) -> bool {
        self.binary.get(output).copied().unwrap_or(self.all_binary)
    }
}

/// What the REST layer reads itself and does not send on: the presentation
/// of tensors is this protocol's business, not the model's.
const BINARY_OUTPUT: &str = "binary_data_output";
const BINARY_SIZE: &str = "binary_data_size";
const BINARY: &str = "binary_data";

fn bad(msg: impl Into<String>) -> RestError {
    RestError::bad_request(msg)
}

fn parameter(name: &str, v: &Value) -> Result<InferParameter, RestError> {
    let choice = match v {
        Value::Bool(b) => P::BoolParam(*b),
        Value::String(s) => P::StringParam(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => P::Int64Param(i),
            (None, Some(u), _) => P::Uint64Param(u),
            (None, None, Some(f)) => P::DoubleParam(f),
            _ => {
                return Err(bad(format!(
                    "parameter '{name}' is not a number JSON can hold"
                )));
            }
        },
        _ => {
            return Err(bad(format!(
                "parameter '{name}' must be a bool, number or string, got {v}"
            )));
        }
    };
    Ok(InferParameter {
        parameter_choice: Some(choice),
    })
}

fn parameters(
    m: &Map<String, Value>,
    skip: &str,
) -> Result<HashMap<String, InferParameter>, RestError> {
    m.iter()
        .filter(|(k, _)| k.as_str() != skip)
        .map(|(k, v)| Ok((k.clone(), parameter(k, v)?)))
        .collect()
}

fn flag(m: &Map<String, Value>, key: &str, whose: &str) -> Result<Option<bool>, RestError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(format!(
            "{whose}parameter '{key}' must be a bool, got {v}"
        ))),
    }
}

/// The request `json` (with its binary section `rest`) for `model` and
/// `version` of the path, as the gRPC request the gateway routes.
pub fn request(
    model: &str,
    version: Option<&str>,
    json: &[u8],
    rest: Bytes,
) -> Result<(ModelInferRequest, Presentation), RestError> {
    let r: Request = serde_json::from_slice(json)
        .map_err(|e| bad(format!("malformed inference request JSON: {e}")))?;
    let mut section = Section::new(rest);
    let mut inputs = Vec::with_capacity(r.inputs.len());
    let mut raw = Vec::with_capacity(r.inputs.len());
    for i in r.inputs {
        let whose = format!("input '{}': ", i.name);
        if !tensors::is_datatype(&i.datatype) {
            return Err(bad(format!("{whose}unknown datatype '{}'", i.datatype)));
        }
        let bytes = match (i.parameters.get(BINARY_SIZE), &i.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| bad(format!("{whose}binary_data_size must be a byte count")))?;
                section.take(&i.name, size)?
            }
            (None, Some(data)) => {
                let count =
                    tensors::element_count(&i.shape).map_err(|e| bad(whose.clone() + &e))?;
                tensors::json_to_raw(data, &i.datatype, count)
                    .map_err(|e| bad(whose.clone() + &e))?
            }
            (Some(_), Some(_)) => {
                return Err(bad(format!("{whose}has both data and binary_data_size")));
            }
            (None, None) => {
                return Err(bad(format!("{whose}has neither data nor binary_data_size")));
            }
        };
        inputs.push(InferInputTensor {
            name: i.name,
            datatype: i.datatype,
            shape: i.shape,
            parameters: parameters(&i.parameters, BINARY_SIZE)?,
            contents: None,
        });
        raw.push(bytes);
    }
    section.finish()?;
    let mut shown = Presentation {
        all_binary: flag(&r.parameters, BINARY_OUTPUT, "")?.unwrap_or(false),
        binary: HashMap::new(),
    };
    let mut outputs = Vec::with_capacity(r.outputs.len());
    for o in r.outputs {
        if let Some(b) = flag(&o.parameters, BINARY, &format!("output '{}': ", o.name))? {
            shown.binary.insert(o.name.clone(), b);
        }
        outputs.push(InferRequestedOutputTensor {
            parameters: parameters(&o.parameters, BINARY)?,
            name: o.name,
        });
    }
    let req = ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.unwrap_or_default().to_string(),
        id: r.id.unwrap_or_default(),
        parameters: parameters(&r.parameters, BINARY_OUTPUT)?,
        inputs,
        outputs,
        raw_input_contents: raw,
    };
    Ok((req, shown))
}

/// The deadline the `timeout` parameter (microseconds, Triton's unit) sets.
pub fn timeout(req: &ModelInferRequest) -> Option<std::time::Duration> {
    let us = match req.parameters.get("timeout")?.parameter_choice.as_ref()? {
        P::Int64Param(v) => u64::try_from(*v).ok()?,
        P::Uint64Param(v) => *v,
        _ => return None,
    };
    (us > 0).then(|| std::time::Duration::from_micros(us))
}

#[derive(Serialize)]
struct Answer<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    outputs: Vec<AnswerOutput<'a>>,
}

#[derive(Serialize)]
struct AnswerOutput<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data>,
}

fn json_value(p: &InferParameter) -> Value {
    match &p.parameter_choice {
        Some(P::BoolParam(b)) => Value::Bool(*b),
        Some(P::Int64Param(i)) => Value::from(*i),
        Some(P::Uint64Param(u)) => Value::from(*u),
        Some(P::DoubleParam(f)) => Value::from(*f),
        Some(P::StringParam(s)) => Value::from(s.as_str()),
        None => Value::Null,
    }
}

/// A written answer: the body, and the JSON header's length when a binary
/// section follows it.
pub struct Body {
    pub bytes: Bytes,
    pub header_length: Option<usize>,
}

/// The answer as JSON, with the outputs asked for binary after it.
pub fn answer(resp: &ModelInferResponse, shown: &Presentation) -> Result<Body, RestError> {
    let raw_given = resp.raw_output_contents.len() == resp.outputs.len();
    let mut binary: Vec<Bytes> = Vec::new();
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    for (i, o) in resp.outputs.iter().enumerate() {
        let raw = match (raw_given, &o.contents) {
            (true, _) => resp.raw_output_contents[i].clone(),
            (false, Some(c)) => tensors::typed_to_raw(c, &o.datatype),
            (false, None) => Bytes::new(),
        };
        let mut parameters: Map<String, Value> = o
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect();
        let data = if shown.binary(&o.name) {
            parameters.insert(BINARY_SIZE.into(), Value::from(raw.len()));
            binary.push(raw);
            None
        } else {
            Some(
                tensors::raw_to_json(&raw, &o.datatype).map_err(|e| RestError {
                    status: http::StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!("output '{}': {e}", o.name),
                })?,
            )
        };
        outputs.push(AnswerOutput {
            name: &o.name,
            datatype: &o.datatype,
            shape: &o.shape,
            parameters,
            data,
        });
    }
    let answer = Answer {
        model_name: &resp.model_name,
        model_version: &resp.model_version,
        id: &resp.id,
        parameters: resp
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
        outputs,
    };
    let json = serde_json::to_vec(&answer).map_err(|e| RestError {
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("writing the answer: {e}"),
    })?;
    if binary.is_empty() {
        return Ok(Body {
            bytes: json.into(),
            header_length: None,
        });
    }
    let total = json.len() + binary.iter().map(Bytes::len).sum::<usize>();
    let mut out = BytesMut::with_capacity(total);
    let header_length = json.len();
    out.put_slice(&json);
    binary.iter().for_each(|b| out.put_slice(b));
    Ok(Body {
        bytes: out.freeze(),
        header_length: Some(header_length),
    })
}

#[cfg(test)]
mod tests;
