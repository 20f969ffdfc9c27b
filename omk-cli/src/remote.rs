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
        let mut sub = remote::submission(&config, req, store.shown())?;
        // From a git work tree, the code goes with the team.
        let workdir = match &req.workdir {
            Some(w) => w.clone(),
            None => std::env::current_dir().map_err(|e| omk_core::Error::Io {
                context: "reading the current directory".into(),
                source: e,
            })?,
        };
        if let Some((code, record)) = omk_core::team::shared::share(&workdir, &sub.doc.name)? {
            sub = sub.with_code(&code, record);
        }
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
        let site = site(omk, &sub.doc.name);
        let done = remote::coordinate(&store, c, lease, &site, changes, &|d| {
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

/// Where this process coordinates store team `team`: scratch space under
/// the state root, and its circuit breakers.
fn site(omk: &Omk, team: &str) -> remote::Site {
    remote::Site {
        scratch: omk.paths().root().join("store").join(team),
        paths: omk.paths().clone(),
    }
}

/// The store a command uses: `--store URL` (an empty one: none), else
/// `[store] url` or `$OMK_STORE` (docs/configuration.md).
pub fn store_url(omk: &Omk, flag: Option<&str>) -> omk_core::Result<Option<String>> {
    match flag {
        Some("") => Ok(None),
        Some(url) => Ok(Some(url.to_string())),
        None => Ok(omk.config()?.store.url.clone()),
    }
}

/// The store's cluster by pool ([`PgStore::cluster_pools`]).
pub fn cluster_pools(url: &str) -> omk_core::Result<serde_json::Value> {
    let rt = crate::async_runtime("store")?;
    rt.block_on(async { PgStore::connect(url).await?.cluster_pools().await })
}

/// Every team in the store, oldest first.
pub fn team_list(url: &str) -> omk_core::Result<Vec<omk_core::team::TeamDoc>> {
    let rt = crate::async_runtime("store")?;
    rt.block_on(async {
        let store = PgStore::connect(url).await?;
        store
            .team_docs()
            .await?
            .into_iter()
            .map(|(name, doc)| remote::decode(&store, &name, doc))
            .collect()
    })
}

/// `omk team shutdown NAME --store URL`: cancel the team's tasks in the
/// store (workers stop the agents running them), then end its run: its
/// coordinator does, or this process when nobody coordinates it.
pub fn team_shutdown(omk: &Omk, url: &str, name: &str, json: bool) -> omk_core::Result<Outcome> {
    let lease = Duration::from_secs(omk.config()?.team.lease_secs.max(1));
    let rt = crate::async_runtime("store")?;
    rt.block_on(async {
        let store = PgStore::connect(url).await?;
        let holder = format!(
            "{}/{}/shutdown",
            crate::worker::host_name(),
            std::process::id()
        );
        let not_found = || {
            omk_core::Error::NotFound(format!(
                "no team named {name:?} here or in the store {}",
                store.shown()
            ))
        };
        let asked = store
            .request_shutdown(name, &holder)
            .await?
            .ok_or_else(not_found)?;
        let changes = store.listen().await?;
        let doc = match store.claim_coordination(&holder, lease, Some(name)).await? {
            // Nobody coordinates it: end it here (every task is over now).
            Some(c) => {
                remote::coordinate(&store, c, lease, &site(omk, name), changes, &|_| {}).await?
            }
            // Its coordinator ends it (or it had ended).
            None => remote::team(&store, name).await?.ok_or_else(not_found)?,
        };
        let outcome = format!(
            "shutdown requested (the team was {}): {} pending and {} running task(s) cancelled",
            asked.phase, asked.pending, asked.running
        );
        if json {
            crate::output::print_json(&serde_json::json!({ "document": doc, "outcome": outcome }));
        } else {
            show(&doc, false);
            crate::outln!("{outcome}");
        }
        Ok(Outcome::Success)
    })
}

/// `omk team proof NAME --store URL`: the evidence the team's run left.
pub fn team_proof(url: &str, name: &str) -> omk_core::Result<serde_json::Value> {
    let rt = crate::async_runtime("store")?;
    rt.block_on(async {
        let store = PgStore::connect(url).await?;
        match store.team_proof(name).await? {
            Some(Some(proof)) => Ok(proof),
            Some(None) => Err(omk_core::Error::NotFound(format!(
                "team {name} has no proof or failure document yet (it has not ended)"
            ))),
            None => Err(omk_core::Error::NotFound(format!(
                "no team named {name:?} here or in the store {}",
                store.shown()
            ))),
        }
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
