use super::*;

const CONF: &str = "/opt/hoard/conf";

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    SiteConfig::from_properties(Path::new(CONF), &props(pairs), None)
}

fn config(pairs: &[(&str, &str)]) -> SiteConfig {
    let loaded = load(pairs).unwrap_or_else(|error| panic!("{pairs:?}: {error}"));
    // The deprecated key is warned about whenever it is set; nothing else may warn.
    let deprecated = pairs.iter().any(|(key, _)| *key == keys::USER_FILE_REPLICATION_MIN);
    let expected = if deprecated {
        vec![deprecated_replication_min_warning()]
    } else {
        Vec::new()
    };
    assert_eq!(loaded.warnings, expected);
    loaded.config
}

/// Asserts `pairs` fail with an `InvalidValue` for `key` whose message names `value` and
/// contains `reason`.
fn assert_invalid(pairs: &[(&str, &str)], key: &str, value: &str, reason: &str) {
    match load(pairs) {
        Err(error @ ConfigError::InvalidValue { .. }) => {
            let message = error.to_string();
            let ConfigError::InvalidValue {
                key: got_key,
                value: got_value,
                reason: got_reason,
            } = error
            else {
                unreachable!()
            };
            assert_eq!(got_key, key, "{pairs:?}: {message}");
            assert_eq!(got_value, value, "{pairs:?}: {message}");
            assert!(got_reason.contains(reason), "{pairs:?}: {message}");
            assert!(
                message.contains(key) && message.contains(&format!("{value:?}")),
                "{message}"
            );
        }
        other => panic!("{pairs:?}: expected an invalid value for {key}, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let config = config(&[]);
    assert_eq!(config, SiteConfig::defaults(Path::new(CONF)));
    assert_eq!(config.conf_dir, Path::new(CONF));
    assert_eq!(config.cluster_name, "default");
    let work = default_work_dir(&Environment::default());
    assert_eq!(config.work_dir, work);
    assert_eq!(config.ufs.root, work.join("underfs").display().to_string());
    assert!(config.ufs.mounts.is_empty());
    assert_eq!(config.ufs.s3, S3Config::default());
    let worker = &config.worker;
    assert_eq!(worker.hostname, "localhost");
    assert_eq!(worker.bind_host, "0.0.0.0");
    assert_eq!(worker.rpc_port, 29999);
    assert_eq!(worker.page_size, 1 << 20);
    assert_eq!(worker.page_store_dirs, vec![work.join("page_store")]);
    assert_eq!(worker.page_store_sizes, vec![1 << 30]);
    assert_eq!(worker.identity_file, work.join("system-info/worker_identity"));
    assert_eq!(
        config.security.cluster_secret_file,
        work.join("system-info/cluster_secret")
    );
    assert_eq!(worker.membership_type, MembershipType::Static);
    assert_eq!(worker.max_request_header_bytes, 16 << 10);
    assert_eq!(worker.ufs_read_timeout, Duration::from_secs(30));
    assert_eq!(worker.memory_size, 1 << 30);
    assert_eq!(worker.io_threads, 0);
    assert_eq!(worker.sendfile_max_size, 256 << 10);
    assert!(worker.event_loops() >= 1);
    assert_eq!(
        worker.address(),
        WorkerAddress {
            host: "localhost".into(),
            port: 29999
        }
    );
    assert_eq!(worker.bind_address(), "0.0.0.0:29999");
    assert_eq!(worker.capacity_bytes(), 1 << 30);
    let user = &config.user;
    assert_eq!(user.metadata_max_age, Duration::from_secs(60));
    assert_eq!(user.virtual_nodes_per_worker, 2000);
    assert_eq!(user.hash_provider, HashProvider::Default);
    assert!(user.dynamic_ring);
    assert_eq!(user.connect_timeout, Duration::from_secs(2));
    assert_eq!(user.read_timeout, Duration::from_secs(30));
    assert_eq!(user.worker_list_refresh_interval, Duration::from_secs(120));
    assert!(config.workers.is_empty());
}

#[test]
fn every_known_default_parses_on_its_own() {
    // Setting each key explicitly to its documented default changes nothing.
    let defaults = config(&[]);
    for spec in known_keys().iter().filter(|spec| !spec.default.is_empty()) {
        assert_eq!(config(&[(spec.name, spec.default)]), defaults, "{}", spec.name);
    }
}

#[test]
fn replication_min_sets_the_default_rule_and_is_warned_once() {
    let quiet = load(&[]).unwrap();
    assert_eq!(quiet.config.user.replication_min_default, 1);
    assert_eq!(
        quiet.config.user.replica_rules_refresh_interval,
        Duration::from_secs(10)
    );
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    let set = load(&[("hoard.user.file.replication.min", "3")]).unwrap();
    assert_eq!(set.config.user.replication_min_default, 3);
    let deprecations: Vec<_> = set.warnings.iter().filter(|w| w.contains("deprecated")).collect();
    assert_eq!(deprecations.len(), 1, "{:?}", set.warnings);
    assert!(deprecations[0].contains("hoard.user.file.replication.min"));
    for bad in ["0", "65", "x"] {
        let err = load(&[("hoard.user.file.replication.min", bad)]).unwrap_err();
        assert!(err.to_string().contains("hoard.user.file.replication.min"), "{err}");
    }
    let err = load(&[("hoard.user.replica.rules.refresh.interval", "0")]).unwrap_err();
    assert!(
        err.to_string().contains("hoard.user.replica.rules.refresh.interval"),
        "{err}"
    );
}

#[test]
fn every_key_parses() {
    let config = config(&[
        ("hoard.cluster.name", "prod-east_1"),
        ("hoard.work.dir", "/var/lib/hoard"),
        ("hoard.underfs.root", "s3://bucket/prefix"),
        ("hoard.underfs.s3.endpoint", "http://minio:9000"),
        ("hoard.underfs.s3.region", "us-east-1"),
        ("hoard.underfs.s3.access.key.id", "AKIA"),
        ("hoard.underfs.s3.secret.access.key", "s3cr3t"),
        ("hoard.worker.hostname", "worker1.example.com"),
        ("hoard.worker.bind.host", "[::]"),
        ("hoard.worker.rpc.port", "30000"),
        ("hoard.worker.page.store.page.size", "4MiB"),
        ("hoard.worker.page.store.dirs", "/mnt/ssd0/hoard, /mnt/ssd1/hoard"),
        ("hoard.worker.page.store.sizes", "100GiB,200GB"),
        ("hoard.worker.identity.uuid.file.path", "/var/lib/hoard/id"),
        ("hoard.worker.membership.manager.type", "static"),
        ("hoard.worker.http.max.header.size", "64KiB"),
        ("hoard.worker.ufs.read.timeout", "1min"),
        ("hoard.user.file.metadata.max.age", "0"),
        (
            "hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker",
            "100",
        ),
        (
            "hoard.user.worker.selection.policy.consistent.hash.provider.impl",
            "capacity",
        ),
        ("hoard.user.dynamic.consistent.hash.ring.enabled", "FALSE"),
        ("hoard.user.network.connect.timeout", "500ms"),
        ("hoard.user.network.read.timeout", "1h"),
        ("hoard.user.worker.list.refresh.interval", "7d"),
    ]);
    assert_eq!(config.cluster_name, "prod-east_1");
    assert_eq!(config.work_dir, Path::new("/var/lib/hoard"));
    assert_eq!(config.ufs.root, "s3://bucket/prefix");
    assert_eq!(
        config.ufs.s3,
        S3Config {
            endpoint: Some("http://minio:9000".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("s3cr3t".into()),
        }
    );
    let worker = &config.worker;
    assert_eq!(worker.hostname, "worker1.example.com");
    assert_eq!(worker.bind_host, "::");
    assert_eq!(worker.bind_address(), "[::]:30000");
    assert_eq!(worker.rpc_port, 30000);
    assert_eq!(worker.page_size, 4 << 20);
    assert_eq!(
        worker.page_store_dirs,
        vec![PathBuf::from("/mnt/ssd0/hoard"), PathBuf::from("/mnt/ssd1/hoard")]
    );
    assert_eq!(worker.page_store_sizes, vec![100 << 30, 200_000_000_000]);
    assert_eq!(worker.capacity_bytes(), (100 << 30) + 200_000_000_000);
    assert_eq!(worker.identity_file, Path::new("/var/lib/hoard/id"));
    assert_eq!(worker.membership_type, MembershipType::Static);
    assert_eq!(worker.max_request_header_bytes, 64 << 10);
    assert_eq!(worker.ufs_read_timeout, Duration::from_secs(60));
    let user = &config.user;
    assert_eq!(user.metadata_max_age, Duration::ZERO);
    assert_eq!(user.virtual_nodes_per_worker, 100);
    assert_eq!(user.hash_provider, HashProvider::Capacity);
    assert!(!user.dynamic_ring);
    assert_eq!(user.connect_timeout, Duration::from_millis(500));
    assert_eq!(user.read_timeout, Duration::from_secs(3600));
    assert_eq!(user.worker_list_refresh_interval, Duration::from_secs(7 * 86400));
}

#[test]
fn values_are_trimmed_and_empty_optionals_are_unset() {
    let config = config(&[
        ("hoard.worker.rpc.port", " 30000 "),
        ("hoard.user.dynamic.consistent.hash.ring.enabled", "True  "),
        ("hoard.underfs.s3.region", "   "),
        ("hoard.underfs.s3.endpoint", ""),
    ]);
    assert_eq!(config.worker.rpc_port, 30000);
    assert!(config.user.dynamic_ring);
    assert_eq!(config.ufs.s3.region, None);
    assert_eq!(config.ufs.s3.endpoint, None);
}

#[test]
fn one_size_applies_to_every_dir() {
    let config = config(&[
        ("hoard.worker.page.store.dirs", "/a,/b,/c"),
        ("hoard.worker.page.store.sizes", "10GiB"),
    ]);
    assert_eq!(config.worker.page_store_sizes, vec![10 << 30; 3]);
}

#[test]
fn bad_values_name_key_value_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("hoard.cluster.name", "a/b", "contains '/'"),
        ("hoard.cluster.name", "..", "must not be"),
        ("hoard.work.dir", "~/hoard", "not expanded"),
        ("hoard.work.dir", "s3://bucket", "local path"),
        ("hoard.underfs.root", "hdfs://nn:8020/data", "unsupported UFS scheme"),
        ("hoard.underfs.root", "s3:///prefix", "missing bucket"),
        ("hoard.underfs.root", "file://relative/dir", "absolute path"),
        ("hoard.worker.hostname", "bad host", "contains ' '"),
        ("hoard.worker.bind.host", "", "must not be empty"),
        ("hoard.worker.bind.host", "[::1", "unbalanced"),
        ("hoard.worker.rpc.port", "0", "not in 1..=65535"),
        ("hoard.worker.rpc.port", "65536", "not in 1..=65535"),
        ("hoard.worker.rpc.port", "http", "not a number"),
        ("hoard.worker.page.store.page.size", "0", "more than 0"),
        ("hoard.worker.page.store.page.size", "65MiB", "at most 64MiB"),
        ("hoard.worker.page.store.page.size", "-1MiB", "negative"),
        ("hoard.worker.page.store.page.size", "1.5B", "whole number"),
        ("hoard.worker.page.store.page.size", "1MiBs", "unknown size unit"),
        ("hoard.worker.page.store.dirs", "/a,,/b", "entry 2"),
        ("hoard.worker.page.store.dirs", "/a,/a", "listed twice"),
        ("hoard.worker.page.store.dirs", "/a,/b/../a/", "/a is listed twice"),
        ("hoard.worker.page.store.sizes", "1GiB,lots", "\"lots\""),
        (
            "hoard.worker.page.store.sizes",
            "1GiB,2GiB",
            "2 sizes for 1 directories",
        ),
        ("hoard.worker.page.store.sizes", "512KiB", "smaller than one page"),
        ("hoard.worker.identity.uuid.file.path", "~/id", "not expanded"),
        (
            "hoard.worker.membership.manager.type",
            "zookeeper",
            "expected STATIC, COORDINATOR or ETCD",
        ),
        ("hoard.worker.failure.detection.timeout", "500ms", "at least 1s"),
        ("hoard.coordinator.web.port", "0", "not in 1..=65535"),
        ("hoard.coordinator.bind.host", "", "must not be empty"),
        ("hoard.etcd.endpoints", "127.0.0.1:2379,,x:1", "entry 2"),
        ("hoard.etcd.endpoints", "127.0.0.1", "needs a port"),
        ("hoard.etcd.endpoints", "grpc://127.0.0.1:2379", "unsupported scheme"),
        (
            "hoard.etcd.endpoints",
            "https://127.0.0.1:2379",
            "not supported in this version",
        ),
        ("hoard.etcd.root", "hoard/", "start and end with '/'"),
        ("hoard.etcd.root", "/hoard", "start and end with '/'"),
        ("hoard.etcd.root", "/a//b/", "'//'"),
        ("hoard.coordinator.scheduler.etcd.read.timeout", "0s", "more than 0"),
        (
            "hoard.coordinator.scheduler.etcd.max.retries",
            "101",
            "between 0 and 100",
        ),
        ("hoard.worker.http.max.header.size", "1KiB", "between 8KiB and 1MiB"),
        ("hoard.worker.http.max.header.size", "2MiB", "between 8KiB and 1MiB"),
        ("hoard.worker.ufs.read.timeout", "0s", "more than 0"),
        ("hoard.worker.network.io.threads", "-1", "whole number"),
        ("hoard.worker.network.io.threads", "2000", "between 0 and 1024"),
        ("hoard.worker.page.store.memory.size", "lots", "size"),
        ("hoard.worker.ufs.read.timeout", "30 parsecs", "unknown duration unit"),
        ("hoard.user.file.metadata.max.age", "-1", "negative"),
        (
            "hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker",
            "0",
            "more than 0",
        ),
        (
            "hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker",
            "100001",
            "at most 100000",
        ),
        (
            "hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker",
            "99999999999",
            "at most",
        ),
        (
            "hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker",
            "1e3",
            "whole number",
        ),
        (
            "hoard.user.worker.selection.policy.consistent.hash.provider.impl",
            "RANDOM",
            "DEFAULT or CAPACITY",
        ),
        (
            "hoard.user.dynamic.consistent.hash.ring.enabled",
            "yes",
            "true or false",
        ),
        ("hoard.user.network.connect.timeout", "0", "more than 0"),
        ("hoard.user.network.read.timeout", "forever", "must start with a number"),
        (
            "hoard.user.worker.list.refresh.interval",
            "99999999999999999999d",
            "too large",
        ),
    ];
    for (key, value, reason) in cases {
        assert_invalid(&[(key, value)], key, value, reason);
    }
}

#[test]
fn membership_and_etcd() {
    let defaults = config(&[]);
    assert_eq!(defaults.worker.membership_type, MembershipType::Static);
    assert_eq!(defaults.worker.failure_detection_timeout, Duration::from_secs(120));
    assert_eq!(defaults.worker.heartbeat_interval(), Duration::from_secs(10));
    assert_eq!(defaults.etcd.root, "/hoard/default/");
    assert!(defaults.etcd.endpoints.is_empty());
    assert_eq!(defaults.coordinator.web_port, 19999);
    assert_eq!(defaults.coordinator.address().to_string(), "localhost:19999");
    assert!(defaults.coordinator.metastore_file().ends_with("coordinator/meta.redb"));
    assert_eq!(defaults.security.admin_token, None);

    let etcd = config(&[
        ("hoard.cluster.name", "prod"),
        ("hoard.worker.membership.manager.type", "etcd"),
        ("hoard.etcd.endpoints", "127.0.0.1:2379, http://[::1]:2380/"),
        ("hoard.worker.failure.detection.timeout", "3s"),
        ("hoard.security.admin.token", "s3cret"),
    ]);
    assert_eq!(etcd.worker.membership_type, MembershipType::Etcd);
    assert_eq!(etcd.etcd.endpoints, vec!["http://127.0.0.1:2379", "http://[::1]:2380"]);
    // Clusters (zones) served by one coordinator set share the etcd root.
    assert_eq!(etcd.etcd.root, "/hoard/default/");
    assert_eq!(etcd.worker.heartbeat_interval(), Duration::from_millis(750));
    assert_eq!(etcd.security.admin_token.as_deref(), Some("s3cret"));
    assert!(!format!("{etcd:?}").contains("s3cret"), "the token is never logged");

    assert_invalid(
        &[("hoard.worker.membership.manager.type", "ETCD")],
        "hoard.etcd.endpoints",
        "",
        "must be set when hoard.worker.membership.manager.type=ETCD",
    );
}

#[test]
fn errors_after_substitution_show_both_values() {
    let err = load(&[("my.size", "lots"), ("hoard.worker.page.store.page.size", "${my.size}")]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("hoard.worker.page.store.page.size: \"lots\""),
        "{message}"
    );
    assert!(message.contains("after substituting \"${my.size}\""), "{message}");
}

#[test]
fn unknown_keys_warn() {
    let loaded = load(&[
        ("hoard.worker.rpc.prot", "1"),
        ("alluxio.worker.rpc.port", "2"),
        ("completely.unrelated", "3"),
        ("hoard.mount.data.path", "/data"),
        ("hoard.mount.data.ufs", "/srv/data"),
    ])
    .unwrap();
    assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
    let all = loaded.warnings.join("\n");
    assert!(
        all.contains("\"hoard.worker.rpc.prot\" is ignored (did you mean \"hoard.worker.rpc.port\"?)"),
        "{all}"
    );
    assert!(
        all.contains("\"alluxio.worker.rpc.port\" is ignored (did you mean \"hoard.worker.rpc.port\"?)"),
        "{all}"
    );
    assert!(all.contains("\"completely.unrelated\" is ignored"), "{all}");
    assert_eq!(loaded.config.worker.rpc_port, 29999);
}

#[test]
fn mounts() {
    let config = config(&[
        ("hoard.mount.data.path", "/data/"),
        ("hoard.mount.data.ufs", "s3://bucket/datasets"),
        ("hoard.mount.logs.path", "/var//logs"),
        ("hoard.mount.logs.ufs", "file:///srv/logs"),
        ("hoard.mount.s3a.path", "/s3a"),
        ("hoard.mount.s3a.ufs", "s3a://bucket"),
        ("hoard.mount.lh.path", "/lh"),
        ("hoard.mount.lh.ufs", "file://localhost/srv"),
        ("hoard.mount.local-1.path", "/local"),
        ("hoard.mount.local-1.ufs", "relative/dir"),
    ]);
    assert_eq!(
        config.ufs.mounts,
        vec![
            MountConfig {
                name: "data".into(),
                path: "/data".into(),
                ufs: "s3://bucket/datasets".into()
            },
            MountConfig {
                name: "lh".into(),
                path: "/lh".into(),
                ufs: "file://localhost/srv".into()
            },
            MountConfig {
                name: "local-1".into(),
                path: "/local".into(),
                ufs: "/opt/hoard/relative/dir".into()
            },
            MountConfig {
                name: "logs".into(),
                path: "/var/logs".into(),
                ufs: "file:///srv/logs".into()
            },
            MountConfig {
                name: "s3a".into(),
                path: "/s3a".into(),
                ufs: "s3a://bucket".into()
            },
        ]
    );
}

#[test]
fn bad_mounts() {
    assert_invalid(
        &[("hoard.mount.data.path", "/data")],
        "hoard.mount.data.ufs",
        "",
        "not set, but hoard.mount.data.path is",
    );
    assert_invalid(
        &[("hoard.mount.data.ufs", "/srv")],
        "hoard.mount.data.path",
        "",
        "not set, but hoard.mount.data.ufs is",
    );
    let ufs = ("hoard.mount.data.ufs", "/srv");
    assert_invalid(
        &[("hoard.mount.data.path", "data"), ufs],
        "hoard.mount.data.path",
        "data",
        "absolute",
    );
    assert_invalid(
        &[("hoard.mount.data.path", "/"), ufs],
        "hoard.mount.data.path",
        "/",
        "cannot mount at /",
    );
    assert_invalid(
        &[("hoard.mount.data.path", "/a/.."), ufs],
        "hoard.mount.data.path",
        "/a/..",
        "cannot mount at /",
    );
    assert_invalid(
        &[("hoard.mount.data.path", "/.."), ufs],
        "hoard.mount.data.path",
        "/..",
        "escapes",
    );
    assert_invalid(
        &[("hoard.mount.data.path", ""), ufs],
        "hoard.mount.data.path",
        "",
        "must not be empty",
    );
    assert_invalid(
        &[("hoard.mount.data.path", "/d"), ("hoard.mount.data.ufs", "gs://b")],
        "hoard.mount.data.ufs",
        "gs://b",
        "unsupported",
    );
    assert_invalid(
        &[
            ("hoard.mount.a.path", "/same"),
            ("hoard.mount.a.ufs", "/x"),
            ("hoard.mount.b.path", "/same/"),
            ("hoard.mount.b.ufs", "/y"),
        ],
        "hoard.mount.b.path",
        "/same/",
        "/same is already the mount point of hoard.mount.a.path",
    );
    assert_invalid(
        &[("hoard.mount.a.b.path", "/ab")],
        "hoard.mount.a.b.path",
        "/ab",
        "mount name \"a.b\"",
    );
    assert_invalid(
        &[("hoard.mount..ufs", "/x")],
        "hoard.mount..ufs",
        "/x",
        "mount name \"\"",
    );
    // Nested mount points are allowed: the longest prefix wins in the mount table.
    let nested = config(&[
        ("hoard.mount.a.path", "/a"),
        ("hoard.mount.a.ufs", "/x"),
        ("hoard.mount.b.path", "/a/b"),
        ("hoard.mount.b.ufs", "/y"),
    ]);
    assert_eq!(nested.ufs.mounts.len(), 2);
}

#[test]
fn workers_file_uses_rpc_port_as_default() {
    let text = "# the cluster\nworker1\nworker2:30001\n\n[::1]\n";
    let loaded = SiteConfig::from_properties(
        Path::new(CONF),
        &props(&[("hoard.worker.rpc.port", "30000")]),
        Some(text),
    )
    .unwrap();
    let hosts: Vec<String> = loaded.config.workers.iter().map(ToString::to_string).collect();
    assert_eq!(hosts, ["worker1:30000", "worker2:30001", "[::1]:30000"]);

    let err =
        SiteConfig::from_properties(Path::new(CONF), &BTreeMap::new(), Some("worker1\nworker1:29999\n")).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("/opt/hoard/conf/workers line 2"), "{message}");
    assert!(message.contains("\"worker1:29999\""), "{message}");
    assert!(message.contains("duplicate of line 1"), "{message}");
}

