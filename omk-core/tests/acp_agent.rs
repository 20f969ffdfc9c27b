//! The ACP backend against the bundled scripted agent in its ACP mode
//! (`omk-scripted-agent acp`): handshake, turns with usage and cost,
//! permissions through the policies, the confined file service, late
//! updates, stop reasons, cancel, stop mid-turn, a fresh session per task,
//! stray output, unknown updates and vendor requests, and a crash.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{alive, rt, scripted_agent};
use omk_core::agent::{
    self, AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, PolicyKind, TurnStatus, WireEvent,
};
use omk_core::config::AgentProtocol;

fn spec(dir: &Path, program: PathBuf, policy: PolicyKind) -> AgentSpec {
    AgentSpec {
        program,
        extra_args: vec!["acp".into()],
        work_dir: dir.to_path_buf(),
        env: Vec::new(),
        protocol: AgentProtocol::Acp,
        policy: ApprovalPolicy {
            kind: policy,
            ..Default::default()
        },
        start_timeout: Duration::from_secs(20),
        questions: false,
        mcp_servers: Vec::new(),
    }
}

async fn start(dir: &Path, policy: PolicyKind) -> (Arc<dyn AgentBackend>, agent::NoticeReceiver) {
    let (tx, rx) = agent::notice_channel();
    let a = agent::start(&spec(dir, scripted_agent(), policy), tx)
        .await
        .unwrap();
    (a, rx)
}

fn drain(rx: &mut agent::NoticeReceiver) -> Vec<AgentNotice> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[test]
fn a_turn_reports_its_answer_usage_and_cost_and_every_update_kind() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, mut rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a
            .prompt("hello [answer:the answer] [tokens:50:10] [run:true]")
            .await
            .unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(o.record.text, "the answer");
        assert_eq!(
            (o.record.usage.input_other, o.record.usage.output),
            (50, 10)
        );
        let cost = o.record.cost.clone().expect("the turn's cost");
        assert_eq!(cost.currency, "USD");
        assert!((cost.amount - 60.0 * 0.00001).abs() < 1e-9, "{cost:?}");
        let notices = drain(&mut rx);
        let has = |f: &dyn Fn(&WireEvent) -> bool| {
            notices
                .iter()
                .any(|n| matches!(n, AgentNotice::Event(e) if f(e)))
        };
        assert!(has(&|e| matches!(e, WireEvent::Think(_))));
        assert!(has(&|e| matches!(e, WireEvent::Plan { .. })));
        assert!(has(&|e| matches!(e, WireEvent::ToolCall { .. })));
        assert!(has(&|e| matches!(e, WireEvent::ToolResult { .. })));
        assert!(has(&|e| matches!(
            e,
            WireEvent::ContextUsage { cost: Some(_), .. }
        )));
        assert!(has(&|e| matches!(
            e,
            WireEvent::StatusUpdate { usage: Some(_), .. }
        )));
        // The second turn's cost is its own, not the session's total.
        let o = a.prompt("again [tokens:1:1]").await.unwrap();
        let cost = o.record.cost.unwrap();
        assert!((cost.amount - 2.0 * 0.00001).abs() < 1e-9, "{cost:?}");
        let pid = a.pid();
        let status = a.stop(Duration::from_secs(5)).await.unwrap();
        assert!(status.success());
        assert!(!alive(pid));
    });
}

