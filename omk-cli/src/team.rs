//! `omk team run|status|list|shutdown`.

use std::io::IsTerminal;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use omk_core::team::{Phase, TaskStatus, TeamDoc, TeamRunRequest};
use omk_core::Omk;

use crate::cli::{GlobalArgs, TeamCommand, TeamRunArgs};
use crate::output::print_json;
use crate::Outcome;

/// `local` of the team here, or, when there is no team of that name here
/// and a store is in use, `remote` of the store's URL.
fn here_or_in_store<T>(
    omk: &Omk,
    a: &crate::cli::TeamNameArgs,
    local: impl FnOnce(TeamDoc) -> omk_core::Result<T>,
    remote: impl FnOnce(&str) -> omk_core::Result<T>,
) -> omk_core::Result<T> {
    match (
        omk.team_status(&a.name),
        crate::remote::store_url(omk, a.store.as_deref())?,
    ) {
        (Err(e), Some(url)) if e.code() == omk_core::ErrorCode::NotFound => remote(&url),
        (here, _) => local(here?),
    }
}

/// `omk team status NAME --follow`: the team's events as they happen
/// (here, or in the store), until its run has ended.
fn follow(omk: &Omk, a: &crate::cli::TeamNameArgs) -> omk_core::Result<()> {
    let url = crate::remote::store_url(omk, a.store.as_deref())?;
    let mut events = omk_core::follow::TeamFollower::open(
        omk,
        &a.name,
        url.as_deref(),
        true,
        std::time::Duration::from_secs(1),
    )?;
    while let Some(e) = events.next_event()? {
        if a.json {
            crate::outln!("{e}");
        } else {
            let payload = e.get("payload").map(|p| p.to_string()).unwrap_or_default();
            crate::outln!(
                "{}  {:<20} {:<24} {}",
                e["ts"].as_str().unwrap_or_default(),
                e["kind"].as_str().unwrap_or_default(),
                e["actor"].as_str().unwrap_or("-"),
                one_line(&payload, 100)
            );
        }
    }
    Ok(())
}

pub fn run(omk: &Omk, global: &GlobalArgs, cmd: TeamCommand) -> omk_core::Result<Outcome> {
    match cmd {
        TeamCommand::Run(args) => team_run(omk, global, *args),
        TeamCommand::Status(s) => {
            let a = &s.team;
            if s.follow {
                follow(omk, a)?;
            }
            let doc = match crate::remote::store_url(omk, a.store.as_deref())? {
                Some(url) => omk.team_find_in(&a.name, Some(&url))?,
                None => omk.team_status(&a.name)?,
            };
            show(&doc, a.json);
            Ok(Outcome::Success)
        }
        TeamCommand::Proof(a) => {
            let local = |doc: TeamDoc| {
                ["proof.json", "failure.json"]
                    .iter()
                    .find_map(|f| {
                        let text = std::fs::read(doc.state_dir.join(f)).ok()?;
                        serde_json::from_slice::<serde_json::Value>(&text).ok()
                    })
                    .ok_or_else(|| {
                        omk_core::Error::NotFound(format!(
                            "team {} has no proof or failure document yet (it has not ended)",
                            a.name
                        ))
                    })
            };
            let doc = here_or_in_store(omk, &a, local, |url| {
                crate::remote::team_proof(url, &a.name)
            })?;
            print_json(&doc);
            Ok(Outcome::Success)
        }
        TeamCommand::List(a) => {
            let store = crate::remote::store_url(omk, a.store.as_deref())?;
            let remote = match &store {
                Some(url) => crate::remote::team_list(url)?,
                None => Vec::new(),
            };
            if a.json {
                let mut doc = omk_core::ops::team_list_json(omk)?;
                if let Some(list) = doc["teams"].as_array_mut() {
                    list.extend(
                        remote
                            .iter()
                            .map(|t| serde_json::to_value(t).unwrap_or_default()),
                    );
                }
                print_json(&doc);
            } else {
                let omk_core::team::TeamList { mut teams, errors } = omk.team_list()?;
                teams.extend(remote);
                crate::outln!(
                    "{:<28} {:<12} {:>7} {:>9} {:>9}  TASK",
                    "NAME",
                    "PHASE",
                    "WORKERS",
                    "TASKS",
                    "TOKENS"
                );
                for t in &teams {
                    crate::outln!(
                        "{:<28} {:<12} {:>7} {:>9} {:>9}  {}",
                        t.name,
                        format!("{:?}", t.phase),
                        t.worker_count,
                        format!("{}/{}", t.count(TaskStatus::Completed), t.tasks.len()),
                        t.tokens,
                        one_line(&t.task, 60)
                    );
                }
                for (name, e) in &errors {
                    crate::errln!("omk: team {name}: {e}");
                }
            }
            Ok(Outcome::Success)
        }
        TeamCommand::Shutdown(a) => {
            let local = omk.team_status(&a.name);
            if let (Err(e), Some(url)) =
                (&local, crate::remote::store_url(omk, a.store.as_deref())?)
            {
                if e.code() == omk_core::ErrorCode::NotFound {
                    return crate::remote::team_shutdown(omk, &url, &a.name, a.json);
                }
            }
            let r = omk.team_shutdown(&a.name, a.force)?;
            if a.json {
                crate::output::print_doc(&r);
            } else {
                show(&r.document, false);
                crate::outln!("{}", r.outcome);
            }
            Ok(Outcome::Success)
        }
        TeamCommand::Gc(a) => {
            let r = omk.team_gc(&a.older_than, a.dry_run)?;
            if a.json {
                crate::output::print_doc(&r);
                return Ok(Outcome::Success);
            }
            let verb = if r.dry_run { "would remove" } else { "removed" };
            for t in &r.teams {
                for name in &t.removed {
                    crate::outln!("team {}: {verb} {name}", t.name);
                }
                for why in &t.kept {
                    crate::outln!("team {}: kept {why}", t.name);
                }
                if let Some(e) = &t.error {
                    crate::errln!("omk: team {} ({}): {e}", t.name, t.repo.display());
                }
            }
            crate::outln!(
                "{verb} {} ref{} of {} team{} ended more than {}",
                r.removed,
                if r.removed == 1 { "" } else { "s" },
                r.teams.len(),
                if r.teams.len() == 1 { "" } else { "s" },
                a.older_than
            );
            Ok(Outcome::Success)
        }
        TeamCommand::Supervise(a) => {
            let doc = omk.team_supervise(&a.name, None, true)?;
            Ok(outcome_of(&doc))
        }
    }
}

