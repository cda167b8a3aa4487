//! The names a job writes in its output folder, in one place: planning
//! refuses a folder that already holds any of them, shards write them, and
//! the final step lists, merges and removes them, so all three must agree.
//!
//! ```text
//! part-00000.csv              one per shard, named by the shard's index
//! _errors/shard-00000.jsonl   a shard's bad rows ...
//! errors.jsonl                ... merged by the final step, in row order
//! manifest.json               written last
//! .part-00000.csv.41-7.tmp    a writer's temp file, renamed to its name
//! ```

use job_queue::Format;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const MANIFEST: &str = "manifest.json";
/// Every failed row of the job, merged from the shards' error files.
pub const ERRORS: &str = "errors.jsonl";
/// Per-shard error files live in a folder of their own, so that listing
/// the output's top level for parts never has to skip them.
pub const SHARD_ERRORS_DIR: &str = "_errors";

/// The part of shard `index`: fixed by the shard, so a shard run twice
/// still leaves one part.
pub fn part_name(index: u32, format: Format) -> String {
    format!("part-{index:05}.{}", format.extension())
}

/// The shard a part belongs to: `part-00007.csv` -> 7.
pub fn part_shard(name: &str) -> Option<u32> {
    name.strip_prefix("part-")?.split('.').next()?.parse().ok()
}

/// The errors file of shard `index`, relative to the output folder.
pub fn shard_errors_name(index: u32) -> String {
    format!("{SHARD_ERRORS_DIR}/shard-{index:05}.jsonl")
}

pub fn shard_errors_path(out_dir: &Path, index: u32) -> PathBuf {
    out_dir.join(shard_errors_name(index))
}

/// A temp name for a file to be renamed to `name`, that no other writer
/// uses: the process id keeps concurrent batchers apart, the counter this
/// process's writers. The leading `.` hides it from planning (an input
/// folder's hidden files are not inputs) and the `.tmp` marks it as
/// something a dead writer may have left behind.
pub fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}-{n}.tmp", std::process::id())
}

/// The final step's temp file for the merged `name`. One fixed name, not
/// one per writer as [`temp_name`] gives.
pub fn merge_temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// A writer's temp file, finished or not.
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Names a job writes into its output folder, temp files included.
pub fn is_job_output(name: &str) -> bool {
    let name = name.strip_prefix('.').unwrap_or(name);
    name.starts_with("part-")
        || name.starts_with(MANIFEST)
        || name.starts_with(ERRORS)
        || name == SHARD_ERRORS_DIR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_what_they_are_read_back_as() {
        let part = part_name(7, Format::Csv);
        assert_eq!(part, "part-00007.csv");
        assert_eq!(part_shard(&part), Some(7));
        assert_eq!(part_shard(MANIFEST), None);
        assert_eq!(shard_errors_name(3), "_errors/shard-00003.jsonl");
        assert!(is_job_output(SHARD_ERRORS_DIR));
        for name in [&part, MANIFEST, ERRORS] {
            assert!(is_job_output(name), "{name}");
            assert!(!is_temp(name), "{name}");
            for temp in [temp_name(name), merge_temp_name(name)] {
                assert!(is_temp(&temp) && is_job_output(&temp), "{temp}");
            }
        }
        assert!(!is_job_output("rows.csv"));
        assert_ne!(temp_name(&part), temp_name(&part));
    }
}
