//! The planning turn: one read-only agent turn (policy `reject-all`) that
//! answers with a plan and a task graph as JSON. The answer is validated
//! (ids, dependencies, cycles, size); an invalid answer is asked for once
//! more with the error, then the goal falls back to one task.

use std::time::Duration;

use serde::Deserialize;

use super::graph::{GoalTask, TaskGraph, TaskStatus};
use super::state::Usage;
use crate::agent::{self, AgentSpec, ApprovalPolicy, PolicyKind, TurnStatus};
use crate::config::Config;
use crate::error::{Error, Result};

/// What the planner decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Tasks {
        markdown: String,
        graph: TaskGraph,
    },
    /// The outcome needs a human decision first.
    Questions(Vec<String>),
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    tasks: Vec<AnswerTask>,
    #[serde(default)]
    questions: Vec<String>,
}

#[derive(Deserialize)]
struct AnswerTask {
    #[serde(default)]
    id: Option<String>,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default, alias = "dependencies")]
    depends_on: Vec<String>,
}

pub fn prompt(outcome: &str, max_tasks: usize) -> String {
    format!(
        "You are the planner of an omk goal. Do not change any file. Plan how to reach this outcome \
         in the current project, as at most {max_tasks} tasks for separate coding agents, with \
         dependencies where one task needs another's result.\n\n\
         Reply with ONLY a JSON object and nothing else:\n\
         {{\"plan\": \"<the plan in Markdown>\", \"tasks\": [{{\"id\": \"t1\", \"title\": \"...\", \
         \"description\": \"...\", \"depends_on\": []}}], \"questions\": []}}\n\
         If the outcome cannot be verified by tests or needs a decision from a person, leave \
         \"tasks\" empty and ask in \"questions\".\n\nOutcome: {outcome}"
    )
}

/// Validate a planner answer: a JSON object as in [`prompt`], or (the team
/// planner's format) a JSON array of task titles, possibly fenced or
/// surrounded by prose.
pub fn parse(text: &str, max_tasks: usize) -> std::result::Result<Plan, String> {
    let obj = text.find('{').zip(text.rfind('}'));
    let arr = text.find('[').zip(text.rfind(']'));
    let answer: Answer = match (obj, arr) {
        (Some((s, e)), arr) if s < e && arr.is_none_or(|(a, _)| s < a) => {
            serde_json::from_str(&text[s..=e])
                .map_err(|e| format!("the planner's JSON object is not a plan: {e}"))?
        }
        (_, Some((s, e))) if s < e => {
            let titles: Vec<String> = serde_json::from_str(&text[s..=e])
                .map_err(|e| format!("the planner's array is not a list of task titles: {e}"))?;
            Answer {
                plan: String::new(),
                tasks: titles
                    .into_iter()
                    .map(|title| AnswerTask {
                        id: None,
                        title,
                        description: String::new(),
                        depends_on: Vec::new(),
                    })
                    .collect(),
                questions: Vec::new(),
            }
        }
        _ => return Err("the planner's answer contains no JSON plan".into()),
    };
    let questions: Vec<String> = answer
        .questions
        .into_iter()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if !questions.is_empty() && answer.tasks.is_empty() {
        return Ok(Plan::Questions(questions));
    }
    if answer.tasks.is_empty() {
        return Err("the planner proposed no tasks".into());
    }
    if answer.tasks.len() > max_tasks {
        return Err(format!(
            "the planner proposed {} tasks; the limit is {max_tasks}",
            answer.tasks.len()
        ));
    }
    let tasks: Vec<GoalTask> = answer
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| GoalTask {
            id: t
                .id
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("t{}", i + 1)),
            title: t.title.trim().to_string(),
            description: t.description.trim().to_string(),
            dependencies: t.depends_on,
            status: TaskStatus::Pending,
            attempts: 0,
            team: None,
            summary: None,
            completed_at: None,
            origin: None,
        })
        .collect();
    if let Some(t) = tasks.iter().find(|t| t.title.is_empty()) {
        return Err(format!("task {:?} has no title", t.id));
    }
    let graph = TaskGraph::new(tasks);
    graph.validate()?;
    let markdown = if answer.plan.trim().is_empty() {
        graph
            .tasks
            .iter()
            .map(|t| format!("- **{}** {}\n", t.id, t.title))
            .collect()
    } else {
        answer.plan
    };
    Ok(Plan::Tasks { markdown, graph })
}

