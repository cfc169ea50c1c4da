//! Job artifacts in an object store (the `object_store` crate): a directory on local disk by
//! default (`<data-dir>/objects`), or any S3-compatible service by configuration. Each job's
//! artifacts are one zip archive, as GitLab keeps them, so a download is the stored object
//! as it is and one file is read out of it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::config::{ArtifactStorage, ServerConfig};

/// Largest single file served out of an archive in one response.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("the artifact store is not available: {0}")]
    Setup(String),
    #[error("the artifact store failed: {0}")]
    Store(#[from] object_store::Error),
    #[error("packing the artifacts failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the artifact archive is unreadable: {0}")]
    Zip(#[from] zip::result::ZipError),
}

#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// `local` or `s3`, for logs and the UI.
    pub kind: &'static str,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage").field("kind", &self.kind).finish()
    }
}

impl ObjectStorage {
    pub fn open(config: &ServerConfig) -> Result<Self, ObjectError> {
        match &config.artifacts.storage {
            ArtifactStorage::Local => {
                let root = config.data_dir.join("objects");
                std::fs::create_dir_all(&root)?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
                Ok(ObjectStorage { store: Arc::new(store), kind: "local" })
            }
            ArtifactStorage::S3(s3) => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_allow_http(s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")))
                    // Path-style URLs work with every S3-compatible service (MinIO, moto, Ceph).
                    .with_virtual_hosted_style_request(false);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let store = builder.build().map_err(|e| ObjectError::Setup(e.to_string()))?;
                Ok(ObjectStorage { store: Arc::new(store), kind: "s3" })
            }
        }
    }

    /// Zips every file under `dir` and stores it at `key`; returns its size and file count.
    pub async fn put_dir(&self, key: &str, dir: PathBuf) -> Result<(u64, usize), ObjectError> {
        let (archive, files) =
            tokio::task::spawn_blocking(move || zip_dir(&dir)).await.map_err(std::io::Error::other)??;
        let size = archive.len() as u64;
        self.store.put(&ObjectPath::from(key), Bytes::from(archive).into()).await?;
        Ok((size, files))
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectError> {
        self.store.put(&ObjectPath::from(key), Bytes::from(bytes).into()).await?;
        Ok(())
    }

    /// The object at `key`, or `None` when there is none.
    pub async fn get_if_any(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        match self.get(key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(ObjectError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        Ok(self.store.get(&ObjectPath::from(key)).await?.bytes().await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes every object under `prefix` (a deleted project's artifacts).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, ObjectError> {
        let prefix = ObjectPath::from(prefix);
        let mut listed = self.store.list(Some(&prefix));
        let mut deleted = 0;
        while let Some(meta) = listed.next().await {
            self.delete(meta?.location.as_ref()).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Why expired artifacts could not be swept.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
    /// The object store could not be opened (`AppState::objects` logged why).
    #[error("{0}")]
    ObjectStore(String),
}

/// Deletes the artifacts whose `expire_in` has passed; returns how many.
pub async fn sweep_expired(state: &crate::state::AppState) -> Result<usize, SweepError> {
    let keys = state.store.take_expired_artifacts(state.store.now_ms()).await?;
    if keys.is_empty() {
        return Ok(0);
    }
    let objects = state.objects().map_err(|error| SweepError::ObjectStore(error.to_string()))?;
    for key in &keys {
        if let Err(error) = objects.delete(key).await {
            // The record is gone, so nothing points at it any more; it is only disk space.
            tracing::warn!(%key, %error, "could not delete expired artifacts");
        }
    }
    Ok(keys.len())
}

/// Runs [`sweep_expired`] every minute.
pub async fn sweep_forever(state: crate::state::AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        match sweep_expired(&state).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "deleted expired artifacts"),
            Err(error) => tracing::warn!(%error, "could not sweep expired artifacts"),
        }
    }
}

/// Deletes a deleted project's artifacts and caches in the background.
pub fn forget_project(state: &crate::state::AppState, project_id: i64) {
    let caches = state.config.data_dir.join("caches").join(project_id.to_string());
    let mirrors = state.config.data_dir.join("mirrors");
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(caches);
        let prefix = format!("{project_id}-");
        for entry in std::fs::read_dir(&mirrors).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let Ok(objects) = state.objects().cloned() else { return };
    tokio::spawn(async move {
        if let Err(error) = objects.delete_prefix(&project_prefix(project_id)).await {
            tracing::warn!(project = project_id, %error, "could not delete a deleted project's artifacts");
        }
    });
}

/// Where a project's cache `key` is kept (a tar archive). Pipelines of protected refs (the
/// default branch) and the others keep separate caches, as on GitLab, so a branch cannot
/// plant a cache that a pipeline holding protected variables restores.
pub fn cache_key(project_id: i64, protected: bool, key: &str) -> String {
    let side = if protected { "protected" } else { "non_protected" };
    format!("projects/{project_id}/caches/{side}/{}.tar", opsloop_runner::workspace::dir_name(key))
}

/// A project's caches in the object store, shared by the server's own jobs and its agents'.
#[derive(Debug)]
pub struct ObjectCache {
    pub objects: ObjectStorage,
    pub project_id: i64,
    /// The pipeline runs on a protected ref.
    pub protected: bool,
}

impl opsloop_runner::SharedCache for ObjectCache {
    fn fetch<'a>(&'a self, key: &'a str, dir: &'a Path) -> opsloop_runner::CacheFuture<'a, bool> {
        Box::pin(async move {
            let archive = match self.objects.get_if_any(&cache_key(self.project_id, self.protected, key)).await {
                Ok(Some(archive)) => archive,
                Ok(None) => return false,
                Err(error) => {
                    tracing::warn!(%error, "could not read a cache");
                    return false;
                }
            };
            let dir = dir.to_owned();
            let unpacked =
                tokio::task::spawn_blocking(move || opsloop_runner::transfer::unpack(archive.as_ref(), &dir)).await;
            matches!(unpacked, Ok(Ok(_)))
        })
    }

    fn store<'a>(&'a self, key: &'a str, dir: &'a Path) -> opsloop_runner::CacheFuture<'a, ()> {
        Box::pin(async move {
            let dir = dir.to_owned();
            let Ok(Ok(archive)) = tokio::task::spawn_blocking(move || opsloop_runner::transfer::pack_tree(&dir)).await
            else {
                return;
            };
            if let Err(error) = self.objects.put(&cache_key(self.project_id, self.protected, key), archive).await {
                tracing::warn!(%error, "could not store a cache");
            }
        })
    }
}

