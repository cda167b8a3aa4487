//! Traffic split between deployments. Smooth weighted round-robin (as in
//! nginx) rather than random draws: over any 100 requests a 90/10 split
//! sends exactly 90 and 10, so small samples match the configured weights.

use std::sync::Mutex;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum WeightError {
    #[error("traffic weights sum to {0}; they must sum to 100")]
    BadSum(u64),
    #[error("traffic names unknown deployment '{0}'")]
    UnknownDeployment(String),
}

/// Checks a traffic map against an endpoint's deployments. An endpoint
/// with no deployments has an empty map.
pub fn validate<'a>(
    traffic: impl IntoIterator<Item = (&'a String, &'a u32)>,
    deployments: &[&str],
) -> Result<(), WeightError> {
    let mut sum: u64 = 0;
    let mut any = false;
    for (name, w) in traffic {
        if !deployments.contains(&name.as_str()) {
            return Err(WeightError::UnknownDeployment(name.clone()));
        }
        sum += u64::from(*w);
        any = true;
    }
    if any && sum != 100 {
        return Err(WeightError::BadSum(sum));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Weighted {
    names: Vec<String>,
    weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
}

impl Weighted {
    /// Deployments with weight 0 are kept out of the rotation.
    pub fn new(mut entries: Vec<(String, u32)>) -> Self {
        entries.retain(|(_, w)| *w > 0);
        entries.sort();
        let weights: Vec<i64> = entries.iter().map(|(_, w)| i64::from(*w)).collect();
        Weighted {
            current: Mutex::new(vec![0; weights.len()]),
            names: entries.into_iter().map(|(n, _)| n).collect(),
            weights,
        }
    }

    /// (deployment, weight) in rotation, sorted.
    pub fn entries(&self) -> Vec<(&str, i64)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.weights.iter().copied())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn next(&self) -> Option<&str> {
        let total: i64 = self.weights.iter().sum();
        let mut cur = self.current.lock().ok()?;
        let mut best = 0;
        for i in 0..self.weights.len() {
            cur[i] += self.weights[i];
            if cur[i] > cur[best] {
                best = i;
            }
        }
        *cur.get_mut(best)? -= total;
        self.names.get(best).map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
