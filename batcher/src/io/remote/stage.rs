//! Remote inputs: each object is streamed to a file in the batcher's cache
//! (never held in memory whole), once per version, and then planned and
//! read as a local file. Pieces keep the object's URL, so a batcher on
//! another machine stages the same object for itself.

use super::{Remote, Stores};
use crate::io::plan::{folder_files, plan_files};
use crate::io::{Format, IoError, Piece, Plan};
use crate::layout::temp_name;
use futures::StreamExt;
use object_store::{GetOptions, ObjectMeta, ObjectStoreExt};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A staged object: its local file, and whether this call downloaded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub path: PathBuf,
    pub downloaded: bool,
}

impl Stores {
    /// Plans a location: local as [`crate::io::plan`]; remote, one object or
    /// the objects directly under a prefix, staged, planned in name order,
    /// with each piece naming its object's URL.
    pub fn plan(
        &self,
        loc: &str,
        format: Option<Format>,
        rows: u64,
        header: Option<bool>,
    ) -> Result<Plan, IoError> {
        let remote = match self.open(loc)? {
            super::Location::Local(path) => {
                return crate::io::plan_with_header(&path, format, rows, header);
            }
            super::Location::Remote(r) => r,
        };
        let (urls, format) = self.input_objects(&remote, format)?;
        let mut files = Vec::with_capacity(urls.len());
        let mut url_of = HashMap::new();
        for url in urls {
            let staged = self.stage(&self.open_remote(&url)?)?;
            url_of.insert(staged.path.to_string_lossy().into_owned(), url);
            files.push(staged.path);
        }
        let mut plan = plan_files(&files, format, rows, header)?;
        for piece in &mut plan.pieces {
            if let Some(url) = url_of.get(&piece.path) {
                piece.path = url.clone();
            }
        }
        Ok(plan)
    }

    /// The piece as a local file can be read: itself when local, else with
    /// its object staged (usually already, by planning or an earlier shard).
    pub fn localize(&self, piece: &Piece) -> Result<Piece, IoError> {
        if !piece.path.contains("://") || piece.path.starts_with("file://") {
            return Ok(Piece {
                path: piece.path.trim_start_matches("file://").to_string(),
                ..piece.clone()
            });
        }
        let staged = self.stage(&self.open_remote(&piece.path)?)?;
        Ok(Piece {
            path: staged.path.to_string_lossy().into_owned(),
            ..piece.clone()
        })
    }

