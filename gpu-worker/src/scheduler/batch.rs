//! Stacking requests into one batch and splitting the answers back. Pure
//! functions over byte buffers: no locks, no async.

use bytes::{Bytes, BytesMut};
use engine::{EngineError, ModelSignature, Tensor};

/// Whether two requests may share a batch: same dtypes and the same shape in
/// every dimension but the first.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.dtype == y.dtype && x.shape.get(1..) == y.shape.get(1..))
}

/// Concatenates the requests' inputs along dim 0. One request passes through
/// without a copy.
pub fn concat(requests: &[&[Tensor]]) -> Vec<Tensor> {
    if let [only] = requests {
        return only.to_vec();
    }
    let first = requests[0];
    (0..first.len())
        .map(|i| {
            let rows: i64 = requests.iter().map(|r| r[i].shape[0]).sum();
            let mut data = BytesMut::with_capacity(requests.iter().map(|r| r[i].data.len()).sum());
            for r in requests {
                data.extend_from_slice(&r[i].data);
            }
            let mut shape = first[i].shape.clone();
            shape[0] = rows;
            Tensor {
                dtype: first[i].dtype,
                shape,
                data: data.freeze(),
            }
        })
        .collect()
}

/// Splits batch outputs into one output set per request, by each request's
/// row count. Slicing `Bytes` shares the buffer instead of copying it.
pub fn split(outputs: Vec<Tensor>, rows: &[usize]) -> Result<Vec<Vec<Tensor>>, EngineError> {
    if let [_] = rows {
        return Ok(vec![outputs]);
    }
    let total: usize = rows.iter().sum();
    let mut per_request: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as i64) {
            return Err(EngineError::Internal(format!(
                "output has shape {:?}; expected {total} rows to split across the batch",
                out.shape
            )));
        }
        let row_bytes = out.row_bytes();
        let mut offset = 0;
        for (slot, &n) in per_request.iter_mut().zip(rows) {
            let mut shape = out.shape.clone();
            shape[0] = n as i64;
            let data: Bytes = out.data.slice(offset..offset + n * row_bytes);
            offset += n * row_bytes;
            slot.push(Tensor {
                dtype: out.dtype,
                shape,
                data,
            });
        }
    }
    Ok(per_request)
}

/// Largest input tensor accepted (far above any message size limit).
const MAX_TENSOR_BYTES: usize = 1 << 34;

