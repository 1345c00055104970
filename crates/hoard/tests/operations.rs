//! What an operator sees of a cluster's life: warnings at start about settings that lose the
//! cache on reboot, and `hoard local stop` with a process that does not stop by itself.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A directory a reboot keeps (not under /tmp, not on tmpfs) for files the test wants on a
/// persistent disk: the target dir, unless the checkout itself sits under /tmp (a clean clone
/// in CI may), then /var/tmp or the home directory.
fn persistent_parent() -> std::path::PathBuf {
    let candidates = [
        Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))),
        Some(std::path::PathBuf::from("/var/tmp")),
        std::env::var_os("HOME").map(std::path::PathBuf::from),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| {
            let fs_type = std::process::Command::new("stat")
                .args(["-f", "-c", "%T"])
                .arg(dir)
                .output()
                .ok()
                .filter(|output| output.status.success())
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
            !dir.starts_with("/tmp") && fs_type.is_some_and(|fs_type| fs_type != "tmpfs")
        })
        .expect("a directory that is neither under /tmp nor on tmpfs (target dir, /var/tmp or $HOME)")
}

/// A directory removed when the test ends, pass or fail.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Alive, as opposed to gone or a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[test]
fn a_worker_on_tmpfs_warns_at_start() {
    let data = content(501, 300_000);
    let ufs = ufs_with(&[("/w.bin", data.clone())]);
    // The page store on tmpfs (/dev/shm), the identity file on a persistent disk, so the
    // warning names the page store only.
    let shm = RemoveOnDrop(std::path::PathBuf::from(format!(
        "/dev/shm/hoard-test-{}",
        std::process::id()
    )));
    let persistent = tempfile::tempdir_in(persistent_parent()).expect("persistent dir");
    let pages = format!("hoard.worker.page.store.dirs={}", shm.0.display());
    let identity = format!(
        "hoard.worker.identity.uuid.file.path={}",
        persistent.path().join("worker_identity").display()
    );
    let cluster = Cluster::start(
        1,
        ufs.path(),
        &[&pages, &identity, "hoard.worker.page.store.direct.write.enabled=false"],
    );
    let worker = cluster.processes().remove(0);
    let log = std::fs::read_to_string(&worker.log_file).expect("worker log");
    assert!(
        log.contains("the page store dir is on tmpfs (memory): a reboot clears the cache"),
        "{log}"
    );
    assert!(
        log.contains(&shm.0.display().to_string()),
        "the warning names the dir: {log}"
    );
    assert!(
        !log.contains("the worker identity file is"),
        "the identity file is on a persistent disk: {log}"
    );
    // Warned, not refused: the worker serves from tmpfs.
    let cat = cluster.hoard(&["fs", "cat", "/w.bin"]);
    assert!(cat.status.success() && cat.stdout == data, "{}", describe(&cat));
    cluster.wait_cached("/w.bin", data.len() as u64);
    assert!(std::fs::read_dir(&shm.0).expect("page store").next().is_some());
}

#[test]
fn local_stop_kills_what_does_not_stop_and_says_so() {
    let ufs = ufs_with(&[("/x.bin", content(502, 1000))]);
    let cluster = Cluster::start(2, ufs.path(), &[]);
    let processes = cluster.all_processes();
    assert_eq!(processes.len(), 3);
    let paused = cluster.process_named("worker-0");
    // A paused process cannot act on SIGTERM.
    let status = Command::new("kill")
        .args(["-STOP", &paused.pid.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(status.success());
    let home = cluster.home.path().to_path_buf();
    let stop = Command::new(HOARD)
        .args(["local", "stop", "--grace", "1s", "--home"])
        .arg(&home)
        .output()
        .expect("local stop");
    let stdout = String::from_utf8_lossy(&stop.stdout);
    assert!(stop.status.success(), "{}", describe(&stop));
    assert!(
        stdout.contains(&format!("killed worker-0 (pid {}) with SIGKILL", paused.pid)),
        "{stdout}"
    );
    assert!(
        !stdout.contains("killed worker-1") && !stdout.contains("killed coordinator"),
        "{stdout}"
    );
    assert!(stdout.contains("stopped 3 process(es)"), "{stdout}");
    for process in &processes {
        assert!(
            !alive(process.pid),
            "{} (pid {}) is still running",
            process.name,
            process.pid
        );
    }
    // Nothing is left to stop: a second stop stops nothing and succeeds.
    let again = Command::new(HOARD)
        .args(["local", "stop", "--home"])
        .arg(&home)
        .output()
        .expect("local stop");
    assert!(again.status.success(), "{}", describe(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("stopped 0 process(es)"));
    // A bad grace period is refused before anything is signalled.
    let bad = Command::new(HOARD)
        .args(["local", "stop", "--grace", "soon", "--home"])
        .arg(Path::new(&home))
        .output()
        .expect("local stop");
    assert!(!bad.status.success());
    wait_until("nothing left running", Duration::from_secs(5), || {
        processes.iter().all(|process| !alive(process.pid))
    });
}
