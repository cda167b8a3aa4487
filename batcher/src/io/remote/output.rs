//! A job's output folder. Files are always written to a local folder first
//! (atomically, as for local outputs); for a remote output each finished
//! file is then uploaded under the prefix with one put, or one multipart
//! upload, either of which an object store makes visible whole or not at
//! all. A file uploaded twice (a shard run twice) is one object.

use super::{Location, Remote, Stores};
use crate::io::IoError;
use crate::layout::temp_name;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Files up to this size go in a single put; larger ones in parts of it.
const PART_BYTES: usize = 16 << 20;
/// Parts in flight at once, bounding an upload's memory.
const PARTS_IN_FLIGHT: usize = 4;

pub struct OutputDir<'a> {
    stores: &'a Stores,
    local: PathBuf,
    remote: Option<Remote>,
}

impl Stores {
    /// The output folder named by `loc`; remote ones are staged under the
    /// cache, in a folder of their own.
    pub fn output(&self, loc: &str) -> Result<OutputDir<'_>, IoError> {
        Ok(match self.open(loc)? {
            Location::Local(local) => OutputDir {
                stores: self,
                local,
                remote: None,
            },
            Location::Remote(r) => OutputDir {
                stores: self,
                local: self.cache_path("out", &r.url),
                remote: Some(r),
            },
        })
    }
}

impl OutputDir<'_> {
    /// Where files are written before [`OutputDir::publish`].
    pub fn dir(&self) -> &Path {
        &self.local
    }

    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    pub fn prepare(&self) -> Result<(), IoError> {
        std::fs::create_dir_all(&self.local).map_err(|e| IoError::io(&self.local, e))
    }

    /// What a reader of the output opens for `rel`: a path or a URL.
    pub fn url(&self, rel: &str) -> String {
        match &self.remote {
            None => self.local.join(rel).display().to_string(),
            Some(r) => r.join(rel).1,
        }
    }

    /// Makes the finished local file `rel` part of the output: a no-op for
    /// a local folder; for a remote one an upload, after which the local
    /// copy is dropped.
    pub fn publish(&self, rel: &str) -> Result<(), IoError> {
        let Some(r) = &self.remote else {
            return Ok(());
        };
        let local = self.local.join(rel);
        let (path, url) = r.join(rel);
        let mut file = std::fs::File::open(&local).map_err(|e| IoError::io(&local, e))?;
        let size = file.metadata().map_err(|e| IoError::io(&local, e))?.len();
        let io = |e| IoError::io(&local, e);
        if size <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(io)?;
            self.stores
                .block_on(r.store.put(&path, PutPayload::from(bytes)))
                .map_err(|e| IoError::store(&url, e))?;
        } else {
            self.stores.block_on(async {
                let upload = r
                    .store
                    .put_multipart(&path)
                    .await
                    .map_err(|e| IoError::store(&url, e))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                let mut buf = vec![0u8; PART_BYTES];
                loop {
                    let n = match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            let _ = w.abort().await;
                            return Err(io(e));
                        }
                    };
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        return Err(IoError::store(&url, e));
                    }
                    w.write(&buf[..n]);
                }
                w.finish().await.map_err(|e| IoError::store(&url, e))
            })?;
        }
        drop(file);
        let _ = std::fs::remove_file(&local);
        Ok(())
    }

    /// Removes `rel` from the output; absent already is fine.
    pub fn remove(&self, rel: &str) -> Result<(), IoError> {
        let local = self.local.join(rel);
        match std::fs::remove_file(&local) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound && self.remote.is_none() => {
                return Err(IoError::io(&local, e));
            }
            _ => {}
        }
        let Some(r) = &self.remote else {
            return Ok(());
        };
        let (path, url) = r.join(rel);
        match self.stores.block_on(r.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(IoError::store(&url, e)),
        }
    }

    /// Names of the files directly in the output folder.
    pub fn list(&self) -> Result<Vec<String>, IoError> {
        let Some(r) = &self.remote else {
            let mut names = Vec::new();
            let entries =
                std::fs::read_dir(&self.local).map_err(|e| IoError::io(&self.local, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| IoError::io(&self.local, e))?;
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
            return Ok(names);
        };
        let listed = self
            .stores
            .block_on(r.store.list_with_delimiter(Some(&r.prefix)))
            .map_err(|e| IoError::store(&r.url, e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect())
    }

    /// Appends the output's file `rel` to `w`, streamed.
    pub fn copy_to(&self, rel: &str, w: &mut impl Write) -> Result<(), IoError> {
        let Some(r) = &self.remote else {
            let local = self.local.join(rel);
            let mut f = std::fs::File::open(&local).map_err(|e| IoError::io(&local, e))?;
            std::io::copy(&mut f, w).map_err(|e| IoError::io(&local, e))?;
            return Ok(());
        };
        let (path, url) = r.join(rel);
        self.stores.block_on(async {
            let got = r
                .store
                .get(&path)
                .await
                .map_err(|e| IoError::store(&url, e))?;
            let mut stream = got.into_stream();
            while let Some(bytes) = stream.next().await {
                let bytes = bytes.map_err(|e| IoError::store(&url, e))?;
                w.write_all(&bytes)
                    .map_err(|e| IoError::io(Path::new(&url), e))?;
            }
            Ok(())
        })
    }

    /// Writes `bytes` as the output's file `rel`, atomically.
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), IoError> {
        let target = self.local.join(rel);
        let temp = target.with_file_name(temp_name(rel));
        let written = (|| {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&temp, &target)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(IoError::io(&target, e));
        }
        self.publish(rel)
    }
}
