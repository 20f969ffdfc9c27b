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
        // Progress lines on a terminal only: off one, the report is all.
        let quiet = quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr());
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
        // The run's end: its coordinator's, or this process's when nobody
        // coordinates it (any more): every task is over now.
        let limit = lease * 2 + Duration::from_secs(15);
        let deadline = tokio::time::Instant::now() + limit;
        let doc = loop {
            let seen = changes.generation();
            if let Some(c) = store.claim_coordination(&holder, lease, Some(name)).await? {
                let site = site(omk, name);
                break remote::coordinate(&store, c, lease, &site, changes, &|_| {}).await?;
            }
            let doc = remote::team(&store, name).await?.ok_or_else(not_found)?;
            if doc.phase.is_terminal() {
                break doc;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(omk_core::Error::Timeout(format!(
                    "team {name} did not end within {}s of its shutdown; its tasks are cancelled",
                    limit.as_secs()
                )));
            }
            changes.changed_past(seen, Duration::from_secs(1)).await;
        };
        // What a local team's shutdown says, in the same shape.
        let stopped = !omk_core::pg::teams::TERMINAL_PHASES.contains(&asked.phase.as_str());
        let outcome = if stopped {
            format!(
                "team {name} was stopped and ended {:?}: {} pending and {} running task(s) cancelled",
                doc.phase, asked.pending, asked.running
            )
        } else {
            format!(
                "team {name} had already ended ({}); nothing was stopped",
                asked.phase
            )
        };
        let r = omk_core::team::ShutdownOutcome {
            document: doc,
            stopped,
            outcome,
        };
        if json {
            crate::output::print_doc(&r);
        } else {
            show(&r.document, false);
            crate::outln!("{}", r.outcome);
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
