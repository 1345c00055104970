//! Replicas on real processes (docs/replicas.md): loads follow the rules (nested, longest
//! prefix), a load that cannot make every copy is not a success, reads spread over replicas as
//! the selection policy says and survive a killed replica, and two clusters (zones) read their
//! own copies first and the other zone's when theirs are gone.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const LEN: usize = 96 * 1024;

/// Bytes of `path` the worker at `address` holds in its page store.
fn cached_on(address: &str, path: &str) -> u64 {
    let (status, _, body) = http_get(address, &format!("/api/v1/stat?path={path}")).expect("stat");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let stat: serde_json::Value = serde_json::from_slice(&body).expect("stat json");
    stat["cachedBytes"].as_u64().expect("cachedBytes")
}

/// How many of `workers` hold all of `path`; every other one holds none of it.
fn whole_copies(workers: &[Process], path: &str) -> usize {
    let mut whole = 0;
    for worker in workers {
        match cached_on(&worker.address, path) {
            0 => {}
            bytes if bytes == LEN as u64 => whole += 1,
            bytes => panic!("{} holds {bytes} bytes of {path}: part of a copy", worker.name),
        }
    }
    whole
}

fn set_rule(cluster: &Cluster, path: &str, replicas: u32) {
    let output = cluster.hoard(&["replica", "set", "--path", path, "--replicas", &replicas.to_string()]);
    assert!(output.status.success(), "{}", describe(&output));
}

fn load(cluster: &Cluster, path: &str) -> serde_json::Value {
    let job = submit(cluster, &["load", "--path", path]);
    wait_job(cluster, &job, Duration::from_secs(60))
}

fn cat(cluster: &Cluster, conf: &Path, path: &str) -> Vec<u8> {
    let output = hoard_with_conf(conf, &["fs", "cat", path]);
    assert!(
        output.status.success(),
        "cat {path} ({}): {}",
        cluster.conf.display(),
        describe(&output)
    );
    output.stdout
}

/// A copy of the client configuration with `property` added (e.g. another selection policy).
fn conf_with(cluster: &Cluster, property: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hoard-conf")
        .tempdir()
        .expect("conf dir");
    for entry in std::fs::read_dir(&cluster.conf).expect("conf") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy conf");
    }
    let site = dir.path().join("hoard-site.properties");
    let mut text = std::fs::read_to_string(&site).expect("site properties");
    text.push_str(&format!("\n{property}\n"));
    std::fs::write(&site, text).expect("write site properties");
    dir
}

fn bytes_served(worker: &Process) -> f64 {
    metric(&worker.address, "hoard_worker_bytes_served_total")
}

