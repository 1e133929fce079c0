//! `cog placement`: which Redis deployment holds each tenant partition.

use clap::Subcommand;
use cog_control::PlacementTable;
use cog_core::placement::{PARTITIONS, partition};

use super::Ctx;
use crate::exit::{Exit, Result};
use crate::output::Table;

#[derive(Subcommand, Debug)]
pub(crate) enum PlacementCmd {
    /// The table: each deployment's partitions (or one tenant's).
    Show {
        /// Only where this tenant's data is: its partition and deployment.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Adds a Redis deployment (the first one holds every partition).
    Add {
        /// Its name, as the instances' configuration names it.
        deployment: String,
    },
    /// Moves a partition to a deployment; the instances follow, carrying
    /// its limiter state, hot cache entries and plugin data over.
    Move {
        /// The partition, 0–255 (`show --tenant ID` names a tenant's).
        partition: u8,
        /// The deployment it goes to.
        deployment: String,
    },
}

pub(crate) async fn exec(cmd: &PlacementCmd, ctx: &Ctx<'_>) -> Result {
    match cmd {
        PlacementCmd::Show { tenant } => {
            let table = ctx.backend.placement().await?.ok_or_else(|| {
                Exit::State(
                    "no placement table: add a deployment first (cog placement add NAME)".into(),
                )
            })?;
            match tenant {
                Some(id) => show_tenant(ctx, &table, id),
                None => show(ctx, &table),
            }
        }
        PlacementCmd::Add { deployment } => {
            let table = ctx.backend.add_deployment(deployment).await?;
            ctx.out.done(
                &format!(
                    "deployment {deployment} added (placement revision {})",
                    table.revision
                ),
                json(&table),
            );
            Ok(())
        }
        PlacementCmd::Move {
            partition,
            deployment,
        } => {
            let table = ctx.backend.move_partition(*partition, deployment).await?;
            ctx.out.done(
                &format!(
                    "partition {partition} on {deployment} (placement revision {})",
                    table.revision
                ),
                json(&table),
            );
            Ok(())
        }
    }
}

fn json(table: &PlacementTable) -> serde_json::Value {
    serde_json::to_value(table).unwrap_or_default()
}

/// The deployment of each partition.
fn deployments(table: &PlacementTable) -> Vec<&str> {
    let first = table.deployments.first().map_or("", String::as_str);
    (0..PARTITIONS)
        .map(|p| {
            u8::try_from(p)
                .ok()
                .and_then(|p| table.partitions.get(&p))
                .map_or(first, String::as_str)
        })
        .collect()
}

fn show(ctx: &Ctx<'_>, table: &PlacementTable) -> Result {
    if ctx.out.json() {
        ctx.out.json_value(&json(table));
        return Ok(());
    }
    let all = deployments(table);
    let mut t = Table::new(&["DEPLOYMENT", "COUNT", "PARTITIONS"]);
    for d in &table.deployments {
        let held: Vec<usize> = (0..PARTITIONS).filter(|&p| all[p] == d).collect();
        t.row(vec![d.clone(), held.len().to_string(), ranges(&held)]);
    }
    ctx.out.text(&format!(
        "placement revision {}\n{}",
        table.revision,
        t.render()
    ));
    Ok(())
}

fn show_tenant(ctx: &Ctx<'_>, table: &PlacementTable, id: &str) -> Result {
    let p = partition(id);
    let deployment = deployments(table)[usize::from(p)];
    ctx.out.record(
        &[
            ("tenant", id.to_owned()),
            ("partition", p.to_string()),
            ("deployment", deployment.to_owned()),
            ("revision", table.revision.to_string()),
        ],
        serde_json::json!({
            "tenant": id, "partition": p, "deployment": deployment, "revision": table.revision,
        }),
    );
    Ok(())
}

/// `0-3, 7, 9-10`; `-` for none.
fn ranges(sorted: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        out.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[5]), "5");
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3, 7, 9-10");
    }
}
