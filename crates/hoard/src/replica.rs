//! `hoard replica list|set|remove`: replica rules through the coordinator's REST API
//! (docs/replicas.md#rules). The admin token is sent when `hoard.security.admin.token` is set.

use anyhow::Context;
use clap::Subcommand;
use hoard_client::CoordinatorClient;
use hoard_common::replica::ReplicaRule;
use hoard_config::SiteConfig;

use crate::output::print_table;
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum ReplicaCommand {
    /// Every replica rule, in path order (the default rule on / when none is set there).
    List {
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
    /// Create or update the rule on a path: files under it get N copies in every cluster (the
    /// longest matching rule wins).
    Set {
        /// An absolute, normalized path prefix (`/s3/vip_data`).
        #[arg(long)]
        path: String,
        /// Copies per cluster, 1 to 64.
        #[arg(long)]
        replicas: u32,
        /// Keep the count at its target (missing copies loaded, extra ones freed).
        #[arg(long)]
        maintain: bool,
    },
    /// Remove the rule on a path.
    Remove {
        #[arg(long)]
        path: String,
    },
}

pub async fn run(command: ReplicaCommand, config: &SiteConfig) -> anyhow::Result<()> {
    let client = CoordinatorClient::new(config)?;
    match command {
        ReplicaCommand::List { format } => {
            let listed = client
                .replica_rules()
                .await
                .with_context(|| format!("cannot list replica rules from {}", client.addresses()))?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
                Format::Text => {
                    let rows: Vec<Vec<String>> = listed
                        .rules
                        .iter()
                        .map(|rule| {
                            vec![
                                rule.path.clone(),
                                rule.num_replicas_per_cluster.to_string(),
                                if rule.maintain { "yes" } else { "no" }.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["PATH", "REPLICAS PER CLUSTER", "MAINTAIN"], &rows);
                }
            }
        }
        ReplicaCommand::Set {
            path,
            replicas,
            maintain,
        } => {
            let rule = ReplicaRule {
                path: path.clone(),
                num_replicas_per_cluster: replicas,
                maintain,
            };
            let stored = client
                .set_replica_rule(&rule)
                .await
                .with_context(|| format!("cannot set the replica rule on {path}"))?;
            println!(
                "{}: {} replica(s) per cluster{}",
                stored.rule.path,
                stored.rule.num_replicas_per_cluster,
                if stored.rule.maintain { ", maintained" } else { "" }
            );
            if let Some(warning) = stored.warning {
                eprintln!("hoard: warning: {warning}");
            }
        }
        ReplicaCommand::Remove { path } => {
            client
                .remove_replica_rule(&path)
                .await
                .with_context(|| format!("cannot remove the replica rule on {path}"))?;
            println!("removed the replica rule on {path}");
        }
    }
    Ok(())
}
