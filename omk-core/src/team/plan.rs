//! The planner turn: one agent asked to split the task into subtasks.

use std::sync::Arc;

use serde_json::json;

use super::supervisor::RunContext;
use super::worker::{TurnEnd, Worker};
use crate::agent::TurnStatus;
use crate::metrics::Counter;

/// Run the planner turn: one agent asked for a JSON list of subtasks.
pub(super) async fn plan(ctx: &Arc<RunContext>) -> std::result::Result<Vec<String>, String> {
    let (task, max) = (ctx.lock().doc.task.clone(), ctx.config.team.max_subtasks);
    let agent_name = ctx.planner_agent.clone();
    let mut worker = Worker::new(ctx.clone(), "planner".into(), "planner", &agent_name)
        .map_err(|e| e.to_string())?;
    let Some(_slot) = worker.admit().await else {
        return Err("the planner was not admitted by the pool".into());
    };
    let agent = worker
        .start_agent()
        .await
        .map_err(|e| format!("planner agent failed to start: {e}"))?;
    let prompt = format!(
        "You are the planner of an omk team. Split this task into at most {max} independent subtasks \
         that separate workers can do in parallel. Reply with ONLY a JSON array of strings, one per subtask, \
         and nothing else.\n\nTask: {task}"
    );
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

/// Validate a planner answer: a JSON array of 1..=max non-empty strings,
/// possibly inside a code fence or surrounded by prose.
pub fn parse_plan(text: &str, max: usize) -> std::result::Result<Vec<String>, String> {
    let start = text
        .find('[')
        .ok_or("the planner's answer contains no JSON array")?;
    let end = text
        .rfind(']')
        .ok_or("the planner's answer contains no JSON array")?;
    if end < start {
        return Err("the planner's answer contains no JSON array".into());
    }
    let items: Vec<String> = serde_json::from_str(&text[start..=end])
        .map_err(|e| format!("the planner's array is not a list of strings: {e}"))?;
    let items: Vec<String> = items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
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
    if let Some(long) = items.iter().find(|s| s.chars().count() > 2000) {
        return Err(format!(
            "a proposed subtask is {} characters long; the limit is 2000",
            long.chars().count()
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::parse_plan;

    #[test]
    fn accepts_an_array_even_inside_prose_or_a_fence() {
        assert_eq!(parse_plan(r#"["a", " b "]"#, 5).unwrap(), ["a", "b"]);
        assert_eq!(
            parse_plan("Here:\n```json\n[\"x\"]\n```", 5).unwrap(),
            ["x"]
        );
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
