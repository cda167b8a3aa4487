//! Object-store locations, opened through the `object_store` crate.
//!
//! Plain paths and `file://` URIs are local and read in place. Any other
//! scheme is remote: `s3://`, `gs://`, `az://`, `abfs(s)://` and
//! `http(s)://` with the `cloud` feature, and always `store+file:///abs`,
//! which opens the local filesystem through the very same remote code so
//! that it can be exercised without a cloud. Remote inputs are staged to a
//! local cache and remote outputs are written locally and then uploaded, so
//! the arrow readers and writers never see anything but local files.
//!
//! Batch I/O runs on blocking threads; they reach the async stores through
//! the runtime handle captured when the batcher started.

mod output;
mod stage;

pub use output::OutputDir;
pub use stage::Staged;

use super::IoError;
use job_queue::{REMOTE_SCHEMES, scheme_supported};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreScheme};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use url::Url;

/// Where a job's input or output lives.
pub enum Location {
    Local(PathBuf),
    Remote(Remote),
}

/// An object, or a prefix standing for a folder, in a store.
#[derive(Clone, Debug)]
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjPath,
    /// As the user wrote it: pieces and the job record carry URLs, since
    /// every batcher stages for itself.
    pub url: String,
}

impl Remote {
    /// The object at `rel` ('/'-separated) below this prefix, and its URL.
    pub fn join(&self, rel: &str) -> (ObjPath, String) {
        let path = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, s| p.join(s));
        (path, format!("{}/{rel}", self.url.trim_end_matches('/')))
    }
}

/// Opens locations for one batcher process: its stores (one client per
/// scheme and host, reused) and its local cache folder.
pub struct Stores {
    handle: Handle,
    cache_dir: PathBuf,
    opened: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Stores {
    pub fn new(handle: Handle, cache_dir: PathBuf) -> Stores {
        Stores {
            handle,
            cache_dir,
            opened: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache_dir(&self) -> &std::path::Path {
        &self.cache_dir
    }

    pub fn open(&self, loc: &str) -> Result<Location, IoError> {
        match loc.split_once("://") {
            None => Ok(Location::Local(PathBuf::from(loc))),
            Some(("file", path)) => Ok(Location::Local(PathBuf::from(path))),
            Some(_) => self.open_remote(loc).map(Location::Remote),
        }
    }

    pub fn open_remote(&self, loc: &str) -> Result<Remote, IoError> {
        let scheme = loc.split_once("://").map_or("", |(s, _)| s);
        if scheme == "file" || !scheme_supported(scheme) {
            return Err(IoError::invalid(format!(
                "{loc}: scheme '{scheme}' is not supported by this build (it opens {})",
                REMOTE_SCHEMES.join(", ")
            )));
        }
        let target = loc.strip_prefix("store+").unwrap_or(loc);
        let url = Url::parse(target).map_err(|e| IoError::invalid(format!("{loc}: {e}")))?;
        let (_, prefix) =
            ObjectStoreScheme::parse(&url).map_err(|e| IoError::invalid(format!("{loc}: {e}")))?;
        let key = url[..url::Position::BeforePath].to_string();
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let store = match opened.get(&key) {
            Some(s) => s.clone(),
            None => {
                let (store, _) = object_store::parse_url_opts(&url, env_options())
                    .map_err(|e| IoError::store(loc, e))?;
                let store: Arc<dyn ObjectStore> = Arc::from(store);
                opened.insert(key, store.clone());
                store
            }
        };
        Ok(Remote {
            store,
            prefix,
            url: loc.to_string(),
        })
    }

    /// Runs a store call to completion; only from a blocking thread.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// A folder under the cache named after `url`, one-to-one (so two
    /// objects never share a staged file) and still readable.
    pub(crate) fn cache_path(&self, kind: &str, url: &str) -> PathBuf {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let mut path = self.cache_dir.join(kind).join(escape(scheme));
        for seg in rest.split('/').filter(|s| !s.is_empty()) {
            path.push(escape(seg));
        }
        path
    }
}

/// Credentials and settings as the crate's builders read them from the
/// environment (`AWS_ACCESS_KEY_ID`, `GOOGLE_SERVICE_ACCOUNT`,
/// `AZURE_STORAGE_ACCOUNT_NAME`…); keys a builder does not know are ignored.
fn env_options() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// Percent-escapes all but a safe set, so that `..` or odd characters in a
/// URL cannot leave the cache or collide with another name.
pub(crate) fn escape(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'+' | b'=' | b'@' => {
                out.push(b as char)
            }
            b'.' if seg.bytes().any(|c| c != b'.') => out.push('.'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_names_readable_and_inside_the_cache() {
        assert_eq!(escape("rows.csv"), "rows.csv");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape("a b%"), "a%20b%25");
    }
}
