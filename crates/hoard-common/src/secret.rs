//! Files that hold secrets (the cluster secret, configuration with the admin token or S3 keys):
//! written with mode 0600 and never half-written, and the cluster secret itself, which every
//! membership change on the coordinator must present (docs/membership.md#the-cluster-secret).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Request header carrying the cluster secret (distinct from the admin token's
/// `Authorization: Bearer`, so a cluster can use both).
pub const CLUSTER_SECRET_HEADER: &str = "x-hoard-cluster-secret";

/// Mode of every file Hoard writes that holds a secret.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Random bytes in a generated secret (hex-encoded in the file: 64 characters).
const SECRET_BYTES: usize = 32;
/// Shortest and longest secret accepted from a file an operator wrote.
const MIN_SECRET_LEN: usize = 16;
const MAX_SECRET_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "cluster secret file {path} does not exist: the coordinator creates it on its first start \
         (and `hoard local start` does); copy it to this path on every machine that runs a worker \
         (hoard.security.cluster.secret.file)"
    )]
    Missing { path: PathBuf },
    #[error("cannot read cluster secret file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cluster secret file {path} is unusable: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The shared secret of a cluster's members. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(String);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A new random secret (hex of 32 random bytes).
    pub fn generate() -> ClusterSecret {
        let bytes: [u8; SECRET_BYTES] = rand::random();
        ClusterSecret(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Checks a secret read from a file or given in a test.
    pub fn parse(text: &str) -> Result<ClusterSecret, String> {
        let secret = text.trim();
        if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
            return Err(format!(
                "a secret is {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters, this one has {}",
                secret.len()
            ));
        }
        // It travels in an HTTP header: visible ASCII only.
        if !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("a secret is printable ASCII without spaces".into());
        }
        Ok(ClusterSecret(secret.to_string()))
    }

    /// The value to send in [`CLUSTER_SECRET_HEADER`].
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }

    /// Reads the secret from `path`; a missing file is [`SecretError::Missing`].
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(SecretError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        ClusterSecret::parse(&text).map_err(|reason| SecretError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Reads the secret from `path`, or creates the file (mode 0600, its directory 0700 when
    /// new) with a fresh secret when it does not exist. Two processes creating it at once end
    /// up with the same secret: the file appears whole or not at all, and never replaces one
    /// already there. Returns whether this call created it.
    pub fn load_or_create(path: &Path) -> Result<(ClusterSecret, bool), SecretError> {
        match ClusterSecret::load(path) {
            Err(SecretError::Missing { .. }) => {}
            other => return other.map(|secret| (secret, false)),
        }
        let secret = ClusterSecret::generate();
        match write_new_private(path, format!("{}\n", secret.0).as_bytes()) {
            Ok(()) => Ok((secret, true)),
            // Someone else created it first: theirs is the cluster's.
            Err(SecretError::Write { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                ClusterSecret::load(path).map(|secret| (secret, false))
            }
            Err(err) => Err(err),
        }
    }
}

/// Compares without stopping at the first difference (the length is not secret).
pub fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(expected, presented).into()
}

/// Whether a file's mode lets anyone but its owner read or write it.
pub fn is_shared(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `path`'s parent directories that are missing, with mode 0700.
fn create_private_parent(path: &Path) -> Result<(), SecretError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(write_error(parent)),
        _ => Ok(()),
    }
}

/// A temp file next to `path`, mode 0600, holding `bytes` (synced).
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, SecretError> {
    let name = path
        .file_name()
        .map_or_else(|| "secret".into(), |name| name.to_string_lossy());
    let temp = path.with_file_name(format!(
        ".{name}.tmp.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&temp)
        .map_err(write_error(&temp))?;
    // The mode given to open is filtered by the umask; 0600 is what we want whatever it is.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(SecretError::Write { path: temp, source });
    }
    Ok(temp)
}

/// Writes `bytes` to `path` with mode 0600, replacing it atomically (a reader sees the old or
/// the new contents, never a part). Creates missing parent directories (0700).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    create_private_parent(path)?;
    let temp = write_temp(path, bytes)?;
    std::fs::rename(&temp, path).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        SecretError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Like [`write_private`], but fails with `AlreadyExists` instead of replacing a file.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), SecretError> {
    create_private_parent(path)?;
    let temp = write_temp(path, bytes)?;
    // link(2) never replaces its target: the file appears whole, once.
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    linked.map_err(write_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/cluster_secret");
        let (first, created) = ClusterSecret::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(first.expose().len(), 64);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let (second, created) = ClusterSecret::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first, second);
        assert!(first.matches(second.expose().as_bytes()));
        assert!(!first.matches(b"something else entirely"));
        assert!(!first.matches(&second.expose().as_bytes()[1..]));
        // No temp files are left behind.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster_secret");
        let secrets: Vec<ClusterSecret> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| ClusterSecret::load_or_create(&path).unwrap().0))
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|secret| *secret == secrets[0]));
    }

    #[test]
    fn bad_files_are_errors_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster_secret");
        assert!(matches!(ClusterSecret::load(&path), Err(SecretError::Missing { .. })));
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            ClusterSecret::load_or_create(&path),
            Err(SecretError::Invalid { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short");
        let error = ClusterSecret::load(&path).unwrap_err().to_string();
        assert!(!error.contains("short"), "the secret is never repeated: {error}");
    }

    #[test]
    fn private_writes_replace_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoard-site.properties");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"hoard.security.admin.token=x\n").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"hoard.security.admin.token=x\n");
        assert!(write_new_private(&path, b"again").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"hoard.security.admin.token=x\n");
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = ClusterSecret::parse("0123456789abcdef0123").unwrap();
        assert!(!format!("{secret:?}").contains("0123"));
        assert!(ClusterSecret::parse("has a space in it ok").is_err());
    }
}
