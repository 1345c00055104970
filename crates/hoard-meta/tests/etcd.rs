//! The etcd backend against a real etcd (hoard-testkit starts one per test).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hoard_config::EtcdConfig;
use hoard_meta::etcd::{EtcdMembership, EtcdStore, LeaseSession, SessionState};
use hoard_meta::{
    keys, ChangeStream, Compare, CoordinatorRecord, Liveness, MemberRecord, Membership, MetaError, MetaStore, Op,
    WorkerRegistration,
};
use hoard_testkit::Etcd;

const DEADLINE: Duration = Duration::from_secs(20);

fn config(etcd: &Etcd, root: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        root: root.to_string(),
        read_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        max_retries: 2,
    }
}

async fn store(etcd: &Etcd, root: &str) -> EtcdStore {
    EtcdStore::connect(&config(etcd, root)).await.expect("connect to etcd")
}

fn registration(worker_id: &str, instance: &str, port: u16) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: worker_id.to_string(),
        cluster_name: hoard_common::replica::default_cluster_name(),
        host: "127.0.0.1".to_string(),
        rpc_port: port,
        capacity_bytes: 1 << 30,
        version: "0.1.0-test".to_string(),
        start_time_ms: hoard_meta::now_millis(),
        instance: instance.to_string(),
    }
}

/// A raw etcd client, independent of the code under test.
async fn raw(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("raw etcd client")
}

/// Polls `check` every 50ms until it returns `Some`, or panics after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn member(membership: &EtcdMembership, worker_id: &str) -> Option<MemberRecord> {
    let members = membership.members().await.expect("members");
    let mut matching: Vec<MemberRecord> = members
        .into_iter()
        .filter(|m| m.worker_id.as_deref() == Some(worker_id))
        .collect();
    assert!(
        matching.len() <= 1,
        "duplicate member records for {worker_id}: {matching:?}"
    );
    matching.pop()
}

async fn liveness(membership: &EtcdMembership, worker_id: &str) -> Option<Liveness> {
    member(membership, worker_id).await.map(|m| m.liveness)
}

async fn wait_state(
    session: &LeaseSession,
    what: &str,
    deadline: Duration,
    accept: impl Fn(&SessionState) -> bool,
) -> SessionState {
    let mut state = session.state();
    let wait = state.wait_for(|s| accept(s));
    let outcome = match tokio::time::timeout(deadline, wait).await {
        Ok(Ok(state)) => state.clone(),
        Ok(Err(_)) => panic!("session state channel closed while waiting for {what}"),
        Err(_) => panic!(
            "timed out after {deadline:?} waiting for {what}; state is {:?}",
            *session.state().borrow()
        ),
    };
    outcome
}

/// The next item of a change stream within `within`: `Some(item)`, or `None` if the stream
/// ended. Panics when nothing comes in time.
async fn next_change(stream: &mut ChangeStream, within: Duration, what: &str) -> Option<Result<(), MetaError>> {
    match tokio::time::timeout(within, stream.next()).await {
        Ok(item) => item,
        Err(_) => panic!("no watch event within {within:?} after {what}"),
    }
}

/// Consumes whatever the stream yields within 300ms (the tail of one change's events).
async fn drain(stream: &mut ChangeStream) {
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        item.expect("watch item");
    }
}

#[tokio::test]
async fn put_get_list_delete() {
    let etcd = Etcd::start().await;
    let store = store(&etcd, "/hoard/test/").await;
    assert_eq!(store.kind(), "ETCD");

    assert_eq!(store.get("jobs/a").await.unwrap(), None);
    store.put("jobs/a", b"one".to_vec()).await.unwrap();
    store.put("jobs/b", b"two".to_vec()).await.unwrap();
    store.put("jobsx", b"not under jobs/".to_vec()).await.unwrap();
    store.put("rules/r", b"three".to_vec()).await.unwrap();

    let a = store.get("jobs/a").await.unwrap().expect("jobs/a");
    assert_eq!(a.key, "jobs/a");
    assert_eq!(a.value, b"one");
    assert!(a.version > 0);

    // Rewriting changes the version.
    store.put("jobs/a", b"uno".to_vec()).await.unwrap();
    let a2 = store.get("jobs/a").await.unwrap().expect("jobs/a");
    assert_eq!(a2.value, b"uno");
    assert!(a2.version > a.version);

    let listed = store.list("jobs/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["jobs/a", "jobs/b"]);
    assert_eq!(listed[1].value, b"two");
    assert_eq!(store.list("nothing/").await.unwrap(), vec![]);

    assert!(store.delete("jobs/a").await.unwrap());
    assert!(!store.delete("jobs/a").await.unwrap());
    assert_eq!(store.get("jobs/a").await.unwrap(), None);
    let keys: Vec<String> = store.list("jobs/").await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["jobs/b"]);
}