#[test]
fn loads_follow_the_rules_and_a_shortfall_is_not_a_success() {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..6 {
        files.push((format!("/vip/f{i}"), content(i, LEN)));
        files.push((format!("/vip/tmp/t{i}"), content(100 + i, LEN)));
        files.push((format!("/plain/p{i}"), content(200 + i, LEN)));
        files.push((format!("/later/l{i}"), content(300 + i, LEN)));
    }
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&borrowed);
    let cluster = Cluster::start(3, ufs.path(), &["hoard.worker.failure.detection.timeout=2s"]);
    let workers = cluster.processes();

    // Nested rules: the longest prefix wins.
    set_rule(&cluster, "/vip", 3);
    set_rule(&cluster, "/vip/tmp", 1);
    let job = load(&cluster, "/");
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert!(job.get("replicaShortfall").is_none(), "{job}");
    for i in 0..6 {
        assert_eq!(whole_copies(&workers, &format!("/vip/f{i}")), 3, "/vip/f{i}");
        assert_eq!(whole_copies(&workers, &format!("/vip/tmp/t{i}")), 1, "/vip/tmp/t{i}");
        assert_eq!(whole_copies(&workers, &format!("/plain/p{i}")), 1, "/plain/p{i}");
    }

    // fs stat: the rule, where the copies are wanted (ideal) and who holds them (current).
    let stat = cluster.hoard(&["fs", "stat", "/vip/tmp/t0", "--format", "json"]);
    assert!(stat.status.success(), "{}", describe(&stat));
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat json");
    assert_eq!(stat["rule"]["path"], "/vip/tmp", "{stat}");
    assert_eq!(stat["replicas"][0]["wanted"], 1, "{stat}");
    let wanted = stat["replicas"][0]["workers"].as_array().expect("workers").clone();
    let holders = stat["holders"].as_array().expect("holders").clone();
    assert_eq!(holders.len(), 1, "{stat}");
    assert_eq!(holders[0]["address"], wanted[0], "held where wanted: {stat}");
    assert_eq!(holders[0]["whole"], true, "{stat}");
    let stat = cluster.hoard(&["fs", "stat", "/vip/f0", "--format", "json"]);
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat json");
    assert_eq!(stat["rule"]["numReplicasPerCluster"], 3, "{stat}");
    assert_eq!(stat["holders"].as_array().map(Vec::len), Some(3), "{stat}");
    let text = cluster.hoard(&["fs", "stat", "/vip/f0"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("replica rule:  /vip (3 per cluster)"),
        "{}",
        describe(&text)
    );

    // The coordinator's view of a tree: every file under /vip, its rule and its holders.
    let coordinator = cluster.coordinator().address;
    let (status, _, body) = http_get(&coordinator, "/api/v1/replicas?path=/vip").expect("replicas");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let tree: serde_json::Value = serde_json::from_slice(&body).expect("replicas json");
    let listed = tree["files"].as_array().expect("files");
    assert_eq!(listed.len(), 12, "{tree}");
    assert_eq!(tree["truncated"], false);
    for file in listed {
        let nested = file["path"].as_str().expect("path").starts_with("/vip/tmp/");
        let copies = if nested { 1 } else { 3 };
        assert_eq!(file["rule"]["numReplicasPerCluster"], copies, "{file}");
        let holders = file["holders"].as_array().expect("holders");
        assert_eq!(holders.len(), copies as usize, "{file}");
        assert!(holders.iter().all(|holder| holder["whole"] == true), "{file}");
    }
    let (status, _, body) = http_get(&coordinator, "/api/v1/replicas?path=/vip&limit=2").expect("replicas");
    assert_eq!(status, 200);
    let tree: serde_json::Value = serde_json::from_slice(&body).expect("replicas json");
    assert_eq!(
        (tree["files"].as_array().map(Vec::len), &tree["truncated"]),
        (Some(2), &serde_json::json!(true))
    );
    for bad in [
        "/api/v1/replicas?path=/vip&limit=0",
        "/api/v1/replicas?path=/vip&limit=1001",
        "/api/v1/replicas?limit=3",
    ] {
        let (status, _, body) = http_get(&coordinator, bad).expect("replicas");
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = http_get(&coordinator, "/api/v1/replicas?path=/nothing").expect("replicas");
    assert_eq!(status, 404);

    // A load keeps the rules it was submitted under: removing the rule right after changes
    // nothing for it.
    set_rule(&cluster, "/later", 2);
    let job_id = submit(&cluster, &["load", "--path", "/later"]);
    let removed = cluster.hoard(&["replica", "remove", "--path", "/later"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    let job = wait_job(&cluster, &job_id, Duration::from_secs(60));
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    for i in 0..6 {
        assert_eq!(whole_copies(&workers, &format!("/later/l{i}")), 2, "/later/l{i}");
    }

    // 3 copies with 2 ONLINE workers: FAILED, naming the shortfall (Alluxio #14274 said
    // SUCCEEDED here).
    let victim = &workers[2];
    kill9(victim.pid);
    wait_until("the killed worker is OFFLINE", Duration::from_secs(30), || {
        cluster
            .worker_states()
            .iter()
            .any(|(_, address, online)| *address == victim.address && !online)
    });
    set_rule(&cluster, "/plain", 3);
    let job = load(&cluster, "/plain");
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["replicaShortfall"]["files"], 6, "{job}");
    assert_eq!(job["replicaShortfall"]["missingCopies"], 6, "{job}");
    assert!(
        job["error"].as_str().unwrap_or_default().contains("replica shortfall"),
        "{job}"
    );
    let progress = cluster.hoard(&["job", "load", "--path", "/plain", "--progress"]);
    assert!(
        String::from_utf8_lossy(&progress.stdout).contains("replica shortfall: 6 files lack 6 copies"),
        "{}",
        describe(&progress)
    );
    // Nothing served is wrong meanwhile.
    for i in 0..6 {
        assert_eq!(
            cat(&cluster, &cluster.conf, &format!("/plain/p{i}")),
            content(200 + i, LEN)
        );
    }

    // The third worker back: the same load succeeds with every copy.
    let _back = restart_worker(victim);
    wait_until("the worker is ONLINE again", Duration::from_secs(30), || {
        cluster.worker_states().iter().all(|(_, _, online)| *online)
    });
    let job = load(&cluster, "/plain");
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    for i in 0..6 {
        assert_eq!(whole_copies(&workers, &format!("/plain/p{i}")), 3, "/plain/p{i}");
    }
}

#[test]
fn reads_spread_over_replicas_by_policy_and_survive_a_killed_replica() {
    let files: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("/hot/h{i}"), content(400 + i, LEN))).collect();
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&borrowed);
    let cluster = Cluster::start(3, ufs.path(), &[]);
    let workers = cluster.processes();
    set_rule(&cluster, "/hot", 3);
    let job = load(&cluster, "/hot");
    assert_eq!(job["state"], "SUCCEEDED", "{job}");

    let policies = ["GLOBAL_FIXED", "CLIENT_FIXED", "RANDOM"];
    let confs: Vec<tempfile::TempDir> = policies
        .iter()
        .map(|policy| conf_with(&cluster, &format!("hoard.user.replica.selection.policy={policy}")))
        .collect();
    for (policy, conf) in policies.iter().zip(&confs) {
        let before: Vec<f64> = workers.iter().map(bytes_served).collect();
        // One client process per read: CLIENT_FIXED's order is per client.
        for _ in 0..12 {
            assert_eq!(cat(&cluster, conf.path(), "/hot/h0"), content(400, LEN), "{policy}");
        }
        let serving = workers
            .iter()
            .zip(&before)
            .filter(|(worker, before)| bytes_served(worker) > **before)
            .count();
        if *policy == "GLOBAL_FIXED" {
            assert_eq!(serving, 1, "GLOBAL_FIXED: every client reads the first replica");
        } else {
            // 12 reads all on one of 3 replicas: (1/3)^11, never in practice.
            assert!(serving >= 2, "{policy}: {serving} worker(s) served");
        }
    }

    // A replica killed: every policy still reads the right bytes, from the others.
    kill9(workers[0].pid);
    for (policy, conf) in policies.iter().zip(&confs) {
        for (path, bytes) in &files {
            assert!(cat(&cluster, conf.path(), path) == *bytes, "{policy}: {path} differs");
        }
    }
}

