//! Replica rules: how many copies of a file each cluster keeps, by path prefix. The wire shape
//! of `/api/v1/replica-rules` and the one lookup every process uses (the scheduler, clients,
//! the repair loop, the CLI), so a file's count is decided in one place.
//!
//! Nested rules are allowed and the longest matching prefix wins (`/a` = 3 and `/a/tmp` = 1:
//! `/a/x` has 3 copies, `/a/tmp/x` 1). Prefixes match whole path components: `/a/b` does not
//! cover `/a/bc`.

use serde::{Deserialize, Serialize};

use crate::HoardPath;

/// The cluster a process belongs to when `hoard.cluster.name` is not set, and the cluster of a
/// worker whose record predates clusters.
pub const DEFAULT_CLUSTER_NAME: &str = "default";

/// [`DEFAULT_CLUSTER_NAME`], for serde defaults.
pub fn default_cluster_name() -> String {
    DEFAULT_CLUSTER_NAME.to_string()
}

/// `hoard.user.replica.selection.policy`: which of a file's replicas a client reads first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaSelectionPolicy {
    /// Every client tries the replicas in ring order: one worker serves a hot file.
    #[default]
    GlobalFixed,
    /// Each client its own stable order of the same replicas (seeded by the client's id):
    /// clients spread over the replicas, and each keeps hitting the same one.
    ClientFixed,
    /// A new random order per read.
    Random,
}

impl ReplicaSelectionPolicy {
    pub const ALL: [ReplicaSelectionPolicy; 3] = [
        ReplicaSelectionPolicy::GlobalFixed,
        ReplicaSelectionPolicy::ClientFixed,
        ReplicaSelectionPolicy::Random,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaSelectionPolicy::GlobalFixed => "GLOBAL_FIXED",
            ReplicaSelectionPolicy::ClientFixed => "CLIENT_FIXED",
            ReplicaSelectionPolicy::Random => "RANDOM",
        }
    }

    /// The policy named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<ReplicaSelectionPolicy> {
        ReplicaSelectionPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for ReplicaSelectionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The coordinator's route: GET lists, POST creates or updates, DELETE (body
/// [`ReplicaRulePath`]) removes.
pub const REPLICA_RULES_ROUTE: &str = "/api/v1/replica-rules";

/// The coordinator's route: `GET ?path=P[&limit=N]`, the ideal and current copies of each file
/// under P (at most `limit`, default 100, at most 1000).
pub const REPLICAS_ROUTE: &str = "/api/v1/replicas";

/// The most copies a rule may ask for, per cluster.
pub const MAX_REPLICAS: u32 = 64;

/// One rule: files under `path` have `num_replicas_per_cluster` copies in every cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaRule {
    pub path: String,
    pub num_replicas_per_cluster: u32,
    /// Kept at its target by the coordinator's repair loop (missing copies loaded, extra ones
    /// freed); without it the count only guides loads and reads, as in Alluxio.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintain: bool,
}

/// `GET /api/v1/replica-rules`: every rule, in path order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaRules {
    pub rules: Vec<ReplicaRule>,
}

/// `DELETE /api/v1/replica-rules`: the rule to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaRulePath {
    pub path: String,
}

/// `POST /api/v1/replica-rules`: the rule as stored, and a warning when it asks for more
/// copies than there are registered workers (it is stored all the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReplicaRule {
    #[serde(flatten)]
    pub rule: ReplicaRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Why a rule is refused; the field it names is in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("path: {0}")]
    Path(String),
    #[error("numReplicasPerCluster: must be between 1 and {MAX_REPLICAS}, not {0}")]
    Count(u32),
}