#[tokio::test]
async fn list_pages_through_many_keys_in_order() {
    let etcd = Etcd::start().await;
    let store = store(&etcd, "/hoard/test/").await;
    // More than one page (1000 keys per page).
    let mut client = raw(&etcd).await;
    for i in 0..1205 {
        client
            .put(format!("/hoard/test/many/{i:05}"), format!("{i}"), None)
            .await
            .unwrap();
    }
    let listed = store.list("many/").await.unwrap();
    assert_eq!(listed.len(), 1205);
    for (i, entry) in listed.iter().enumerate() {
        assert_eq!(entry.key, format!("many/{i:05}"));
        assert_eq!(entry.value, format!("{i}").into_bytes());
    }
}

#[tokio::test]
async fn txn_compares_versions() {
    let etcd = Etcd::start().await;
    let store = store(&etcd, "/hoard/test/").await;

    // Absent-key compare: applies when the key does not exist.
    let create = |value: &str| {
        (
            vec![Compare::Version {
                key: "jobs/j1".into(),
                version: None,
            }],
            vec![
                Op::Put {
                    key: "jobs/j1".into(),
                    value: value.as_bytes().to_vec(),
                },
                Op::Put {
                    key: "index/j1".into(),
                    value: b"x".to_vec(),
                },
            ],
        )
    };
    let (compares, ops) = create("first");
    let created = store.txn(compares, ops).await.unwrap().expect("applied");
    let j1 = store.get("jobs/j1").await.unwrap().expect("jobs/j1");
    assert_eq!(j1.value, b"first");
    assert_eq!(j1.version, created, "the txn returns the version it wrote");
    assert!(store.get("index/j1").await.unwrap().is_some());

    // ...and fails, applying nothing, once it does.
    store.delete("index/j1").await.unwrap();
    let (compares, ops) = create("second");
    assert_eq!(store.txn(compares, ops).await.unwrap(), None);
    assert_eq!(store.get("jobs/j1").await.unwrap().unwrap().value, b"first");
    assert_eq!(store.get("index/j1").await.unwrap(), None, "a failed txn applied an op");

    // Version compare: applies with the current version, and the version moves.
    let ok = store
        .txn(
            vec![Compare::Version {
                key: "jobs/j1".into(),
                version: Some(j1.version),
            }],
            vec![
                Op::Put {
                    key: "jobs/j1".into(),
                    value: b"claimed".to_vec(),
                },
                Op::Delete { key: "jobs/j0".into() },
            ],
        )
        .await
        .unwrap();
    let claimed = store.get("jobs/j1").await.unwrap().unwrap();
    assert_eq!(claimed.value, b"claimed");
    assert!(claimed.version > j1.version);
    assert_eq!(ok, Some(claimed.version));

    // Value compares: a different value or an absent key fails; the stored value applies.
    for (key, value) in [("index/j1", b"x".as_slice()), ("jobs/j1", b"first".as_slice())] {
        let compare = Compare::Value {
            key: key.into(),
            value: value.to_vec(),
        };
        let put = Op::Put {
            key: "jobs/j1".into(),
            value: b"by value".to_vec(),
        };
        assert_eq!(store.txn(vec![compare], vec![put]).await.unwrap(), None, "{key}");
    }
    let by_value = store
        .txn(
            vec![Compare::Value {
                key: "jobs/j1".into(),
                value: b"claimed".to_vec(),
            }],
            vec![Op::Put {
                key: "jobs/j1".into(),
                value: b"claimed".to_vec(),
            }],
        )
        .await
        .unwrap()
        .expect("the value compare holds");
    let claimed = store.get("jobs/j1").await.unwrap().unwrap();
    assert_eq!(claimed.version, by_value);

    // Many keys in one read, in the order asked, absent ones as None.
    let many = store
        .get_many(&["absent".to_string(), "jobs/j1".to_string()])
        .await
        .unwrap();
    assert_eq!(many, vec![None, Some(claimed.clone())]);

    // A stale version fails and applies nothing (not even the other ops).
    store.put("other", b"keep".to_vec()).await.unwrap();
    let ok = store
        .txn(
            vec![
                Compare::Version {
                    key: "other".into(),
                    version: Some(store.get("other").await.unwrap().unwrap().version),
                },
                Compare::Version {
                    key: "jobs/j1".into(),
                    version: Some(j1.version),
                },
            ],
            vec![
                Op::Put {
                    key: "jobs/j1".into(),
                    value: b"stolen".to_vec(),
                },
                Op::Delete { key: "other".into() },
            ],
        )
        .await
        .unwrap();
    assert_eq!(ok, None);
    assert_eq!(store.get("jobs/j1").await.unwrap().unwrap().value, b"claimed");
    assert_eq!(store.get("other").await.unwrap().unwrap().value, b"keep");

    // A version compare on an absent key fails.
    let ok = store
        .txn(
            vec![Compare::Version {
                key: "absent".into(),
                version: Some(1),
            }],
            vec![Op::Put {
                key: "absent".into(),
                value: b"x".to_vec(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(ok, None);
    assert_eq!(store.get("absent").await.unwrap(), None);
}

#[tokio::test]
async fn get_many_reads_more_keys_than_one_txn_holds() {
    let etcd = Etcd::start().await;
    let store = store(&etcd, "/hoard/many/").await;
    let keys: Vec<String> = (0..150).map(|i| format!("jobs/{i:03}")).collect();
    for key in keys.iter().step_by(2) {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let entries = store.get_many(&keys).await.unwrap();
    assert_eq!(entries.len(), keys.len());
    for (i, (key, entry)) in keys.iter().zip(&entries).enumerate() {
        match entry {
            Some(entry) => {
                assert_eq!(i % 2, 0, "{key} was never written");
                assert_eq!(
                    (entry.key.as_str(), entry.value.as_slice()),
                    (key.as_str(), key.as_bytes())
                );
            }
            None => assert_eq!(i % 2, 1, "{key} was written but not read"),
        }
    }
    assert!(store.get_many(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_live_under_the_root_and_roots_do_not_see_each_other() {
    let etcd = Etcd::start().await;
    let one = store(&etcd, "/hoard/one/").await;
    let two = store(&etcd, "/hoard/two/").await;
    one.put("workers/w1", b"1".to_vec()).await.unwrap();
    two.put("workers/w2", b"2".to_vec()).await.unwrap();

    let mut client = raw(&etcd).await;
    let all = client
        .get("/hoard/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let full: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(full, ["/hoard/one/workers/w1", "/hoard/two/workers/w2"]);

    let listed = one.list("workers/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "workers/w1");
    assert_eq!(one.get("workers/w2").await.unwrap(), None);
    assert_eq!(two.list("").await.unwrap().len(), 1);
    assert!(!two.delete("workers/w1").await.unwrap());
    assert!(one.get("workers/w1").await.unwrap().is_some());
}

#[tokio::test]
async fn connect_needs_endpoints_and_a_reachable_etcd() {
    let mut cfg = EtcdConfig {
        endpoints: vec![],
        root: "/hoard/test/".into(),
        read_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(500),
        max_retries: 1,
    };
    let err = EtcdStore::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, MetaError::Config(_)), "{err:?}");
    assert!(!err.is_retryable());

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.endpoints = vec![format!("http://127.0.0.1:{port}")];
    let started = Instant::now();
    let err = EtcdStore::connect(&cfg).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connect took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("connect"), "{err}");
}

/// A client with a fallback list connects within its own bound, however long the store's
/// request timeouts and retries are: etcd paused (SIGSTOP, the connection opens but nothing
/// answers) and etcd gone (refused).
#[tokio::test]
async fn connect_within_honours_its_bound() {
    let mut etcd = Etcd::start().await;
    let mut cfg = config(&etcd, "/hoard/test/");
    // 4 attempts of 5s each: `connect` would take 20s on a paused etcd.
    cfg.read_timeout = Duration::from_secs(5);
    cfg.write_timeout = Duration::from_secs(5);
    cfg.max_retries = 3;
    let within = Duration::from_millis(800);
    EtcdStore::connect_within(&cfg, within)
        .await
        .expect("connects to a running etcd");

    let pid = etcd.pid().expect("etcd runs").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").args([name, &pid]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill {name} {pid}");
    };
    signal("-STOP");
    let started = Instant::now();
    let err = EtcdStore::connect_within(&cfg, within).await.unwrap_err();
    let took = started.elapsed();
    signal("-CONT");
    assert!(took < Duration::from_secs(3), "connect_within took {took:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("did not answer within 800ms"), "{err}");

    etcd.kill();
    let started = Instant::now();
    let err = EtcdStore::connect_within(&cfg, within).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
}

#[tokio::test]
async fn non_retryable_errors_are_returned_at_once() {
    let etcd = Etcd::start().await;
    let mut cfg = config(&etcd, "/hoard/test/");
    cfg.max_retries = 5;
    let store = EtcdStore::connect(&cfg).await.unwrap();
    // Larger than etcd's --max-request-bytes (1.5MiB): "request is too large".
    let started = Instant::now();
    let err = store.put("big", vec![b'x'; 1_700_000]).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("put big"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn registered_worker_is_online_with_its_fields() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    assert_eq!(membership.kind(), "ETCD");
    let reg = registration("w1", "i1", 30001);
    let session = store.register_worker(&reg, Duration::from_secs(5)).await.unwrap();
    assert!(session.state().borrow().is_registered());

    let member = member(&membership, "w1").await.expect("w1 is a member");
    assert_eq!(member.liveness, Liveness::Online);
    assert_eq!(member.ring_identity, "w1");
    assert_eq!(member.address.to_string(), "127.0.0.1:30001");
    assert_eq!(member.capacity_bytes, Some(1 << 30));

    // The records, as JSON with camelCase fields.
    let stored = store.get(&keys::worker("w1")).await.unwrap().unwrap();
    assert_eq!(WorkerRegistration::decode(&stored).unwrap(), reg);
    let json: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(json["rpcPort"], 30001);
    let live = store.get(&keys::live_worker("w1")).await.unwrap().unwrap();
    let live = hoard_meta::LiveWorker::decode(&live).unwrap();
    assert_eq!(live.address, "127.0.0.1:30001");
    assert_eq!(live.instance, "i1");

    // Only the live key is on the lease, with the TTL asked for.
    let mut client = raw(&etcd).await;
    let ttl = client
        .lease_time_to_live(
            session.lease_id(),
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 5);
    let on_lease: Vec<String> = ttl
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(on_lease, ["/hoard/test/live/workers/w1"]);
    session.close().await;
}

#[tokio::test]
async fn abandoned_session_goes_offline_when_the_ttl_passes() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let session = store
        .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(3))
        .await
        .unwrap();
    // Renewals keep it alive past its TTL.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Online));
    assert!(session.state().borrow().is_registered());

    let abandoned = Instant::now();
    session.abandon();
    eventually("w1 OFFLINE after abandon", Duration::from_secs(10), || async {
        (liveness(&membership, "w1").await == Some(Liveness::Offline)).then_some(())
    })
    .await;
    let elapsed = abandoned.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "went OFFLINE after {elapsed:?}, before the TTL"
    );
    // The registration stays.
    let member = member(&membership, "w1").await.expect("registration kept");
    assert_eq!(member.address.to_string(), "127.0.0.1:30001");
}

#[tokio::test]
async fn closed_session_is_offline_at_once() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let session = store
        .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(30))
        .await
        .unwrap();
    let mut state = session.state();
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Online));
    session.close().await;
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Offline));
    assert!(matches!(*state.borrow_and_update(), SessionState::Closed));
    assert!(
        store.get(&keys::worker("w1")).await.unwrap().is_some(),
        "registration kept"
    );
}

