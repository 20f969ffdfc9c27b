//! The planner turn: one agent asked to split the task into subtasks.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::supervisor::RunContext;
use super::worker::{TurnEnd, Worker};
use crate::agent::TurnStatus;
use crate::metrics::Counter;

/// A subtask the planner proposed, with the files it said it will change
/// (empty when it did not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub title: String,
    pub files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item {
    Title(String),
    Task {
        title: String,
        #[serde(default)]
        files: Vec<String>,
    },
}

/// Run the planner turn: one agent asked for a JSON list of subtasks.
pub(super) async fn plan(ctx: &Arc<RunContext>) -> std::result::Result<Vec<Planned>, String> {
    let (task, max) = (ctx.lock().doc.task.clone(), ctx.config.team.max_subtasks);
    let agent_name = ctx.planner_agent.clone();
    let mut worker = Worker::new(ctx.clone(), "planner".into(), "planner", &agent_name);
    let Ok(_slot) = worker.admit(false, None).await else {
        return Err("the planner was not admitted by the pool".into());
    };
    // Isolated: the planner reads the base in a worktree of its own too.
    worker
        .checkout(None)
        .await
        .map_err(|e| format!("cannot prepare the planner's worktree: {e}"))?;
    let agent = worker
        .start_agent()
        .await
        .map_err(|e| format!("planner agent failed to start: {e}"))?;
    let prompt = planner_prompt(&task, max);
    worker.record("prompt", json!({ "text": prompt }));
    ctx.count(&[(Counter::AskCalls, 1)]);
    let end = worker.turn(&agent, &prompt).await;
    let record = match &end {
        TurnEnd::Finished(o) => o.record.clone(),
        _ => agent.partial_turn(),
    };
    ctx.add_usage(&agent_name, &record.usage, record.cost.as_ref());
    ctx.update(|r| r.doc.tokens += record.usage.total());
    worker.drop_agent(true).await;
    match end {
        TurnEnd::Finished(o) if o.status == TurnStatus::Finished => parse_plan(&o.record.text, max),
        TurnEnd::Finished(o) => {
            ctx.count(&[(Counter::AskErrors, 1)]);
            Err(format!("planner turn ended as {:?}", o.status))
        }
        TurnEnd::Errored(e) => {
            ctx.count(&[(Counter::AskErrors, 1)]);
            Err(format!("planner failed: {e}"))
        }
        TurnEnd::LeaseExpired => {
            ctx.count(&[(Counter::AskErrors, 1)]);
            Err("planner went silent past its lease".into())
        }
        TurnEnd::Shutdown => Err("shut down during planning".into()),
    }
}

/// What the planner is asked (here and in a store team's planning task).
pub(crate) fn planner_prompt(task: &str, max: usize) -> String {
    format!(
        "You are the planner of an omk team. Split this task into at most {max} independent subtasks \
         that separate workers can do in parallel. Reply with ONLY a JSON array, one item per subtask, \
         and nothing else. An item is the subtask as a string, or, when you know which files it will \
         change, an object {{\"title\": \"...\", \"files\": [\"path\", ...]}} (paths relative to the work \
         dir; a directory covers what is in it): subtasks that share a file are not run at the same \
         time.\n\nTask: {task}"
    )
}

/// Validate a planner answer: a JSON array of 1..=max non-empty subtasks
/// (strings, or `{"title", "files"}` objects), possibly inside a code
/// fence or surrounded by prose.
pub fn parse_plan(text: &str, max: usize) -> std::result::Result<Vec<Planned>, String> {
    let start = text
        .find('[')
        .ok_or("the planner's answer contains no JSON array")?;
    let end = text
        .rfind(']')
        .ok_or("the planner's answer contains no JSON array")?;
    if end < start {
        return Err("the planner's answer contains no JSON array".into());
    }
    let items: Vec<Item> = serde_json::from_str(&text[start..=end]).map_err(|e| {
        format!("the planner's array is not a list of subtasks (strings or {{title, files}}): {e}")
    })?;
    let items: Vec<Planned> = items
        .into_iter()
        .map(|i| match i {
            Item::Title(t) => Planned {
                title: t.trim().to_string(),
                files: Vec::new(),
            },
            Item::Task { title, files } => Planned {
                title: title.trim().to_string(),
                files: files
                    .iter()
                    .map(|f| normal_path(f))
                    .filter(|f| !f.is_empty())
                    .collect(),
            },
        })
        .filter(|p| !p.title.is_empty())
        .collect();
    if items.is_empty() {
        return Err("the planner proposed no subtasks".into());
    }
    if items.len() > max {
        return Err(format!(
            "the planner proposed {} subtasks; the limit is {max}",
            items.len()
        ));
    }
    if let Some(long) = items.iter().find(|s| s.title.chars().count() > 2000) {
        return Err(format!(
            "a proposed subtask is {} characters long; the limit is 2000",
            long.title.chars().count()
        ));
    }
    Ok(items)
}

/// `./src//a.rs/` -> `src/a.rs`.
fn normal_path(p: &str) -> String {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether two tasks' planned files share one (equal paths, or one a
/// directory holding the other).
pub fn files_overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| {
            x == y
                || x.strip_prefix(y.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                || y.strip_prefix(x.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{files_overlap, parse_plan};

    fn titles(text: &str) -> Vec<String> {
        parse_plan(text, 5)
            .unwrap()
            .into_iter()
            .map(|p| p.title)
            .collect()
    }

    #[test]
    fn accepts_an_array_even_inside_prose_or_a_fence() {
        assert_eq!(titles(r#"["a", " b "]"#), ["a", "b"]);
        assert_eq!(titles("Here:\n```json\n[\"x\"]\n```"), ["x"]);
    }

    #[test]
    fn items_may_name_their_files_and_shared_files_overlap() {
        let p = parse_plan(
            r#"["a", {"title": "b", "files": ["./src//lib.rs", "docs/"]}, {"title": "c"}]"#,
            5,
        )
        .unwrap();
        assert_eq!(p[0].files, Vec::<String>::new());
        assert_eq!(p[1].files, ["src/lib.rs", "docs"]);
        assert_eq!(p[2].title, "c");
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(files_overlap(&f(&["docs"]), &f(&["docs/a.md"])));
        assert!(files_overlap(&f(&["a.rs", "b.rs"]), &f(&["b.rs"])));
        assert!(!files_overlap(&f(&["doc"]), &f(&["docs/a.md"])));
        assert!(!files_overlap(&f(&[]), &f(&["a.rs"])));
        assert!(parse_plan(r#"[{"files": ["a"]}]"#, 5).is_err());
    }

    #[test]
    fn refuses_what_is_not_a_bounded_list_of_strings() {
        for bad in ["no array", "[1, 2]", "[]", "[\"\"]", "] [", "[\"a\""] {
            assert!(parse_plan(bad, 5).is_err(), "{bad}");
        }
        assert!(parse_plan(r#"["a","b","c"]"#, 2)
            .unwrap_err()
            .contains("limit is 2"));
        let long = format!("[\"{}\"]", "x".repeat(2001));
        assert!(parse_plan(&long, 5).is_err());
    }
}
