//! The file columns a read needs, and how the model inputs map onto them.

use arrow::datatypes::DataType as ArrowType;
use engine::DataType;

use super::IoError;
use super::convert::{Layout, arrow_type};
use super::spec::ReadSpec;

/// The file columns a spec needs, in ascending order, and how each input
/// maps onto them.
pub(crate) struct Needed {
    pub columns: Vec<usize>,
    pub layout: Layout,
}

impl Needed {
    pub(crate) fn new(
        spec: &ReadSpec,
        names: &[String],
        null_word: &'static str,
    ) -> Result<Needed, IoError> {
        let mut columns: Vec<usize> = spec.inputs.iter().flat_map(|i| i.columns.clone()).collect();
        columns.sort_unstable();
        columns.dedup();
        if let Some(&bad) = columns.iter().find(|&&c| c >= names.len()) {
            return Err(IoError::invalid(format!(
                "column index {bad} is out of range: the input has {} columns",
                names.len()
            )));
        }
        // Every input column is in `columns` by construction: the search hits.
        let position = |c: &usize| columns.binary_search(c).unwrap_or_default();
        let inputs = spec
            .inputs
            .iter()
            .map(|i| (i.dtype, i.columns.iter().map(position).collect()))
            .collect();
        let layout = Layout {
            names: columns.iter().map(|&c| names[c].clone()).collect(),
            inputs,
            allow_nan: spec.allow_nan,
            null_word,
        };
        Ok(Needed { columns, layout })
    }

    /// The dtypes the inputs want from needed column `pos`.
    pub(crate) fn dtypes_of(&self, pos: usize) -> impl Iterator<Item = DataType> + '_ {
        self.layout
            .inputs
            .iter()
            .filter(move |(_, p)| p.contains(&pos))
            .map(|(d, _)| *d)
    }

    /// The one dtype all users of column `pos` want, if they agree.
    pub(crate) fn common_type(&self, pos: usize) -> Option<ArrowType> {
        let mut dtypes = self.dtypes_of(pos);
        let first = dtypes.next()?;
        dtypes
            .all(|d| d == first)
            .then(|| arrow_type(first))
            .flatten()
    }
}
