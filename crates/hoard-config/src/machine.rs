//! Defaults that depend on the machine rather than the conf dir: where the work dir goes and
//! what host name to advertise. Resolved from an [`Environment`] the binary captures once.

use std::path::{Path, PathBuf};

use crate::{keys, normalize, workers};

/// What some defaults depend on outside the conf dir: the machine's name and where the user's
/// data lives. hoard-config never reads the environment itself; the binary captures this once
/// at start and passes it in (tests pass their own; [`Environment::default`] knows nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// The machine's name (`gethostname`): the default of the host names.
    pub hostname: Option<String>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<String>,
    /// `$HOME`.
    pub home: Option<String>,
}

/// The work dir when it can be created or written: survives reboots, unlike /tmp.
pub const SYSTEM_WORK_DIR: &str = "/var/lib/hoard";

/// The default of `hoard.work.dir`: [`SYSTEM_WORK_DIR`] when it can be created or written,
/// else `$XDG_DATA_HOME/hoard`, else `$HOME/.local/share/hoard` (relative values of those
/// variables are ignored, as the XDG spec says), else [`SYSTEM_WORK_DIR`] anyway (creating it
/// then fails with an error naming it).
pub fn default_work_dir(env: &Environment) -> PathBuf {
    resolve_work_dir(Path::new(SYSTEM_WORK_DIR), env)
}

pub(crate) fn resolve_work_dir(system: &Path, env: &Environment) -> PathBuf {
    if can_create_or_write(system) {
        return system.to_path_buf();
    }
    let absolute = |value: &Option<String>| value.clone().filter(|dir| Path::new(dir).is_absolute());
    if let Some(data_home) = absolute(&env.xdg_data_home) {
        return normalize(&Path::new(&data_home).join("hoard"));
    }
    if let Some(home) = absolute(&env.home) {
        return normalize(&Path::new(&home).join(".local/share/hoard"));
    }
    system.to_path_buf()
}

/// Whether this process could create `dir` (its nearest existing ancestor is a directory it
/// may write) or write in it (it exists). Asks the kernel (`access(2)`), creating nothing.
fn can_create_or_write(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut candidate = dir;
    loop {
        match std::fs::metadata(candidate) {
            Ok(meta) => {
                if !meta.is_dir() {
                    return false;
                }
                let Ok(path) = std::ffi::CString::new(candidate.as_os_str().as_bytes()) else {
                    return false;
                };
                // SAFETY: access(2) only reads the NUL-terminated path.
                return unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => match candidate.parent() {
                Some(parent) => candidate = parent,
                None => return false,
            },
            Err(_) => return false,
        }
    }
}

/// The default of `hoard.worker.hostname` and `hoard.coordinator.hostname`: the machine's name
/// when it is a valid host name, else `localhost` (with a warning saying why).
pub(crate) fn default_hostname(env: &Environment, warnings: &mut Vec<String>) -> String {
    let Some(name) = env.hostname.as_deref().map(str::trim).filter(|name| !name.is_empty()) else {
        return "localhost".to_string();
    };
    match workers::parse_host(name) {
        Ok(host) => host,
        Err(reason) => {
            warnings.push(format!(
                "the machine's name {name:?} is not a usable host name ({reason}); the host names default to localhost (set {} and {})",
                keys::WORKER_HOSTNAME,
                keys::COORDINATOR_HOSTNAME
            ));
            "localhost".to_string()
        }
    }
}