#[tokio::test]
async fn second_instance_at_another_address_gets_id_in_use() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let first = registration("w1", "i1", 30001);
    let session = store.register_worker(&first, Duration::from_secs(30)).await.unwrap();
    let registration_before = store.get(&keys::worker("w1")).await.unwrap().unwrap();
    let live_before = store.get(&keys::live_worker("w1")).await.unwrap().unwrap();

    let other = EtcdStore::connect(&config(&etcd, "/hoard/test/")).await.unwrap();
    let err = other
        .register_worker(&registration("w1", "i2", 30002), Duration::from_secs(30))
        .await
        .unwrap_err();
    match &err {
        MetaError::IdInUse { worker_id, address } => {
            assert_eq!(worker_id, "w1");
            assert_eq!(address, "127.0.0.1:30001");
        }
        other => panic!("expected IdInUse, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // The first is untouched.
    assert_eq!(
        store.get(&keys::worker("w1")).await.unwrap().unwrap(),
        registration_before
    );
    assert_eq!(store.get(&keys::live_worker("w1")).await.unwrap().unwrap(), live_before);
    let member = member(&membership, "w1").await.unwrap();
    assert_eq!(member.liveness, Liveness::Online);
    assert_eq!(member.address.to_string(), "127.0.0.1:30001");
    assert!(session.state().borrow().is_registered());
    session.close().await;
}

#[tokio::test]
async fn restart_from_the_same_address_takes_the_id_over() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    // The first process "crashes": its lease is still alive when the restart registers.
    let crashed = store
        .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(30))
        .await
        .unwrap();
    let old_lease = crashed.lease_id();
    crashed.abandon();

    let mut restarted = registration("w1", "i2", 30001);
    restarted.capacity_bytes = 2 << 30;
    let session = store
        .register_worker(&restarted, Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(session.lease_id(), old_lease);
    let member = member(&membership, "w1").await.unwrap();
    assert_eq!(member.liveness, Liveness::Online);
    assert_eq!(member.capacity_bytes, Some(2 << 30));
    let live = hoard_meta::LiveWorker::decode(&store.get(&keys::live_worker("w1")).await.unwrap().unwrap()).unwrap();
    assert_eq!(live.instance, "i2");

    // The old lease expiring (here: revoked) does not take the new live key with it.
    raw(&etcd).await.lease_revoke(old_lease).await.unwrap();
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Online));
    session.close().await;
}