#[test]
fn substitution() {
    let config = config(&[("hoard.work.dir", "/data/hoard")]);
    assert_eq!(config.ufs.root, "/data/hoard/underfs");
    assert_eq!(
        config.worker.page_store_dirs,
        vec![PathBuf::from("/data/hoard/page_store")]
    );
    assert_eq!(
        config.worker.identity_file,
        Path::new("/data/hoard/system-info/worker_identity")
    );

    let loaded = load(&[
        ("site.disk", "/mnt/disk"),
        ("hoard.work.dir", "${site.disk}/hoard"),
        ("hoard.worker.page.store.dirs", "${hoard.work.dir}/ps0,${site.disk}/ps1"),
        ("hoard.worker.hostname", "${hoard.cluster.name}-w1"),
        ("hoard.mount.data.path", "/data"),
        ("hoard.mount.data.ufs", "${hoard.underfs.root}/data"),
    ])
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1, "site.disk is unknown: {:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.work_dir, Path::new("/mnt/disk/hoard"));
    assert_eq!(
        config.worker.page_store_dirs,
        vec![PathBuf::from("/mnt/disk/hoard/ps0"), PathBuf::from("/mnt/disk/ps1")]
    );
    assert_eq!(config.worker.hostname, "default-w1");
    assert_eq!(config.ufs.mounts[0].ufs, "/mnt/disk/hoard/underfs/data");
}

