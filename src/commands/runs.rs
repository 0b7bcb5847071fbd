//! `driftwood runs ...`: tracked runs, one at a time or side by side.

use anyhow::{Result, bail};
use schemas::Config;

use crate::cli::RunsCommand;
use crate::{open, report};

pub(super) async fn run(config: &Config, cmd: RunsCommand) -> Result<()> {
    let store = open::metadata(config).await?;
    match cmd {
        RunsCommand::List => print!("{}", report::runs(&store.list_runs(None).await?)),
        RunsCommand::Show { run_id } => {
            println!("{}", serde_json::to_string_pretty(&store.get_run(&run_id).await?)?);
        }
        RunsCommand::Compare { run_ids } => {
            let mut runs = Vec::new();
            for id in &run_ids {
                runs.push(store.get_run(id).await?);
            }
            if let [parent] = runs.as_slice() {
                let children: Vec<_> = store
                    .list_runs(Some(&parent.experiment))
                    .await?
                    .into_iter()
                    .filter(|r| r.parent_run_id.as_deref() == Some(parent.run_id.as_str()))
                    .collect();
                if children.is_empty() {
                    bail!("run {} has no child runs: name two or more runs to compare", parent.run_id);
                }
                runs = children;
                runs.sort_by_key(|r| r.started_at);
            }
            print!("{}", trainer::tune::compare_table(&runs));
        }
    }
    Ok(())
}
