//! Warnings a daemon logs at start about settings that work today and fail later: a worker's
//! identity or page store on a file system a reboot clears, and an advertised loopback address
//! in a cluster whose other members are on other machines.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoard_config::{MembershipType, SiteConfig};

/// Why a path may not survive a reboot, if it may not.
fn volatile_reason(path: &Path) -> Option<&'static str> {
    if path.starts_with("/tmp") {
        return Some("under /tmp");
    }
    match nearest_existing(path).map(|existing| is_tmpfs(&existing)) {
        Some(true) => Some("on tmpfs (memory)"),
        _ => None,
    }
}

/// `path` or its nearest ancestor that exists (the file may not be created yet).
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|candidate| candidate.exists())
        .map(Path::to_path_buf)
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(raw) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own and reads the NUL-terminated path.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(raw.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    // f_type's integer type (and TMPFS_MAGIC's) differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let (fs_type, tmpfs) = (stat.f_type as i64, libc::TMPFS_MAGIC as i64);
    fs_type == tmpfs
}

/// Warns when the worker's identity file or a page store dir may be cleared by a reboot: the
/// worker would then take a new id (a new place on the ring) and lose its cache. Blocking.
pub fn warn_volatile_worker_paths(config: &SiteConfig) {
    let worker = &config.worker;
    if let Some(reason) = volatile_reason(&worker.identity_file) {
        tracing::warn!(
            path = %worker.identity_file.display(),
            "the worker identity file is {reason}: a reboot may clear it, and the worker would come back with a new id and an empty cache; set hoard.work.dir (or hoard.worker.identity.uuid.file.path) to a persistent directory"
        );
    }
    for dir in &worker.page_store_dirs {
        if let Some(reason) = volatile_reason(dir) {
            tracing::warn!(
                path = %dir.display(),
                "the page store dir is {reason}: a reboot clears the cache; set hoard.work.dir (or hoard.worker.page.store.dirs) to a persistent directory"
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Only this machine can use it.
    Loopback,
    /// Other machines can (or the name says so).
    Remote,
    /// Could not tell (a name that does not resolve).
    Unknown,
}

/// What a host is without asking DNS: a literal address or `localhost`.
fn literal_reach(host: &str) -> Option<Reach> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Some(Reach::Unknown);
        }
        return Some(if ip.is_loopback() {
            Reach::Loopback
        } else {
            Reach::Remote
        });
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(Reach::Loopback);
    }
    None
}

/// Loopback when every address is; remote when any is not.
fn reach_of(addresses: &[IpAddr]) -> Reach {
    if addresses.is_empty() {
        Reach::Unknown
    } else if addresses.iter().all(IpAddr::is_loopback) {
        Reach::Loopback
    } else {
        Reach::Remote
    }
}

async fn reach(host: &str) -> Reach {
    if let Some(reach) = literal_reach(host) {
        return reach;
    }
    let lookup = tokio::net::lookup_host((host, 0));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addresses)) => reach_of(&addresses.map(|address| address.ip()).collect::<Vec<_>>()),
        _ => Reach::Unknown,
    }
}

/// The host part of `host:port`, `[v6]:port` or `http://host:port`.
fn host_of(address: &str) -> &str {
    let address = address.split_once("://").map_or(address, |(_, rest)| rest);
    let address = address.trim_end_matches('/');
    if let Some(end) = address.find(']') {
        return &address[..=end];
    }
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

/// Everyone a worker's configuration says it works with: coordinators, etcd, listed workers.
pub fn worker_peers(config: &SiteConfig) -> Vec<String> {
    let mut peers = Vec::new();
    match config.worker.membership_type {
        MembershipType::Static => {}
        MembershipType::Coordinator => {
            peers.extend(config.coordinator.client_addresses().iter().map(ToString::to_string))
        }
        MembershipType::Etcd => peers.extend(config.etcd.endpoints.iter().cloned()),
    }
    peers.extend(config.workers.iter().map(ToString::to_string));
    peers
}

/// Everyone a coordinator's configuration says it works with.
pub fn coordinator_peers(config: &SiteConfig) -> Vec<String> {
    let mut peers: Vec<String> = config.coordinator.addresses.iter().map(ToString::to_string).collect();
    peers.extend(config.etcd.endpoints.iter().cloned());
    peers.extend(config.workers.iter().map(ToString::to_string));
    peers
}

/// Warns when this process advertises a loopback address (other machines cannot reach it)
/// while its configuration names peers on other machines.
pub async fn warn_loopback_advertised(advertised_host: &str, role: &str, peers: &[String]) {
    if reach(advertised_host).await != Reach::Loopback {
        return;
    }
    for peer in peers {
        if reach(host_of(peer)).await == Reach::Remote {
            let key = if role == "worker" {
                "hoard.worker.hostname"
            } else {
                "hoard.coordinator.hostname"
            };
            tracing::warn!(
                advertised = advertised_host,
                peer = %peer,
                "this {role} advertises a loopback address, which other machines cannot reach, while its configuration names {peer} on another machine; set {key} to a name or address the others can reach"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_hosts() {
        assert_eq!(literal_reach("127.0.0.1"), Some(Reach::Loopback));
        assert_eq!(literal_reach("127.3.2.1"), Some(Reach::Loopback));
        assert_eq!(literal_reach("[::1]"), Some(Reach::Loopback));
        assert_eq!(literal_reach("localhost"), Some(Reach::Loopback));
        assert_eq!(literal_reach("LOCALHOST."), Some(Reach::Loopback));
        assert_eq!(literal_reach("10.0.0.5"), Some(Reach::Remote));
        assert_eq!(literal_reach("[fe80::1]"), Some(Reach::Remote));
        assert_eq!(literal_reach("0.0.0.0"), Some(Reach::Unknown));
        assert_eq!(literal_reach("worker1.example.com"), None);
    }

    #[test]
    fn resolved_names() {
        let loopback: IpAddr = "127.0.1.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(reach_of(&[loopback]), Reach::Loopback);
        assert_eq!(reach_of(&[loopback, remote]), Reach::Remote);
        assert_eq!(reach_of(&[]), Reach::Unknown);
    }

    #[test]
    fn hosts_of_peer_addresses() {
        assert_eq!(host_of("10.0.0.5:19999"), "10.0.0.5");
        assert_eq!(host_of("http://etcd1:2379"), "etcd1");
        assert_eq!(host_of("http://[::1]:2379/"), "[::1]");
        assert_eq!(host_of("[fe80::1]:29999"), "[fe80::1]");
        assert_eq!(host_of("worker1"), "worker1");
    }

    #[test]
    fn volatile_paths() {
        assert_eq!(
            volatile_reason(Path::new("/tmp/hoard/system-info/worker_identity")),
            Some("under /tmp")
        );
        assert_eq!(
            volatile_reason(Path::new("/tmpfoo/x")).is_some(),
            is_tmpfs(Path::new("/"))
        );
        if is_tmpfs(Path::new("/dev/shm")) {
            assert_eq!(
                volatile_reason(Path::new("/dev/shm/not/yet/created")),
                Some("on tmpfs (memory)")
            );
        }
    }
}
