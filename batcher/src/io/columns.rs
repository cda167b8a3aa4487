//! Column names of CSV and JSON Lines files, read from their first row:
//! planning names the columns a job binds, and every reader of a piece
//! re-reads them the same way.

use serde::Deserialize;
use std::path::Path;

use super::IoError;
use super::lines;

/// Column names of a CSV file and whether its first row is a header: as
/// `header` says, or when unset, a header when any non-empty field does not
/// parse as a number (empty fields are no evidence: they are missing values
/// as often as unnamed columns).
pub(crate) fn csv_columns(first: &[u8], header: Option<bool>) -> (Vec<String>, bool) {
    let fields: Vec<String> = lines::split_csv(first)
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    let header = header.unwrap_or_else(|| {
        fields
            .iter()
            .any(|f| !f.is_empty() && f.parse::<f64>().is_err())
    });
    if header {
        (fields, true)
    } else {
        ((0..fields.len()).map(|i| format!("c{i}")).collect(), false)
    }
}

/// Keys of a JSON object in the order they appear in the text (serde_json's
/// own map would sort them unless `preserve_order` is switched on for the
/// whole workspace).
pub(crate) fn json_keys(line: &[u8], path: &Path) -> Result<Vec<String>, IoError> {
    struct Keys(Vec<String>);
    struct KeysVisitor;
    impl<'de> serde::de::Visitor<'de> for KeysVisitor {
        type Value = Keys;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                keys.push(k);
            }
            Ok(Keys(keys))
        }
    }
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }
    serde_json::from_slice::<Keys>(line)
        .map(|k| k.0)
        .map_err(|e| IoError::invalid(format!("{}: first line: {e}", path.display())))
}
