//! `omk team run --store URL`: submit a team to a PostgreSQL store, then
//! coordinate it (follow the workers' progress, keep its document, end the
//! run) until it ends. With `--detach`, submit only: the first `omk worker`
//! to look coordinates it. `omk team status NAME --store URL` reads it.

use std::time::Duration;

use omk_core::pg::PgStore;
use omk_core::team::remote;
use omk_core::team::TeamRunRequest;
use omk_core::Omk;

use crate::cli::TeamRunArgs;
use crate::team::{outcome_of, show};
use crate::Outcome;

pub fn team_run(
    omk: &Omk,
    url: &str,
    req: &TeamRunRequest,
    args: &TeamRunArgs,
) -> omk_core::Result<Outcome> {
    let config = omk.config()?.clone();
    let lease = Duration::from_secs(config.team.lease_secs.max(1));
    let rt = crate::async_runtime("store")?;
    rt.block_on(async {
        let store = PgStore::connect(url).await?;
        let sub = remote::submission(&config, req, store.shown())?;
        let doc = serde_json::to_value(&sub.doc)
            .map_err(|e| omk_core::Error::InvalidInput(format!("cannot encode the team: {e}")))?;
        let holder = format!(
            "{}/{}/coordinator",
            crate::worker::host_name(),
            std::process::id()
        );
        let coordinator = (!args.detach).then_some((holder.as_str(), lease));
        // Listening before submitting: no change is missed.
        let changes = store.listen().await?;
        let lease_held = store
            .create_team(&sub.doc.name, &doc, &sub.tasks, coordinator)
            .await?;
        let Some(c) = lease_held else {
            show(&sub.doc, args.json);
            return Ok(Outcome::Success);
        };
        let quiet = args.json;
        let done = remote::coordinate(&store, c, lease, changes, &|d| {
            if !quiet {
                let finished = d
                    .tasks
                    .iter()
                    .filter(|t| {
                        !matches!(
                            t.status,
                            omk_core::team::TaskStatus::Pending
                                | omk_core::team::TaskStatus::Running
                        )
                    })
                    .count();
                crate::errln!(
                    "{}: {:?}, {finished}/{} tasks done",
                    d.name,
                    d.phase,
                    d.tasks.len()
                );
            }
        })
        .await?;
        show(&done, args.json);
        Ok(outcome_of(&done))
    })
}

/// `omk team status NAME --store URL`: the team's document in the store.
pub fn team_status(url: &str, name: &str) -> omk_core::Result<omk_core::team::TeamDoc> {
    let rt = crate::async_runtime("store")?;
    rt.block_on(async {
        let store = PgStore::connect(url).await?;
        remote::team(&store, name).await?.ok_or_else(|| {
            omk_core::Error::NotFound(format!(
                "no team named {name:?} in the store {}",
                store.shown()
            ))
        })
    })
}
