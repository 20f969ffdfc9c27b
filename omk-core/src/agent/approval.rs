//! Approval policies (DESIGN.md §6): what omk answers when an agent asks to
//! edit a file or run a command. Every decision carries its reason and is
//! recorded as an event by the caller.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::protocol::ApprovalRequest;

pub use crate::config::PolicyKind;

/// A host callback deciding approvals. It may block (a person deciding):
/// omk calls it off its async threads.
pub type Approver = Arc<dyn Fn(&ApprovalRequest) -> Decision + Send + Sync>;

/// A policy with its parameters.
#[derive(Clone, Default)]
pub struct ApprovalPolicy {
    pub kind: PolicyKind,
    /// Command patterns allowed under `workdir-edits`; `*` matches any run
    /// of characters (`cargo test*`, `git status`).
    pub allow_commands: Vec<String>,
    /// The callback of the `host` policy.
    pub host: Option<Approver>,
}

impl std::fmt::Debug for ApprovalPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalPolicy")
            .field("kind", &self.kind)
            .field("allow_commands", &self.allow_commands)
            .field("host", &self.host.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `approve` or `reject` (omk never answers `approve_for_session`, so
    /// each request is judged on its own).
    pub response: String,
    /// Why, in words; sent to the agent as feedback on a rejection.
    pub reason: String,
}

impl Decision {
    /// The payload of the `approval_decided` event of `request` decided
    /// so under policy `policy`.
    pub fn event_payload(&self, request: &ApprovalRequest, policy: &str) -> serde_json::Value {
        serde_json::json!({
            "request_id": request.id,
            "sender": request.sender,
            "action": request.action,
            "description": request.description,
            "paths": request.paths(),
            "commands": request.commands(),
            "agent_id": request.agent_id,
            "decision": self.response,
            "reason": self.reason,
            "policy": policy,
        })
    }

    /// Approve, saying why.
    pub fn approve(reason: impl Into<String>) -> Decision {
        Decision {
            response: "approve".into(),
            reason: reason.into(),
        }
    }
    /// Reject, saying why (the reason goes to the agent as feedback).
    pub fn reject(reason: impl Into<String>) -> Decision {
        Decision {
            response: "reject".into(),
            reason: reason.into(),
        }
    }
    pub fn approved(&self) -> bool {
        self.response == "approve"
    }
}

impl ApprovalPolicy {
    /// Decide on `req` for an agent working in `work_dir`.
    pub fn decide(&self, req: &ApprovalRequest, work_dir: &Path) -> Decision {
        match self.kind {
            PolicyKind::RejectAll => Decision::reject("policy reject-all rejects every request"),
            PolicyKind::ApproveAll => Decision::approve("policy approve-all"),
            PolicyKind::Host => self.ask_host(req),
            PolicyKind::WorkdirEdits => self.decide_workdir_edits(req, work_dir),
        }
    }

    /// [`ApprovalPolicy::decide`] from async code: a host callback (a
    /// person deciding may take minutes) runs on a blocking thread, never on
    /// the runtime's workers.
    pub async fn decide_async(&self, req: &ApprovalRequest, work_dir: &Path) -> Decision {
        if self.kind != PolicyKind::Host {
            return self.decide(req, work_dir);
        }
        let (policy, req, wd) = (self.clone(), req.clone(), work_dir.to_path_buf());
        tokio::task::spawn_blocking(move || policy.decide(&req, &wd))
            .await
            .unwrap_or_else(|_| Decision::reject("the host approver failed"))
    }

    /// Ask the host callback; a missing callback, a panic or an answer other
    /// than approve/reject is a rejection that says so.
    fn ask_host(&self, req: &ApprovalRequest) -> Decision {
        let Some(host) = &self.host else {
            return Decision::reject("policy host, but no approver is set on this omk handle");
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host(req))) {
            Ok(d) if d.response == "approve" || d.response == "reject" => d,
            Ok(d) => Decision::reject(format!(
                "the host approver answered {:?}; only approve or reject count",
                d.response
            )),
            Err(_) => Decision::reject("the host approver failed (panicked); rejecting"),
        }
    }

    fn decide_workdir_edits(&self, req: &ApprovalRequest, work_dir: &Path) -> Decision {
        match req.action.as_str() {
            "edit file" => {
                let paths = req.paths();
                if paths.is_empty() {
                    return Decision::reject(
                        "file edit names no path; refusing under workdir-edits",
                    );
                }
                match paths.iter().find(|p| !inside(work_dir, Path::new(p))) {
                    None => Decision::approve(format!(
                        "edit inside the work dir: {}",
                        paths.join(", ")
                    )),
                    Some(outside) => Decision::reject(format!(
                        "{outside} is outside the work dir {}; workdir-edits only approves edits inside it",
                        work_dir.display()
                    )),
                }
            }
            "run command" => {
                let commands = req.commands();
                if commands.is_empty() {
                    return Decision::reject("command request names no command");
                }
                match commands.iter().find(|c| !self.command_allowed(c)) {
                    None => Decision::approve(format!(
                        "command matches an allow pattern: {}",
                        commands.join("; ")
                    )),
                    Some(c) => Decision::reject(format!(
                        "command `{c}` matches no allow pattern (config [agent] allow_commands); workdir-edits rejects commands by default"
                    )),
                }
            }
            other => Decision::reject(format!(
                "action {other:?} is not approved under workdir-edits"
            )),
        }
    }

    fn command_allowed(&self, command: &str) -> bool {
        let command = command.trim();
        // A wildcard must not let `cargo test*` approve `cargo test; rm -rf ~`:
        // commands that chain, pipe, redirect or substitute only match a
        // pattern exactly.
        let compound = command.contains([';', '&', '|', '`', '$', '<', '>', '\n']);
        self.allow_commands.iter().any(|p| {
            let p = p.trim();
            if compound {
                p == command
            } else {
                glob_match(p, command)
            }
        })
    }
}

