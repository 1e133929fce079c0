//! The local file store: one JSON document, replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Store, Version, decode, encode, new_stamp};
use crate::State;
use crate::error::ControlError;

/// The control plane in a local file, for one machine (`file:PATH`).
///
/// Every write takes an exclusive lock on `PATH.lock`, checks the revision
/// (and the stamp of the commit the state was read at: see
/// [`Store::version`]), writes the whole document to a temporary file in the same directory,
/// flushes it to disk and renames it over `PATH`: a writer killed at any
/// point leaves either the old document or the new one, never a torn one.
/// Plugin bytes go to `PATH.blobs/`, named by digest, the same way.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store in `path` (created at the first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    /// The document's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<State, ControlError> {
        match fs::read(&self.path) {
            Ok(bytes) => decode(&bytes, &self.path.display().to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(ControlError::io(&self.path, e)),
        }
    }

    fn with_suffix(&self, suffix: &str) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(suffix);
        p.into()
    }

    fn lock(&self) -> Result<File, ControlError> {
        let path = self.with_suffix(".lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| ControlError::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ControlError::io(&path, e))?;
        file.lock().map_err(|e| ControlError::io(&path, e))?;
        Ok(file)
    }

    fn commit_blocking(&self, state: &State) -> Result<Version, ControlError> {
        let _lock = self.lock()?;
        let found = self.read()?.version();
        // A state without a stamp is judged by its revision alone.
        if found.revision != state.revision || state.stamp.is_some_and(|s| found.stamp != Some(s)) {
            return Err(ControlError::Conflict {
                expected: state.revision,
                found: found.revision,
            });
        }
        let next = Version {
            revision: found.revision + 1,
            stamp: Some(new_stamp()),
        };
        self.remove_leftovers();
        write_atomically(&self.path, &encode(state, next.revision, next.stamp))?;
        Ok(next)
    }

    /// Temporary files of writers killed mid-write. Temporary files are
    /// only created under the lock, so any found while holding it is one.
    fn remove_leftovers(&self) {
        let Some(base) = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return;
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let prefix = format!(".{base}.");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ControlError> {
        crate::model::check_digest("digest", digest)?;
        let name = digest.trim_start_matches("sha256:");
        Ok(self.with_suffix(".blobs").join(format!("{name}.wasm")))
    }
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it, renames it
/// over `path` and syncs the directory.
///
/// The document holds plugin configuration and the hashes of every key and
/// token: a new file is readable by its owner only (on Unix, mode `0600`),
/// and a file already there keeps its permissions — a write never widens
/// what an operator narrowed (a rename would otherwise put the temporary
/// file's default mode in its place).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ControlError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| ControlError::io(&dir, e))?;
    let mut tmp = tempfile_in(&dir, path)?;
    let result = (|| {
        match fs::metadata(path) {
            Ok(meta) => tmp.1.set_permissions(meta.permissions())?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tmp.1.write_all(bytes)?;
        tmp.1.sync_all()?;
        fs::rename(&tmp.0, path)?;
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp.0);
        return Err(ControlError::io(path, e));
    }
    Ok(())
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<(PathBuf, File), ControlError> {
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for _ in 0..16 {
        let name = format!(
            ".{base}.{}.{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = dir.join(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ControlError::io(&path, e)),
        }
    }
    Err(ControlError::io(
        dir,
        std::io::Error::other("no free temporary file name"),
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ControlError::Io {
            path: String::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn load(&self) -> Result<State, ControlError> {
        let me = self.clone();
        blocking(move || me.read()).await
    }

    async fn commit(&self, state: &State) -> Result<Version, ControlError> {
        let (me, state) = (self.clone(), state.clone());
        blocking(move || me.commit_blocking(&state)).await
    }

    async fn revision(&self) -> Result<u64, ControlError> {
        Ok(self.load().await?.revision)
    }

    async fn version(&self) -> Result<Version, ControlError> {
        Ok(self.load().await?.version())
    }

    async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ControlError> {
        let path = self.blob_path(digest)?;
        let bytes = bytes.to_vec();
        blocking(move || {
            if path.exists() {
                return Ok(());
            }
            write_atomically(&path, &bytes)
        })
        .await
    }

    async fn delete_blob(&self, digest: &str) -> Result<(), ControlError> {
        let path = self.blob_path(digest)?;
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(ControlError::io(&path, e)),
            _ => Ok(()),
        })
        .await
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<Bytes>, ControlError> {
        let path = self.blob_path(digest)?;
        let digest = digest.to_owned();
        blocking(move || match fs::read(&path) {
            // A blob is named by its digest: anything else is damage.
            Ok(b) if crate::digest(&b) == digest => Ok(Some(Bytes::from(b))),
            Ok(_) => Err(ControlError::Corrupt {
                what: path.display().to_string(),
                message: "the bytes do not match their digest".into(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ControlError::io(&path, e)),
        })
        .await
    }
}