#[test]
fn two_clusters_read_their_own_copies_first_and_the_other_zone_when_theirs_are_gone() {
    let files: Vec<(String, Vec<u8>)> = (0..6).map(|i| (format!("/d/f{i}"), content(500 + i, LEN))).collect();
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&borrowed);
    let cluster = Cluster::start_with(
        4,
        &ufs.path().display().to_string(),
        &["hoard.worker.failure.detection.timeout=2s"],
        &["--clusters", "2"],
    );
    let workers = cluster.processes();
    // worker-0 and worker-2 in az-1 (the client's), worker-1 and worker-3 in az-2.
    let nodes = cluster.nodes();
    for worker in nodes["workers"].as_array().expect("workers") {
        let index: usize = workers
            .iter()
            .position(|w| worker["address"] == w.address.as_str())
            .expect("a known worker");
        let zone = if index.is_multiple_of(2) { "az-1" } else { "az-2" };
        assert_eq!(worker["cluster"], zone, "{nodes}");
    }
    let (local, remote): (Vec<Process>, Vec<Process>) = workers.iter().cloned().partition(|w| {
        let index = workers.iter().position(|x| x.address == w.address).expect("index");
        index.is_multiple_of(2)
    });

    // The default rule (1 copy per cluster): one copy in each zone.
    let job = load(&cluster, "/d");
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    for (path, _) in &files {
        assert_eq!(whole_copies(&local, path), 1, "{path} in az-1");
        assert_eq!(whole_copies(&remote, path), 1, "{path} in az-2");
    }
    let remote_before: Vec<f64> = remote.iter().map(bytes_served).collect();
    for (path, bytes) in &files {
        assert!(cat(&cluster, &cluster.conf, path) == *bytes, "{path} differs");
    }
    let remote_after: Vec<f64> = remote.iter().map(bytes_served).collect();
    assert_eq!(
        remote_before, remote_after,
        "reads stay in the client's zone while it has copies"
    );

    // The whole local zone down: reads go to the other zone's copies.
    for worker in &local {
        kill9(worker.pid);
    }
    for (path, bytes) in &files {
        assert!(cat(&cluster, &cluster.conf, path) == *bytes, "{path} differs");
    }
    let served: f64 = remote.iter().map(bytes_served).sum::<f64>() - remote_after.iter().sum::<f64>();
    assert!(served >= (files.len() * LEN) as f64, "az-2 served {served} bytes");
}