/// What one planning turn produced.
pub struct TurnResult {
    pub text: String,
    pub usage: Usage,
}

/// Run one read-only turn of the configured agent in `work_dir`.
pub fn turn(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    work_dir: &std::path::Path,
    prompt: &str,
) -> Result<TurnResult> {
    turn_until(runtime, config, work_dir, prompt, None, &|| false)
}

/// [`turn`], cancelled (`Error::Cancelled`) when `stop` turns true; it is
/// asked about once a second.
pub fn turn_until(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    work_dir: &std::path::Path,
    prompt: &str,
    agent: Option<&str>,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<TurnResult> {
    let resolved = crate::agents::resolve(config, agent)?;
    let spec = AgentSpec {
        program: resolved.program.clone(),
        extra_args: resolved.args.clone(),
        work_dir: work_dir.to_path_buf(),
        env: resolved.env.clone(),
        protocol: resolved.protocol,
        policy: ApprovalPolicy {
            kind: PolicyKind::RejectAll,
            allow_commands: Vec::new(),
            host: None,
        },
        start_timeout: resolved.start_timeout(),
        // The planner asks for decisions in its JSON answer instead.
        questions: false,
        mcp_servers: Vec::new(),
    };
    let lease = Duration::from_secs(config.team.lease_secs.max(1));
    let grace = Duration::from_secs(config.team.stop_grace_secs);
    runtime.block_on(async move {
        let (tx, mut rx) = agent::notice_channel();
        let agent = agent::start(&spec, tx).await?;
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        // The lease bounds silence, as for team workers: a turn that keeps
        // streaming may take longer.
        let turn = agent.prompt(prompt);
        tokio::pin!(turn);
        let outcome = loop {
            tokio::select! {
                r = &mut turn => break r,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if stop() {
                        let _ = agent.cancel().await;
                        break Err(Error::Cancelled("the turn was stopped on request".into()));
                    }
                    if agent.last_activity().elapsed() > lease {
                        break Err(Error::Timeout(format!(
                            "the planner was silent for more than {}s", lease.as_secs()
                        )));
                    }
                }
            }
        };
        let partial = agent.partial_turn();
        agent.stop(grace).await;
        drain.abort();
        let outcome = outcome?;
        let usage = outcome.record.usage;
        let usage = if usage.total() == 0 {
            partial.usage
        } else {
            usage
        };
        if outcome.status != TurnStatus::Finished {
            return Err(Error::Agent(format!(
                "the planner's turn ended as {:?}",
                outcome.status
            )));
        }
        Ok(TurnResult {
            text: outcome.record.text,
            usage: Usage {
                input_tokens: usage.total() - usage.output,
                output_tokens: usage.output,
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_arrays_and_questions() {
        let text = "Sure:\n```json\n{\"plan\":\"# P\",\"tasks\":[{\"id\":\"a\",\"title\":\"A\"},{\"id\":\"b\",\"title\":\"B\",\"depends_on\":[\"a\"]}]}\n```";
        let Plan::Tasks { markdown, graph } = parse(text, 10).unwrap() else {
            panic!()
        };
        assert_eq!(markdown, "# P");
        assert_eq!(graph.tasks[1].dependencies, vec!["a"]);
        let Plan::Tasks { graph, .. } = parse("[\"x\", \"y\"]", 10).unwrap() else {
            panic!()
        };
        assert_eq!(graph.tasks[1].id, "t2");
        assert_eq!(
            parse("{\"questions\":[\"which db?\"]}", 10).unwrap(),
            Plan::Questions(vec!["which db?".into()])
        );
        let cyclic = "{\"tasks\":[{\"id\":\"a\",\"title\":\"A\",\"depends_on\":[\"b\"]},{\"id\":\"b\",\"title\":\"B\",\"depends_on\":[\"a\"]}]}";
        assert!(parse(cyclic, 10).unwrap_err().contains("cycle"));
        assert!(parse("no json", 10).is_err());
        assert!(parse("[\"a\",\"b\",\"c\"]", 2)
            .unwrap_err()
            .contains("limit"));
    }
}
