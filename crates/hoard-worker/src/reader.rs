//! The read path: UFS status (cached, bounded age) -> page keys -> pages from the store, misses
//! filled from the UFS once however many readers want them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoard_common::HoardPath;
use hoard_pagestore::{CachedRead, FileId, PageKey, PageStore};
use hoard_ufs::{MountTable, UfsError, UfsStatus};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::metrics::WorkerMetrics;

/// Page writes that may run behind the reads before fills wait for them.
const PENDING_PUTS: usize = 16;

/// Most UFS statuses remembered; past it the oldest are dropped.
const METADATA_CACHE_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Ufs(#[from] UfsError),
    #[error("file changed in the ufs while it was being read: {0}")]
    FileChanged(HoardPath),
}

/// One version of one file, as the read path needs it.
#[derive(Debug, Clone)]
pub struct OpenFile {
    pub status: UfsStatus,
    pub version: String,
    /// `version` quoted, as the HTTP `ETag` (made once per status, not per request).
    pub etag: String,
    pub id: FileId,
}

pub struct WorkerState {
    pub worker_id: String,
    pub address: String,
    mounts: MountTable,
    store: Arc<PageStore>,
    page_size: u64,
    metadata_max_age: Duration,
    metadata: Mutex<HashMap<HoardPath, (Arc<OpenFile>, Instant)>>,
    /// Pages being filled, and filled pages still being written to the store: a reader that
    /// comes while either happens gets the bytes from here instead of reading the UFS again.
    inflight: Arc<Mutex<HashMap<PageKey, Arc<OnceCell<Bytes>>>>>,
    /// Bounds the page writes running behind the reads (and the memory their bytes hold).
    pending_puts: Arc<tokio::sync::Semaphore>,
    pub metrics: WorkerMetrics,
}

impl WorkerState {
    pub fn new(
        worker_id: String,
        address: String,
        mounts: MountTable,
        store: Arc<PageStore>,
        metadata_max_age: Duration,
    ) -> WorkerState {
        let page_size = store.page_size();
        WorkerState {
            worker_id,
            address,
            mounts,
            store,
            page_size,
            metadata_max_age,
            metadata: Mutex::new(HashMap::new()),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            pending_puts: Arc::new(tokio::sync::Semaphore::new(PENDING_PUTS)),
            metrics: WorkerMetrics::default(),
        }
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    pub fn mounts(&self) -> &MountTable {
        &self.mounts
    }

    pub fn store(&self) -> &Arc<PageStore> {
        &self.store
    }

    /// The UFS status of `path` (with its version and page-key file id), from the cache when
    /// younger than the metadata max age.
    pub async fn status(&self, path: &HoardPath) -> Result<Arc<OpenFile>, ReadError> {
        if let Some((file, fetched)) = self.metadata.lock().get(path) {
            if fetched.elapsed() < self.metadata_max_age {
                self.metrics.metadata_hits.inc();
                return Ok(Arc::clone(file));
            }
        }
        self.metrics.metadata_misses.inc();
        let status = self.mounts.status(path).await?;
        let version = status.version();
        let id = FileId::new(path.as_str(), &version);
        let etag = format!("\"{version}\"");
        let file = Arc::new(OpenFile {
            status,
            version,
            etag,
            id,
        });
        self.remember(path, Arc::clone(&file));
        Ok(file)
    }

    fn remember(&self, path: &HoardPath, file: Arc<OpenFile>) {
        if self.metadata_max_age.is_zero() {
            return;
        }
        let mut metadata = self.metadata.lock();
        if metadata.len() >= METADATA_CACHE_ENTRIES {
            let max_age = self.metadata_max_age;
            metadata.retain(|_, (_, fetched)| fetched.elapsed() < max_age);
            if metadata.len() >= METADATA_CACHE_ENTRIES {
                metadata.clear();
            }
        }
        metadata.insert(path.clone(), (file, Instant::now()));
    }

    fn forget(&self, path: &HoardPath) {
        self.metadata.lock().remove(path);
    }

    /// A file (not a directory) to read.
    pub async fn open(&self, path: &HoardPath) -> Result<Arc<OpenFile>, ReadError> {
        let file = self.status(path).await?;
        if file.status.is_dir {
            return Err(ReadError::Ufs(UfsError::IsDirectory(path.to_string())));
        }
        Ok(file)
    }

    /// Bytes of `file` this worker has cached.
    pub async fn cached_bytes(&self, file: FileId) -> u64 {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.cached_bytes(file))
            .await
            .unwrap_or(0)
    }

    /// Byte range of page `index` within the file.
    pub fn page_range(&self, file: &OpenFile, index: u64) -> Range<u64> {
        let start = index.saturating_mul(self.page_size);
        let end = start.saturating_add(self.page_size).min(file.status.length);
        start..end
    }