/// Checks a request against the model and puts its inputs in signature
/// order. Every refusal names the input and what was expected.
pub fn validate(
    sig: &ModelSignature,
    max_batch_size: usize,
    mut inputs: Vec<(String, Tensor)>,
) -> Result<Vec<Tensor>, EngineError> {
    let bad = |m: String| Err(EngineError::InvalidArgument(m));
    if inputs.len() != sig.inputs.len() {
        let expected: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
        let got: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        return bad(format!("expected inputs {expected:?}, got {got:?}"));
    }
    let mut ordered = Vec::with_capacity(sig.inputs.len());
    for spec in &sig.inputs {
        let Some(pos) = inputs.iter().position(|(n, _)| *n == spec.name) else {
            let got: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
            return bad(format!(
                "missing input '{}'; got unknown input(s) {got:?}",
                spec.name
            ));
        };
        let (name, t) = inputs.swap_remove(pos);
        if t.dtype != spec.dtype {
            return bad(format!(
                "input '{name}': expected datatype {}, got {}",
                spec.dtype, t.dtype
            ));
        }
        if t.shape.len() != spec.dims.len()
            || t.shape
                .iter()
                .zip(&spec.dims)
                .any(|(&d, &s)| d < 0 || (s >= 0 && d != s))
        {
            return bad(format!(
                "input '{name}': expected shape {:?} (-1 = any), got {:?}",
                spec.dims, t.shape
            ));
        }
        if sig.batched {
            if t.shape[0] == 0 {
                return bad(format!("input '{name}': empty batch (dim 0 is 0)"));
            }
            if max_batch_size > 0 && t.shape[0] as usize > max_batch_size {
                return bad(format!(
                    "input '{name}': batch of {} exceeds max_batch_size {max_batch_size}",
                    t.shape[0]
                ));
            }
        }
        // Checked: a hostile shape must not wrap around to a small size.
        let want = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d as usize))
            .filter(|&n| n <= MAX_TENSOR_BYTES);
        let Some(want) = want else {
            return bad(format!("input '{name}': shape {:?} is too large", t.shape));
        };
        if want == 0 {
            return bad(format!(
                "input '{name}': empty tensor of shape {:?}",
                t.shape
            ));
        }
        if t.data.len() != want {
            return bad(format!(
                "input '{name}': shape {:?} of {} needs {want} bytes, got {}",
                t.shape,
                t.dtype,
                t.data.len()
            ));
        }
        ordered.push(t);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{DataType, TensorSpec};

    fn t(rows: i64, v: &[f32]) -> Tensor {
        Tensor::from_f32(vec![rows, 2], v)
    }

    #[test]
    fn concat_then_split_round_trips() {
        let a = vec![t(1, &[1., 2.])];
        let b = vec![t(2, &[3., 4., 5., 6.])];
        let batch = concat(&[&a, &b]);
        assert_eq!(batch[0].shape, vec![3, 2]);
        assert_eq!(batch[0].to_vec::<f32>(), vec![1., 2., 3., 4., 5., 6.]);
        let parts = split(batch, &[1, 2]).unwrap();
        assert_eq!(parts[0][0], a[0]);
        assert_eq!(parts[1][0], b[0]);
    }

    #[test]
    fn split_rejects_wrong_row_count() {
        assert!(split(vec![t(2, &[0.; 4])], &[1, 2]).is_err());
    }

    #[test]
    fn compatibility_ignores_only_dim0() {
        assert!(compatible(&[t(1, &[0.; 2])], &[t(3, &[0.; 6])]));
        let other = Tensor::from_f32(vec![1, 3], &[0.; 3]);
        assert!(!compatible(&[t(1, &[0.; 2])], &[other]));
    }

    #[test]
    fn validation_names_the_input() {
        let sig = ModelSignature::new(
            vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::Fp32,
                dims: vec![-1, 2],
            }],
            vec![TensorSpec {
                name: "y".into(),
                dtype: DataType::Fp32,
                dims: vec![-1],
            }],
        );
        let err = |inputs| match validate(&sig, 8, inputs) {
            Err(EngineError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert!(err(vec![("z".into(), t(1, &[0.; 2]))]).contains("missing input 'x'"));
        assert!(
            err(vec![("x".into(), Tensor::from_f32(vec![1, 3], &[0.; 3]))])
                .contains("expected shape")
        );
        let short = Tensor {
            data: Bytes::from_static(&[0; 4]),
            ..t(1, &[0.; 2])
        };
        assert!(err(vec![("x".into(), short)]).contains("needs 8 bytes"));
        let empty = Tensor {
            shape: vec![0, 2],
            data: Bytes::new(),
            ..t(1, &[0.; 2])
        };
        assert!(err(vec![("x".into(), empty)]).contains("empty batch"));
        assert!(err(vec![("x".into(), t(9, &[0.; 18]))]).contains("exceeds max_batch_size"));
        let sig2 = ModelSignature::new(
            vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::Fp32,
                dims: vec![-1, -1],
            }],
            vec![TensorSpec {
                name: "y".into(),
                dtype: DataType::Fp32,
                dims: vec![-1],
            }],
        );
        // 7 * 0x6DB6DB6DB6DB6DB7 wraps to 1 element in usize arithmetic.
        let huge = Tensor {
            shape: vec![7, 0x6DB6DB6DB6DB6DB7],
            ..t(1, &[0.; 1])
        };
        match validate(&sig2, 8, vec![("x".into(), huge)]) {
            Err(EngineError::InvalidArgument(m)) => assert!(m.contains("too large"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(validate(&sig, 8, vec![("x".into(), t(1, &[0.; 2]))]).is_ok());
    }
}
