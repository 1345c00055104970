//! COORDINATOR membership as pure decisions over registrations and heartbeats: who is ONLINE,
//! whether a registration may take an id, whether a worker may be removed. No IO; the caller
//! persists registrations in the metastore before applying them here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hoard_common::api::coordinator::WorkerInfo;
use hoard_meta::{MetaError, WorkerRegistration};

#[derive(Debug, Clone)]
struct Beat {
    instance: String,
    at: Instant,
    used_bytes: Option<u64>,
    capacity_bytes: u64,
}

impl Beat {
    /// A registration counts as a heartbeat (usage unknown until the first real one).
    fn registered(registration: &WorkerRegistration, at: Instant) -> Beat {
        Beat {
            instance: registration.instance.clone(),
            at,
            used_bytes: None,
            capacity_bytes: registration.capacity_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatError {
    /// No registration under this id (removed, or a new store): register again.
    Unknown,
    /// Another process now holds the id; this one must stop.
    OtherInstance { address: String },
}

#[derive(Debug)]
pub struct Registry {
    timeout: Duration,
    registrations: BTreeMap<String, WorkerRegistration>,
    beats: HashMap<String, Beat>,
}

impl Registry {
    /// `known` are the registrations read from the metastore at start. Each counts as heard
    /// from at `now`: a restarted coordinator gives its workers one failure timeout to heartbeat
    /// before it reports them OFFLINE, instead of emptying every client's ring at once.
    pub fn new(timeout: Duration, known: Vec<WorkerRegistration>, now: Instant) -> Registry {
        let mut registry = Registry {
            timeout,
            registrations: BTreeMap::new(),
            beats: HashMap::new(),
        };
        for registration in known {
            registry.insert(registration, now);
        }
        registry
    }

    pub fn is_online(&self, worker_id: &str, now: Instant) -> bool {
        self.beats
            .get(worker_id)
            .is_some_and(|beat| now.saturating_duration_since(beat.at) < self.timeout)
    }

    /// Whether `registration` may take its id: refused while another live process (another
    /// instance at another address) holds it. The same address is a restart of the same worker
    /// (two processes cannot listen on one address), so it may take over at once.
    pub fn check_register(&self, registration: &WorkerRegistration, now: Instant) -> Result<(), MetaError> {
        let Some(existing) = self.registrations.get(&registration.worker_id) else {
            return Ok(());
        };
        let holder = self.beats.get(&registration.worker_id);
        let other_instance = holder.is_some_and(|beat| beat.instance != registration.instance);
        if self.is_online(&registration.worker_id, now)
            && other_instance
            && existing.address() != registration.address()
        {
            return Err(MetaError::IdInUse {
                worker_id: registration.worker_id.clone(),
                address: existing.address().to_string(),
            });
        }
        Ok(())
    }

    /// Records a registration already persisted; it counts as a heartbeat.
    pub fn register(&mut self, registration: WorkerRegistration, now: Instant) {
        debug_assert!(self.check_register(&registration, now).is_ok());
        self.insert(registration, now);
    }

    fn insert(&mut self, registration: WorkerRegistration, now: Instant) {
        self.beats
            .insert(registration.worker_id.clone(), Beat::registered(&registration, now));
        self.registrations.insert(registration.worker_id.clone(), registration);
    }

    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        instance: &str,
        used_bytes: u64,
        capacity_bytes: u64,
        now: Instant,
    ) -> Result<(), HeartbeatError> {
        self.check_instance(worker_id, instance)?;
        self.beats.insert(
            worker_id.to_string(),
            Beat {
                instance: instance.to_string(),
                at: now,
                used_bytes: Some(used_bytes),
                capacity_bytes,
            },
        );
        Ok(())
    }

    /// Whether `instance` is the process that holds `worker_id`'s registration.
    fn check_instance(&self, worker_id: &str, instance: &str) -> Result<(), HeartbeatError> {
        let Some(registration) = self.registrations.get(worker_id) else {
            return Err(HeartbeatError::Unknown);
        };
        if registration.instance != instance {
            return Err(HeartbeatError::OtherInstance {
                address: registration.address().to_string(),
            });
        }
        Ok(())
    }

    /// A clean stop: the worker is OFFLINE from now on (its registration stays).
    pub fn leave(&mut self, worker_id: &str, instance: &str) -> Result<(), HeartbeatError> {
        self.check_instance(worker_id, instance)?;
        self.beats.remove(worker_id);
        Ok(())
    }

    /// The registration `remove-worker` would delete, or why it must not.
    pub fn check_remove(&self, worker_id: &str, force: bool, now: Instant) -> Result<&WorkerRegistration, MetaError> {
        let Some(registration) = self.registrations.get(worker_id) else {
            return Err(MetaError::UnknownWorker(worker_id.to_string()));
        };
        if !force && self.is_online(worker_id, now) {
            return Err(MetaError::WorkerOnline {
                worker_id: worker_id.to_string(),
                address: registration.address().to_string(),
            });
        }
        Ok(registration)
    }

    /// Forgets a registration already deleted from the metastore.
    pub fn remove(&mut self, worker_id: &str) {
        self.registrations.remove(worker_id);
        self.beats.remove(worker_id);
    }

    pub fn workers(&self, now: Instant) -> Vec<WorkerInfo> {
        self.registrations
            .values()
            .map(|registration| {
                let beat = self.beats.get(&registration.worker_id);
                let online = self.is_online(&registration.worker_id, now);
                WorkerInfo {
                    worker_id: registration.worker_id.clone(),
                    cluster_name: registration.cluster_name.clone(),
                    address: registration.address().to_string(),
                    host: registration.host.clone(),
                    rpc_port: registration.rpc_port,
                    state: if online { "ONLINE" } else { "OFFLINE" }.to_string(),
                    capacity_bytes: beat.map_or(registration.capacity_bytes, |beat| beat.capacity_bytes),
                    used_bytes: beat.and_then(|beat| beat.used_bytes),
                    version: registration.version.clone(),
                    start_time_ms: registration.start_time_ms,
                    last_heartbeat_age_ms: beat.map(|beat| {
                        u64::try_from(now.saturating_duration_since(beat.at).as_millis()).unwrap_or(u64::MAX)
                    }),
                }
            })
            .collect()
    }

    pub fn online_count(&self, now: Instant) -> usize {
        self.registrations.keys().filter(|id| self.is_online(id, now)).count()
    }

    pub fn len(&self) -> usize {
        self.registrations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn registration(id: &str, port: u16, instance: &str) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: id.into(),
            cluster_name: hoard_common::replica::default_cluster_name(),
            host: "10.0.0.1".into(),
            rpc_port: port,
            capacity_bytes: 1 << 30,
            version: "0.1.0".into(),
            start_time_ms: 1,
            instance: instance.into(),
        }
    }

    #[test]
    fn online_until_the_timeout_passes_without_a_heartbeat() {
        let start = Instant::now();
        let mut registry = Registry::new(TIMEOUT, Vec::new(), start);
        registry.register(registration("w1", 1, "i1"), start);
        assert!(registry.is_online("w1", start + TIMEOUT - Duration::from_millis(1)));
        assert!(!registry.is_online("w1", start + TIMEOUT));
        registry
            .heartbeat("w1", "i1", 5, 1 << 30, start + TIMEOUT + Duration::from_secs(1))
            .unwrap();
        assert!(registry.is_online("w1", start + TIMEOUT + Duration::from_secs(2)));
        let workers = registry.workers(start + TIMEOUT + Duration::from_secs(2));
        assert_eq!(workers[0].state, "ONLINE");
        assert_eq!(workers[0].used_bytes, Some(5));
    }

    #[test]
    fn a_second_live_process_cannot_take_an_id() {
        let now = Instant::now();
        let mut registry = Registry::new(TIMEOUT, Vec::new(), now);
        registry.register(registration("w1", 1, "i1"), now);
        let err = registry.check_register(&registration("w1", 2, "i2"), now).unwrap_err();
        assert!(
            matches!(&err, MetaError::IdInUse { worker_id, address } if worker_id == "w1" && address == "10.0.0.1:1"),
            "{err}"
        );
        // The same address is a restart of the same worker.
        registry.check_register(&registration("w1", 1, "i3"), now).unwrap();
        // Once the holder is OFFLINE the id is free to move.
        registry
            .check_register(&registration("w1", 2, "i2"), now + TIMEOUT)
            .unwrap();
        // The old instance's heartbeats are refused after a takeover.
        registry.register(registration("w1", 2, "i2"), now + TIMEOUT);
        assert_eq!(
            registry.heartbeat("w1", "i1", 0, 0, now + TIMEOUT),
            Err(HeartbeatError::OtherInstance {
                address: "10.0.0.1:2".into()
            })
        );
        assert_eq!(registry.heartbeat("w9", "i1", 0, 0, now), Err(HeartbeatError::Unknown));
    }

    #[test]
    fn a_clean_stop_is_offline_at_once() {
        let now = Instant::now();
        let mut registry = Registry::new(TIMEOUT, Vec::new(), now);
        registry.register(registration("w1", 1, "i1"), now);
        assert!(matches!(
            registry.leave("w1", "other"),
            Err(HeartbeatError::OtherInstance { .. })
        ));
        assert!(registry.is_online("w1", now));
        registry.leave("w1", "i1").unwrap();
        assert!(!registry.is_online("w1", now));
        assert!(
            registry.check_remove("w1", false, now).is_ok(),
            "a stopped worker can be removed at once"
        );
    }

    #[test]
    fn remove_refuses_online_unless_forced() {
        let now = Instant::now();
        let mut registry = Registry::new(TIMEOUT, Vec::new(), now);
        registry.register(registration("w1", 1, "i1"), now);
        assert!(matches!(
            registry.check_remove("nope", false, now),
            Err(MetaError::UnknownWorker(_))
        ));
        assert!(matches!(
            registry.check_remove("w1", false, now),
            Err(MetaError::WorkerOnline { .. })
        ));
        assert!(registry.check_remove("w1", true, now).is_ok());
        assert!(registry.check_remove("w1", false, now + TIMEOUT).is_ok());
        registry.remove("w1");
        assert!(registry.is_empty());
    }

    #[test]
    fn a_restarted_coordinator_gives_known_workers_one_timeout() {
        let now = Instant::now();
        let registry = Registry::new(TIMEOUT, vec![registration("w1", 1, "i1")], now);
        assert_eq!(registry.online_count(now), 1);
        assert_eq!(registry.online_count(now + TIMEOUT), 0);
        assert_eq!(registry.len(), 1);
    }
}
