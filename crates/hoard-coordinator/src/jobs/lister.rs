//! Lists every file under a job's path, depth first, as a stream: one directory's listing is
//! streamed (never collected), only the names of its subdirectories wait until it ends. The
//! order is the UFS's listing order, which is stable for an unchanged tree (S3 lists in key
//! order; local file systems in directory order), so a resumed job can skip the files an
//! earlier run resolved by counting them.

use futures::stream::BoxStream;
use futures::StreamExt;
use hoard_common::HoardPath;
use hoard_ufs::{MountTable, UfsError, UfsStatus};

pub struct FileLister<'a> {
    mounts: &'a MountTable,
    /// Directories still to list, the next one last.
    pending: Vec<HoardPath>,
    current: Option<BoxStream<'static, Result<UfsStatus, UfsError>>>,
    /// Subdirectories of the directory being listed, in listing order.
    subdirs: Vec<HoardPath>,
    /// The job's path is a file: it is the whole listing.
    single: Option<UfsStatus>,
}

impl<'a> FileLister<'a> {
    /// Fails when the path does not exist (the job's reason).
    pub async fn open(mounts: &'a MountTable, root: &HoardPath) -> Result<FileLister<'a>, UfsError> {
        let status = mounts.status(root).await?;
        let mut lister = FileLister {
            mounts,
            pending: Vec::new(),
            current: None,
            subdirs: Vec::new(),
            single: None,
        };
        if status.is_dir {
            lister.pending.push(root.clone());
        } else {
            lister.single = Some(status);
        }
        Ok(lister)
    }

    /// The next file, or `None` at the end. An error (a directory vanished, the UFS failed)
    /// ends the listing: the job fails with it.
    pub async fn next(&mut self) -> Option<Result<UfsStatus, UfsError>> {
        if let Some(single) = self.single.take() {
            return Some(Ok(single));
        }
        loop {
            if let Some(stream) = self.current.as_mut() {
                match stream.next().await {
                    Some(Ok(status)) if status.is_dir => {
                        self.subdirs.push(status.path);
                        continue;
                    }
                    Some(Ok(status)) => return Some(Ok(status)),
                    Some(Err(err)) => {
                        self.current = None;
                        self.pending.clear();
                        return Some(Err(err));
                    }
                    None => {
                        self.current = None;
                        // Depth first, in listing order: the first subdirectory is listed next.
                        self.pending.extend(self.subdirs.drain(..).rev());
                    }
                }
            }
            let dir = self.pending.pop()?;
            match self.mounts.list(&dir).await {
                Ok(stream) => self.current = Some(stream),
                Err(err) => {
                    self.pending.clear();
                    return Some(Err(err));
                }
            }
        }
    }
}
