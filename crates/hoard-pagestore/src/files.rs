//! Page files in a dir: writing them into place and deleting them, whatever has been done to
//! the dir from outside the store meanwhile (directories deleted, or replaced by files or
//! links): the store owns everything under `tmp/` and `pages-*/`, so it makes the paths it
//! needs directories again instead of failing every write from then on.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use tracing::warn;

use crate::layout::{self, PageName};
use crate::{io_err, page, Dir, PageKey, PageStoreError};

/// How many times a put retries the final rename when a concurrent eviction removed the
/// file's (then empty) directory, or something outside the store removed or replaced one.
const RENAME_ATTEMPTS: usize = 64;

/// Writes the page to a temp file and renames it into place.
pub(crate) fn write_page(
    d: &Dir,
    key: &PageKey,
    name: &PageName,
    data: &[u8],
    table: &[u8],
) -> Result<(), PageStoreError> {
    let tmp = layout::temp_path(&d.tmp, key.file, key.index, name.gen);
    let result = (|| {
        match write_page_file(d, &tmp, data, table) {
            Err(PageStoreError::Io { cause, .. }) if is_missing_dir(&cause) => {
                // `tmp/` was deleted or replaced from outside: make it again.
                make_dirs(&d.tmp, &[&d.tmp]).map_err(|e| io_err(&d.tmp, e))?;
                write_page_file(d, &tmp, data, table)?;
            }
            other => other?,
        }
        let dest = layout::page_path(&d.pages, key.file, name);
        let mut attempt = 0;
        loop {
            match fs::rename(&tmp, &dest) {
                Ok(()) => return Ok(()),
                Err(e) if is_missing_dir(&e) && attempt < RENAME_ATTEMPTS => {
                    // The file's directory does not exist yet (or was just removed by an
                    // eviction of the file's last page, or from outside): create it and retry.
                    attempt += 1;
                    let dir = layout::file_dir(&d.pages, key.file);
                    let shard = dir.parent().unwrap_or(&d.pages);
                    if let Err(e) = make_dirs(&dir, &[&d.pages, shard, &dir]) {
                        // NotFound / AlreadyExists: racing with the removal of the directory.
                        if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists) {
                            return Err(io_err(&dir, e));
                        }
                    }
                }
                Err(e) => return Err(io_err(&dest, e)),
            }
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A path component is missing, or is not a directory.
fn is_missing_dir(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Creates `dir` and its parents, first deleting whatever is not a directory at each of
/// `chain` (the store's own directories on the way to `dir`, outermost first).
fn make_dirs(dir: &Path, chain: &[&Path]) -> io::Result<()> {
    for path in chain {
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                warn!(path = %path.display(), "replacing a non-directory in the page store with a directory");
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    fs::create_dir_all(dir)
}

fn write_page_file(d: &Dir, tmp: &Path, data: &[u8], table: &[u8]) -> Result<(), PageStoreError> {
    if d.direct_writes.load(Ordering::Relaxed) {
        match page::write_direct(tmp, data, table) {
            Ok(()) => return Ok(()),
            Err(page::DirectWriteError::Io(e)) => return Err(io_err(tmp, e)),
            Err(page::DirectWriteError::Unsupported(e)) => {
                if d.direct_writes.swap(false, Ordering::Relaxed) {
                    warn!(dir = %d.root.display(), error = %e, "the file system refuses direct writes; page writes go through the page cache");
                }
                let _ = fs::remove_file(tmp);
            }
        }
    }
    page::write(tmp, data, table).map_err(|e| io_err(tmp, e))
}

/// Deletes a page's file, or whatever was put in its place from outside.
pub(crate) fn remove_page_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => fs::remove_dir_all(path),
        other => other,
    }
}

/// [`remove_page_file`], best effort: failures other than a missing file are logged.
pub(crate) fn delete_page_file(path: &Path) {
    if let Err(e) = remove_page_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "could not delete page file");
        }
    }
}
