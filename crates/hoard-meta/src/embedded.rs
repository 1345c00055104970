//! The embedded metastore: one redb file (ACID, crash-safe, pure Rust) under the coordinator's
//! metastore dir. Each key stores its version (a store-wide counter bumped by every commit that
//! changes something) in front of its value, so compare-and-set works like etcd's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Compare, Entry, MetaError, MetaStore, Op};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const REVISION: &str = "revision";
const VERSION_BYTES: usize = 8;

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file and its directory. Blocking. A file another
    /// process holds open is refused: the embedded store has exactly one owner.
    pub fn open(path: &Path) -> Result<EmbeddedStore, MetaError> {
        let fail = |reason: String| MetaError::Embedded {
            path: path.display().to_string(),
            reason,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| fail(format!("cannot create {}: {err}", parent.display())))?;
        }
        let db = Database::create(path).map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => fail(
                "already open in another process (the embedded store has one owner; use etcd to run several coordinators)"
                    .into(),
            ),
            other => fail(other.to_string()),
        })?;
        let store = EmbeddedStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
        };
        // Create the tables up front so readers never see "table does not exist".
        store.write(|_, _| Ok(true))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, err: impl std::fmt::Display) -> MetaError {
        MetaError::Embedded {
            path: self.path.display().to_string(),
            reason: err.to_string(),
        }
    }

    fn read_entries(&self, prefix: &str, exact: bool) -> Result<Vec<Entry>, MetaError> {
        let txn = self.db.begin_read().map_err(|err| self.error(err))?;
        let table = txn.open_table(KV).map_err(|err| self.error(err))?;
        let mut entries = Vec::new();
        if exact {
            if let Some(value) = table.get(prefix).map_err(|err| self.error(err))? {
                entries.push(self.decode(prefix, value.value())?);
            }
            return Ok(entries);
        }
        for item in table.range(prefix..).map_err(|err| self.error(err))? {
            let (key, value) = item.map_err(|err| self.error(err))?;
            if !key.value().starts_with(prefix) {
                break;
            }
            entries.push(self.decode(key.value(), value.value())?);
        }
        Ok(entries)
    }

    fn decode(&self, key: &str, stored: &[u8]) -> Result<Entry, MetaError> {
        let Some((version, value)) = stored.split_first_chunk::<VERSION_BYTES>() else {
            return Err(MetaError::Corrupt {
                key: key.to_string(),
                reason: format!("stored value is {} bytes, shorter than its version", stored.len()),
            });
        };
        Ok(Entry {
            key: key.to_string(),
            value: value.to_vec(),
            version: u64::from_le_bytes(*version),
        })
    }

    /// One write transaction: `body` gets the kv table and the revision this commit writes
    /// with; it returns whether to commit (false aborts, leaving everything as it was).
    /// `Some(revision)` when it committed.
    fn write(
        &self,
        body: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>, u64) -> Result<bool, MetaError>,
    ) -> Result<Option<u64>, MetaError> {
        let txn = self.db.begin_write().map_err(|err| self.error(err))?;
        let committed = {
            let mut counters = txn.open_table(COUNTERS).map_err(|err| self.error(err))?;
            let revision = counters
                .get(REVISION)
                .map_err(|err| self.error(err))?
                .map_or(0, |value| value.value())
                + 1;
            let mut kv = txn.open_table(KV).map_err(|err| self.error(err))?;
            if body(&mut kv, revision)? {
                counters.insert(REVISION, revision).map_err(|err| self.error(err))?;
                Some(revision)
            } else {
                None
            }
        };
        if committed.is_some() {
            txn.commit().map_err(|err| self.error(err))?;
        } else {
            txn.abort().map_err(|err| self.error(err))?;
        }
        Ok(committed)
    }

    fn txn_blocking(&self, compares: &[Compare], ops: &[Op]) -> Result<Option<u64>, MetaError> {
        self.write(|kv, revision| {
            for compare in compares {
                let key = compare.key();
                let current = match kv.get(key).map_err(|err| self.error(err))? {
                    Some(value) => Some(self.decode(key, value.value())?),
                    None => None,
                };
                let holds = match compare {
                    Compare::Version { version, .. } => current.map(|entry| entry.version) == *version,
                    Compare::Value { value, .. } => current.is_some_and(|entry| entry.value == *value),
                };
                if !holds {
                    return Ok(false);
                }
            }
            for op in ops {
                match op {
                    Op::Put { key, value } => {
                        let mut stored = Vec::with_capacity(VERSION_BYTES + value.len());
                        stored.extend_from_slice(&revision.to_le_bytes());
                        stored.extend_from_slice(value);
                        kv.insert(key.as_str(), stored.as_slice())
                            .map_err(|err| self.error(err))?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_str()).map_err(|err| self.error(err))?;
                    }
                }
            }
            Ok(true)
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(EmbeddedStore) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|err| self.error(format!("store task failed: {err}")))?
    }
}

