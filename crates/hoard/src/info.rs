//! `hoard info ...`.

use clap::Subcommand;
use hoard_client::HoardClient;
use hoard_config::SiteConfig;

use crate::output::{human_bytes, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum InfoCommand {
    /// Every registered worker (id, address, ONLINE/OFFLINE, capacity, used) and every live
    /// coordinator.
    Nodes {
        #[arg(long, value_enum, ignore_case = true, default_value_t)]
        format: Format,
    },
}

pub async fn run(command: InfoCommand, config: &SiteConfig) -> anyhow::Result<()> {
    match command {
        InfoCommand::Nodes { format } => nodes(config, format).await,
    }
}

async fn nodes(config: &SiteConfig, format: Format) -> anyhow::Result<()> {
    let client = HoardClient::connect_once(config).await?;
    let report = client.nodes_report().await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "membership: {} ({} ring)",
        report.membership,
        if report.dynamic_ring { "dynamic" } else { "static" }
    );
    // Grouped by cluster (zone): this client's first, then the others by name.
    let clusters = hoard_client::clusters_local_first(&report.workers, &config.cluster_name);
    if clusters.is_empty() {
        println!("workers: none");
    }
    for cluster in clusters {
        let rows: Vec<Vec<String>> = report
            .workers
            .iter()
            .filter(|node| node.cluster == cluster)
            .map(|node| {
                vec![
                    node.worker_id.clone().unwrap_or_else(|| "-".to_string()),
                    node.address.clone(),
                    if node.online { "ONLINE" } else { "OFFLINE" }.to_string(),
                    node.capacity_bytes.map(human_bytes).unwrap_or_else(|| "-".to_string()),
                    node.used_bytes.map(human_bytes).unwrap_or_else(|| "-".to_string()),
                    node.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let own = if cluster == config.cluster_name {
            " (this client's)"
        } else {
            ""
        };
        println!("workers in cluster {cluster}{own}:");
        print_table(&["WORKER ID", "ADDRESS", "STATE", "CAPACITY", "USED", "NOTE"], &rows);
    }
    if report.coordinators.is_empty() {
        println!("coordinators: none");
        return Ok(());
    }
    println!("coordinators:");
    let rows: Vec<Vec<String>> = report
        .coordinators
        .iter()
        .map(|coordinator| {
            vec![
                coordinator.coordinator_id.clone(),
                coordinator.address.clone(),
                coordinator.version.clone(),
                if report.singleton.as_deref() == Some(coordinator.coordinator_id.as_str()) {
                    "singleton duties".to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    print_table(&["COORDINATOR ID", "ADDRESS", "VERSION", "ROLE"], &rows);
    Ok(())
}