/// Where a job's artifacts archive is kept.
pub fn artifacts_key(project_id: i64, pipeline_id: i64, job_id: i64) -> String {
    format!("projects/{project_id}/pipelines/{pipeline_id}/jobs/{job_id}/artifacts.zip")
}

/// Everything under a project's artifacts.
pub fn project_prefix(project_id: i64) -> String {
    format!("projects/{project_id}")
}

/// A zip archive of every file under `dir` (deflated, with their Unix modes).
pub fn zip_dir(dir: &Path) -> std::io::Result<(Vec<u8>, usize)> {
    let entries = opsloop_runner::workspace::list_tree(dir)?;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut buffer = Vec::new();
    let mut files = 0;
    for file in &entries {
        let path = dir.join(file);
        let kind = std::fs::symlink_metadata(&path)?.file_type();
        // A link's target may lie outside the job's files: it is left out, never followed.
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            // Kept, so an empty directory survives as an artifact.
            writer
                .add_directory(file.as_str(), zip::write::SimpleFileOptions::default())
                .map_err(std::io::Error::other)?;
            continue;
        }
        files += 1;
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)?.permissions().mode()
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
            .large_file(true);
        writer.start_file(file.as_str(), options).map_err(std::io::Error::other)?;
        buffer.clear();
        std::fs::File::open(&path)?.read_to_end(&mut buffer)?;
        writer.write_all(&buffer)?;
    }
    let archive = writer.finish().map_err(std::io::Error::other)?.into_inner();
    Ok((archive, files))
}

/// Unpacks an archive into `target` (paths that would leave it are refused by the zip crate).
pub fn unzip_into(archive: &[u8], target: &Path) -> Result<(), ObjectError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))?;
    zip.extract(target)?;
    Ok(())
}

/// The files in an archive, with their sizes.
pub fn zip_entries(archive: &[u8]) -> Result<Vec<(String, u64)>, ObjectError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))?;
    let mut entries = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let file = zip.by_index(index)?;
        if file.is_file() {
            entries.push((file.name()?.into_owned(), file.size()));
        }
    }
    Ok(entries)
}

/// One file of an archive; `None` when it has no such file (or it is too big to serve).
pub fn zip_file(archive: &[u8], name: &str) -> Result<Option<Vec<u8>>, ObjectError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))?;
    let mut file = match zip.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    if !file.is_file() || file.size() > MAX_FILE_BYTES {
        return Ok(None);
    }
    let mut content = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0));
    file.read_to_end(&mut content)?;
    Ok(Some(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_zips_and_its_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("out/deep")).unwrap();
        std::fs::write(dir.path().join("out/deep/report.txt"), "all green").unwrap();
        std::fs::write(dir.path().join("binary"), [0u8, 1, 2, 255]).unwrap();
        let (archive, count) = zip_dir(dir.path()).unwrap();
        assert_eq!(count, 2);
        let mut entries = zip_entries(&archive).unwrap();
        entries.sort();
        assert_eq!(entries, [("binary".to_owned(), 4), ("out/deep/report.txt".to_owned(), 9)]);
        assert_eq!(zip_file(&archive, "out/deep/report.txt").unwrap().unwrap(), b"all green");
        assert!(zip_file(&archive, "missing").unwrap().is_none());
        assert!(zip_entries(b"not a zip").is_err());
    }
}
