//! `--isolation worktree` with real git and the scripted agent: workers in
//! worktrees of their own, their changes committed and integrated by omk,
//! conflicts retried on the new head, the result on branch `omk/<team>`,
//! and the user's checkout, index, HEAD and branches untouched.

mod common;

use std::path::Path;
use std::process::Command;

use common::{git, scripted_agent};
use omk_core::team::{Phase, TaskStatus, TeamDoc, TeamRunRequest};
use omk_core::{Omk, OpenOptions};
use serde_json::Value;

const FILE: &str = "1\n2\n3\n4\n5\n";

/// A project in git with `a.txt` committed and `wip.txt` not (the user's
/// work in progress), and omk opened on it.
fn project(dir: &Path, extra_config: &str) -> Omk {
    let proj = dir.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    git(&proj, &["init", "-q", "-b", "main"]);
    std::fs::write(proj.join("a.txt"), FILE).unwrap();
    git(&proj, &["add", "-A"]);
    git(&proj, &["commit", "-qm", "first"]);
    std::fs::write(proj.join("wip.txt"), "mine\n").unwrap();
    let cfg = dir.join("omk.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nbin = \"{}\"\n[team]\nmax_attempts = 2\nretry_backoff_ms = 10\n{extra_config}",
            scripted_agent().display()
        ),
    )
    .unwrap();
    Omk::open(OpenOptions {
        state_dir: Some(dir.join("state")),
        project_dir: Some(proj),
        config: Some(cfg),
    })
    .unwrap()
}

fn run(omk: &Omk, name: &str, subtasks: &[&str]) -> TeamDoc {
    omk.team_run(&TeamRunRequest {
        spec: format!("{}:executor", subtasks.len()),
        task: "isolated".into(),
        name: Some(name.into()),
        subtasks: subtasks.iter().map(|s| s.to_string()).collect(),
        isolation: Some("worktree".into()),
        ..Default::default()
    })
    .unwrap()
}