#[async_trait::async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, MetaError> {
        let key = key.to_string();
        self.blocking(move |store| Ok(store.read_entries(&key, true)?.pop()))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, MetaError> {
        let prefix = prefix.to_string();
        self.blocking(move |store| store.read_entries(&prefix, false)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), MetaError> {
        let ops = vec![Op::Put {
            key: key.to_string(),
            value,
        }];
        self.blocking(move |store| store.txn_blocking(&[], &ops).map(|_| ()))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool, MetaError> {
        let key = key.to_string();
        self.blocking(move |store| {
            let mut existed = false;
            store.write(|kv, _| {
                existed = kv.remove(key.as_str()).map_err(|err| store.error(err))?.is_some();
                Ok(existed)
            })?;
            Ok(existed)
        })
        .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, MetaError> {
        let keys = keys.to_vec();
        self.blocking(move |store| {
            let txn = store.db.begin_read().map_err(|err| store.error(err))?;
            let table = txn.open_table(KV).map_err(|err| store.error(err))?;
            let mut entries = Vec::with_capacity(keys.len());
            for key in &keys {
                entries.push(match table.get(key.as_str()).map_err(|err| store.error(err))? {
                    Some(value) => Some(store.decode(key, value.value())?),
                    None => None,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<u64>, MetaError> {
        self.blocking(move |store| store.txn_blocking(&compares, &ops)).await
    }

    fn kind(&self) -> &'static str {
        "EMBEDDED"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn crud_list_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("m/meta.redb")).unwrap();
        assert_eq!(store.get("workers/a").await.unwrap(), None);
        store.put("workers/a", b"1".to_vec()).await.unwrap();
        store.put("workers/b", b"2".to_vec()).await.unwrap();
        store.put("workersx", b"no".to_vec()).await.unwrap();
        store.put("live/workers/a", b"3".to_vec()).await.unwrap();
        let a = store.get("workers/a").await.unwrap().unwrap();
        assert_eq!(a.value, b"1");
        let listed = store.list("workers/").await.unwrap();
        let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["workers/a", "workers/b"]);
        store.put("workers/a", b"1b".to_vec()).await.unwrap();
        let a2 = store.get("workers/a").await.unwrap().unwrap();
        assert!(a2.version > a.version, "every write moves the version");
        assert!(store.delete("workers/a").await.unwrap());
        assert!(!store.delete("workers/a").await.unwrap());
        assert_eq!(store.get("workers/a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn txn_applies_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("meta.redb")).unwrap();
        let absent = Compare::Version {
            key: "jobs/1".into(),
            version: None,
        };
        let created = store
            .txn(
                vec![absent.clone()],
                vec![put("jobs/1", "waiting"), put("index/1", "x")],
            )
            .await
            .unwrap()
            .expect("applied");
        // The same create again fails and changes nothing.
        assert_eq!(
            store
                .txn(vec![absent], vec![put("jobs/1", "other"), put("index/2", "y")])
                .await
                .unwrap(),
            None
        );
        let job = store.get("jobs/1").await.unwrap().unwrap();
        assert_eq!(job.value, b"waiting");
        assert_eq!(job.version, created, "the txn returns the version it wrote");
        assert_eq!(store.get("index/2").await.unwrap(), None);
        // Compare-and-set on the version read, and on a value.
        let stale = job.version;
        let at_stale = Compare::Version {
            key: "jobs/1".into(),
            version: Some(stale),
        };
        let index_is_x = Compare::Value {
            key: "index/1".into(),
            value: b"x".to_vec(),
        };
        assert_eq!(
            store
                .txn(
                    vec![
                        at_stale.clone(),
                        Compare::Value {
                            key: "index/1".into(),
                            value: b"y".to_vec()
                        }
                    ],
                    vec![put("jobs/1", "wrong value compared")],
                )
                .await
                .unwrap(),
            None
        );
        let running = store
            .txn(
                vec![at_stale.clone(), index_is_x.clone()],
                vec![put("jobs/1", "running"), Op::Delete { key: "index/1".into() }],
            )
            .await
            .unwrap()
            .expect("applied");
        assert!(running > stale);
        assert_eq!(
            store
                .txn(vec![at_stale], vec![put("jobs/1", "claimed twice")])
                .await
                .unwrap(),
            None
        );
        // A value compare on an absent key fails.
        assert_eq!(
            store.txn(vec![index_is_x], vec![put("jobs/2", "no")]).await.unwrap(),
            None
        );
        let many = store
            .get_many(&["index/1".to_string(), "jobs/1".to_string(), "jobs/2".to_string()])
            .await
            .unwrap();
        assert_eq!(many.len(), 3);
        assert_eq!(many[0], None);
        let job = many[1].clone().unwrap();
        assert_eq!((job.value.as_slice(), job.version), (b"running".as_slice(), running));
        assert_eq!(many[2], None);
    }

    #[tokio::test]
    async fn survives_reopen_and_refuses_a_second_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put("workers/a", b"kept".to_vec()).await.unwrap();
            let second = EmbeddedStore::open(&path).unwrap_err();
            assert!(second.to_string().contains("use etcd"), "{second}");
        }
        let reopened = EmbeddedStore::open(&path).unwrap();
        assert_eq!(reopened.get("workers/a").await.unwrap().unwrap().value, b"kept");
        let before = reopened.get("workers/a").await.unwrap().unwrap().version;
        reopened.put("workers/b", b"new".to_vec()).await.unwrap();
        let after = reopened.get("workers/b").await.unwrap().unwrap().version;
        assert!(after > before, "versions keep growing across restarts");
    }

    #[test]
    fn garbage_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        std::fs::write(&path, b"this is not a redb file at all, not even close").unwrap();
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"this is not a redb file at all, not even close"
        );
    }
}
