//! Opening a directory: locking it, cleaning up after a crash, and scanning the pages on disk
//! to rebuild the index.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{debug, warn};

use crate::layout::{self, PageName};
use crate::page;
use crate::{FileId, PageKey, PageStoreError};

fn io_err(path: &Path, cause: io::Error) -> PageStoreError {
    PageStoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// A configured directory, opened and cleaned.
pub(crate) struct Prepared {
    pub lock: File,
    pub pages: PathBuf,
    pub tmp: PathBuf,
    /// Entries removed while cleaning (temp files, pages of another page size).
    pub discarded: u64,
}

/// Creates `root` and its subdirectories, takes the directory lock, deletes temp files left
/// by a crash and the pages of other page sizes.
pub(crate) fn prepare(root: &Path, page_size: u64) -> Result<Prepared, PageStoreError> {
    fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
    let lock_path = root.join(layout::LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, e))?;
    lock_exclusive(&lock).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            PageStoreError::Config(format!("{} is already in use by another page store", root.display()))
        } else {
            io_err(&lock_path, e)
        }
    })?;

    let mut discarded = 0;
    let tmp = root.join(layout::TMP_DIR);
    fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    for entry in fs::read_dir(&tmp).map_err(|e| io_err(&tmp, e))? {
        let entry = entry.map_err(|e| io_err(&tmp, e))?;
        debug!(path = %entry.path().display(), "deleting leftover temp file");
        discard(&entry.path());
        discarded += 1;
    }

    let pages_name = layout::pages_dir_name(page_size);
    for entry in fs::read_dir(root).map_err(|e| io_err(root, e))? {
        let entry = entry.map_err(|e| io_err(root, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(size) = name.strip_prefix(layout::PAGES_PREFIX) else {
            continue;
        };
        if name != pages_name && !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) {
            warn!(path = %entry.path().display(), "deleting pages of another page size");
            discard(&entry.path());
            discarded += 1;
        }
    }
    let pages = root.join(pages_name);
    fs::create_dir_all(&pages).map_err(|e| io_err(&pages, e))?;
    Ok(Prepared {
        lock,
        pages,
        tmp,
        discarded,
    })
}

#[cfg(unix)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Deletes a file or a directory tree, best effort.
pub(crate) fn discard(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "could not delete");
        }
    }
}

/// A valid page found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub key: PageKey,
    pub name: PageName,
    pub mtime: SystemTime,
    pub dir: u8,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub found: Vec<Found>,
    pub discarded: u64,
}

/// Walks `<pages>/<ff>/<file>/<page>`, keeping the pages whose name parses and whose length
/// matches it, and deleting everything else (including empty file directories).
pub(crate) fn scan(pages: &Path, page_size: u64, dir: u8) -> Scan {
    let mut scan = Scan::default();
    for shard in read_dir_or_warn(pages) {
        let shard_path = shard.path();
        let shard_name = shard.file_name();
        let is_dir = shard.file_type().is_ok_and(|t| t.is_dir());
        let Some(shard_name) = shard_name.to_str().filter(|n| layout::is_shard_name(n)) else {
            scan.discard(&shard_path, "unexpected entry");
            continue;
        };
        if !is_dir {
            scan.discard(&shard_path, "unexpected entry");
            continue;
        }
        for file_entry in read_dir_or_warn(&shard_path) {
            let file_path = file_entry.path();
            let is_dir = file_entry.file_type().is_ok_and(|t| t.is_dir());
            let id = file_entry
                .file_name()
                .to_str()
                .and_then(layout::parse_file_id)
                .filter(|id| format!("{:02x}", (id.0 >> 120) as u8) == shard_name);
            let Some(id) = id.filter(|_| is_dir) else {
                scan.discard(&file_path, "unexpected entry");
                continue;
            };
            let before = scan.found.len();
            scan_file_dir(&file_path, id, page_size, dir, &mut scan);
            if scan.found.len() == before {
                // Empty (or emptied) file directory.
                let _ = fs::remove_dir(&file_path);
            }
        }
    }
    scan
}

fn scan_file_dir(path: &Path, file: FileId, page_size: u64, dir: u8, scan: &mut Scan) {
    for entry in read_dir_or_warn(path) {
        let page_path = entry.path();
        let Some(name) = entry.file_name().to_str().and_then(PageName::parse) else {
            scan.discard(&page_path, "unparseable name");
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                scan.discard(&page_path, &format!("unreadable: {e}"));
                continue;
            }
        };
        if !meta.is_file() {
            scan.discard(&page_path, "not a file");
            continue;
        }
        if meta.len() != page::file_len(name.len) || u64::from(name.len) > page_size {
            scan.discard(&page_path, &format!("length {} does not match its name", meta.len()));
            continue;
        }
        scan.found.push(Found {
            key: PageKey {
                file,
                index: name.index,
            },
            name,
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            dir,
        });
    }
}

impl Scan {
    fn discard(&mut self, path: &Path, why: &str) {
        warn!(path = %path.display(), reason = why, "deleting invalid entry in page store");
        discard(path);
        self.discarded += 1;
    }
}

fn read_dir_or_warn(path: &Path) -> Vec<fs::DirEntry> {
    match fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(|e| {
                e.map_err(|e| warn!(path = %path.display(), error = %e, "error listing directory"))
                    .ok()
            })
            .collect(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot list directory");
            Vec::new()
        }
    }
}