#[test]
fn substitution_errors_name_the_key() {
    let err = load(&[("hoard.work.dir", "${hoard.worker.page.store.dirs}")]).unwrap_err();
    let ConfigError::InvalidValue { key, reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key, "hoard.work.dir");
    assert_eq!(
        reason,
        "substitution cycle: hoard.work.dir -> hoard.worker.page.store.dirs -> hoard.work.dir"
    );

    let err = load(&[("hoard.work.dir", "${hoard.underfs.s3.region}/x")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"${hoard.underfs.s3.region}\", which is not set"),
        "{err}"
    );
    assert!(err.to_string().contains("hoard.work.dir"), "{err}");

    let err = load(&[("hoard.worker.hostname", "${oops")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("hoard.worker.hostname: \"${oops\": unterminated"),
        "{err}"
    );
}

#[test]
fn secrets_are_not_repeated() {
    let err = load(&[("hoard.underfs.s3.secret.access.key", "abc${x}")]).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains("abc"), "{message}");
    assert!(message.contains("<redacted>"), "{message}");

    let config = config(&[("hoard.underfs.s3.secret.access.key", "topsecret")]);
    let debug = format!("{config:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn relative_paths_resolve_against_the_conf_dirs_parent() {
    let pairs = [
        ("hoard.work.dir", "var"),
        ("hoard.worker.page.store.dirs", "ps0,/abs/ps1,./ps2"),
        ("hoard.underfs.root", "../ufs"),
    ];
    let config = config(&pairs);
    assert_eq!(config.work_dir, Path::new("/opt/hoard/var"));
    assert_eq!(
        config.worker.identity_file,
        Path::new("/opt/hoard/var/system-info/worker_identity")
    );
    assert_eq!(
        config.worker.page_store_dirs,
        vec![
            PathBuf::from("/opt/hoard/ps0"),
            PathBuf::from("/abs/ps1"),
            PathBuf::from("/opt/hoard/ps2")
        ]
    );
    assert_eq!(config.ufs.root, "/opt/ufs");
    let config = self::config(&[("hoard.work.dir", "/a/./b/../c/"), ("hoard.underfs.root", "/../x/..")]);
    assert_eq!(config.work_dir, Path::new("/a/c"));
    assert_eq!(config.ufs.root, "/");

    assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
    assert_eq!(normalize(Path::new("./a/..")), Path::new("."));

    assert_eq!(base_dir(Path::new("/opt/hoard/conf")), Path::new("/opt/hoard"));
    assert_eq!(base_dir(Path::new("/opt/hoard/conf/")), Path::new("/opt/hoard"));
    assert_eq!(base_dir(Path::new("./conf")), Path::new("."));
    assert_eq!(base_dir(Path::new("conf")), Path::new("."));
    assert_eq!(base_dir(Path::new(".")), Path::new("./.."));
    assert_eq!(base_dir(Path::new("/")), Path::new("/"));
    let relative = SiteConfig::from_properties(Path::new("conf"), &props(&[("hoard.work.dir", "data")]), None).unwrap();
    assert_eq!(relative.config.work_dir, Path::new("data"));
}

#[test]
fn conf_dir_resolution() {
    assert_eq!(
        resolve_conf_dir(Some(Path::new("/cli")), Some("/env")),
        Path::new("/cli")
    );
    assert_eq!(resolve_conf_dir(None, Some("/env")), Path::new("/env"));
    assert_eq!(resolve_conf_dir(None, None), Path::new("./conf"));
    assert_eq!(resolve_conf_dir(None, Some("")), Path::new("./conf"));
    assert_eq!(resolve_conf_dir(Some(Path::new("")), Some("/env")), Path::new("/env"));
}

#[test]
fn worker_address_text() {
    let v6 = WorkerAddress {
        host: "[::1]".into(),
        port: 1,
    };
    assert_eq!(v6.to_string(), "[::1]:1");
    assert_eq!(
        WorkerAddress {
            host: "::1".into(),
            port: 1
        }
        .to_string(),
        "[::1]:1"
    );
    assert_eq!("[::1]:1".parse::<WorkerAddress>().unwrap(), v6);
    assert_eq!(
        "host:80".parse::<WorkerAddress>().unwrap(),
        WorkerAddress {
            host: "host".into(),
            port: 80
        }
    );
    assert!("host".parse::<WorkerAddress>().is_err());
    assert!("host:0".parse::<WorkerAddress>().is_err());
}

mod files {
    use super::*;
    use std::fs;

    #[test]
    fn load_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        fs::create_dir(&conf).unwrap();
        fs::write(
            conf.join(SITE_FILE_NAME),
            "# site\nhoard.work.dir = data\nhoard.worker.rpc.port: 30000\nhoard.worker.page.store.sizes=2GiB\nhoard.unknown.key=1\n",
        )
        .unwrap();
        fs::write(conf.join(WORKERS_FILE_NAME), "# workers\nw1\nw2:30002\n").unwrap();
        let loaded = SiteConfig::load(&conf).unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("hoard.unknown.key"));
        let config = loaded.config;
        assert_eq!(config.conf_dir, conf);
        assert_eq!(config.work_dir, dir.path().join("data"));
        assert_eq!(config.worker.page_store_dirs, vec![dir.path().join("data/page_store")]);
        assert_eq!(config.worker.page_store_sizes, vec![2 << 30]);
        assert_eq!(
            config.workers,
            vec![
                WorkerAddress {
                    host: "w1".into(),
                    port: 30000
                },
                WorkerAddress {
                    host: "w2".into(),
                    port: 30002
                }
            ]
        );
    }

    #[test]
    fn missing_files_mean_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = SiteConfig::load(dir.path()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config, SiteConfig::defaults(dir.path()));
        assert!(loaded.config.workers.is_empty());

        let relative = SiteConfig::load(Path::new("no-such-conf-dir")).unwrap();
        assert!(relative.config.conf_dir.is_absolute(), "{:?}", relative.config.conf_dir);
        assert!(relative.config.conf_dir.ends_with("no-such-conf-dir"));

        let missing = dir.path().join("nope");
        let loaded = SiteConfig::load(&missing).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("does not exist"), "{:?}", loaded.warnings);
    }

    #[test]
    fn unreadable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(SITE_FILE_NAME)).unwrap();
        let err = SiteConfig::load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { path, .. } if path.ends_with(SITE_FILE_NAME)),
            "{err:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(WORKERS_FILE_NAME)).unwrap();
        let err = SiteConfig::load(dir.path()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { path, .. } if path.ends_with(WORKERS_FILE_NAME)),
            "{err:?}"
        );

        // A conf "dir" that is a file.
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(SiteConfig::load(&file), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn syntax_and_value_errors_from_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SITE_FILE_NAME), "a=1\nb=\\u12\n").unwrap();
        let message = SiteConfig::load(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains(SITE_FILE_NAME) && message.contains("line 2"),
            "{message}"
        );

        fs::write(dir.path().join(SITE_FILE_NAME), "hoard.worker.rpc.port=99999\n").unwrap();
        let message = SiteConfig::load(dir.path()).unwrap_err().to_string();
        assert!(message.contains("hoard.worker.rpc.port: \"99999\""), "{message}");

        fs::write(
            dir.path().join(SITE_FILE_NAME),
            "hoard.worker.rpc.port=1\nhoard.worker.rpc.port=2\n",
        )
        .unwrap();
        let loaded = SiteConfig::load(dir.path()).unwrap();
        assert_eq!(loaded.config.worker.rpc_port, 2);
        assert!(loaded.warnings[0].contains("more than once"), "{:?}", loaded.warnings);
    }

    #[test]
    fn utf8_paths() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(SITE_FILE_NAME),
            "hoard.work.dir=/data/\u{7f13}\u{5b58}\n",
        )
        .unwrap();
        let loaded = SiteConfig::load(dir.path()).unwrap();
        assert_eq!(loaded.config.work_dir, Path::new("/data/\u{7f13}\u{5b58}"));
    }
}

