//! The checks a job spec passes before it is queued, in the contract crate
//! so that what the gateway accepts and what a batcher can run are decided
//! in one place (and fuzzed there, in `check/tests.rs`).

use crate::{Format, JobSpec, REMOTE_SCHEMES, scheme_supported};
use std::path::Path;

/// Why a spec is refused; the gateway answers it as INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn bad<T>(msg: String) -> Result<T, SpecError> {
    Err(SpecError(msg))
}

/// A local path, `file://`, or a scheme this build opens.
fn check_location(what: &str, loc: &str) -> Result<(), SpecError> {
    if loc.trim().is_empty() {
        return bad(format!("{what} is empty"));
    }
    match loc.split_once("://") {
        None => Ok(()),
        Some((scheme, _)) if scheme_supported(scheme) => Ok(()),
        Some((scheme, _)) => bad(format!(
            "{what} '{loc}': scheme '{scheme}' is not supported by this build (local paths, file:// and {}:// are)",
            REMOTE_SCHEMES.join("://, ")
        )),
    }
}

impl JobSpec {
    /// Everything about the spec that needs no control plane and no file:
    /// locations, formats, limits and bindings.
    pub fn check(&self) -> Result<(), SpecError> {
        check_location("input", &self.input)?;
        check_location("output", &self.output)?;
        if self.input.trim_end_matches('/') == self.output.trim_end_matches('/') {
            return bad("output must differ from input".into());
        }
        let input_path = Path::new(&self.input);
        if self.input_format.is_none()
            && input_path.extension().is_some()
            && Format::from_path(input_path).is_none()
        {
            return bad(format!(
                "input '{}': cannot tell the format from its extension; set input_format (csv, jsonl or parquet)",
                self.input
            ));
        }
        if self.error_threshold < -1 {
            return bad(format!(
                "error_threshold {}: expected -1 (no limit) or a number of rows",
                self.error_threshold
            ));
        }
        if self.max_retries > 100 {
            return bad(format!("max_retries {}: at most 100", self.max_retries));
        }
        if self
            .bindings
            .iter()
            .any(|b| b.input.is_empty() || b.columns.is_empty())
        {
            return bad("each binding names a model input and at least one column".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
