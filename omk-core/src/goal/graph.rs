//! `task-graph.json`: the goal's tasks and their dependencies, validated on
//! every load (duplicate ids, missing or self dependencies and cycles are
//! `corrupt_state` naming the task).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{self, Document};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    Done,
    /// Out of attempts.
    Failed,
}

/// One task of the goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalTask {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    pub status: TaskStatus,
    /// Execution waves this task took part in.
    #[serde(default)]
    pub attempts: u32,
    /// The team of its last wave.
    #[serde(default)]
    pub team: Option<String>,
    /// The agent's summary, or why the task failed.
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Why the controller added it (e.g. `fix: gate test failed`); none for
    /// planned tasks.
    #[serde(default)]
    pub origin: Option<String>,
}

/// `task-graph.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskGraph {
    pub version: u32,
    pub tasks: Vec<GoalTask>,
}

impl Document for TaskGraph {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "goal task graph";
}

/// API.md `task_graph_summary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSummary {
    pub total_tasks: usize,
    pub pending_tasks: usize,
    pub blocked_tasks: usize,
    pub done_tasks: usize,
}

impl TaskGraph {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("task-graph.json")
    }

    pub fn new(tasks: Vec<GoalTask>) -> TaskGraph {
        TaskGraph { version: 1, tasks }
    }

    /// Load and validate; `None` when the goal has not been planned yet.
    pub fn load(dir: &Path) -> Result<Option<TaskGraph>> {
        let file = TaskGraph::file(dir);
        let Some(graph) = store::read_doc::<TaskGraph>(&file)? else {
            return Ok(None);
        };
        graph.validate().map_err(|why| Error::corrupt(&file, why))?;
        Ok(Some(graph))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        self.validate()
            .map_err(|why| Error::InvalidInput(format!("task graph: {why}")))?;
        store::write_doc(&TaskGraph::file(dir), self)
    }

    /// Structural checks: unique non-empty ids, known dependencies, no
    /// self-dependency, no cycle.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut ids = BTreeSet::new();
        for t in &self.tasks {
            if t.id.trim().is_empty() {
                return Err("a task has an empty id".into());
            }
            if !ids.insert(t.id.as_str()) {
                return Err(format!("duplicate task id {:?}", t.id));
            }
        }
        for t in &self.tasks {
            for d in &t.dependencies {
                if d == &t.id {
                    return Err(format!("task {:?} depends on itself", t.id));
                }
                if !ids.contains(d.as_str()) {
                    return Err(format!("task {:?} depends on unknown task {d:?}", t.id));
                }
            }
        }
        if let Some(id) = self.find_cycle() {
            return Err(format!("task {id:?} is part of a dependency cycle"));
        }
        Ok(())
    }

    /// A task on a cycle, by depth-first search with colours.
    fn find_cycle(&self) -> Option<String> {
        let index: BTreeMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        // 0 unvisited, 1 on the stack, 2 finished.
        let mut colour = vec![0u8; self.tasks.len()];
        for start in 0..self.tasks.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            colour[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let deps = &self.tasks[node].dependencies;
                if *next < deps.len() {
                    let d = index[deps[*next].as_str()];
                    *next += 1;
                    match colour[d] {
                        0 => {
                            colour[d] = 1;
                            stack.push((d, 0));
                        }
                        1 => return Some(self.tasks[d].id.clone()),
                        _ => {}
                    }
                } else {
                    colour[node] = 2;
                    stack.pop();
                }
            }
        }
        None
    }

    /// Pending tasks whose dependencies are all done, in graph order.
    pub fn ready(&self) -> Vec<usize> {
        let done: BTreeSet<&str> = self
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Done)
            .map(|t| t.id.as_str())
            .collect();
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.status == TaskStatus::Pending
                    && t.dependencies.iter().all(|d| done.contains(d.as_str()))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Tasks that can never run: pending behind a failed dependency
    /// (directly or through other blocked tasks).
    pub fn blocked(&self) -> BTreeSet<String> {
        let mut blocked: BTreeSet<String> = self
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .map(|t| t.id.clone())
            .collect();
        let failed = blocked.clone();
        loop {
            let before = blocked.len();
            for t in &self.tasks {
                if t.status == TaskStatus::Pending
                    && t.dependencies.iter().any(|d| blocked.contains(d))
                {
                    blocked.insert(t.id.clone());
                }
            }
            if blocked.len() == before {
                break;
            }
        }
        blocked.difference(&failed).cloned().collect()
    }

    pub fn summary(&self) -> GraphSummary {
        let blocked = self.blocked();
        let count = |s: TaskStatus| self.tasks.iter().filter(|t| t.status == s).count();
        GraphSummary {
            total_tasks: self.tasks.len(),
            pending_tasks: self
                .tasks
                .iter()
                .filter(|t| {
                    matches!(t.status, TaskStatus::Pending | TaskStatus::Running)
                        && !blocked.contains(&t.id)
                })
                .count(),
            blocked_tasks: blocked.len() + count(TaskStatus::Failed),
            done_tasks: count(TaskStatus::Done),
        }
    }

    pub fn all_done(&self) -> bool {
        !self.tasks.is_empty() && self.tasks.iter().all(|t| t.status == TaskStatus::Done)
    }

    /// A new task id not used yet: `fix-1`, `fix-2`, ...
    pub fn next_id(&self, prefix: &str) -> String {
        (1..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| self.tasks.iter().all(|t| &t.id != id))
            .unwrap_or_else(|| format!("{prefix}-x"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, deps: &[&str]) -> GoalTask {
        GoalTask {
            id: id.into(),
            title: id.into(),
            description: String::new(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            status: TaskStatus::Pending,
            attempts: 0,
            team: None,
            summary: None,
            completed_at: None,
            origin: None,
        }
    }

    #[test]
    fn validation_names_the_task() {
        let g = TaskGraph::new(vec![task("a", &[]), task("a", &[])]);
        assert!(g
            .validate()
            .unwrap_err()
            .contains("duplicate task id \"a\""));
        let g = TaskGraph::new(vec![task("a", &["a"])]);
        assert!(g
            .validate()
            .unwrap_err()
            .contains("\"a\" depends on itself"));
        let g = TaskGraph::new(vec![task("a", &["zz"])]);
        assert!(g.validate().unwrap_err().contains("unknown task \"zz\""));
        let g = TaskGraph::new(vec![
            task("a", &["c"]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &[]),
        ]);
        assert!(g.validate().unwrap_err().contains("dependency cycle"));
        let g = TaskGraph::new(vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a", "b"]),
        ]);
        g.validate().unwrap();
    }

    #[test]
    fn ready_and_blocked_follow_dependencies() {
        let mut g = TaskGraph::new(vec![task("a", &[]), task("b", &["a"]), task("c", &["b"])]);
        assert_eq!(g.ready(), vec![0]);
        g.tasks[0].status = TaskStatus::Failed;
        assert_eq!(g.ready(), Vec::<usize>::new());
        let s = g.summary();
        assert_eq!((s.total_tasks, s.blocked_tasks, s.pending_tasks), (3, 3, 0));
        g.tasks[0].status = TaskStatus::Done;
        assert_eq!(g.ready(), vec![1]);
        assert_eq!(g.next_id("fix"), "fix-1");
    }
}