#[test]
fn a_metadata_refresh_reaches_every_copy_of_a_changed_file() {
    let files: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("/m/f{i}"), content(600 + i, LEN))).collect();
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&borrowed);
    // Workers keep a file's UFS status for an hour: only a refresh makes them see a change.
    let cluster = Cluster::start(3, ufs.path(), &["hoard.user.file.metadata.max.age=1h"]);
    let workers = cluster.processes();
    set_rule(&cluster, "/m", 3);
    let job = load(&cluster, "/m");
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let read_from = |worker: &Process, path: &str| -> Vec<u8> {
        let (status, _, body) = http_get(&worker.address, &format!("/files{path}")).expect("read");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        body
    };
    for (path, bytes) in &files {
        for worker in &workers {
            assert!(read_from(worker, path) == *bytes, "{path} from {}", worker.name);
        }
    }

    // Rewritten in the UFS, another length: every copy still serves the version it knows.
    let changed: Vec<Vec<u8>> = (0..3).map(|i| content(700 + i, LEN / 2)).collect();
    for ((path, _), bytes) in files.iter().zip(&changed) {
        std::fs::write(ufs.path().join(path.trim_start_matches('/')), bytes).expect("rewrite");
    }
    let stale = read_from(&workers[0], &files[0].0);
    assert!(
        stale == files[0].1,
        "before the refresh, a copy serves the version it knows, whole"
    );

    // The rule is lowered meanwhile: two of the copies are no longer among the file's
    // replicas, and must be refreshed all the same.
    set_rule(&cluster, "/m", 1);
    let job = submit(&cluster, &["load", "--path", "/m", "--metadata-only"]);
    let job = wait_job(&cluster, &job, Duration::from_secs(60));
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    for ((path, _), bytes) in files.iter().zip(&changed) {
        for worker in &workers {
            assert!(
                read_from(worker, path) == *bytes,
                "{path} from {}: old bytes after the refresh",
                worker.name
            );
        }
    }
}