    /// Downloads `obj` to the cache unless the staged copy is of the same
    /// version (size and e-tag).
    pub fn stage(&self, obj: &Remote) -> Result<Staged, IoError> {
        let meta = self
            .block_on(obj.store.head(&obj.prefix))
            .map_err(|e| IoError::store(&obj.url, e))?;
        let path = self.cache_path("in", &obj.url);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| IoError::invalid(format!("{}: names no object", obj.url)))?;
        let stamp_path = path.with_file_name(format!(".{name}.version"));
        let stamp = format!("{} {}", meta.size, meta.e_tag.as_deref().unwrap_or(""));
        let same_size = std::fs::metadata(&path).is_ok_and(|m| m.len() == meta.size);
        if same_size && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
            return Ok(Staged {
                path,
                downloaded: false,
            });
        }
        // The stamp goes first, so a crash mid-way never vouches for a file
        // of another version.
        match std::fs::remove_file(&stamp_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(IoError::io(&stamp_path, e));
            }
            _ => {}
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| IoError::io(dir, e))?;
        }
        let temp = path.with_file_name(temp_name(&name));
        let got = self.download(obj, &meta, &temp);
        if got.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        got?;
        std::fs::rename(&temp, &path).map_err(|e| IoError::io(&path, e))?;
        let stamp_temp = stamp_path.with_file_name(temp_name(&name));
        std::fs::write(&stamp_temp, &stamp).map_err(|e| IoError::io(&stamp_temp, e))?;
        std::fs::rename(&stamp_temp, &stamp_path).map_err(|e| IoError::io(&stamp_path, e))?;
        Ok(Staged {
            path,
            downloaded: true,
        })
    }

    /// Streams the version `meta` describes (a newer one fails the
    /// precondition, and the shard is retried) into `temp`.
    fn download(&self, obj: &Remote, meta: &ObjectMeta, temp: &Path) -> Result<(), IoError> {
        let mut file = std::fs::File::create(temp).map_err(|e| IoError::io(temp, e))?;
        let options = GetOptions {
            if_match: meta.e_tag.clone(),
            ..GetOptions::default()
        };
        self.block_on(async {
            let got = obj
                .store
                .get_opts(&obj.prefix, options)
                .await
                .map_err(|e| IoError::store(&obj.url, e))?;
            let mut stream = got.into_stream();
            while let Some(bytes) = stream.next().await {
                let bytes = bytes.map_err(|e| IoError::store(&obj.url, e))?;
                file.write_all(&bytes).map_err(|e| IoError::io(temp, e))?;
            }
            Ok::<_, IoError>(())
        })?;
        file.sync_all().map_err(|e| IoError::io(temp, e))
    }

    /// The input's object URLs in name order, and their format: the object
    /// itself, or the files directly under the prefix with a known
    /// extension, not hidden, as a local folder is read.
    fn input_objects(
        &self,
        remote: &Remote,
        format: Option<Format>,
    ) -> Result<(Vec<String>, Format), IoError> {
        let named = !remote.url.ends_with('/') && remote.prefix.filename().is_some();
        if named {
            match self.block_on(remote.store.head(&remote.prefix)) {
                Ok(_) => {
                    let format = format
                        .or_else(|| Format::from_path(Path::new(remote.prefix.as_ref())))
                        .ok_or_else(|| {
                            IoError::invalid(format!(
                                "{}: cannot tell the format from the extension; name it",
                                remote.url
                            ))
                        })?;
                    return Ok((vec![remote.url.clone()], format));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(IoError::store(&remote.url, e)),
            }
        }
        let listed = self
            .block_on(remote.store.list_with_delimiter(Some(&remote.prefix)))
            .map_err(|e| IoError::store(&remote.url, e))?;
        let files = listed
            .objects
            .iter()
            .filter_map(|o| {
                let name = o.location.filename()?;
                let format = Format::from_path(Path::new(name))?;
                (!name.starts_with('.')).then(|| (PathBuf::from(name), format))
            })
            .collect();
        let (names, format) = folder_files(&remote.url, files, format)?;
        let urls = names
            .iter()
            .map(|n| remote.join(&n.to_string_lossy()).1)
            .collect();
        Ok((urls, format))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn an_object_staged_twice_is_downloaded_once() {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("bucket").join("rows.csv");
        std::fs::create_dir_all(src.parent().expect("parent")).expect("mkdir");
        std::fs::write(&src, "a,b\n1,2\n3,4\n").expect("write");
        let stores = Stores::new(rt.handle().clone(), dir.path().join("cache"));
        let url = format!("store+file://{}", src.display());
        let obj = stores.open_remote(&url).expect("open");
        let first = stores.stage(&obj).expect("stage");
        assert!(first.downloaded);
        assert!(first.path.starts_with(dir.path().join("cache")));
        assert_eq!(
            std::fs::read(&first.path).expect("read"),
            b"a,b\n1,2\n3,4\n"
        );
        let second = stores.stage(&obj).expect("stage again");
        assert_eq!(
            second,
            Staged {
                path: first.path.clone(),
                downloaded: false
            }
        );
        // A new version of the object is fetched again.
        std::fs::write(&src, "a,b\n1,2\n3,4\n5,6\n").expect("rewrite");
        let third = stores.stage(&obj).expect("stage a new version");
        assert!(third.downloaded);
        assert_eq!(
            std::fs::read(&third.path).expect("read"),
            b"a,b\n1,2\n3,4\n5,6\n"
        );
    }

    #[test]
    fn a_prefix_is_planned_like_the_local_folder_with_urls_in_its_pieces() {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).expect("mkdir");
        std::fs::write(input.join("b.csv"), "x,y\n5,6\n7,8\n").expect("write");
        std::fs::write(input.join("a.csv"), "x,y\n1,2\n3,4\n").expect("write");
        std::fs::write(input.join(".hidden.csv"), "x,y\n9,9\n").expect("write");
        let stores = Stores::new(rt.handle().clone(), dir.path().join("cache"));
        let local = crate::io::plan(&input, None, 1).expect("local plan");
        let url = format!("store+file://{}", input.display());
        let remote = stores.plan(&url, None, 1, None).expect("remote plan");
        assert_eq!(remote.rows_total, local.rows_total);
        assert_eq!(remote.columns, local.columns);
        assert_eq!(remote.pieces.len(), local.pieces.len());
        for (r, l) in remote.pieces.iter().zip(&local.pieces) {
            let name = Path::new(&l.path)
                .file_name()
                .expect("name")
                .to_string_lossy();
            assert_eq!(r.path, format!("{url}/{name}"));
            assert_eq!(
                Piece {
                    path: l.path.clone(),
                    ..r.clone()
                },
                *l
            );
            let staged = stores.localize(r).expect("localize");
            assert_eq!(
                std::fs::read(&staged.path).ok(),
                std::fs::read(&l.path).ok()
            );
        }
    }
}
