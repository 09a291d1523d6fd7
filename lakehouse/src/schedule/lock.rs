//! One run of a target at a time across processes: a lock per target beside the tables.
//!
//! - `file://` warehouses: an OS file lock on `<warehouse>/_locks/<target>.lock`, released by the kernel when
//!   the process ends, however it ends.
//! - `s3://` warehouses: a lease object `<warehouse>/_locks/<target>.lock` created with a conditional PUT
//!   (`If-None-Match: *`), renewed every third of the lease (`storage.lock_lease`, 60 s by default) with
//!   `If-Match` on its ETag, deleted on release. A lease not renewed for its whole duration (its process died) is
//!   taken over, again with `If-Match`, so two takers cannot both win.
//!
//! The lock avoids doing work twice; publishing twice is already impossible (each commit carries a Delta
//! application transaction).

use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::storage::{StorageError, Warehouse};

/// How long a manual run waits for a target another process is running.
pub const MAX_LOCK_WAIT: Duration = Duration::from_secs(600);

#[derive(Serialize, Deserialize)]
struct Lease {
    owner: String,
    /// Unix milliseconds.
    expires_at: i64,
}

/// A held lock; released on drop (S3 leases: renewal stops and the lease is deleted in the background).
pub struct TargetLock {
    inner: Inner,
}

enum Inner {
    File(#[allow(dead_code)] std::fs::File),
    Lease { store: std::sync::Arc<dyn ObjectStore>, path: object_store::path::Path, renew: tokio::task::JoinHandle<()> },
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        if let Inner::Lease { store, path, renew } = &self.inner {
            renew.abort();
            let (store, path) = (store.clone(), path.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.delete(&path).await;
                });
            }
        }
    }
}

fn store_err(url: &Url, e: impl std::fmt::Display) -> StorageError {
    StorageError::InvalidUrl { url: url.to_string(), reason: format!("lock: {e}") }
}

/// Takes the lock of `target`, waiting while another process holds it — a live one finishing its run, or a
/// crashed one whose lease expires — for at most [`MAX_LOCK_WAIT`]; `Ok(None)` when it is still held then.
pub async fn wait_for_lock(warehouse: &Warehouse, target: &str) -> Result<Option<TargetLock>, StorageError> {
    let deadline = tokio::time::Instant::now() + MAX_LOCK_WAIT.max(warehouse.settings().lock_lease.0);
    let mut told = false;
    loop {
        if let Some(lock) = try_lock(warehouse, target).await? {
            return Ok(Some(lock));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        if !told {
            tracing::info!(target, "another process is running it: waiting for its lock");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Tries to take the lock of `target`; `Ok(None)` when another process holds it.
pub async fn try_lock(warehouse: &Warehouse, target: &str) -> Result<Option<TargetLock>, StorageError> {
    let url = warehouse.root().join(&format!("_locks/{target}.lock")).map_err(|e| store_err(warehouse.root(), e))?;
    if url.scheme() == "file" {
        let path = url.to_file_path().map_err(|()| store_err(&url, "not a path"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StorageError::CreateDir { path: dir.display().to_string(), source })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| store_err(&url, e))?;
        return match file.try_lock() {
            Ok(()) => Ok(Some(TargetLock { inner: Inner::File(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(store_err(&url, e)),
        };
    }
    let (store, path) = warehouse.object_store(&url).map_err(|e| store_err(&url, e))?;
    let owner = format!("{}/{}", crate::runlog::process_name(), uuid::Uuid::new_v4());
    let lease = warehouse.settings().lock_lease.0;
    let body = move |owner: &str| {
        let expires_at = chrono::Utc::now().timestamp_millis() + lease.as_millis() as i64;
        serde_json::to_vec(&Lease { owner: owner.to_string(), expires_at }).unwrap_or_default()
    };
    let create = PutOptions { mode: PutMode::Create, ..Default::default() };
    let put = match store.put_opts(&path, body(&owner).into(), create).await {
        Ok(put) => put,
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
            // Held, or left by a dead process: take it over only when expired, and only if nobody else did.
            let current = match store.get(&path).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(store_err(&url, e)),
            };
            let version = UpdateVersion { e_tag: current.meta.e_tag.clone(), version: current.meta.version.clone() };
            let bytes = current.bytes().await.map_err(|e| store_err(&url, e))?;
            let lease: Option<Lease> = serde_json::from_slice(&bytes).ok();
            if lease.is_some_and(|l| l.expires_at > chrono::Utc::now().timestamp_millis()) {
                return Ok(None);
            }
            let update = PutOptions { mode: PutMode::Update(version), ..Default::default() };
            match store.put_opts(&path, body(&owner).into(), update).await {
                Ok(put) => {
                    tracing::warn!(lock = %url, "took over an expired lock (its process stopped without releasing it)");
                    put
                }
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                    return Ok(None);
                }
                Err(e) => return Err(store_err(&url, e)),
            }
        }
        Err(e) => return Err(store_err(&url, e)),
    };
    let renew = {
        let (store, path) = (store.clone(), path.clone());
        tokio::spawn(async move {
            let mut version = UpdateVersion::from(put);
            loop {
                tokio::time::sleep(lease / 3).await;
                let update = PutOptions { mode: PutMode::Update(version.clone()), ..Default::default() };
                match store.put_opts(&path, body(&owner).into(), update).await {
                    Ok(put) => version = UpdateVersion::from(put),
                    Err(e) => {
                        tracing::warn!(lock = %path, error = %e, "could not renew a lock lease");
                        return;
                    }
                }
            }
        })
    };
    Ok(Some(TargetLock { inner: Inner::Lease { store, path, renew } }))
}
