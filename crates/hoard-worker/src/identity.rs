//! The worker's persistent identity: a UUID kept in `hoard.worker.identity.uuid.file.path`,
//! created once and reused on every restart, so a restarted worker keeps its place (and cache).
//! The file is private (mode 0600): its id lets a process claim the worker's place.

use std::path::Path;

use crate::WorkerError;

/// Reads the identity file, or creates it with a fresh UUID if it does not exist yet.
/// The file appears whole or not at all (a crash never leaves a half-written id) and never
/// replaces one already there: of two processes creating it at once, both use the first id.
pub fn load_or_create(path: &Path) -> Result<String, WorkerError> {
    if let Some(id) = read(path)? {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().to_string();
    match hoard_common::secret::write_new_private(path, format!("{id}\n").as_bytes()) {
        Ok(()) => {
            tracing::info!(worker_id = %id, path = %path.display(), "created worker identity");
            Ok(id)
        }
        Err(hoard_common::secret::SecretError::Write { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            read(path)?.ok_or_else(|| WorkerError::Identity {
                path: path.to_path_buf(),
                cause: source,
            })
        }
        Err(hoard_common::secret::SecretError::Write { source, .. }) => Err(WorkerError::Identity {
            path: path.to_path_buf(),
            cause: source,
        }),
        Err(other) => Err(WorkerError::Identity {
            path: path.to_path_buf(),
            cause: std::io::Error::other(other.to_string()),
        }),
    }
}

/// The id in the file, `None` when there is no file.
fn read(path: &Path) -> Result<Option<String>, WorkerError> {
    match std::fs::read_to_string(path) {
        Ok(contents) => uuid::Uuid::parse_str(contents.trim())
            .map(|uuid| Some(uuid.to_string()))
            .map_err(|err| WorkerError::InvalidIdentity {
                path: path.to_path_buf(),
                reason: err.to_string(),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(WorkerError::Identity {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system-info/worker_identity");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first, second);
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn garbage_identity_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker_identity");
        std::fs::write(&path, "not-a-uuid").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(WorkerError::InvalidIdentity { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not-a-uuid");
    }
}