#[tokio::test]
async fn remove_worker_refuses_online_workers_unless_forced() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());

    let err = membership.remove_worker("nobody", false).await.unwrap_err();
    assert!(
        matches!(&err, MetaError::UnknownWorker(id) if id == "nobody"),
        "{err:?}"
    );

    let reg1 = registration("w1", "i1", 30001);
    let online = store.register_worker(&reg1, Duration::from_secs(30)).await.unwrap();
    let err = membership.remove_worker("w1", false).await.unwrap_err();
    match &err {
        MetaError::WorkerOnline { worker_id, address } => {
            assert_eq!(worker_id, "w1");
            assert_eq!(address, "127.0.0.1:30001");
        }
        other => panic!("expected WorkerOnline, got {other:?}"),
    }
    assert!(
        store.get(&keys::worker("w1")).await.unwrap().is_some(),
        "nothing deleted"
    );
    assert!(
        store.get(&keys::live_worker("w1")).await.unwrap().is_some(),
        "nothing deleted"
    );

    // Forced: both keys go, in one transaction.
    let removed = membership.remove_worker("w1", true).await.unwrap();
    assert_eq!(removed, reg1);
    assert_eq!(store.get(&keys::worker("w1")).await.unwrap(), None);
    assert_eq!(store.get(&keys::live_worker("w1")).await.unwrap(), None);
    assert_eq!(member(&membership, "w1").await, None);
    online.abandon();

    // Offline: removed without force.
    let reg2 = registration("w2", "i2", 30002);
    store
        .register_worker(&reg2, Duration::from_secs(30))
        .await
        .unwrap()
        .close()
        .await;
    assert_eq!(liveness(&membership, "w2").await, Some(Liveness::Offline));
    assert_eq!(membership.remove_worker("w2", false).await.unwrap(), reg2);
    assert_eq!(member(&membership, "w2").await, None);
    let err = membership.remove_worker("w2", false).await.unwrap_err();
    assert!(matches!(err, MetaError::UnknownWorker(_)), "{err:?}");
}