impl ReplicaRule {
    /// The rule with its path normalized, or why it is refused. A path must be absolute and
    /// already normalized (no `.`, `..`, `//` or trailing `/`): a rule is matched against
    /// normalized paths, so one written otherwise would silently never match.
    pub fn validated(&self) -> Result<ReplicaRule, RuleError> {
        let path = validate_rule_path(&self.path)?;
        if !(1..=MAX_REPLICAS).contains(&self.num_replicas_per_cluster) {
            return Err(RuleError::Count(self.num_replicas_per_cluster));
        }
        Ok(ReplicaRule {
            path: path.as_str().to_string(),
            ..self.clone()
        })
    }
}

/// `raw` as a rule path: absolute and written in normal form.
pub fn validate_rule_path(raw: &str) -> Result<HoardPath, RuleError> {
    if !raw.starts_with('/') {
        return Err(RuleError::Path(format!("{raw:?} is not absolute")));
    }
    let path = HoardPath::parse(raw).map_err(|err| RuleError::Path(err.to_string()))?;
    if path.as_str() != raw {
        return Err(RuleError::Path(format!(
            "{raw:?} is not normalized (write {:?})",
            path.as_str()
        )));
    }
    Ok(path)
}

/// The rules in effect, ready for lookups. Always answers: with no rule for a path, the
/// default (`/` with `default_count`, 1 unless the deprecated `hoard.user.file.replication.min`
/// says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRuleSet {
    /// Longest path first, so the first match is the longest prefix.
    rules: Vec<(HoardPath, ReplicaRule)>,
    default_rule: ReplicaRule,
}

impl ReplicaRuleSet {
    /// Only the default rule.
    pub fn with_default(default_count: u32) -> ReplicaRuleSet {
        ReplicaRuleSet {
            rules: Vec::new(),
            default_rule: ReplicaRule {
                path: "/".to_string(),
                num_replicas_per_cluster: default_count.clamp(1, MAX_REPLICAS),
                maintain: false,
            },
        }
    }

    /// The set of `rules` over the default; rules that do not validate (written by an older or
    /// foreign writer) are skipped, never half-applied.
    pub fn new(rules: impl IntoIterator<Item = ReplicaRule>, default_count: u32) -> ReplicaRuleSet {
        let mut set = ReplicaRuleSet::with_default(default_count);
        for rule in rules {
            let Ok(rule) = rule.validated() else { continue };
            let Ok(path) = HoardPath::parse(&rule.path) else {
                continue;
            };
            set.rules.retain(|(existing, _)| existing != &path);
            set.rules.push((path, rule));
        }
        set.rules
            .sort_by(|(a, _), (b, _)| b.as_str().len().cmp(&a.as_str().len()).then(a.cmp(b)));
        set
    }

    /// The rule that decides `path`'s count: the longest rule prefix of it, else the default.
    pub fn rule_for(&self, path: &HoardPath) -> &ReplicaRule {
        self.rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map_or(&self.default_rule, |(_, rule)| rule)
    }

    /// Copies of `path` each cluster keeps.
    pub fn count_for(&self, path: &HoardPath) -> u32 {
        self.rule_for(path).num_replicas_per_cluster
    }

    /// Every rule, in path order, the default first when no rule is set on `/`: what
    /// `GET /api/v1/replica-rules` answers.
    pub fn listed(&self) -> ReplicaRules {
        let mut rules: Vec<ReplicaRule> = self.rules.iter().map(|(_, rule)| rule.clone()).collect();
        if !rules.iter().any(|rule| rule.path == "/") {
            rules.push(self.default_rule.clone());
        }
        rules.sort_by(|a, b| a.path.cmp(&b.path));
        ReplicaRules { rules }
    }
}

