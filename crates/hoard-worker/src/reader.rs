//! The read path: UFS status (cached, bounded age) -> page keys -> pages from the store, misses
//! filled from the UFS once however many readers want them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hoard_common::HoardPath;
use hoard_pagestore::{CachedRead, FileId, PageBytes, PageKey, PageStore};
use hoard_ufs::{MountTable, UfsError, UfsStatus, RECENT_CHANGE_WINDOW_WHOLE_SECONDS};
use parking_lot::Mutex;
use tokio::sync::{watch, OnceCell, Semaphore};

use crate::metrics::WorkerMetrics;

/// Page writes that may run behind the reads before fills wait for them.
const PENDING_PUTS: usize = 16;

/// Tries of a load to cache a page of a file that changed too recently to be cached.
const LOAD_PAGE_ATTEMPTS: usize = 3;

/// Most UFS statuses remembered; past it the oldest are dropped.
const METADATA_CACHE_ENTRIES: usize = 100_000;

/// UFS page reads load tasks run at once across the worker unless
/// [`WorkerState::with_load_readers`] says otherwise (`hoard.worker.network.grpc.reader.threads.max`).
pub const DEFAULT_LOAD_READERS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Ufs(#[from] UfsError),
    #[error("file changed in the ufs while it was being read: {0}")]
    FileChanged(HoardPath),
    /// A page read for a load could not be written to the page store.
    #[error("cannot cache page {index} of {path}: {message}")]
    Store {
        path: HoardPath,
        index: u64,
        message: String,
    },
}

/// One page being filled from the UFS (or found stored meanwhile) and written to the store.
struct Flight {
    bytes: OnceCell<Bytes>,
    /// What became of the page write; loads wait for it to leave `Pending`.
    stored: watch::Sender<PutState>,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            bytes: OnceCell::new(),
            stored: watch::Sender::new(PutState::Pending),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PutState {
    Pending,
    Stored,
    /// Not stored: the file changed too recently (see `UfsStatus::is_settled`).
    Recent,
    Failed(String),
}

/// Ends a flight's put as failed if it is dropped before saying how it went (the blocking
/// write never ran, e.g. the runtime was shutting down), so no load waits forever.
struct PutOutcome {
    flight: Arc<Flight>,
    state: PutState,
}

impl Drop for PutOutcome {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut self.state, PutState::Failed("page write abandoned".to_string()));
        self.flight.stored.send_replace(state);
    }
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