#[tokio::test]
async fn watch_reports_registrations_and_lease_loss() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let mut changes = membership
        .watch()
        .await
        .unwrap()
        .expect("etcd membership pushes changes");

    // Writes outside workers/ and live/workers/ are not reported.
    store.put("jobs/j1", b"x".to_vec()).await.unwrap();
    store
        .register_coordinator(
            &CoordinatorRecord {
                coordinator_id: "c1".into(),
                address: "127.0.0.1:19999".into(),
                version: "0.1.0".into(),
                start_time_ms: 1,
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap()
        .abandon();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), changes.next())
            .await
            .is_err(),
        "unrelated keys produced a watch event"
    );

    let w1 = store
        .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(30))
        .await
        .unwrap();
    next_change(&mut changes, Duration::from_secs(1), "register")
        .await
        .expect("stream open")
        .expect("event");
    drain(&mut changes).await;

    // A clean close (revoke).
    w1.close().await;
    next_change(&mut changes, Duration::from_secs(1), "close")
        .await
        .expect("stream open")
        .expect("event");
    drain(&mut changes).await;

    // A crash: the lease expires after its TTL.
    let w2 = store
        .register_worker(&registration("w2", "i2", 30002), Duration::from_secs(3))
        .await
        .unwrap();
    next_change(&mut changes, Duration::from_secs(1), "register w2")
        .await
        .expect("stream open")
        .expect("event");
    drain(&mut changes).await;
    w2.abandon();
    let abandoned = Instant::now();
    next_change(&mut changes, Duration::from_millis(4500), "lease expiry")
        .await
        .expect("stream open")
        .expect("event");
    assert!(abandoned.elapsed() >= Duration::from_millis(1500));
    // The event arrives within ~1s of the lease loss (the member list shows it OFFLINE).
    assert_eq!(liveness(&membership, "w2").await, Some(Liveness::Offline));

    // remove-worker is a change too.
    drain(&mut changes).await;
    membership.remove_worker("w2", false).await.unwrap();
    next_change(&mut changes, Duration::from_secs(1), "remove-worker")
        .await
        .expect("stream open")
        .expect("event");
}

