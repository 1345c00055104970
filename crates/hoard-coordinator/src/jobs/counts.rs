//! How many copies per cluster each file of a job gets: the job's `--replicas` for every file,
//! else the replica rules it was submitted under (kept in its record, so a rule changed or
//! removed while the job runs, or a failover to another coordinator, changes nothing).

use hoard_client::placement::Placement;
use hoard_client::ClusterView;
use hoard_common::replica::ReplicaRuleSet;
use hoard_common::HoardPath;
use hoard_meta::jobs::JobOptions;

#[derive(Debug, Clone)]
pub struct ReplicaCounts {
    fixed: Option<u32>,
    rules: ReplicaRuleSet,
}

impl ReplicaCounts {
    pub fn of(options: &JobOptions) -> ReplicaCounts {
        ReplicaCounts {
            fixed: options.replicas.filter(|replicas| *replicas > 0),
            rules: ReplicaRuleSet::new(options.replica_rules.clone().unwrap_or_default(), 1),
        }
    }

    /// Copies of `path` per cluster.
    pub fn count_for(&self, path: &HoardPath) -> usize {
        self.fixed.unwrap_or_else(|| self.rules.count_for(path)) as usize
    }

    /// Where `path`'s copies go under `view`.
    pub fn placement(&self, view: &ClusterView, path: &HoardPath) -> Placement {
        view.placement(path, self.count_for(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_common::replica::ReplicaRule;

    #[test]
    fn fixed_count_or_the_rules_kept_in_the_job() {
        let path = |raw: &str| HoardPath::parse(raw).unwrap();
        let rules = vec![ReplicaRule {
            path: "/vip".into(),
            num_replicas_per_cluster: 3,
            maintain: false,
        }];
        let by_rules = ReplicaCounts::of(&JobOptions {
            replica_rules: Some(rules.clone()),
            ..JobOptions::default()
        });
        assert_eq!(by_rules.count_for(&path("/vip/a")), 3);
        assert_eq!(by_rules.count_for(&path("/other")), 1);
        let fixed = ReplicaCounts::of(&JobOptions {
            replicas: Some(2),
            replica_rules: Some(rules),
            ..JobOptions::default()
        });
        assert_eq!(fixed.count_for(&path("/vip/a")), 2);
        assert_eq!(ReplicaCounts::of(&JobOptions::default()).count_for(&path("/x")), 1);
    }
}
