//! The mount table: Hoard paths onto backends.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use hoard_common::HoardPath;

use crate::{EnvLookup, LocalUfs, RawStatus, S3Settings, S3Ufs, Ufs, UfsError, UfsOptions, UfsStatus, UfsUri};

/// Maps Hoard paths onto backends: `hoard.underfs.root` at `/`, plus `hoard.mount.*` mounts.
/// The longest mount point that is a segment-wise prefix of a path wins.
///
/// Mount points (and their ancestors) are directories of the Hoard namespace: they appear in
/// the listing of their parent directory whether or not the parent's UFS has such an entry, and
/// they hide an entry of the same name there.
#[derive(Debug, Clone)]
pub struct MountTable {
    /// Deepest mount point first; the last one is always `/`.
    mounts: Vec<Mount>,
}

#[derive(Debug, Clone)]
struct Mount {
    point: HoardPath,
    ufs: Arc<dyn Ufs>,
}

impl MountTable {
    /// [`MountTable::from_config_with_options`] with default [`UfsOptions`] and the process
    /// environment for what `hoard.underfs.s3.*` leaves unset.
    pub fn from_config(config: &hoard_config::UfsConfig) -> Result<MountTable, UfsError> {
        MountTable::from_config_with_options(config, &UfsOptions::default(), &crate::process_env)
    }

    /// [`MountTable::from_config_with_options`] with default [`UfsOptions`].
    pub fn from_config_with_env(config: &hoard_config::UfsConfig, env: EnvLookup<'_>) -> Result<MountTable, UfsError> {
        MountTable::from_config_with_options(config, &UfsOptions::default(), env)
    }

    /// Builds every backend the config names. `env` is consulted only for the S3 settings
    /// `config.s3` leaves unset (see [`S3Settings::resolve`]), and only when an S3 URI is
    /// mounted. Local roots must exist; nothing is sent to S3 here.
    pub fn from_config_with_options(
        config: &hoard_config::UfsConfig,
        options: &UfsOptions,
        env: EnvLookup<'_>,
    ) -> Result<MountTable, UfsError> {
        let mut s3_settings: Option<S3Settings> = None;
        let mut build = |uri: &str| -> Result<Arc<dyn Ufs>, UfsError> {
            match UfsUri::parse(uri)? {
                UfsUri::Local(dir) => Ok(Arc::new(LocalUfs::new(&dir, options)?)),
                UfsUri::S3 { bucket, prefix } => {
                    if s3_settings.is_none() {
                        s3_settings = Some(S3Settings::resolve(&config.s3, env)?);
                    }
                    let settings = s3_settings.as_ref().expect("resolved above");
                    Ok(Arc::new(S3Ufs::new(&bucket, &prefix, settings, options)?))
                }
            }
        };
        let root = build(&config.root).map_err(|err| context(err, "hoard.underfs.root"))?;
        let mut mounts = Vec::with_capacity(config.mounts.len());
        for mount in &config.mounts {
            let key = format!("hoard.mount.{}", mount.name);
            let point =
                HoardPath::parse(mount.path.trim()).map_err(|err| UfsError::Config(format!("{key}.path: {err}")))?;
            let ufs = build(&mount.ufs).map_err(|err| context(err, &format!("{key}.ufs")))?;
            mounts.push((point, ufs));
        }
        MountTable::from_mounts(root, mounts)
    }