#[tokio::test]
async fn coordinators_are_listed_while_their_lease_lives() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let record = CoordinatorRecord {
        coordinator_id: "c1".into(),
        address: "127.0.0.1:19999".into(),
        version: "0.1.0".into(),
        start_time_ms: 7,
    };
    let session = store
        .register_coordinator(&record, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(membership.coordinators().await.unwrap(), vec![record.clone()]);
    assert_eq!(session.key(), "live/coordinators/c1");
    session.close().await;
    assert_eq!(membership.coordinators().await.unwrap(), vec![]);
}

#[tokio::test]
async fn session_registers_again_when_its_lease_is_gone() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let session = store
        .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(3))
        .await
        .unwrap();
    let first_lease = session.lease_id();
    // What a long partition from etcd looks like once it heals: the lease expired.
    raw(&etcd).await.lease_revoke(first_lease).await.unwrap();
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Offline));

    let state = wait_state(
        &session,
        "registered on a new lease",
        DEADLINE,
        |s| matches!(s, SessionState::Registered { lease_id } if *lease_id != first_lease),
    )
    .await;
    let SessionState::Registered { lease_id } = state else {
        unreachable!()
    };
    assert_eq!(session.lease_id(), lease_id);
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Online));
    session.close().await;
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Offline));
}