#[test]
fn permissions_go_through_the_policy_and_writes_stay_in_the_work_dir() {
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    rt().block_on(async {
        let (a, mut rx) = start(&work, PolicyKind::WorkdirEdits).await;
        let o = a.prompt("[write:inside.txt:yes]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(
            std::fs::read_to_string(work.join("inside.txt")).unwrap(),
            "yes"
        );
        let notices = drain(&mut rx);
        let approvals: Vec<_> = notices
            .iter()
            .filter_map(|n| match n {
                AgentNotice::Approval { request, decision } => Some((request, decision)),
                _ => None,
            })
            .collect();
        assert_eq!(approvals.len(), 1);
        assert_eq!(approvals[0].0.action, "edit file");
        assert!(approvals[0].1.approved());
        assert!(notices.iter().any(|n| matches!(n,
            AgentNotice::RequestAnswered { kind, .. } if kind == "fs/write_text_file")));

        // A command the policy rejects: recorded, and the turn goes on.
        let o = a
            .prompt("[run:touch ran.txt] [answer:went on]")
            .await
            .unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(o.record.text, "went on");
        assert!(!work.join("ran.txt").exists());
        assert!(drain(&mut rx).iter().any(|n| matches!(n,
            AgentNotice::Approval { decision, .. } if !decision.approved())));
        a.stop(Duration::from_secs(5)).await;
    });
    // approve-all lets the edit through; the file service still refuses a
    // path outside the work dir, and nothing is written there.
    rt().block_on(async {
        let (a, mut rx) = start(&work, PolicyKind::ApproveAll).await;
        let o = a.prompt("[write:../escaped.txt:no]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert!(!d.path().join("escaped.txt").exists());
        assert!(o.record.text.contains("outside the work dir"), "{}", o.record.text);
        assert!(drain(&mut rx).iter().any(|n| matches!(n,
            AgentNotice::RequestAnswered { kind, answer } if kind == "fs/write_text_file" && answer.starts_with("refused"))));
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn stop_reasons_late_updates_and_sessions() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a.prompt("[refuse]").await.unwrap();
        assert_eq!(
            o.status,
            TurnStatus::Stopped {
                reason: "refusal".into()
            }
        );
        let o = a.prompt("[answer:main] [late-update]").await.unwrap();
        assert_eq!(o.record.text, "main (late)");
        let o = a.prompt("[provider-error:boom]").await.unwrap();
        assert!(
            matches!(&o.status, TurnStatus::Error { message, .. } if message == "boom"),
            "{:?}",
            o.status
        );
        // A fresh session for the next task: [recall] sees no context.
        a.fresh_context().await.unwrap();
        let o = a.prompt("[answer:new session]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn stray_lines_unknown_updates_and_vendor_requests_are_kept_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, mut rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a
            .prompt("[malformed] [unknown-event] [answer:still fine]")
            .await
            .unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(o.record.text, "still fine");
        assert_eq!(o.protocol_violations, 0, "a stray line is no violation");
        assert!(o.record.unknown_events >= 2, "{:?}", o.record);
        let notices = drain(&mut rx);
        assert!(notices
            .iter()
            .any(|n| matches!(n, AgentNotice::StrayOutput { line } if line.contains("not JSON"))));
        assert!(notices.iter().any(|n| matches!(n,
            AgentNotice::RequestAnswered { kind, .. } if kind == "_omk/future_request")));
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn cancel_and_stop_mid_turn_end_the_turn_as_cancelled_and_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let turn = {
            let a = a.clone();
            tokio::spawn(async move { a.prompt("[sleep:30]").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.cancel().await.unwrap();
        let o = turn.await.unwrap().unwrap();
        assert_eq!(o.status, TurnStatus::Cancelled);

        let turn = {
            let a = a.clone();
            tokio::spawn(async move { a.prompt("[sleep:30]").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = a.pid();
        let started = std::time::Instant::now();
        let status = a.stop(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(status.is_some());
        let o = turn.await.unwrap().unwrap();
        assert_eq!(o.status, TurnStatus::Cancelled);
        assert!(!alive(pid));
    });
}

#[test]
fn a_crash_mid_turn_is_an_error_naming_the_exit() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let err = a.prompt("[crash]").await.unwrap_err().to_string();
        assert!(err.contains("exited with code 3"), "{err}");
        assert!(a.exit_status().is_some());
        assert_eq!(a.partial_turn().text, "Working on it...");
    });
}

#[test]
fn commands_run_in_omks_terminal_only_as_the_policy_allows() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        // approve-all: the command runs in a terminal omk serves, in the
        // work dir, and its output comes back to the agent.
        let (a, mut rx) = start(d.path(), PolicyKind::ApproveAll).await;
        let o = a.prompt("[run:pwd; echo from-terminal]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert!(o.record.text.contains("from-terminal"), "{}", o.record.text);
        let here = d.path().canonicalize().unwrap();
        assert!(
            o.record.text.contains(&here.display().to_string()),
            "{}",
            o.record.text
        );
        let notices = drain(&mut rx);
        assert!(notices.iter().any(|n| matches!(n,
            AgentNotice::RequestAnswered { kind, answer } if kind == "terminal/create" && answer.contains("started"))));
        a.stop(Duration::from_secs(5)).await;
    });
    rt().block_on(async {
        // workdir-edits with an allow pattern for the permission but not
        // for the exact terminal command line: the terminal is refused.
        let (tx, mut rx) = agent::notice_channel();
        let mut s = spec(d.path(), scripted_agent(), PolicyKind::WorkdirEdits);
        s.policy.allow_commands = vec!["touch ran.txt".into()];
        let a = agent::start(&s, tx).await.unwrap();
        let o = a.prompt("[run:touch ran.txt]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert!(!d.path().join("ran.txt").exists(), "{}", o.record.text);
        assert!(o.record.text.contains("refused by the approval policy"), "{}", o.record.text);
        assert!(drain(&mut rx).iter().any(|n| matches!(n,
            AgentNotice::Approval { request, decision } if request.sender == "terminal" && !decision.approved())));
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_cancelled_turn_kills_its_terminal_commands() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::ApproveAll).await;
        let turn = {
            let a = a.clone();
            tokio::spawn(async move { a.prompt("[run:echo $$ > pid.txt; exec sleep 60]").await })
        };
        let pid_file = d.path().join("pid.txt");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(p) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the command never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(alive(pid));
        a.cancel().await.unwrap();
        let o = turn.await.unwrap().unwrap();
        assert_eq!(o.status, TurnStatus::Cancelled);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "the terminal's command outlived the cancel");
        a.stop(Duration::from_secs(5)).await;
    });
}
