//! The worker's persistent identity: a UUID kept in `hoard.worker.identity.uuid.file.path`,
//! created once and reused on every restart, so a restarted worker keeps its place (and cache).

use std::io::Write;
use std::path::Path;

use crate::WorkerError;

/// Reads the identity file, or creates it with a fresh UUID if it does not exist yet.
/// Creation writes a temp file and renames it, so a crash never leaves a half-written id.
pub fn load_or_create(path: &Path) -> Result<String, WorkerError> {
    let io_error = |cause: std::io::Error| WorkerError::Identity {
        path: path.to_path_buf(),
        cause,
    };
    match std::fs::read_to_string(path) {
        Ok(contents) => {
            let id = contents.trim();
            return uuid::Uuid::parse_str(id).map(|uuid| uuid.to_string()).map_err(|err| {
                WorkerError::InvalidIdentity {
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                }
            });
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(err)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&temp).map_err(io_error)?;
    file.write_all(format!("{id}\n").as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    std::fs::rename(&temp, path).map_err(io_error)?;
    tracing::info!(worker_id = %id, path = %path.display(), "created worker identity");
    Ok(id)
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