#[tokio::test]
async fn session_stops_when_another_instance_took_the_id() {
    let etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let other = EtcdStore::connect(&config(&etcd, "/hoard/test/")).await.unwrap();
    let mut client = raw(&etcd).await;
    // The session renews every second; the takeover happens within milliseconds of the revoke,
    // but if the session wins the race, try again.
    let mut attempts = 0;
    let (session, taker) = loop {
        attempts += 1;
        assert!(
            attempts <= 3,
            "the session re-registered before the other instance every time"
        );
        let session = store
            .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(3))
            .await
            .unwrap();
        client.lease_revoke(session.lease_id()).await.unwrap();
        match other
            .register_worker(&registration("w1", "i2", 30002), Duration::from_secs(30))
            .await
        {
            Ok(taker) => break (session, taker),
            Err(MetaError::IdInUse { .. }) => {
                session.close().await;
                other.delete(&keys::live_worker("w1")).await.unwrap();
            }
            Err(err) => panic!("unexpected error: {err:?}"),
        }
    };
    let state = wait_state(&session, "lost", DEADLINE, |s| matches!(s, SessionState::Lost(_))).await;
    let SessionState::Lost(err) = state else { unreachable!() };
    match &*err {
        MetaError::IdInUse { worker_id, address } => {
            assert_eq!(worker_id, "w1");
            assert_eq!(address, "127.0.0.1:30002");
        }
        other => panic!("expected IdInUse, got {other:?}"),
    }
    // The other instance keeps the id.
    let live = hoard_meta::LiveWorker::decode(&store.get(&keys::live_worker("w1")).await.unwrap().unwrap()).unwrap();
    assert_eq!(live.instance, "i2");
    session.close().await;
    let live = hoard_meta::LiveWorker::decode(&store.get(&keys::live_worker("w1")).await.unwrap().unwrap()).unwrap();
    assert_eq!(
        live.instance, "i2",
        "closing the lost session removed the other instance's key"
    );
    taker.close().await;
}

#[tokio::test]
async fn everything_recovers_after_an_etcd_restart() {
    let mut etcd = Etcd::start().await;
    let store = Arc::new(store(&etcd, "/hoard/test/").await);
    let membership = EtcdMembership::new(store.clone());
    let session = store
        .register_worker(&registration("w1", "i1", 30001), Duration::from_secs(3))
        .await
        .unwrap();
    store.put("jobs/j1", b"before".to_vec()).await.unwrap();
    let mut changes = membership.watch().await.unwrap().expect("watch");

    etcd.kill();

    // The watch breaks: an error, or the end of the stream.
    match tokio::time::timeout(DEADLINE, changes.next()).await {
        Ok(None) | Ok(Some(Err(_))) => {}
        Ok(Some(Ok(()))) => panic!("watch reported a change while etcd was down"),
        Err(_) => panic!("watch did not break within {DEADLINE:?} of etcd dying"),
    }
    // The session notices.
    let state = wait_state(&session, "reconnecting", DEADLINE, |s| {
        matches!(s, SessionState::Reconnecting(_))
    })
    .await;
    assert!(matches!(state, SessionState::Reconnecting(ref reason) if !reason.is_empty()));
    // Requests fail, retryably and within their bounds: 3 attempts of at most 1s plus backoff.
    let started = Instant::now();
    let err = store.get("jobs/j1").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "get took {:?}",
        started.elapsed()
    );
    let err = store.put("jobs/j2", b"x".to_vec()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(membership.members().await.is_err());

    // Down for a few seconds (longer than the lease TTL).
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.start_again().await;

    wait_state(&session, "registered again", DEADLINE, SessionState::is_registered).await;
    // The same store works again, without reconnecting by hand.
    assert_eq!(store.get("jobs/j1").await.unwrap().unwrap().value, b"before");
    store.put("jobs/j2", b"after".to_vec()).await.unwrap();
    assert_eq!(store.get("jobs/j2").await.unwrap().unwrap().value, b"after");
    // Exactly one record for the worker, ONLINE.
    let members = membership.members().await.unwrap();
    let w1: Vec<&MemberRecord> = members
        .iter()
        .filter(|m| m.worker_id.as_deref() == Some("w1"))
        .collect();
    assert_eq!(w1.len(), 1, "{members:?}");
    assert_eq!(w1[0].liveness, Liveness::Online);
    assert_eq!(members.len(), 1);
    let live = store.list(keys::LIVE_WORKERS).await.unwrap();
    assert_eq!(live.len(), 1);
    // And it stays ONLINE: the renewals go on.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Online));
    assert!(session.state().borrow().is_registered());

    // A new watch works.
    let mut changes = membership.watch().await.unwrap().expect("watch");
    store
        .register_worker(&registration("w2", "i2", 30002), Duration::from_secs(30))
        .await
        .unwrap()
        .close()
        .await;
    next_change(&mut changes, Duration::from_secs(1), "register after restart")
        .await
        .expect("stream open")
        .expect("event");
    session.close().await;
    assert_eq!(liveness(&membership, "w1").await, Some(Liveness::Offline));
}