impl Default for ReplicaRuleSet {
    fn default() -> ReplicaRuleSet {
        ReplicaRuleSet::with_default(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, count: u32) -> ReplicaRule {
        ReplicaRule {
            path: path.to_string(),
            num_replicas_per_cluster: count,
            maintain: false,
        }
    }

    fn count(set: &ReplicaRuleSet, path: &str) -> u32 {
        set.count_for(&HoardPath::parse(path).unwrap())
    }

    #[test]
    fn longest_prefix_wins_by_whole_components() {
        let set = ReplicaRuleSet::new([rule("/a", 3), rule("/a/tmp", 1), rule("/b/c", 5)], 1);
        assert_eq!(count(&set, "/a/x"), 3);
        assert_eq!(count(&set, "/a"), 3);
        assert_eq!(count(&set, "/a/tmp/x"), 1);
        assert_eq!(count(&set, "/a/tmpx"), 3);
        assert_eq!(count(&set, "/ab"), 1);
        assert_eq!(count(&set, "/b/c/d/e"), 5);
        assert_eq!(count(&set, "/b/cd"), 1);
        assert_eq!(count(&set, "/"), 1);
    }

    #[test]
    fn default_and_root_rule() {
        assert_eq!(count(&ReplicaRuleSet::default(), "/x"), 1);
        assert_eq!(count(&ReplicaRuleSet::with_default(2), "/x"), 2);
        let set = ReplicaRuleSet::new([rule("/", 4), rule("/a", 2)], 2);
        assert_eq!(count(&set, "/x"), 4);
        assert_eq!(count(&set, "/a/x"), 2);
        let listed = ReplicaRuleSet::with_default(1).listed();
        assert_eq!(listed.rules, vec![rule("/", 1)]);
        assert_eq!(set.listed().rules, vec![rule("/", 4), rule("/a", 2)]);
    }

    #[test]
    fn validation_names_the_field() {
        for (path, problem) in [
            ("a/b", "not absolute"),
            ("/a/../b", "not normalized"),
            ("/a/", "not normalized"),
            ("//a", "not normalized"),
            ("", "not absolute"),
        ] {
            let err = rule(path, 1).validated().unwrap_err();
            assert!(matches!(err, RuleError::Path(_)), "{path}: {err}");
            assert!(err.to_string().starts_with("path: "), "{err}");
            assert!(err.to_string().contains(problem), "{path}: {err}");
        }
        for bad in [0, MAX_REPLICAS + 1] {
            let err = rule("/a", bad).validated().unwrap_err();
            assert!(err.to_string().starts_with("numReplicasPerCluster: "), "{err}");
        }
        assert_eq!(rule("/a", MAX_REPLICAS).validated().unwrap(), rule("/a", MAX_REPLICAS));
    }

    #[test]
    fn bodies_refuse_unknown_fields() {
        let parsed: Result<ReplicaRule, _> =
            serde_json::from_str(r#"{"path":"/a","numReplicasPerCluster":2,"replica":50}"#);
        assert!(parsed.unwrap_err().to_string().contains("replica"));
        let parsed: ReplicaRule = serde_json::from_str(r#"{"path":"/a","numReplicasPerCluster":2}"#).unwrap();
        assert_eq!(parsed, rule("/a", 2));
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"path":"/a","numReplicasPerCluster":2}"#
        );
    }

    #[test]
    fn stored_rule_answer_round_trips() {
        let answer = StoredReplicaRule {
            rule: rule("/a", 3),
            warning: Some("few workers".into()),
        };
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(
            text,
            r#"{"path":"/a","numReplicasPerCluster":3,"warning":"few workers"}"#
        );
        assert_eq!(serde_json::from_str::<StoredReplicaRule>(&text).unwrap(), answer);
        let plain: StoredReplicaRule = serde_json::from_str(r#"{"path":"/a","numReplicasPerCluster":3}"#).unwrap();
        assert_eq!(plain.warning, None);
    }

    #[test]
    fn invalid_stored_rules_are_skipped_and_later_duplicates_replace() {
        let set = ReplicaRuleSet::new([rule("/a", 0), rule("a", 3), rule("/b", 2), rule("/b", 5)], 1);
        assert_eq!(count(&set, "/a/x"), 1);
        assert_eq!(count(&set, "/b/x"), 5);
    }
}
