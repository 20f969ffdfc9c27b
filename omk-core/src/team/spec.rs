//! Worker specs (`N:role[@agent]` terms joined by `,`), team names and role
//! instructions.

use crate::error::{Error, Result};
use crate::paths::validate_name;

/// Most workers one team may run.
pub const MAX_WORKERS: u32 = 64;

/// One parsed `N:role[@agent]` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub count: u32,
    pub role: String,
    /// The agent profile; `None`: the team's default agent.
    pub agent: Option<String>,
}

/// A whole worker spec: one or more terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamSpec {
    pub groups: Vec<WorkerSpec>,
}

impl TeamSpec {
    /// Parse `N:role[@agent]` terms joined by `,` (e.g.
    /// `2:executor@claude,1:reviewer@kimi-acp`); 1 to 64 workers in all.
    pub fn parse(spec: &str) -> Result<TeamSpec> {
        let groups = spec
            .split(',')
            .map(|term| WorkerSpec::parse_in(spec, term.trim()))
            .collect::<Result<Vec<_>>>()?;
        let total: u32 = groups.iter().map(|g| g.count).sum();
        if total > MAX_WORKERS {
            return Err(Error::InvalidInput(format!(
                "invalid worker spec {spec:?}: {total} workers in all; a team runs 1 to {MAX_WORKERS}"
            )));
        }
        Ok(TeamSpec { groups })
    }

    /// Workers in all.
    pub fn total(&self) -> u32 {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// The roles, each once, joined by `,` (`executor` for `3:executor`).
    pub fn roles(&self) -> String {
        let mut roles: Vec<&str> = Vec::new();
        for g in &self.groups {
            if !roles.contains(&g.role.as_str()) {
                roles.push(&g.role);
            }
        }
        roles.join(",")
    }
}

impl WorkerSpec {
    /// Parse one `N:role[@agent]` term with 1 <= N <= 64 and valid names.
    pub fn parse(spec: &str) -> Result<WorkerSpec> {
        WorkerSpec::parse_in(spec, spec)
    }

    fn parse_in(spec: &str, term: &str) -> Result<WorkerSpec> {
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "invalid worker spec {spec:?}: {why}; expected N:role[@agent] terms joined by ',', \
                 e.g. 3:executor or 2:executor@claude,1:reviewer@kimi-acp"
            ))
        };
        let (n, rest) = term
            .split_once(':')
            .ok_or_else(|| bad(format!("missing ':' in {term:?}")))?;
        let (role, agent) = match rest.split_once('@') {
            Some((role, agent)) => (role, Some(agent)),
            None => (rest, None),
        };
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("{n:?} is not a number")))?;
        if !(1..=MAX_WORKERS).contains(&count) {
            return Err(bad(format!(
                "worker count must be between 1 and {MAX_WORKERS}"
            )));
        }
        validate_name("role", role).map_err(|e| bad(e.to_string()))?;
        if let Some(a) = agent {
            validate_name("agent profile", a).map_err(|e| bad(e.to_string()))?;
        }
        Ok(WorkerSpec {
            count,
            role: role.to_string(),
            agent: agent.map(str::to_owned),
        })
    }
}

/// The default team name: `<role>-<8 hex>`.
pub fn default_team_name(role: &str) -> String {
    format!("{role}-{}", crate::ids::random_hex(4))
}

/// Built-in instructions for the well-known roles; other roles get a
/// generic line.
pub fn role_instructions(role: &str) -> String {
    match role {
        "executor" => "Implement the subtask: make the code changes, keep them minimal and focused, and run the relevant checks.".into(),
        "architect" => "Design the approach for the subtask: name the modules, interfaces and trade-offs, and write the design down where the team can read it.".into(),
        "reviewer" => "Review the work for the subtask: read the changes, point out bugs, risks and missing tests, and fix what is clearly wrong.".into(),
        "verifier" => "Verify the subtask: run the tests and checks, and report exactly what passed and what failed, with evidence.".into(),
        "integrator" => "Integrate the pieces of the subtask: resolve conflicts, wire modules together and make the whole build and tests pass.".into(),
        "planner" => "Plan the subtask: break it into concrete, verifiable steps and record them.".into(),
        other => format!("Act as the team's {other} for this subtask."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_specs() {
        assert_eq!(
            WorkerSpec::parse("3:executor").unwrap(),
            WorkerSpec {
                count: 3,
                role: "executor".into(),
                agent: None,
            }
        );
        assert_eq!(WorkerSpec::parse("64:qa-bot").unwrap().count, 64);
        let t = TeamSpec::parse("2:executor@claude, 1:reviewer@kimi-acp,1:executor").unwrap();
        assert_eq!(t.total(), 4);
        assert_eq!(t.roles(), "executor,reviewer");
        assert_eq!(t.groups[0].agent.as_deref(), Some("claude"));
        assert_eq!(t.groups[2].agent, None);
    }

    #[test]
    fn refuses_bad_specs() {
        for bad in [
            "0:executor",
            "65:executor",
            "3:../x",
            "3:",
            "abc",
            ":executor",
            "-1:x",
            "3:a/b",
            "3:.x",
            "x:executor",
            "3:executor@",
            "3:executor@../x",
            "2:executor,",
            "40:executor,30:reviewer",
            "1:executor@a@b",
        ] {
            let e = TeamSpec::parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn default_names_are_valid() {
        let n = default_team_name("executor");
        assert!(n.starts_with("executor-") && n.len() == "executor-".len() + 8);
        validate_name("team name", &n).unwrap();
    }
}
