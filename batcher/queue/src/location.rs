//! Which location schemes a job may name. The batcher opens them (through
//! `object_store`), the gateway refuses the others at submit, so both read
//! this one list; the `cloud` feature decides what is in it.

/// The schemes this build opens through object_store (`file` is local).
#[cfg(not(feature = "cloud"))]
pub const REMOTE_SCHEMES: &[&str] = &["store+file"];
#[cfg(feature = "cloud")]
pub const REMOTE_SCHEMES: &[&str] = &[
    "store+file",
    "s3",
    "s3a",
    "gs",
    "az",
    "adl",
    "azure",
    "abfs",
    "abfss",
    "http",
    "https",
];

/// Whether a location with this scheme can be opened by this build.
pub fn scheme_supported(scheme: &str) -> bool {
    scheme == "file" || REMOTE_SCHEMES.contains(&scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_follow_the_build() {
        assert!(scheme_supported("file"));
        assert!(scheme_supported("store+file"));
        assert_eq!(scheme_supported("s3"), cfg!(feature = "cloud"));
        assert!(!scheme_supported("memory"));
    }
}