    /// Bytes `within` (offsets inside the page) of page `index` of `file`: from the store
    /// (only the checksummed chunks the range touches are read), or the whole page read from
    /// the UFS (once, however many callers ask at the same time), checked to be the same
    /// version, stored, and sliced.
    pub async fn page_slice(&self, file: &OpenFile, index: u64, within: Range<u64>) -> Result<Bytes, ReadError> {
        let key = PageKey { file: file.id, index };
        if let Some(bytes) = self.stored_range(key, within.clone()).await {
            self.metrics.page_hits.inc();
            return Ok(bytes);
        }
        let page = self.page(file, key).await?;
        let end = (within.end as usize).min(page.len());
        let start = (within.start as usize).min(end);
        Ok(page.slice(start..end))
    }

    /// The whole page, filling it from the UFS when it is not stored.
    async fn page(&self, file: &OpenFile, key: PageKey) -> Result<Bytes, ReadError> {
        let cell = {
            let mut inflight = self.inflight.lock();
            Arc::clone(inflight.entry(key).or_insert_with(|| Arc::new(OnceCell::new())))
        };
        let result = cell
            .get_or_try_init(|| async {
                // A fill may have finished between our miss and taking the cell.
                if let Some(bytes) = self.stored_page(key).await {
                    self.metrics.page_hits.inc();
                    self.forget_inflight(key, &cell);
                    return Ok(bytes);
                }
                self.metrics.page_misses.inc();
                let bytes = self.fill(file, key).await?;
                self.store_behind(key, bytes.clone(), Arc::clone(&cell)).await;
                Ok(bytes)
            })
            .await
            .cloned();
        if result.is_err() {
            // Let the next reader try the UFS again.
            self.forget_inflight(key, &cell);
        }
        result
    }

    fn forget_inflight(&self, key: PageKey, cell: &Arc<OnceCell<Bytes>>) {
        remove_inflight(&self.inflight, key, cell);
    }

    /// Writes a filled page to the store without making the reader wait for it; the in-flight
    /// entry (which answers other readers meanwhile) is dropped once the page is stored.
    async fn store_behind(&self, key: PageKey, bytes: Bytes, cell: Arc<OnceCell<Bytes>>) {
        let permit = match Arc::clone(&self.pending_puts).acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return, // the semaphore is never closed
        };
        let store = Arc::clone(&self.store);
        let inflight = Arc::clone(&self.inflight);
        tokio::task::spawn_blocking(move || {
            if let Err(err) = store.put(&key, &bytes) {
                tracing::warn!(error = %err, page = key.index, "cannot cache page; it was served uncached");
            }
            remove_inflight(&inflight, key, &cell);
            drop(permit);
        });
    }

    async fn stored_page(&self, key: PageKey) -> Option<Bytes> {
        self.stored_range(key, 0..u64::MAX).await
    }

    async fn stored_range(&self, key: PageKey, within: Range<u64>) -> Option<Bytes> {
        // Pages in the OS page cache are read here, on the async thread: that costs ~10us per
        // 64KiB, far less than handing the read to a blocking thread and back. Only reads that
        // would wait for the disk go to the blocking pool.
        match self.store.get_range_nowait(&key, within.clone()) {
            Ok(CachedRead::Hit(bytes)) => return Some(bytes),
            Ok(CachedRead::Absent) => return None,
            Ok(CachedRead::NotInMemory) => {}
            Err(err) => {
                tracing::warn!(error = %err, page = key.index, "page store read failed, reading from the ufs");
                return None;
            }
        }
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.get_range(&key, within)).await {
            Ok(Ok(found)) => found,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, page = key.index, "page store read failed, reading from the ufs");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "page store task failed");
                None
            }
        }
    }

    async fn fill(&self, file: &OpenFile, key: PageKey) -> Result<Bytes, ReadError> {
        let range = self.page_range(file, key.index);
        let expected_len = range.end - range.start;
        let path = &file.status.path;
        // The status we hold may be up to max-age old: read only bytes of that version, so a
        // rewrite never stores (or serves) new bytes under the old version's key.
        let bytes = match self.mounts.read_version(&file.status, range).await {
            Ok(bytes) => bytes,
            Err(UfsError::Changed(_)) => {
                tracing::info!(path = %path, cached_version = %file.version, "ufs file changed since its status was cached");
                self.forget(path);
                return Err(ReadError::FileChanged(path.clone()));
            }
            Err(err) => return Err(err.into()),
        };
        self.metrics.ufs_reads.inc();
        self.metrics.ufs_bytes_read.inc_by(bytes.len() as u64);
        if bytes.len() as u64 != expected_len {
            self.forget(path);
            return Err(ReadError::FileChanged(path.clone()));
        }
        Ok(bytes)
    }
}

/// Drops `key`'s in-flight entry if it is still `cell` (a later fill may have replaced it).
fn remove_inflight(
    inflight: &Mutex<HashMap<PageKey, Arc<OnceCell<Bytes>>>>,
    key: PageKey,
    cell: &Arc<OnceCell<Bytes>>,
) {
    let mut inflight = inflight.lock();
    if inflight.get(&key).is_some_and(|current| Arc::ptr_eq(current, cell)) {
        inflight.remove(&key);
    }
}