/// Whether `path` (absolute, or relative to `work_dir`) stays inside
/// `work_dir` after resolving `.` and `..` lexically. Symlinks already in the
/// tree are not followed: an agent that plants one escapes only as far as
/// the file system lets it write anyway.
pub fn inside(work_dir: &Path, path: &Path) -> bool {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        work_dir.join(path)
    };
    let (Some(root), Some(target)) = (normalize(work_dir), normalize(&joined)) else {
        return false;
    };
    target.starts_with(&root)
}

/// `p` with `.` and `..` resolved lexically; `None` when it climbs above
/// the root.
pub(crate) fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// `*` matches any run of characters, everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(action: &str, display: serde_json::Value) -> ApprovalRequest {
        ApprovalRequest {
            id: "r1".into(),
            tool_call_id: None,
            sender: "WriteFile".into(),
            action: action.into(),
            description: String::new(),
            display: display.as_array().unwrap().clone(),
            agent_id: None,
            raw: json!({}),
        }
    }

    #[test]
    fn workdir_edits_approves_inside_and_rejects_outside() {
        let p = ApprovalPolicy::default();
        let wd = Path::new("/work/proj");
        let ok = req(
            "edit file",
            json!([{"type": "diff", "path": "/work/proj/src/a.rs"}]),
        );
        assert!(p.decide(&ok, wd).approved());
        let rel = req(
            "edit file",
            json!([{"type": "diff", "path": "src/../b.rs"}]),
        );
        assert!(p.decide(&rel, wd).approved());
        for bad in [
            "/etc/passwd",
            "/work/proj/../other/x",
            "../x",
            "/work/project2/x",
        ] {
            let r = req("edit file", json!([{"type": "diff", "path": bad}]));
            let d = p.decide(&r, wd);
            assert!(!d.approved(), "{bad}");
            assert!(d.reason.contains("outside"), "{}", d.reason);
        }
    }

    #[test]
    fn commands_need_an_allow_pattern() {
        let mut p = ApprovalPolicy::default();
        let wd = Path::new("/w");
        let r = req(
            "run command",
            json!([{"type": "shell", "command": "cargo test --all"}]),
        );
        assert!(!p.decide(&r, wd).approved());
        p.allow_commands = vec!["cargo test*".into()];
        assert!(p.decide(&r, wd).approved());
        let r = req(
            "run command",
            json!([{"type": "shell", "command": "rm -rf /"}]),
        );
        assert!(!p.decide(&r, wd).approved());
        let r = req(
            "run command",
            json!([{"type": "shell", "command": "cargo test; rm -rf ~"}]),
        );
        assert!(
            !p.decide(&r, wd).approved(),
            "wildcards do not cover compound commands"
        );
    }

    #[test]
    fn reject_all_and_approve_all() {
        let r = req("edit file", json!([{"type": "diff", "path": "/w/a"}]));
        let wd = Path::new("/w");
        let all = ApprovalPolicy {
            kind: PolicyKind::ApproveAll,
            ..Default::default()
        };
        let none = ApprovalPolicy {
            kind: PolicyKind::RejectAll,
            ..Default::default()
        };
        assert!(all.decide(&r, wd).approved());
        assert!(!none.decide(&r, wd).approved());
        assert!(PolicyKind::parse("yolo").is_err());
        assert_eq!(
            PolicyKind::parse("approve-all").unwrap().as_str(),
            "approve-all"
        );
    }

    #[test]
    fn host_callbacks_decide_and_their_failures_reject() {
        let r = req("run command", json!([{"type": "shell", "command": "make"}]));
        let wd = Path::new("/w");
        let host = |f: Approver| ApprovalPolicy {
            kind: PolicyKind::Host,
            allow_commands: vec![],
            host: Some(f),
        };
        let yes = host(Arc::new(|r: &ApprovalRequest| {
            Decision::approve(format!("ok: {}", r.action))
        }));
        assert_eq!(yes.decide(&r, wd).reason, "ok: run command");
        let odd = host(Arc::new(|_: &ApprovalRequest| Decision {
            response: "maybe".into(),
            reason: String::new(),
        }));
        assert!(!odd.decide(&r, wd).approved());
        let boom = host(Arc::new(|_: &ApprovalRequest| panic!("host bug")));
        assert!(boom.decide(&r, wd).reason.contains("panicked"));
        let unset = ApprovalPolicy {
            kind: PolicyKind::Host,
            ..Default::default()
        };
        assert!(unset.decide(&r, wd).reason.contains("no approver"));
    }

    #[test]
    fn glob() {
        assert!(glob_match("git status", "git status"));
        assert!(!glob_match("git status", "git status; rm x"));
        assert!(glob_match("cargo *", "cargo build"));
        assert!(glob_match("*lint*", "npm run lint --fix"));
        assert!(!glob_match("a*b", "ab-c"));
    }
}
