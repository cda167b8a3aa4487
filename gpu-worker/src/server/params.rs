//! Triton's reserved request parameters, checked as strictly as Triton
//! does: a reserved name with a value of the wrong kind is the client's
//! mistake (INVALID_ARGUMENT naming the parameter), never silently read as
//! "not set". Other parameters pass through unread, as Triton passes them to
//! the backend.

use engine::EngineError;
use proto::inference::infer_parameter::ParameterChoice as P;
use proto::inference::{InferParameter, ModelInferRequest};
use std::collections::HashMap;
use std::time::Duration;

/// What the reserved parameters ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reserved {
    /// `timeout` in microseconds; 0 (Triton's "none") is `None`.
    pub timeout: Option<Duration>,
    /// `priority`; 0 is the default level, and levels past the scheduler's
    /// last are its default too (Triton's rule), so large values saturate.
    pub priority: u32,
}

fn kind(p: Option<&P>) -> &'static str {
    match p {
        Some(P::BoolParam(_)) => "a bool_param",
        Some(P::Int64Param(_)) => "an int64_param",
        Some(P::StringParam(_)) => "a string_param",
        Some(P::DoubleParam(_)) => "a double_param",
        Some(P::Uint64Param(_)) => "a uint64_param",
        None => "no value",
    }
}

/// A non-negative integer (int64_param or uint64_param), or a refusal
/// naming `key` and what was sent.
fn non_negative(
    params: &HashMap<String, InferParameter>,
    key: &str,
) -> Result<Option<u64>, EngineError> {
    let Some(p) = params.get(key) else {
        return Ok(None);
    };
    match p.parameter_choice.as_ref() {
        Some(P::Uint64Param(v)) => Ok(Some(*v)),
        Some(P::Int64Param(v)) => u64::try_from(*v).map(Some).map_err(|_| {
            EngineError::InvalidArgument(format!("parameter '{key}' must not be negative, got {v}"))
        }),
        other => Err(EngineError::InvalidArgument(format!(
            "parameter '{key}' must be an integer (int64_param or uint64_param), got {}",
            kind(other)
        ))),
    }
}

/// Refuses a value for `key` that is not a bool_param.
fn bool_only(
    params: &HashMap<String, InferParameter>,
    key: &str,
    whose: &str,
) -> Result<(), EngineError> {
    match params.get(key).map(|p| p.parameter_choice.as_ref()) {
        None | Some(Some(P::BoolParam(_))) => Ok(()),
        Some(other) => Err(EngineError::InvalidArgument(format!(
            "{whose}parameter '{key}' must be a bool (bool_param), got {}",
            kind(other)
        ))),
    }
}

/// Checks the request's reserved parameters (and each requested output's
/// `binary_data`) and reads what they ask for.
pub fn reserved(req: &ModelInferRequest) -> Result<Reserved, EngineError> {
    let timeout = non_negative(&req.parameters, "timeout")?
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
    let priority = non_negative(&req.parameters, "priority")?
        .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX));
    bool_only(&req.parameters, "binary_data_output", "")?;
    for o in &req.outputs {
        bool_only(
            &o.parameters,
            "binary_data",
            &format!("output '{}': ", o.name),
        )?;
    }
    Ok(Reserved { timeout, priority })
}
