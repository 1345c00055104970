//! `hoard info ...`.

use clap::Subcommand;
use hoard_client::HoardClient;
use hoard_config::SiteConfig;

use crate::output::{human_bytes, print_table};
use crate::Format;

#[derive(Debug, Subcommand)]
pub enum InfoCommand {
    /// The workers, their addresses, and whether they answer now.
    Nodes {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub async fn run(command: InfoCommand, config: &SiteConfig) -> anyhow::Result<()> {
    match command {
        InfoCommand::Nodes { format } => nodes(config, format).await,
    }
}

async fn nodes(config: &SiteConfig, format: Format) -> anyhow::Result<()> {
    let client = HoardClient::new(config)?;
    let view = client.view(true).await?;
    if format == Format::Json {
        let body = serde_json::json!({
            "membership": client.membership_kind(),
            "dynamicRing": config.user.dynamic_ring,
            "workers": view.nodes,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "membership: {} ({} ring)",
        client.membership_kind(),
        if config.user.dynamic_ring { "dynamic" } else { "static" }
    );
    let rows: Vec<Vec<String>> = view
        .nodes
        .iter()
        .map(|node| {
            vec![
                node.worker_id.clone().unwrap_or_else(|| "-".to_string()),
                node.address.clone(),
                if node.online {
                    "ONLINE".to_string()
                } else {
                    "OFFLINE".to_string()
                },
                node.capacity_bytes.map(human_bytes).unwrap_or_else(|| "-".to_string()),
                node.used_bytes.map(human_bytes).unwrap_or_else(|| "-".to_string()),
                node.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["WORKER ID", "ADDRESS", "STATE", "CAPACITY", "USED", "ERROR"], &rows);
    Ok(())
}