fn request(args: &TeamRunArgs) -> TeamRunRequest {
    TeamRunRequest {
        spec: args.spec.clone(),
        task: args.task.clone(),
        name: args.name.clone(),
        subtasks: args.subtasks.clone(),
        workdir: args.workdir.clone(),
        approval: args.approval.clone(),
        pool: args.pool.clone(),
        detach: false,
        no_gates: args.no_gates,
        agent: args.agent.clone(),
        isolation: args.isolation.clone(),
        deliver: args.deliver.clone(),
    }
}

fn team_run(omk: &Omk, global: &GlobalArgs, args: TeamRunArgs) -> omk_core::Result<Outcome> {
    let req = request(&args);
    if let Some(url) = crate::remote::store_url(omk, args.store.as_deref())? {
        return crate::remote::team_run(omk, &url, &req, &args);
    }
    if args.detach {
        let doc = omk.team_prepare(&req)?;
        spawn_supervisor(omk, global, &doc)?;
        if args.json {
            print_json(&serde_json::to_value(&doc).unwrap_or_default());
        } else {
            crate::outln!("{}", doc.name);
        }
        return Ok(Outcome::Success);
    }
    let progress = (!args.json && std::io::stderr().is_terminal()).then(progress_bar);
    let observer = progress.clone().map(|bar| {
        Arc::new(move |doc: &TeamDoc| update_progress(&bar, doc))
            as omk_core::team::supervisor::Observer
    });
    let doc = omk.team_prepare(&req)?;
    let result = omk.team_supervise(&doc.name, observer, true);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let doc = result?;
    show(&doc, args.json);
    Ok(outcome_of(&doc))
}

pub(crate) fn outcome_of(doc: &TeamDoc) -> Outcome {
    if doc.phase == Phase::Completed {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

/// Start `omk team _supervise NAME` in its own session, detached from this
/// terminal, logging to the team's `supervisor.log`.
fn spawn_supervisor(omk: &Omk, global: &GlobalArgs, doc: &TeamDoc) -> omk_core::Result<()> {
    let exe = std::env::current_exe().map_err(|e| omk_core::Error::Io {
        context: "find the omk executable".into(),
        source: e,
    })?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(doc.state_dir.join("supervisor.log"))
        .map_err(|e| omk_core::Error::Io {
            context: "open supervisor.log".into(),
            source: e,
        })?;
    let log2 = log.try_clone().map_err(|e| omk_core::Error::Io {
        context: "open supervisor.log".into(),
        source: e,
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir")
        .arg(omk.state_dir())
        .arg("-C")
        .arg(omk.project_dir());
    if let Some(c) = &global.config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["team", "_supervise", &doc.name])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    use std::os::unix::process::CommandExt;
    cmd.spawn().map_err(|e| omk_core::Error::Io {
        context: "start the team supervisor".into(),
        source: e,
    })?;
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:24}] {pos}/{len} tasks  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn update_progress(bar: &ProgressBar, doc: &TeamDoc) {
    bar.set_prefix(format!("{} {:?}", doc.name, doc.phase));
    bar.set_length(doc.tasks.len() as u64);
    bar.set_position(
        doc.count(TaskStatus::Completed) as u64 + doc.count(TaskStatus::Failed) as u64,
    );
    let running: Vec<String> = doc
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .map(|t| format!("{}:{}", t.worker.as_deref().unwrap_or("?"), t.id))
        .collect();
    bar.set_message(format!("{}  tokens {}", running.join(" "), doc.tokens));
}

pub(crate) fn show(doc: &TeamDoc, json: bool) {
    if json {
        print_json(&serde_json::to_value(doc).unwrap_or_default());
        return;
    }
    crate::output::buffered(|| show_text(doc));
}

fn show_text(doc: &TeamDoc) {
    crate::outln!(
        "team {}  phase {:?}  {} x {}  tokens {}",
        doc.name,
        doc.phase,
        doc.worker_count,
        doc.worker_role,
        doc.tokens
    );
    crate::outln!("task: {}", one_line(&doc.task, 100));
    if let Some(r) = &doc.reason {
        crate::outln!("reason: {r}");
    }
    for t in &doc.tasks {
        crate::outln!(
            "  {:<4} {:<10} {:<5} attempts {}  tokens {:<7} {}",
            t.id,
            format!("{:?}", t.status).to_lowercase(),
            t.worker.as_deref().unwrap_or("-"),
            t.attempts,
            t.tokens,
            one_line(&t.title, 60)
        );
        if let Some(s) = &t.summary {
            crate::outln!("       {}", one_line(s, 100));
        }
    }
    crate::outln!("state: {}", doc.state_dir.display());
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}
