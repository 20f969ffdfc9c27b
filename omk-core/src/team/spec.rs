//! `N:role` worker specs, team names and role instructions.

use crate::error::{Error, Result};
use crate::paths::validate_name;

/// Most workers one team may run.
pub const MAX_WORKERS: u32 = 64;

/// A parsed `N:role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub count: u32,
    pub role: String,
}

impl WorkerSpec {
    /// Parse `N:role` with 1 <= N <= 64 and a valid role name.
    pub fn parse(spec: &str) -> Result<WorkerSpec> {
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "invalid worker spec {spec:?}: {why}; expected N:role, e.g. 3:executor"
            ))
        };
        let (n, role) = spec
            .split_once(':')
            .ok_or_else(|| bad("missing ':'".into()))?;
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
        Ok(WorkerSpec {
            count,
            role: role.to_string(),
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
                role: "executor".into()
            }
        );
        assert_eq!(WorkerSpec::parse("64:qa-bot").unwrap().count, 64);
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
        ] {
            let e = WorkerSpec::parse(bad).unwrap_err();
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
