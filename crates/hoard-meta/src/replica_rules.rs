//! Replica rules kept in a [`MetaStore`]: the coordinator's job store (the embedded file, or
//! etcd under `hoard.etcd.root`), so every coordinator serves the same rules and a restart
//! keeps them.
//!
//! Key layout, relative to the store's root:
//!
//! | key | value |
//! | --- | --- |
//! | `replica-rules/<path, percent-encoded into one key segment>` | [`ReplicaRule`] JSON |
//!
//! The rule's path is in its value; the key only makes one rule per path.

use std::sync::Arc;

use hoard_common::replica::{ReplicaRule, ReplicaRuleSet, RuleError};

use crate::{MetaError, MetaStore};

/// Key names of the rule store, relative to the store's root.
pub mod keys {
    pub const RULES: &str = "replica-rules/";

    /// `replica-rules/<path>` with every byte but ASCII letters, digits, `-`, `.`, `_` and `~`
    /// percent-encoded (so `/` too: the path is one key segment).
    pub fn rule(path: &str) -> String {
        let mut key = String::with_capacity(RULES.len() + path.len() * 3);
        key.push_str(RULES);
        for byte in path.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                key.push(char::from(byte));
            } else {
                key.push_str(&format!("%{byte:02X}"));
            }
        }
        key
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuleStoreError {
    /// The rule is refused; the message names the field.
    #[error(transparent)]
    Invalid(#[from] RuleError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The replica rules in a [`MetaStore`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplicaRuleStore {
    store: Arc<dyn MetaStore>,
}

impl ReplicaRuleStore {
    pub fn new(store: Arc<dyn MetaStore>) -> ReplicaRuleStore {
        ReplicaRuleStore { store }
    }

    /// `EMBEDDED` or `ETCD`.
    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Every stored rule, in path order. A record that does not parse or validate (written by
    /// hand or by another version) is logged and left out, never half-applied or replaced.
    pub async fn list(&self) -> Result<Vec<ReplicaRule>, MetaError> {
        let mut rules = Vec::new();
        for entry in self.store.list(keys::RULES).await? {
            let parsed = serde_json::from_slice::<ReplicaRule>(&entry.value)
                .map_err(|err| err.to_string())
                .and_then(|rule| rule.validated().map_err(|err| err.to_string()));
            match parsed {
                Ok(rule) => rules.push(rule),
                Err(reason) => tracing::warn!(key = %entry.key, %reason, "skipping unreadable replica rule"),
            }
        }
        rules.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(rules)
    }

    /// The stored rules over the default rule (`/` with `default_count`).
    pub async fn rule_set(&self, default_count: u32) -> Result<ReplicaRuleSet, MetaError> {
        Ok(ReplicaRuleSet::new(self.list().await?, default_count))
    }

    /// Creates the rule for its path, or replaces the one there. Returns the rule as stored.
    pub async fn put(&self, rule: &ReplicaRule) -> Result<ReplicaRule, RuleStoreError> {
        let rule = rule.validated()?;
        let value = serde_json::to_vec(&rule).map_err(|err| MetaError::Corrupt {
            key: keys::rule(&rule.path),
            reason: err.to_string(),
        })?;
        self.store.put(&keys::rule(&rule.path), value).await?;
        Ok(rule)
    }

    /// Removes the rule on `path`; whether there was one. The path is matched as written
    /// (stored paths are normalized, so an unnormalized one matches nothing).
    pub async fn delete(&self, path: &str) -> Result<bool, MetaError> {
        self.store.delete(&keys::rule(path)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;

    fn rule(path: &str, count: u32, maintain: bool) -> ReplicaRule {
        ReplicaRule {
            path: path.to_string(),
            num_replicas_per_cluster: count,
            maintain,
        }
    }

    #[test]
    fn a_path_is_one_key_segment() {
        assert_eq!(keys::rule("/"), "replica-rules/%2F");
        assert_eq!(keys::rule("/s3/vip_data"), "replica-rules/%2Fs3%2Fvip_data");
        assert_eq!(keys::rule("/a b/é"), "replica-rules/%2Fa%20b%2F%C3%A9");
        assert_ne!(keys::rule("/a/b"), keys::rule("/a%2Fb"));
    }

    #[tokio::test]
    async fn create_update_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let store = ReplicaRuleStore::new(Arc::new(EmbeddedStore::open(&path).unwrap()));
        assert!(store.list().await.unwrap().is_empty());

        store.put(&rule("/s3/vip", 3, false)).await.unwrap();
        store.put(&rule("/a", 2, true)).await.unwrap();
        store.put(&rule("/s3/vip", 5, false)).await.unwrap();
        assert_eq!(
            store.list().await.unwrap(),
            vec![rule("/a", 2, true), rule("/s3/vip", 5, false)]
        );
        let set = store.rule_set(2).await.unwrap();
        assert_eq!(set.count_for(&hoard_common::HoardPath::parse("/s3/vip/f").unwrap()), 5);
        assert_eq!(set.count_for(&hoard_common::HoardPath::parse("/other").unwrap()), 2);

        assert!(store.delete("/a").await.unwrap());
        assert!(!store.delete("/a").await.unwrap());
        assert!(!store.delete("/nothing").await.unwrap());
        drop(store);

        // The file keeps the rules.
        let store = ReplicaRuleStore::new(Arc::new(EmbeddedStore::open(&path).unwrap()));
        assert_eq!(store.list().await.unwrap(), vec![rule("/s3/vip", 5, false)]);
    }

    #[tokio::test]
    async fn invalid_rules_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReplicaRuleStore::new(Arc::new(EmbeddedStore::open(&dir.path().join("m.redb")).unwrap()));
        store.put(&rule("/a", 2, false)).await.unwrap();
        for bad in [
            rule("a", 1, false),
            rule("/a/", 1, false),
            rule("/a", 0, false),
            rule("/a", 65, false),
        ] {
            let err = store.put(&bad).await.unwrap_err();
            assert!(matches!(err, RuleStoreError::Invalid(_)), "{err}");
        }
        assert_eq!(store.list().await.unwrap(), vec![rule("/a", 2, false)]);
    }

    #[tokio::test]
    async fn unreadable_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(EmbeddedStore::open(&dir.path().join("m.redb")).unwrap());
        let store = ReplicaRuleStore::new(meta.clone());
        store.put(&rule("/a", 2, false)).await.unwrap();
        meta.put(&keys::rule("/b"), b"not json".to_vec()).await.unwrap();
        meta.put(
            &keys::rule("/c"),
            br#"{"path":"/c","numReplicasPerCluster":0}"#.to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(store.list().await.unwrap(), vec![rule("/a", 2, false)]);
    }
}