fn events(doc: &TeamDoc) -> Vec<Value> {
    std::fs::read_to_string(doc.state_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(doc: &TeamDoc, kind: &str) -> Vec<Value> {
    events(doc)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["payload"].clone())
        .collect()
}

/// After any run: only the user's worktree, only `omk/<team>` added to the
/// branches, HEAD, index and files as they were.
fn checkout_untouched(proj: &Path, head: &str, team: &str) {
    assert_eq!(git(proj, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(proj, &["status", "--porcelain"]), "?? wip.txt\n");
    assert_eq!(std::fs::read_to_string(proj.join("a.txt")).unwrap(), FILE);
    assert_eq!(
        git(proj, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    let branches = git(proj, &["branch", "--format=%(refname:short)"]);
    assert_eq!(branches, format!("main\nomk/{team}\n"));
}

#[test]
fn two_workers_edit_disjoint_hunks_of_one_file_and_both_land() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    let head = git(&proj, &["rev-parse", "HEAD"]);
    // Both claim at the base (the sleep keeps the first from finishing
    // before the second starts) and rewrite a.txt from it.
    let doc = run(
        &omk,
        "disjoint",
        &[
            "[sleep:0.3] [write:a.txt:ONE\\n2\\n3\\n4\\n5\\n]",
            "[sleep:0.3] [write:a.txt:1\\n2\\n3\\n4\\nFIVE\\n]",
        ],
    );
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    let w = doc.worktree.clone().unwrap();
    assert!(w.base_dirty, "the user's wip.txt is in the base");
    assert_eq!(w.branch.as_deref(), Some("omk/disjoint"));
    assert_eq!(
        git(&proj, &["show", "omk/disjoint:a.txt"]),
        "ONE\n2\n3\n4\nFIVE\n"
    );
    assert_eq!(git(&proj, &["show", "omk/disjoint:wip.txt"]), "mine\n");
    assert_eq!(kinds(&doc, "task_committed").len(), 2);
    assert_eq!(kinds(&doc, "task_integrated").len(), 2);
    // Every attempt's commit is under the team's hidden refs, with trailers.
    let refs = git(
        &proj,
        &["for-each-ref", "--format=%(refname)", "refs/omk/disjoint/"],
    );
    assert!(refs.contains("refs/omk/disjoint/tasks/t1/1"), "{refs}");
    let msg = git(
        &proj,
        &["log", "-1", "--format=%B", "refs/omk/disjoint/tasks/t2/1"],
    );
    assert!(
        msg.contains("Omk-Team: disjoint")
            && msg.contains("Omk-Task: t2")
            && msg.contains("Omk-Attempt: 1"),
        "{msg}"
    );
    // The record and the proof: every attempt's commit, the gates' commit,
    // the final diff as a patch file with its SHA-256.
    assert_eq!(w.attempts.len(), 2);
    assert!(
        w.attempts.iter().all(|a| a.outcome == "integrated"),
        "{:?}",
        w.attempts
    );
    let proof: Value =
        serde_json::from_str(&std::fs::read_to_string(doc.state_dir.join("proof.json")).unwrap())
            .unwrap();
    let res = &proof["worktree"]["result"];
    assert_eq!(
        proof["worktree"]["integrated_commit"],
        w.integrated_commit.as_str()
    );
    assert!(
        res["diff_stat"].as_str().unwrap().contains("a.txt"),
        "{res}"
    );
    let patch = doc.state_dir.join("final.patch");
    let sum = Command::new("sha256sum").arg(&patch).output().unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(res["patch_sha256"], sum.split_whitespace().next().unwrap());
    assert!(std::fs::read_to_string(&patch).unwrap().contains("+FIVE"));
    assert_eq!(res["left_behind"], serde_json::json!([]));
    // The agents worked in worktrees under the team's state dir.
    let claimed = kinds(&doc, "worker_started");
    assert_eq!(claimed.len(), 2);
    assert!(!doc.state_dir.join("worktrees").join("w1").exists());
    checkout_untouched(&proj, &head, "disjoint");
}

#[test]
fn the_same_line_changed_twice_conflicts_and_the_retry_on_the_new_head_lands() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    let head = git(&proj, &["rev-parse", "HEAD"]);
    let doc = run(
        &omk,
        "clash",
        &[
            "[sleep:0.3] [write:a.txt:uno\\n2\\n3\\n4\\n5\\n]",
            "[sleep:0.3] [write:a.txt:eins\\n2\\n3\\n4\\n5\\n]",
        ],
    );
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    let conflicts = kinds(&doc, "integration_conflict");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["files"], serde_json::json!(["a.txt"]));
    assert_eq!(conflicts[0]["retry"], true);
    // The retried task saw the conflict in its prompt and redid its change
    // on the integrated head: its version of line 1 wins.
    let loser = conflicts[0]["task_id"].as_str().unwrap();
    let t = doc.tasks.iter().find(|t| t.id == loser).unwrap();
    assert!(t.errors[0].contains("conflict"), "{:?}", t.errors);
    // Its retry's prompt: the files, the merge with markers, the other side.
    let winner_line = if loser == "t1" { "eins" } else { "uno" };
    let prompts: Vec<String> = std::fs::read_dir(doc.state_dir.join("workers"))
        .unwrap()
        .flatten()
        .flat_map(|w| {
            std::fs::read_to_string(w.path().join("transcript.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["kind"] == "prompt" && r["data"]["task_id"] == loser)
                .map(|r| r["data"]["text"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let retry = prompts
        .iter()
        .find(|p| p.contains("conflicted"))
        .expect("a retry prompt");
    assert!(
        retry.contains("in: a.txt") && retry.contains("<<<<<<<"),
        "{retry}"
    );
    assert!(
        retry.contains("the other side") && retry.contains(&format!("+{winner_line}")),
        "{retry}"
    );
    let text = git(&proj, &["show", "omk/clash:a.txt"]);
    let line1 = if loser == "t1" { "uno" } else { "eins" };
    assert_eq!(text, format!("{line1}\n2\n3\n4\n5\n"));
    checkout_untouched(&proj, &head, "clash");
}

/// The prompts task `task` was given, in order.
fn prompts_of(doc: &TeamDoc, task: &str) -> Vec<String> {
    let mut p: Vec<(String, String)> = std::fs::read_dir(doc.state_dir.join("workers"))
        .unwrap()
        .flatten()
        .flat_map(|w| {
            std::fs::read_to_string(w.path().join("transcript.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["kind"] == "prompt" && r["data"]["task_id"] == task)
                .map(|r| {
                    (
                        r["ts"].as_str().unwrap_or_default().to_string(),
                        r["data"]["text"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    p.sort();
    p.into_iter().map(|(_, t)| t).collect()
}

#[test]
fn with_no_conflict_retries_an_integrator_turn_resolves_the_merge_with_markers() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "conflict_retries = 0\n");
    let proj = d.path().join("proj");
    let head = git(&proj, &["rev-parse", "HEAD"]);
    let doc = run(
        &omk,
        "resolved",
        &[
            "[sleep:0.3] [write:a.txt:uno\\n2\\n3\\n4\\n5\\n]",
            "[sleep:0.3] [write:a.txt:eins\\n2\\n3\\n4\\n5\\n]",
        ],
    );
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    let conflicts = kinds(&doc, "integration_conflict");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["next"], "integrator");
    let loser = conflicts[0]["task_id"].as_str().unwrap();
    let marked = conflicts[0]["marked_commit"].as_str().unwrap();
    // The integrator turn: its role, its prompt with the markers, and its
    // worktree at the merge with markers (whose parents are the head and
    // the conflicting attempt).
    let started: Vec<_> = kinds(&doc, "task_started")
        .into_iter()
        .filter(|e| e["task_id"] == loser)
        .collect();
    assert_eq!(started.len(), 2);
    assert_eq!(started[1]["role"], "integrator");
    let prompts = prompts_of(&doc, loser);
    assert!(
        prompts[1].contains("as its integrator")
            && prompts[1].contains("conflict markers")
            && prompts[1].contains("in: a.txt")
            && prompts[1].contains("<<<<<<<"),
        "{}",
        prompts[1]
    );
    let parents = git(&proj, &["log", "-1", "--format=%P", marked]);
    assert_eq!(parents.split_whitespace().count(), 2);
    assert!(git(&proj, &["show", &format!("{marked}:a.txt")]).contains("<<<<<<<"));
    // Its resolution (the scripted agent rewrites the file as its subtask
    // says) was committed on that merge and integrated.
    let w = doc.worktree.clone().unwrap();
    let res = w
        .attempts
        .iter()
        .find(|a| a.integrator)
        .expect("a resolution");
    assert_eq!(res.parent, marked);
    assert_eq!(res.outcome, "integrated");
    let line1 = if loser == "t1" { "uno" } else { "eins" };
    assert_eq!(
        git(&proj, &["show", "omk/resolved:a.txt"]),
        format!("{line1}\n2\n3\n4\n5\n")
    );
    checkout_untouched(&proj, &head, "resolved");
}

#[test]
fn an_integrator_that_leaves_the_markers_fails_the_task_with_the_conflict_as_evidence() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "conflict_retries = 0\n");
    let proj = d.path().join("proj");
    let head = git(&proj, &["rev-parse", "HEAD"]);
    // Each task edits line 1 on its first turn only (a file outside the
    // worktrees remembers): the integrator turn changes nothing.
    let once = |t: &str, line: &str| {
        let flag = d.path().join(t);
        format!(
            "[sleep:0.3] [run:test -e {f} || {{ touch {f}; printf '{line}\\\\n2\\\\n3\\\\n4\\\\n5\\\\n' > a.txt; }}]",
            f = flag.display()
        )
    };
    let (t1, t2) = (once("t1", "uno"), once("t2", "eins"));
    let doc = omk
        .team_run(&TeamRunRequest {
            spec: "2:executor".into(),
            task: "isolated".into(),
            name: Some("stuck".into()),
            subtasks: vec![t1, t2],
            isolation: Some("worktree".into()),
            approval: Some("approve-all".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(doc.phase, Phase::Failed);
    let failed: Vec<_> = doc
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", doc.tasks);
    let summary = failed[0].summary.as_deref().unwrap();
    assert!(
        summary.contains("conflict with integrated work in a.txt")
            && summary.contains("the integrator changed nothing"),
        "{summary}"
    );
    let f = kinds(&doc, "task_failed");
    assert_eq!(f[0]["reason"], "integration conflict");
    assert_eq!(f[0]["unresolved"], serde_json::json!(["a.txt"]));
    assert!(f[0]["marked_commit"].is_string());
    // The winner's work is on the branch; the loser's is kept in its ref,
    // the merge with markers in its conflict ref.
    let loser = &failed[0].id;
    let kept = git(
        &proj,
        &["show", &format!("refs/omk/stuck/tasks/{loser}/1:a.txt")],
    );
    assert!(kept.starts_with("uno") || kept.starts_with("eins"));
    let marked = git(
        &proj,
        &["show", &format!("refs/omk/stuck/conflicts/{loser}/1:a.txt")],
    );
    assert!(marked.contains("<<<<<<<"), "{marked}");
    checkout_untouched(&proj, &head, "stuck");
}

#[test]
fn deliver_apply_brings_the_result_into_an_unchanged_checkout_and_only_then() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    let head = git(&proj, &["rev-parse", "HEAD"]);
    let index = std::fs::read(proj.join(".git/index")).unwrap();
    let apply = |name: &str, subtask: &str| {
        omk.team_run(&TeamRunRequest {
            spec: "1:executor".into(),
            task: "apply".into(),
            name: Some(name.into()),
            subtasks: vec![subtask.into()],
            isolation: Some("worktree".into()),
            deliver: Some("apply".into()),
            approval: Some("approve-all".into()),
            ..Default::default()
        })
        .unwrap()
    };
    let doc = apply(
        "applied",
        "[write:a.txt:ONE\\n2\\n3\\n4\\n5\\n] [write:new.txt:new\\n]",
    );
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    let delivery = doc.worktree.as_ref().unwrap().delivery.clone().unwrap();
    assert!(delivery.applied, "{delivery:?}");
    // The files changed; HEAD and the index did not (the user commits).
    assert_eq!(
        std::fs::read_to_string(proj.join("a.txt")).unwrap(),
        "ONE\n2\n3\n4\n5\n"
    );
    assert_eq!(
        std::fs::read_to_string(proj.join("new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(git(&proj, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read(proj.join(".git/index")).unwrap(), index);

    // A checkout changed during the run is left alone; the branch has the result.
    let wip = proj.join("wip.txt");
    let doc = apply(
        "refused",
        &format!("[run:echo more >> {}] [write:b.txt:b\\n]", wip.display()),
    );
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    let delivery = doc.worktree.as_ref().unwrap().delivery.clone().unwrap();
    assert!(!delivery.applied);
    assert!(
        delivery
            .reason
            .as_deref()
            .unwrap()
            .contains("changed since the run began"),
        "{delivery:?}"
    );
    assert!(!proj.join("b.txt").exists());
    assert_eq!(git(&proj, &["show", "omk/refused:b.txt"]), "b\n");
}

#[test]
fn a_git_work_tree_isolates_by_default_in_the_work_dirs_place_and_an_ignored_dir_does_not() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    std::fs::create_dir_all(proj.join("sub/.omk")).unwrap();
    // A gate that needs both workers' files: it passes only on the integrated tree.
    std::fs::write(
        proj.join("sub/.omk/gates.toml"),
        "[[gate]]\nname = \"both\"\ncommand = \"test -f x.txt && test -f y.txt\"\n",
    )
    .unwrap();
    let doc = omk
        .team_run(&TeamRunRequest {
            spec: "2:executor".into(),
            task: "default".into(),
            name: Some("dflt".into()),
            subtasks: vec!["[write:x.txt:x]".into(), "[write:y.txt:y]".into()],
            workdir: Some(proj.join("sub")),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        doc.isolation,
        omk_core::team::isolation::Isolation::Worktree
    );
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    // The agents wrote in sub/ of their worktrees, the gate ran there.
    assert_eq!(git(&proj, &["show", "omk/dflt:sub/x.txt"]), "x");
    assert_eq!(git(&proj, &["show", "omk/dflt:sub/y.txt"]), "y");
    assert_eq!(kinds(&doc, "gate_passed").len(), 1);
    let w = doc.worktree.unwrap();
    assert_eq!(
        w.gates_commit.as_deref(),
        Some(w.integrated_commit.as_str())
    );
    assert!(!proj.join("sub/x.txt").exists());

    // A directory git ignores is no part of the repository: not isolated.
    std::fs::write(proj.join(".gitignore"), "scratch/\n").unwrap();
    std::fs::create_dir(proj.join("scratch")).unwrap();
    let doc = omk
        .team_run(&TeamRunRequest {
            spec: "1:executor".into(),
            task: "ignored".into(),
            subtasks: vec!["[write:z.txt:z]".into()],
            workdir: Some(proj.join("scratch")),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(doc.isolation, omk_core::team::isolation::Isolation::None);
    assert_eq!(
        std::fs::read_to_string(proj.join("scratch/z.txt")).unwrap(),
        "z"
    );
}

#[test]
fn each_worker_keeps_one_build_cache_across_its_tasks_and_cleanup_removes_it() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    let doc = omk
        .team_run(&TeamRunRequest {
            spec: "1:executor".into(),
            task: "cache".into(),
            name: Some("cache".into()),
            subtasks: vec![
                "[run:echo $CARGO_TARGET_DIR > one.txt]".into(),
                "[run:echo $CARGO_TARGET_DIR > two.txt]".into(),
            ],
            approval: Some("approve-all".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    let one = git(&proj, &["show", "omk/cache:one.txt"]);
    assert_eq!(one, git(&proj, &["show", "omk/cache:two.txt"]));
    match std::env::var("CARGO_TARGET_DIR") {
        // The host's own setting wins over omk's per-worker default.
        Ok(host) => assert_eq!(one.trim(), host),
        Err(_) => assert!(
            one.trim().ends_with("worktrees/.cache/w1/cargo-target"),
            "{one}"
        ),
    }
    assert!(!doc.state_dir.join("worktrees").exists());
}

#[test]
fn isolation_needs_a_git_work_tree_and_a_known_mode() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let plain = d.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let err = omk
        .team_run(&TeamRunRequest {
            spec: "1:executor".into(),
            task: "x".into(),
            workdir: Some(plain),
            isolation: Some("worktree".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("git work tree"), "{err}");
    let err = omk
        .team_run(&TeamRunRequest {
            spec: "1:executor".into(),
            task: "x".into(),
            isolation: Some("chroot".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("worktree or none"), "{err}");
    let err = omk
        .team_run(&TeamRunRequest {
            spec: "1:executor".into(),
            task: "x".into(),
            isolation: Some("none".into()),
            deliver: Some("apply".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("needs --isolation worktree"),
        "{err}"
    );
    assert!(
        !d.path().join("state/team").exists()
            || std::fs::read_dir(d.path().join("state/team"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn team_gc_deletes_an_ended_teams_refs_and_its_unmoved_branch_only() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    let old = run(&omk, "old", &["[write:b.txt:b\\n]"]);
    let moved = run(&omk, "moved", &["[write:c.txt:c\\n]"]);
    assert_eq!(old.phase, Phase::Completed);
    assert_eq!(moved.phase, Phase::Completed);
    // Someone commits on omk/moved: that branch is theirs now.
    git(&proj, &["branch", "-f", "omk/moved", "main"]);
    let refs = |team: &str| {
        git(
            &proj,
            &[
                "for-each-ref",
                "--format=%(refname)",
                &format!("refs/omk/{team}/"),
            ],
        )
    };
    assert!(!refs("old").is_empty());

    // Younger than the cutoff: nothing.
    let r = omk.team_gc("1d", false).unwrap();
    assert_eq!((r.removed, r.teams.len()), (0, 0), "{r:?}");
    // A dry run says what would go and removes nothing.
    let dry = omk.team_gc("0", true).unwrap();
    assert!(dry.dry_run && dry.removed > 0);
    assert!(!refs("old").is_empty());
    let r = omk.team_gc("0", false).unwrap();
    assert_eq!(r.removed, dry.removed);
    let t = r.teams.iter().find(|t| t.name == "old").unwrap();
    assert!(t.removed.contains(&"refs/omk/old/base".to_string()));
    assert!(t.removed.contains(&"refs/heads/omk/old".to_string()));
    let m = r.teams.iter().find(|t| t.name == "moved").unwrap();
    assert!(
        m.kept[0].starts_with("refs/heads/omk/moved: it moved"),
        "{m:?}"
    );
    assert_eq!(refs("old"), "");
    assert_eq!(refs("moved"), "");
    assert_eq!(
        git(&proj, &["branch", "--format=%(refname:short)"]),
        "main\nomk/moved\n"
    );
    // Nothing left to do but the moved branch, which stays.
    let again = omk.team_gc("0", false).unwrap();
    assert_eq!(again.removed, 0);
    assert!(omk.team_gc("soon", false).is_err());
}

#[test]
fn tasks_whose_planned_files_overlap_never_run_together_so_they_do_not_conflict() {
    let d = tempfile::tempdir().unwrap();
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    let head = git(&proj, &["rev-parse", "HEAD"]);
    // The planner names a.txt for both (once as ./a.txt): without the
    // overlap rule both would start at the base and rewrite its one line.
    let plan = r#"[{"title": "[sleep:0.3] [write:a.txt:uno]", "files": ["a.txt"]},
                   {"title": "[sleep:0.3] [write:a.txt:eins]", "files": ["./a.txt"]},
                   {"title": "[write:b.txt:b]", "files": ["b.txt"]}]"#;
    let task = format!("plan [answer:{}]", plan.replace(']', "\\]"));
    let doc = omk
        .team_run(&TeamRunRequest {
            spec: "3:executor".into(),
            task,
            name: Some("planned".into()),
            isolation: Some("worktree".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    assert_eq!(doc.tasks.len(), 3, "{:?}", kinds(&doc, "plan_fallback"));
    assert_eq!(doc.tasks[0].files, ["a.txt"]);
    assert_eq!(doc.tasks[1].files, ["a.txt"]);
    assert!(kinds(&doc, "integration_conflict").is_empty());
    // One of t1/t2 started only after the other finished; b.txt's task ran
    // alongside.
    let ev = events(&doc);
    let at = |kind: &str, task: &str| {
        ev.iter()
            .position(|e| e["kind"] == kind && e["payload"]["task_id"] == task)
            .unwrap()
    };
    let (first, second) = if at("task_started", "t1") < at("task_started", "t2") {
        ("t1", "t2")
    } else {
        ("t2", "t1")
    };
    assert!(at("task_started", second) > at("task_completed", first));
    assert!(at("task_started", "t3") < at("task_completed", first));
    let last = if second == "t1" { "uno" } else { "eins" };
    assert_eq!(git(&proj, &["show", "omk/planned:a.txt"]), last);
    assert_eq!(git(&proj, &["show", "omk/planned:b.txt"]), "b");
    checkout_untouched(&proj, &head, "planned");
}

#[test]
fn submodules_are_checked_out_in_worker_worktrees_from_the_users_clone() {
    let d = tempfile::tempdir().unwrap();
    let lib = d.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "-q", "-b", "main"]);
    std::fs::write(lib.join("lib.txt"), "lib v1\n").unwrap();
    git(&lib, &["add", "-A"]);
    git(&lib, &["commit", "-qm", "lib"]);
    let omk = project(d.path(), "");
    let proj = d.path().join("proj");
    git(
        &proj,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &lib.to_string_lossy(),
            "vendor/lib",
        ],
    );
    git(&proj, &["commit", "-qm", "with lib"]);
    // The user's clone is the only source: the original goes away.
    std::fs::remove_dir_all(&lib).unwrap();
    let head = git(&proj, &["rev-parse", "HEAD"]);
    let doc = omk
        .team_run(&TeamRunRequest {
            spec: "2:executor".into(),
            task: "submodules".into(),
            name: Some("subs".into()),
            subtasks: vec![
                "[run:cat vendor/lib/lib.txt > seen.txt]".into(),
                "[write:vendor/lib/lib.txt:lib v2\\n]".into(),
            ],
            isolation: Some("worktree".into()),
            approval: Some("approve-all".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
    assert_eq!(git(&proj, &["show", "omk/subs:seen.txt"]), "lib v1\n");
    // The edit inside the submodule is kept in the submodule's repository
    // under the attempt's ref name; the superproject's pin is unchanged.
    let w = doc.worktree.clone().unwrap();
    let t2 = w.attempts.iter().find(|a| a.task_id == "t2").unwrap();
    assert_eq!(t2.submodule_commits.len(), 1, "{t2:?}");
    assert_eq!(t2.submodule_commits[0].0, "vendor/lib");
    let module = proj.join(".git/modules/vendor/lib");
    assert_eq!(
        git(&module, &["show", "refs/omk/subs/tasks/t2/1:lib.txt"]),
        "lib v2\n"
    );
    assert_eq!(
        git(&proj, &["rev-parse", "omk/subs:vendor/lib"]),
        git(&proj, &["rev-parse", "HEAD:vendor/lib"])
    );
    // Nothing left behind in either repository; the user's files as they were.
    assert_eq!(
        git(&module, &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_to_string(proj.join("vendor/lib/lib.txt")).unwrap(),
        "lib v1\n"
    );
    assert_eq!(git(&proj, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&proj, &["status", "--porcelain"]), "?? wip.txt\n");
}

#[test]
fn git_lfs_content_reaches_worktrees_only_when_team_worktree_lfs_is_on() {
    let lfs = Command::new("git").args(["lfs", "version"]).output();
    if !lfs.as_ref().is_ok_and(|o| o.status.success()) {
        // `make deps` installs git-lfs; in CI its absence is a failure.
        assert!(std::env::var_os("CI").is_none(), "git-lfs is not installed");
        eprintln!("skipped: git-lfs is not installed (make deps installs it)");
        return;
    }
    let seen = |lfs_on: bool| {
        let d = tempfile::tempdir().unwrap();
        let extra = if lfs_on {
            "[team.worktree]\nlfs = true\n"
        } else {
            ""
        };
        let omk = project(d.path(), extra);
        let proj = d.path().join("proj");
        git(&proj, &["lfs", "install", "--local"]);
        git(&proj, &["lfs", "track", "*.bin"]);
        std::fs::write(proj.join("big.bin"), "real content\n").unwrap();
        git(&proj, &["add", ".gitattributes", "big.bin"]);
        git(&proj, &["commit", "-qm", "lfs"]);
        // The object is in the repository's own LFS store: no server needed.
        assert!(git(&proj, &["lfs", "ls-files"]).contains("big.bin"));
        let doc = omk
            .team_run(&TeamRunRequest {
                spec: "1:executor".into(),
                task: "lfs".into(),
                name: Some("lfs".into()),
                subtasks: vec!["[run:cat big.bin > seen.txt]".into()],
                isolation: Some("worktree".into()),
                approval: Some("approve-all".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(doc.phase, Phase::Completed, "{:?}", doc.reason);
        // The pointer (or the content) the agent saw; big.bin itself is
        // unchanged on the branch either way.
        assert_eq!(
            git(&proj, &["show", "omk/lfs:big.bin"]),
            git(&proj, &["show", "HEAD:big.bin"])
        );
        git(&proj, &["show", "omk/lfs:seen.txt"])
    };
    assert!(
        seen(false).starts_with("version https://git-lfs.github.com/spec/v1"),
        "LFS pointers by default"
    );
    assert_eq!(seen(true), "real content\n");
}