/// Both listeners' limits come from their own keys through the same parser.
#[test]
fn listener_limits() {
    let defaults = config(&[]);
    let worker = &defaults.worker.network;
    assert_eq!(worker.header_timeout, Duration::from_secs(60));
    assert_eq!(worker.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(worker.send_timeout, Duration::from_secs(60));
    assert_eq!(worker.max_connections, 8192);
    assert_eq!(defaults.worker.readahead_size, 4 << 20);
    let coordinator = &defaults.coordinator.network;
    assert_eq!(coordinator.header_timeout, Duration::from_secs(60));
    assert_eq!(coordinator.max_connections, 4096);

    let set = config(&[
        (keys::WORKER_HEADER_TIMEOUT, "2s"),
        (keys::WORKER_KEEPALIVE_TIMEOUT, "500ms"),
        (keys::WORKER_SEND_TIMEOUT, "1min"),
        (keys::WORKER_MAX_CONNECTIONS, "32"),
        (keys::WORKER_READAHEAD_SIZE, "0"),
        (keys::COORDINATOR_SEND_TIMEOUT, "3s"),
        (keys::COORDINATOR_MAX_CONNECTIONS, "7"),
    ]);
    assert_eq!(
        set.worker.network,
        NetworkConfig {
            header_timeout: Duration::from_secs(2),
            keepalive_timeout: Duration::from_millis(500),
            send_timeout: Duration::from_secs(60),
            max_connections: 32,
        }
    );
    assert_eq!(set.worker.readahead_size, 0);
    // Clients drop idle pooled connections before the server would close them.
    assert_eq!(set.user.worker_pool_idle_timeout, Duration::from_millis(400));
    assert!(defaults.user.worker_pool_idle_timeout < worker.keepalive_timeout);
    assert!(coordinator.client_pool_idle_timeout() < coordinator.keepalive_timeout);
    assert_eq!(set.coordinator.network.send_timeout, Duration::from_secs(3));
    assert_eq!(set.coordinator.network.max_connections, 7);
    assert_eq!(set.coordinator.network.keepalive_timeout, Duration::from_secs(75));

    assert_invalid(
        &[(keys::WORKER_HEADER_TIMEOUT, "0")],
        keys::WORKER_HEADER_TIMEOUT,
        "0",
        "at least 10ms",
    );
    assert_invalid(
        &[(keys::COORDINATOR_KEEPALIVE_TIMEOUT, "5ms")],
        keys::COORDINATOR_KEEPALIVE_TIMEOUT,
        "5ms",
        "at least 10ms",
    );
    assert_invalid(
        &[(keys::WORKER_MAX_CONNECTIONS, "0")],
        keys::WORKER_MAX_CONNECTIONS,
        "0",
        "more than 0",
    );
    assert_invalid(
        &[(keys::COORDINATOR_MAX_CONNECTIONS, "2000000")],
        keys::COORDINATOR_MAX_CONNECTIONS,
        "2000000",
        "at most 1000000",
    );
    assert_invalid(
        &[(keys::WORKER_READAHEAD_SIZE, "2GiB")],
        keys::WORKER_READAHEAD_SIZE,
        "2GiB",
        "between",
    );
}

mod docs {
    use super::*;

    fn read(relative: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// docs/configuration.md has a table row for every key showing its default.
    #[test]
    fn every_key_is_documented() {
        let doc = read("../../docs/configuration.md");
        for spec in known_keys() {
            let name = format!("`{}`", spec.name);
            let row = doc
                .lines()
                .find(|line| line.starts_with('|') && line.contains(&name))
                .unwrap_or_else(|| panic!("docs/configuration.md has no table row for {}", spec.name));
            let default = if spec.default.is_empty() {
                "(unset)".to_string()
            } else {
                format!("`{}`", spec.default)
            };
            assert!(
                row.contains(&default),
                "the row for {} should show the default {default}: {row}",
                spec.name
            );
        }
    }

    /// The template shows every key with its default; uncommenting those lines changes nothing.
    #[test]
    fn template_matches_defaults() {
        let template = read("../../conf/hoard-site.properties.template");
        let mut warnings = Vec::new();
        let as_is = props::parse(Path::new("template"), template.as_bytes(), &mut warnings).unwrap();
        assert!(as_is.is_empty(), "the template should set nothing: {as_is:?}");

        let mut uncommented = String::new();
        for line in template.lines() {
            // "# key=default" lines; indented "#   key=value" lines are examples.
            let candidate = line.strip_prefix("# ").unwrap_or("");
            let is_key = candidate
                .split_once('=')
                .is_some_and(|(key, _)| keys::spec(key).is_some());
            uncommented.push_str(if is_key { candidate } else { line });
            uncommented.push('\n');
        }
        let properties = props::parse(Path::new("template"), uncommented.as_bytes(), &mut warnings).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        for spec in known_keys() {
            assert!(
                properties.contains_key(spec.name),
                "the template should show {} (as \"# {}={}\")",
                spec.name,
                spec.name,
                spec.default
            );
        }
        let loaded = SiteConfig::from_properties(Path::new(CONF), &properties, None).unwrap();
        // Setting the deprecated key, even to its default, is warned about.
        assert_eq!(loaded.warnings, vec![deprecated_replication_min_warning()]);
        assert_eq!(loaded.config, SiteConfig::defaults(Path::new(CONF)));
    }
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn any_key() -> impl Strategy<Value = String> {
        let mut names: Vec<String> = known_keys().iter().map(|spec| spec.name.to_string()).collect();
        names.extend(["hoard.mount.m.path", "hoard.mount.m.ufs", "other.key"].map(String::from));
        proptest::sample::select(names)
    }

    fn any_value() -> impl Strategy<Value = String> {
        let key_refs: Vec<String> = known_keys().iter().map(|spec| format!("${{{}}}", spec.name)).collect();
        prop_oneof![
            ".{0,40}",
            "[0-9a-zA-Z./:,\\[\\] -]{0,40}",
            (proptest::sample::select(key_refs), "[a-z/]{0,5}")
                .prop_map(|(reference, tail)| format!("{reference}{tail}")),
        ]
    }

    proptest! {
        #[test]
        fn from_properties_never_panics(pairs in proptest::collection::vec((any_key(), any_value()), 0..6), workers in ".{0,80}") {
            let properties: BTreeMap<String, String> = pairs.into_iter().collect();
            let _ = SiteConfig::from_properties(Path::new(CONF), &properties, Some(&workers));
        }

        #[test]
        fn properties_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in "(.|\n|\\\\){0,120}") {
            let mut warnings = Vec::new();
            let _ = props::parse(Path::new("site"), &bytes, &mut warnings);
            let _ = props::parse(Path::new("site"), text.as_bytes(), &mut warnings);
        }

        /// Whatever UTF-8 value (inside the Basic Multilingual Plane) is written, escaped as
        /// Java would escape it, comes back unchanged.
        #[test]
        fn properties_values_roundtrip(value in "[^\u{10000}-\u{10FFFF}]{0,40}") {
            let mut escaped = String::new();
            for c in value.chars() {
                match c {
                    '\\' | '#' | '!' | '=' | ':' => { escaped.push('\\'); escaped.push(c); }
                    ' ' if escaped.is_empty() => escaped.push_str("\\ "),
                    '\n' => escaped.push_str("\\n"),
                    '\r' => escaped.push_str("\\r"),
                    '\t' => escaped.push_str("\\t"),
                    '\x0c' => escaped.push_str("\\f"),
                    c => escaped.push(c),
                }
            }
            let mut warnings = Vec::new();
            let map = props::parse(Path::new("site"), format!("key={escaped}\n").as_bytes(), &mut warnings).unwrap();
            prop_assert_eq!(map.get("key").map(String::as_str), Some(value.as_str()));
        }
    }
}

mod machine_defaults {
    use super::*;

    fn env(hostname: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> Environment {
        Environment {
            hostname: hostname.map(String::from),
            xdg_data_home: xdg.map(String::from),
            home: home.map(String::from),
        }
    }

    /// A "system dir" that cannot be created: its would-be parent is a regular file.
    fn blocked(dir: &tempfile::TempDir) -> PathBuf {
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        file.join("hoard")
    }

    #[test]
    fn work_dir_resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let all = env(None, Some("/data/xdg"), Some("/home/u"));
        // The system dir wins when it exists and is writable, or can be created.
        let existing = dir.path().join("var-lib-hoard");
        std::fs::create_dir(&existing).unwrap();
        assert_eq!(resolve_work_dir(&existing, &all), existing);
        let creatable = dir.path().join("var/lib/hoard");
        assert_eq!(resolve_work_dir(&creatable, &all), creatable);
        assert!(!creatable.exists(), "resolving creates nothing");
        // Else $XDG_DATA_HOME/hoard, else ~/.local/share/hoard.
        let system = blocked(&dir);
        assert_eq!(resolve_work_dir(&system, &all), Path::new("/data/xdg/hoard"));
        assert_eq!(
            resolve_work_dir(&system, &env(None, None, Some("/home/u/"))),
            Path::new("/home/u/.local/share/hoard")
        );
        // Relative values are ignored (the XDG spec says so).
        assert_eq!(
            resolve_work_dir(&system, &env(None, Some("xdg"), Some("/home/u"))),
            Path::new("/home/u/.local/share/hoard")
        );
        // Nothing usable: the system dir anyway (creating it fails later, naming it).
        assert_eq!(resolve_work_dir(&system, &env(None, None, None)), system);
        // Never /tmp.
        assert!(!default_work_dir(&all).starts_with("/tmp"));
    }

    #[test]
    fn a_set_work_dir_is_kept_and_an_empty_one_is_the_default() {
        let env = env(None, Some("/data/xdg"), Some("/home/u"));
        let set = SiteConfig::from_properties_with(Path::new(CONF), &props(&[(keys::WORK_DIR, "/srv/h")]), None, &env)
            .unwrap()
            .config;
        assert_eq!(set.work_dir, Path::new("/srv/h"));
        assert_eq!(
            set.worker.identity_file,
            Path::new("/srv/h/system-info/worker_identity")
        );
        let empty = SiteConfig::from_properties_with(Path::new(CONF), &props(&[(keys::WORK_DIR, " ")]), None, &env)
            .unwrap()
            .config;
        assert_eq!(empty.work_dir, default_work_dir(&env));
    }

    #[test]
    fn host_names_default_to_the_machine_name() {
        let load = |env: &Environment, pairs: &[(&str, &str)]| {
            SiteConfig::from_properties_with(Path::new(CONF), &props(pairs), None, env).unwrap()
        };
        let named = load(&env(Some("node7.example.com"), None, None), &[]);
        assert!(named.warnings.is_empty(), "{:?}", named.warnings);
        assert_eq!(named.config.worker.hostname, "node7.example.com");
        assert_eq!(named.config.coordinator.hostname, "node7.example.com");
        // Set ones are kept.
        let set = load(
            &env(Some("node7"), None, None),
            &[(keys::COORDINATOR_HOSTNAME, "10.0.0.2")],
        );
        assert_eq!(set.config.coordinator.hostname, "10.0.0.2");
        assert_eq!(set.config.worker.hostname, "node7");
        // No name: localhost; an unusable one: localhost with a warning saying why.
        assert_eq!(load(&Environment::default(), &[]).config.worker.hostname, "localhost");
        let bad = load(&env(Some("bad name!"), None, None), &[]);
        assert_eq!(bad.config.worker.hostname, "localhost");
        assert!(
            bad.warnings
                .iter()
                .any(|w| w.contains("bad name!") && w.contains(keys::WORKER_HOSTNAME)),
            "{:?}",
            bad.warnings
        );
    }
}