#[test]
fn prefer_cached_replicas_reads_from_the_copy_that_is_whole() {
    let files: Vec<(String, Vec<u8>)> = (0..2).map(|i| (format!("/p/f{i}"), content(800 + i, LEN))).collect();
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&borrowed);
    let cluster = Cluster::start(3, ufs.path(), &[]);
    let workers = cluster.processes();
    set_rule(&cluster, "/p", 3);
    // One copy only (the first candidate's): the other two replicas are cold.
    let job = submit(&cluster, &["load", "--path", "/p/f0", "--replicas", "1"]);
    let job = wait_job(&cluster, &job, Duration::from_secs(60));
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let holder = workers
        .iter()
        .find(|worker| cached_on(&worker.address, "/p/f0") == LEN as u64)
        .expect("one worker holds /p/f0")
        .clone();

    // RANDOM would spread reads over the three replicas; preferring cached ones, every read
    // goes to the one holding the file whole, and the cold ones are never read from.
    let conf = conf_with(
        &cluster,
        "hoard.user.replica.selection.policy=RANDOM\nhoard.user.replica.prefer.cached.replicas=true",
    );
    let before: Vec<f64> = workers.iter().map(bytes_served).collect();
    for _ in 0..8 {
        let output = hoard_with_conf(conf.path(), &["fs", "cat", "/p/f0", "--stats"]);
        assert!(output.status.success(), "{}", describe(&output));
        assert!(output.stdout == files[0].1, "/p/f0 differs");
        let stats = String::from_utf8_lossy(&output.stderr);
        assert!(
            stats.contains(&format!(
                "hoard_multi_replica_read_from_workers_bytes_total{{cluster_name=\"default\",local_cluster=\"true\",hot_read=\"true\"}} {LEN}"
            )),
            "{stats}"
        );
    }
    for (worker, before) in workers.iter().zip(&before) {
        let served = bytes_served(worker) - before;
        if worker.address == holder.address {
            assert_eq!(served, (8 * LEN) as f64);
        } else {
            assert_eq!(served, 0.0, "{} is cold and was read from", worker.name);
            assert_eq!(cached_on(&worker.address, "/p/f0"), 0);
        }
    }

    // No replica holds /p/f1 whole: a cold read from the first choice, counted as not hot.
    let output = hoard_with_conf(conf.path(), &["fs", "cat", "/p/f1", "--stats"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(output.stdout == files[1].1, "/p/f1 differs");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("hot_read=\"false\"}} {LEN}")),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_passive_cache_loads_the_file_on_the_preferred_worker() {
    let bytes = content(900, LEN);
    let ufs = ufs_with(&[("/q/f", bytes.clone())]);
    let cluster = Cluster::start(3, ufs.path(), &[]);
    let workers = cluster.processes();
    set_rule(&cluster, "/q", 3);
    // GLOBAL_FIXED: every client prefers the first candidate. Cache the file on the second
    // only, by loading it there while the first is down.
    let order = cluster.hoard(&["fs", "location", "/q/f", "-n", "3", "--format", "json"]);
    assert!(order.status.success(), "{}", describe(&order));
    let order: serde_json::Value = serde_json::from_slice(&order.stdout).expect("location json");
    let address = |i: usize| order[0]["workers"][i]["address"].as_str().expect("address").to_string();
    let preferred = cluster.worker_by_address(&address(0));
    let second = cluster.worker_by_address(&address(1));
    let read_there = |worker: &Process| {
        let (status, _, body) = http_get(&worker.address, "/files/q/f").expect("read");
        assert_eq!(status, 200);
        assert!(body == bytes, "bytes differ");
    };
    read_there(&second);
    wait_until(
        "the second replica holds the file whole",
        Duration::from_secs(30),
        || cached_on(&second.address, "/q/f") == LEN as u64,
    );
    assert_eq!(cached_on(&preferred.address, "/q/f"), 0);

    let conf = conf_with(
        &cluster,
        "hoard.user.replica.prefer.cached.replicas=true\nhoard.user.file.passive.cache.enabled=true",
    );
    let output = hoard_with_conf(conf.path(), &["fs", "cat", "/q/f", "--stats"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(output.stdout == bytes, "/q/f differs");
    // Read from the second (hot); the preferred worker loads it in the background.
    wait_until(
        "the preferred worker holds the file whole",
        Duration::from_secs(30),
        || cached_on(&preferred.address, "/q/f") == LEN as u64,
    );
    let passive = |result: &str| {
        metric(
            &preferred.address,
            &format!("hoard_passive_cache_async_loaded_files_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(passive("submitted"), 1.0);
    wait_until("the load is counted", Duration::from_secs(10), || {
        passive("success") == 1.0
    });
    assert!(workers
        .iter()
        .all(|w| w.address == preferred.address || w.address == second.address || cached_on(&w.address, "/q/f") == 0));

    // The next read finds the preferred worker whole and reads there.
    let before = bytes_served(&preferred);
    let output = hoard_with_conf(conf.path(), &["fs", "cat", "/q/f"]);
    assert!(
        output.status.success() && output.stdout == bytes,
        "{}",
        describe(&output)
    );
    assert_eq!(bytes_served(&preferred) - before, LEN as f64);
}

/// The newest repair job of /keep, as `hoard job list` shows it.
fn newest_repair(cluster: &Cluster) -> serde_json::Value {
    let jobs = cluster.hoard(&["job", "list", "--format", "json"]);
    assert!(jobs.status.success(), "{}", describe(&jobs));
    let jobs: serde_json::Value = serde_json::from_slice(&jobs.stdout).expect("jobs json");
    jobs.as_array()
        .expect("jobs")
        .iter()
        .filter(|job| job["type"] == "repair" && job["path"] == "/keep")
        .max_by_key(|job| job["createdMs"].as_u64().unwrap_or(0))
        .cloned()
        .expect("a repair job")
}

/// Whole copies of each of `files` on `workers`.
fn copies_of(workers: &[Process], files: &[(String, Vec<u8>)]) -> Vec<usize> {
    files.iter().map(|(path, _)| whole_copies(workers, path)).collect()
}

#[test]
fn maintained_rules_are_repaired_to_their_count() {
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("/keep/f{i}"), content(1000 + i, LEN)))
        .collect();
    let borrowed: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let ufs = ufs_with(&borrowed);
    let cluster = Cluster::start(
        3,
        ufs.path(),
        &[
            // Every repair here is started by a change (a rule, a worker), not by the interval.
            "hoard.coordinator.replica.repair.interval=1h",
            "hoard.worker.failure.detection.timeout=2s",
        ],
    );
    let workers = cluster.processes();
    let set = cluster.hoard(&["replica", "set", "--path", "/keep", "--replicas", "2", "--maintain"]);
    assert!(set.status.success(), "{}", describe(&set));

    // Nobody loads: the repair loop makes the copies.
    wait_until("2 copies of every file", Duration::from_secs(60), || {
        copies_of(&workers, &files).iter().all(|copies| *copies == 2)
    });
    let repair = newest_repair(&cluster);
    let repair = wait_job(&cluster, repair["jobId"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(repair["state"], "SUCCEEDED", "{repair}");

    // A worker holding copies removed for good: the copies come back on the others.
    let victim = workers
        .iter()
        .find(|worker| whole_copies(std::slice::from_ref(worker), &files[0].0) == 1)
        .expect("a worker holding /keep/f0")
        .clone();
    kill9(victim.pid);
    wait_until("the worker is OFFLINE", Duration::from_secs(30), || {
        cluster
            .worker_states()
            .iter()
            .any(|(_, address, online)| *address == victim.address && !online)
    });
    let removed = cluster.hoard(&["process", "remove-worker", "-n", &victim.id, "--force"]);
    assert!(removed.status.success(), "{}", describe(&removed));
    let rest: Vec<Process> = workers
        .iter()
        .filter(|w| w.address != victim.address)
        .cloned()
        .collect();
    wait_until(
        "2 copies of every file on the remaining workers",
        Duration::from_secs(60),
        || copies_of(&rest, &files).iter().all(|copies| *copies == 2),
    );
    let repair = newest_repair(&cluster);
    let repair = wait_job(&cluster, repair["jobId"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(repair["state"], "SUCCEEDED", "{repair}");
    for (path, bytes) in &files {
        assert!(cat(&cluster, &cluster.conf, path) == *bytes, "{path} differs");
    }

    // The count lowered: the extra copies are freed.
    let set = cluster.hoard(&["replica", "set", "--path", "/keep", "--replicas", "1", "--maintain"]);
    assert!(set.status.success(), "{}", describe(&set));
    wait_until("1 copy of every file", Duration::from_secs(60), || {
        copies_of(&rest, &files).iter().all(|copies| *copies == 1)
    });
    let repair = newest_repair(&cluster);
    let repair = wait_job(&cluster, repair["jobId"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(repair["state"], "SUCCEEDED", "{repair}");
    for (path, bytes) in &files {
        assert!(cat(&cluster, &cluster.conf, path) == *bytes, "{path} differs");
    }
}