    /// A table from backends built elsewhere (tests, fakes): `root` at `/`, `mounts` at their
    /// points. A mount at `/` or two at the same point are refused.
    pub fn from_mounts(root: Arc<dyn Ufs>, mounts: Vec<(HoardPath, Arc<dyn Ufs>)>) -> Result<MountTable, UfsError> {
        let mut table: Vec<Mount> = Vec::with_capacity(mounts.len() + 1);
        for (point, ufs) in mounts {
            if point.is_root() {
                return Err(UfsError::Config(
                    "a mount cannot be at /: hoard.underfs.root is the UFS at /".to_string(),
                ));
            }
            if table.iter().any(|m| m.point == point) {
                return Err(UfsError::Config(format!("two mounts at {point}")));
            }
            table.push(Mount { point, ufs });
        }
        table.push(Mount {
            point: HoardPath::root(),
            ufs: root,
        });
        // Deepest first, so the first prefix match is the longest; ties cannot be prefixes of
        // one another, the order among them is just made stable.
        table.sort_by(|a, b| {
            b.point
                .segments()
                .count()
                .cmp(&a.point.segments().count())
                .then(a.point.cmp(&b.point))
        });
        Ok(MountTable { mounts: table })
    }

    /// Every mount point, `/` included, deepest first.
    pub fn mount_points(&self) -> impl Iterator<Item = &HoardPath> {
        self.mounts.iter().map(|m| &m.point)
    }

    /// The mount that serves `path`: its mount point, its backend, and `path` relative to it.
    pub fn resolve<'a, 'p>(&'a self, path: &'p HoardPath) -> (&'a HoardPath, &'a Arc<dyn Ufs>, &'p str) {
        for mount in &self.mounts {
            if let Some(relative) = path.strip_prefix(&mount.point) {
                return (&mount.point, &mount.ufs, relative);
            }
        }
        unreachable!("the root mount is a prefix of every path")
    }

    /// Names of the children of `dir` that are mount points or lead to one.
    fn mount_children(&self, dir: &HoardPath) -> BTreeSet<String> {
        self.mounts
            .iter()
            .filter(|m| m.point != *dir)
            .filter_map(|m| m.point.strip_prefix(dir))
            .filter_map(|rest| rest.split('/').next())
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn has_mount_below(&self, path: &HoardPath) -> bool {
        self.mounts
            .iter()
            .any(|m| m.point != *path && m.point.starts_with(path))
    }

    pub async fn status(&self, path: &HoardPath) -> Result<UfsStatus, UfsError> {
        let (_, ufs, relative) = self.resolve(path);
        let result = ufs.status(relative).await;
        if self.has_mount_below(path) {
            // An ancestor of a mount point is a directory whatever its UFS says.
            return Ok(match result {
                Ok(raw) if raw.is_dir => raw.at(path.clone()),
                _ => RawStatus::directory().at(path.clone()),
            });
        }
        result
            .map(|raw| raw.at(path.clone()))
            .map_err(|err| relocate(err, relative, path))
    }

    /// The bytes `range.start..min(range.end, length)` of the file at `path` (see [`Ufs::read`]).
    pub async fn read(&self, path: &HoardPath, range: Range<u64>) -> Result<Bytes, UfsError> {
        if self.has_mount_below(path) {
            return Err(UfsError::IsDirectory(path.to_string()));
        }
        let (_, ufs, relative) = self.resolve(path);
        ufs.read(relative, range)
            .await
            .map_err(|err| relocate(err, relative, path))
    }

    /// Reads `range` of the version of `path` that `expected` describes, or
    /// [`UfsError::Changed`] if the file is now another version.
    pub async fn read_version(&self, expected: &UfsStatus, range: Range<u64>) -> Result<Bytes, UfsError> {
        let path = &expected.path;
        if self.has_mount_below(path) {
            return Err(UfsError::IsDirectory(path.to_string()));
        }
        let (_, ufs, relative) = self.resolve(path);
        ufs.read_version(relative, range, &expected.raw())
            .await
            .map_err(|err| relocate(err, relative, path))
    }

    /// Streams the children of a directory as Hoard-path statuses: one level, in the backend's
    /// order, mount points first (as directories without a modification time).
    pub async fn list(&self, path: &HoardPath) -> Result<BoxStream<'static, Result<UfsStatus, UfsError>>, UfsError> {
        let (_, ufs, relative) = self.resolve(path);
        let mounted = self.mount_children(path);
        let listing = match ufs.list(relative).await {
            Ok(listing) => Some(listing),
            // The UFS has no such directory, but mounts below make it one.
            Err(UfsError::NotFound(_) | UfsError::NotDirectory(_)) if !mounted.is_empty() => None,
            Err(err) => return Err(relocate(err, relative, path)),
        };
        let synthesized: Vec<Result<UfsStatus, UfsError>> = mounted
            .iter()
            .filter_map(|name| path.join(name).ok())
            .map(|child| Ok(RawStatus::directory().at(child)))
            .collect();
        let Some(listing) = listing else {
            return Ok(stream::iter(synthesized).boxed());
        };
        let dir = path.clone();
        let relative = relative.to_string();
        let entries = listing.filter_map(move |item| {
            let result = match item {
                Ok(entry) if mounted.contains(&entry.name) => None, // hidden by the mount
                Ok(entry) => match dir.join(&entry.name) {
                    Ok(child) => Some(Ok(entry.status.at(child))),
                    Err(err) => {
                        tracing::warn!(dir = %dir, name = entry.name, error = %err, "skipping a listing entry");
                        None
                    }
                },
                Err(err) => Some(Err(relocate(err, &relative, &dir))),
            };
            futures::future::ready(result)
        });
        Ok(stream::iter(synthesized).chain(entries).boxed())
    }
}