/// `hoard.worker.network.sendfile.max.size` by default.
pub const DEFAULT_SENDFILE_MAX_BYTES: u64 = 256 << 10;

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
    inflight: Arc<Mutex<HashMap<PageKey, Arc<Flight>>>>,
    /// Bounds the page writes running behind the reads (and the memory their bytes hold).
    pending_puts: Arc<Semaphore>,
    /// Bounds the UFS page reads of load tasks, all tasks together.
    load_readers: Semaphore,
    /// `hoard.security.admin.token`: load and free tasks need it when set.
    admin_token: Option<String>,
    /// `hoard.worker.network.sendfile.max.size`.
    sendfile_max_bytes: u64,
    /// `hoard.cluster.name`: told to clients in `/health`.
    pub cluster_name: String,
    /// The cluster secret, when this worker has one (COORDINATOR membership): tasks must
    /// present it, so only the cluster's coordinators can make the worker load or free.
    cluster_secret: Option<hoard_common::secret::ClusterSecret>,
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
            pending_puts: Arc::new(Semaphore::new(PENDING_PUTS)),
            load_readers: Semaphore::new(DEFAULT_LOAD_READERS),
            admin_token: None,
            sendfile_max_bytes: DEFAULT_SENDFILE_MAX_BYTES,
            cluster_name: hoard_common::replica::default_cluster_name(),
            cluster_secret: None,
            metrics: WorkerMetrics::default(),
        }
    }

    /// At most `readers` UFS page reads of load tasks at once, all tasks together (at least 1).
    pub fn with_load_readers(mut self, readers: usize) -> WorkerState {
        self.load_readers = Semaphore::new(readers.clamp(1, Semaphore::MAX_PERMITS));
        self
    }

    /// Tasks need this secret (`X-Hoard-Cluster-Secret`) when set.
    pub fn with_cluster_secret(mut self, secret: Option<hoard_common::secret::ClusterSecret>) -> WorkerState {
        self.cluster_secret = secret;
        self
    }

    pub fn cluster_secret(&self) -> Option<&hoard_common::secret::ClusterSecret> {
        self.cluster_secret.as_ref()
    }

    /// The cluster the worker belongs to.
    pub fn with_cluster_name(mut self, name: String) -> WorkerState {
        self.cluster_name = name;
        self
    }

    /// Load and free tasks (they change what the worker holds) need this token when set.
    pub fn with_admin_token(mut self, token: Option<String>) -> WorkerState {
        self.admin_token = token;
        self
    }

    /// Parts of responses up to `bytes` are sent from the memory tier with `sendfile`; 0 never.
    pub fn with_sendfile_max_bytes(mut self, bytes: u64) -> WorkerState {
        self.sendfile_max_bytes = bytes;
        self
    }

    pub fn sendfile_max_bytes(&self) -> u64 {
        self.sendfile_max_bytes
    }

    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
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
        self.fetch_status(path).await
    }

    /// The UFS status of `path` read from the UFS now, whatever the metadata cache holds; the
    /// cache is updated (or the entry dropped when the file is gone), so reads that follow use
    /// this version. Loads and frees act on the current version through this.
    pub async fn refresh_status(&self, path: &HoardPath) -> Result<Arc<OpenFile>, ReadError> {
        let result = self.fetch_status(path).await;
        if result.is_err() {
            self.forget(path);
        }
        result
    }

    async fn fetch_status(&self, path: &HoardPath) -> Result<Arc<OpenFile>, ReadError> {
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

    /// Whether this worker holds `path` whole, by the status it already knows (never a UFS
    /// call: the answer to a client's probe must cost no more than a page index lookup). A file
    /// whose status it does not know is not whole as far as it can tell.
    pub async fn cached_whole(&self, path: &HoardPath) -> (bool, u64) {
        let known = self.metadata.lock().get(path).map(|(file, _)| Arc::clone(file));
        let Some(file) = known.filter(|file| !file.status.is_dir) else {
            return (false, 0);
        };
        let cached = self.cached_bytes(file.id).await;
        (cached >= file.status.length, cached)
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
    pub async fn page_slice(&self, file: &OpenFile, index: u64, within: Range<u64>) -> Result<PageBytes, ReadError> {
        let key = PageKey { file: file.id, index };
        if let Some(bytes) = self.stored_range(key, within.clone()).await {
            self.metrics.page_hits.inc();
            return Ok(bytes);
        }
        let page = self.page(file, key).await?;
        let end = (within.end as usize).min(page.len());
        let start = (within.start as usize).min(end);
        Ok(page.slice(start..end).into())
    }

    /// The whole page, filling it from the UFS when it is not stored.
    async fn page(&self, file: &OpenFile, key: PageKey) -> Result<Bytes, ReadError> {
        let (bytes, _, _) = self.page_flight(file, key).await?;
        Ok(bytes)
    }

    /// The whole page through the single-flight machinery: the bytes, the flight that produced
    /// them, and how many bytes this call read from the UFS (0 when another caller did, or the
    /// page turned out stored).
    async fn page_flight(&self, file: &OpenFile, key: PageKey) -> Result<(Bytes, Arc<Flight>, u64), ReadError> {
        let flight = {
            let mut inflight = self.inflight.lock();
            Arc::clone(inflight.entry(key).or_insert_with(|| Arc::new(Flight::new())))
        };
        let ufs_bytes = std::sync::atomic::AtomicU64::new(0);
        let result = flight
            .bytes
            .get_or_try_init(|| async {
                // A fill may have finished between our miss and taking the cell.
                if let Some(bytes) = self.stored_page(key).await {
                    self.metrics.page_hits.inc();
                    flight.stored.send_replace(PutState::Stored);
                    self.forget_inflight(key, &flight);
                    return Ok(bytes);
                }
                self.metrics.page_misses.inc();
                // Taken before the read: bytes are cacheable only if no later write can keep
                // their version (see `UfsStatus::is_settled`).
                let started = SystemTime::now();
                let bytes = self.fill(file, key).await?;
                ufs_bytes.store(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if file.status.is_settled(started) {
                    self.store_behind(key, bytes.clone(), Arc::clone(&flight)).await;
                } else {
                    // Changed within the kernel's timestamp granularity: another write now
                    // could keep this version, so the page is served but neither stored nor
                    // kept for later readers.
                    tracing::debug!(path = %file.status.path, page = key.index, "file changed too recently to cache");
                    flight.stored.send_replace(PutState::Recent);
                    self.forget_inflight(key, &flight);
                }
                Ok(bytes)
            })
            .await
            .cloned();
        match result {
            Ok(bytes) => Ok((bytes, flight, ufs_bytes.into_inner())),
            Err(err) => {
                // Let the next reader try the UFS again.
                self.forget_inflight(key, &flight);
                Err(err)
            }
        }
    }

    /// Makes page `index` of `file` present in the page store: nothing happens when it is
    /// stored already; otherwise it is filled through the same single-flight path as reads
    /// (joining a fill in progress), within the load readers bound, and this waits until the
    /// page write has finished. A file changed a moment ago cannot be cached yet (see
    /// `UfsStatus::is_settled`): this waits until it can. Returns the bytes this call read from
    /// the UFS.
    pub(crate) async fn load_page(&self, file: &OpenFile, index: u64) -> Result<u64, ReadError> {
        let key = PageKey { file: file.id, index };
        let mut ufs_total = 0;
        for _ in 0..LOAD_PAGE_ATTEMPTS {
            if self.store.contains(&key) {
                return Ok(ufs_total);
            }
            let wait = file
                .status
                .settled_at()
                .and_then(|settled| settled.duration_since(SystemTime::now()).ok());
            if let Some(wait) = wait {
                // Bounded: a change time far ahead (clock skew) must not park the load.
                tokio::time::sleep(wait.min(RECENT_CHANGE_WINDOW_WHOLE_SECONDS)).await;
            }
            // The permit bounds the UFS read only, not the wait for the page write.
            let (flight, ufs_bytes) = {
                let _permit = self.load_readers.acquire().await.ok();
                let (_, flight, ufs_bytes) = self.page_flight(file, key).await?;
                (flight, ufs_bytes)
            };
            ufs_total += ufs_bytes;
            let mut stored = flight.stored.subscribe();
            let outcome = match stored.wait_for(|state| *state != PutState::Pending).await {
                Ok(state) => state.clone(),
                // The flight (and its sender) is ours until we return.
                Err(_) => PutState::Failed("page write abandoned".to_string()),
            };
            match outcome {
                PutState::Failed(message) => {
                    return Err(ReadError::Store {
                        path: file.status.path.clone(),
                        index,
                        message,
                    })
                }
                PutState::Recent => continue,
                PutState::Stored | PutState::Pending => return Ok(ufs_total),
            }
        }
        Err(ReadError::Store {
            path: file.status.path.clone(),
            index,
            message: "the file's change time stays too recent to cache it (is the clock behind the ufs's?)".to_string(),
        })
    }

    /// Bytes of `range` of `file` covered by pages in the store.
    pub(crate) async fn range_cached_bytes(&self, file: &OpenFile, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let store = Arc::clone(&self.store);
        let page_size = self.page_size;
        let id = file.id;
        let task = tokio::task::spawn_blocking(move || {
            let first = range.start / page_size;
            let last = (range.end - 1) / page_size;
            (first..=last)
                .filter(|&index| store.contains(&PageKey { file: id, index }))
                .map(|index| {
                    let start = index.saturating_mul(page_size).max(range.start);
                    let end = index.saturating_add(1).saturating_mul(page_size).min(range.end);
                    end.saturating_sub(start)
                })
                .sum()
        });
        task.await.unwrap_or(0)
    }

    fn forget_inflight(&self, key: PageKey, flight: &Arc<Flight>) {
        remove_inflight(&self.inflight, key, flight);
    }

    /// Writes a filled page to the store without making the reader wait for it; the in-flight
    /// entry (which answers other readers meanwhile) is dropped once the page is stored, and
    /// the flight's `stored` says how the write went.
    async fn store_behind(&self, key: PageKey, bytes: Bytes, flight: Arc<Flight>) {
        let mut outcome = PutOutcome {
            flight,
            state: PutState::Failed("page write abandoned".to_string()),
        };
        let permit = match Arc::clone(&self.pending_puts).acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return, // the semaphore is never closed
        };
        let store = Arc::clone(&self.store);
        let inflight = Arc::clone(&self.inflight);
        tokio::task::spawn_blocking(move || {
            outcome.state = match store.put(&key, &bytes) {
                Ok(()) => PutState::Stored,
                Err(err) => {
                    tracing::warn!(error = %err, page = key.index, "cannot cache page; it was served uncached");
                    PutState::Failed(err.to_string())
                }
            };
            remove_inflight(&inflight, key, &outcome.flight);
            drop(outcome);
            drop(permit);
        });
    }

    async fn stored_page(&self, key: PageKey) -> Option<Bytes> {
        self.stored_range(key, 0..u64::MAX).await.map(PageBytes::into_bytes)
    }

    async fn stored_range(&self, key: PageKey, within: Range<u64>) -> Option<PageBytes> {
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

/// Drops `key`'s in-flight entry if it is still `flight` (a later fill may have replaced it).
fn remove_inflight(inflight: &Mutex<HashMap<PageKey, Arc<Flight>>>, key: PageKey, flight: &Arc<Flight>) {
    let mut inflight = inflight.lock();
    if inflight.get(&key).is_some_and(|current| Arc::ptr_eq(current, flight)) {
        inflight.remove(&key);
    }
}
