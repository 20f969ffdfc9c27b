//! Property: integrating random edit sets task by task, with real git,
//! lands every hunk of every task that does not touch a line an earlier
//! task changed, and conflicts exactly for those that do; nothing else in
//! the tree changes.
//!
//! Every task starts from the base (as parallel workers do) and edits
//! even-numbered lines of a few files, so two different edited lines
//! always have a line nobody touched between them and git's three-way
//! merge is exact: a task conflicts iff it shares a line with one already
//! integrated.

use std::collections::BTreeSet;

mod common;

use common::git;
use omk_core::git::Repo;
use omk_core::team::isolation::{Integration, Integrator};
use proptest::prelude::*;

const FILES: usize = 3;
const LINES: usize = 16;

fn base_line(f: usize, l: usize) -> String {
    format!("file {f} line {l}")
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A task: the (file, even line) pairs it rewrites.
fn edits() -> impl Strategy<Value = BTreeSet<(usize, usize)>> {
    prop::collection::btree_set((0..FILES, (0..LINES / 2).prop_map(|l| l * 2)), 1..5)
}

fn cases() -> u32 {
    std::env::var("OMK_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_hunk_that_does_not_conflict_lands(tasks in prop::collection::vec(edits(), 2..6)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proj");
        std::fs::create_dir(&p).unwrap();
        git(&p, &["init", "-q", "-b", "main"]);
        for f in 0..FILES {
            let lines: Vec<String> = (0..LINES).map(|l| base_line(f, l)).collect();
            std::fs::write(p.join(format!("f{f}.txt")), text(&lines)).unwrap();
        }
        git(&p, &["add", "-A"]);
        git(&p, &["commit", "-qm", "base"]);
        let repo = Repo::discover(&p).unwrap().unwrap();
        let it = Integrator::start(repo, &p, "prop", d.path().join("wt")).unwrap();

        // Every worker checks out the base and makes its edits.
        let mut commits = Vec::new();
        for (k, set) in tasks.iter().enumerate() {
            let w = format!("w{k}");
            let parent = it.checkout(&w, None).unwrap();
            for f in 0..FILES {
                let mine: Vec<usize> = set.iter().filter(|e| e.0 == f).map(|e| e.1).collect();
                if mine.is_empty() {
                    continue;
                }
                let lines: Vec<String> = (0..LINES)
                    .map(|l| if mine.contains(&l) { format!("task {k} wrote {f}:{l}") } else { base_line(f, l) })
                    .collect();
                std::fs::write(it.worktree(&w).join(format!("f{f}.txt")), text(&lines)).unwrap();
            }
            let c = it
                .commit_attempt(&w, &format!("t{k}"), 1, &parent, "edit", false)
                .unwrap()
                .expect("an edit commits");
            commits.push(c);
        }

        // Integrate in order; the model says which land.
        let mut owner: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
        for (k, c) in commits.iter().enumerate() {
            let clash: BTreeSet<String> = tasks[k]
                .iter()
                .filter(|e| owner.contains_key(e))
                .map(|e| format!("f{}.txt", e.0))
                .collect();
            match it.integrate(&format!("t{k}"), c).unwrap() {
                Integration::Integrated { .. } => {
                    prop_assert!(clash.is_empty(), "task {k} landed over {clash:?}");
                    for e in &tasks[k] {
                        owner.insert(*e, k);
                    }
                }
                Integration::Conflict { files, .. } => {
                    let files: BTreeSet<String> = files.into_iter().collect();
                    prop_assert_eq!(files, clash, "task {} conflicted", k);
                }
                Integration::Unchanged => prop_assert!(false, "task {} changed nothing", k),
            }
        }

        // The integrated tree: every landed hunk, the base everywhere else.
        let head = it.record().integrated_commit;
        let repo = Repo::discover(&p).unwrap().unwrap();
        for f in 0..FILES {
            let got = repo.show(&head, &format!("f{f}.txt")).unwrap().unwrap();
            let want: Vec<String> = (0..LINES)
                .map(|l| match owner.get(&(f, l)) {
                    Some(k) => format!("task {k} wrote {f}:{l}"),
                    None => base_line(f, l),
                })
                .collect();
            prop_assert_eq!(got, text(&want));
        }
        it.cleanup();
    }
}