fn context(err: UfsError, key: &str) -> UfsError {
    match err {
        UfsError::Config(message) => UfsError::Config(format!("{key}: {message}")),
        other => UfsError::Config(format!("{key}: {other}")),
    }
}

/// A backend error names the backend-relative path; callers see the Hoard path. A message that
/// starts with the relative path keeps its tail (`"a/b (reason)"` -> `"/m/a/b (reason)"`).
fn relocate(err: UfsError, relative: &str, path: &HoardPath) -> UfsError {
    let swap = |message: String| -> String {
        if message == relative {
            path.to_string()
        } else if let Some(tail) = message.strip_prefix(relative).filter(|tail| tail.starts_with(' ')) {
            format!("{path}{tail}")
        } else {
            message
        }
    };
    match err {
        UfsError::NotFound(m) => UfsError::NotFound(swap(m)),
        UfsError::PermissionDenied(m) => UfsError::PermissionDenied(swap(m)),
        UfsError::InvalidPath(m) => UfsError::InvalidPath(swap(m)),
        UfsError::IsDirectory(m) => UfsError::IsDirectory(swap(m)),
        UfsError::NotDirectory(m) => UfsError::NotDirectory(swap(m)),
        UfsError::Changed(m) => UfsError::Changed(swap(m)),
        UfsError::Backend {
            path: p,
            message,
            retryable,
        } => UfsError::Backend {
            path: swap(p),
            message,
            retryable,
        },
        config @ UfsError::Config(_) => config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> HoardPath {
        HoardPath::parse(raw).unwrap()
    }

    #[test]
    fn errors_name_the_hoard_path() {
        let at = p("/data/x/y");
        assert_eq!(
            relocate(UfsError::NotFound("x/y".into()), "x/y", &at).to_string(),
            "no such file: /data/x/y"
        );
        assert_eq!(
            relocate(UfsError::PermissionDenied("x/y (a link)".into()), "x/y", &at).to_string(),
            "permission denied: /data/x/y (a link)"
        );
        let root = p("/data");
        assert_eq!(
            relocate(UfsError::IsDirectory(String::new()), "", &root).to_string(),
            "is a directory: /data"
        );
        let backend = UfsError::Backend {
            path: "x/y".into(),
            message: "503".into(),
            retryable: true,
        };
        let relocated = relocate(backend, "x/y", &at);
        assert!(relocated.is_retryable());
        assert_eq!(relocated.to_string(), "ufs error on /data/x/y: 503");
    }
}
