//! The Wire backend against the bundled scripted agent: handshake, turns,
//! approvals through the policy, cancel, crash, stop and kill.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, rt, scripted_agent};
use omk_core::agent::{
    self, AgentBackend, AgentNotice, AgentSpec, ApprovalPolicy, PolicyKind, TurnStatus,
};
use omk_core::config::AgentProtocol;
use omk_core::ErrorCode;

fn spec(dir: &Path, program: PathBuf, policy: PolicyKind) -> AgentSpec {
    AgentSpec {
        program,
        extra_args: Vec::new(),
        work_dir: dir.to_path_buf(),
        env: Vec::new(),
        protocol: AgentProtocol::Wire,
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

#[test]
fn a_turn_reports_its_answer_and_token_usage() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a
            .prompt("hello [answer:the answer] [tokens:5:7]")
            .await
            .unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(o.record.text, "the answer");
        assert_eq!((o.record.usage.input_other, o.record.usage.output), (5, 7));
        assert!(o.record.saw_turn_end && o.record.steps >= 1);
        // A second turn on the same agent.
        let o = a.prompt("again").await.unwrap();
        assert!(
            o.record.text.starts_with("Done: again"),
            "{}",
            o.record.text
        );
        let pid = a.pid();
        let status = a.stop(Duration::from_secs(5)).await.unwrap();
        assert!(status.success());
        assert!(!alive(pid));
    });
}

#[test]
fn approvals_go_through_the_policy_and_are_reported() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, mut rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a.prompt("[write:inside.txt:yes]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(
            std::fs::read_to_string(d.path().join("inside.txt")).unwrap(),
            "yes"
        );
        let mut decisions = Vec::new();
        while let Ok(n) = rx.try_recv() {
            if let AgentNotice::Approval { request, decision } = n {
                decisions.push((request.action, decision));
            }
        }
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].0, "edit file");
        assert!(decisions[0].1.approved(), "{:?}", decisions[0].1);
        // Commands are rejected under workdir-edits without an allow pattern.
        let o = a.prompt("[run:touch ran.txt]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert!(!d.path().join("ran.txt").exists());
        a.stop(Duration::from_secs(5)).await;
    });
    let d2 = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, mut rx) = start(d2.path(), PolicyKind::RejectAll).await;
        a.prompt("[write:no.txt:x]").await.unwrap();
        assert!(!d2.path().join("no.txt").exists());
        let rejected = std::iter::from_fn(|| rx.try_recv().ok()).any(|n| {
            matches!(n, AgentNotice::Approval { decision, .. } if !decision.approved() && decision.reason.contains("reject-all"))
        });
        assert!(rejected);
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn questions_are_dismissed_and_reported_only_when_declared() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (tx, mut rx) = agent::notice_channel();
        let mut s = spec(d.path(), scripted_agent(), PolicyKind::WorkdirEdits);
        s.questions = true;
        let a = agent::start(&s, tx).await.unwrap();
        let o = a.prompt("[ask:Ship it?] [answer:went on]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert_eq!(o.record.text, "went on");
        let asked: Vec<Vec<String>> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|n| match n {
                AgentNotice::Question { questions } => Some(questions),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![vec!["Ship it?".to_string()]]);
        a.stop(Duration::from_secs(5)).await;

        // Undeclared: the agent has no such tool, so nothing is asked.
        let (a, mut rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a.prompt("[ask:Ship it?] [answer:went on]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert!(!std::iter::from_fn(|| rx.try_recv().ok())
            .any(|n| matches!(n, AgentNotice::Question { .. })));
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn cancel_ends_a_running_turn_promptly() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let started = Instant::now();
        let turn = a.prompt("[sleep:30]");
        tokio::pin!(turn);
        tokio::select! {
            _ = &mut turn => panic!("the slow turn ended by itself"),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        a.cancel().await.unwrap();
        let o = turn.await.unwrap();
        assert_eq!(o.status, TurnStatus::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Cancel with no turn running is a no-op.
        a.cancel().await.unwrap();
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_crash_is_an_agent_error_naming_the_exit_code() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let e = a.prompt("[crash]").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Agent);
        assert!(e.to_string().contains("exited with code 3"), "{e}");
        assert!(a.exit_status().is_some());
        // The partial turn is still readable (what it produced before dying).
        assert!(a.partial_turn().events >= 2);
    });
}

#[test]
fn provider_errors_and_unknown_events_come_back_as_data() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let o = a.prompt("[provider-error:rate limited]").await.unwrap();
        assert_eq!(
            o.status,
            TurnStatus::Error {
                code: -32003,
                message: "rate limited".into()
            }
        );
        let o = a.prompt("[unknown-event]").await.unwrap();
        assert_eq!(o.status, TurnStatus::Finished);
        assert!(o.record.unknown_events >= 1);
        let o = a.prompt("[malformed] still answers").await.unwrap();
        assert_eq!((o.status, o.protocol_violations), (TurnStatus::Finished, 1));
        a.stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn kill_ends_a_stalled_agent_and_its_turn() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (a, _rx) = start(d.path(), PolicyKind::WorkdirEdits).await;
        let pid = a.pid();
        let a2 = a.clone();
        let turn = tokio::spawn(async move { a2.prompt("[stall]").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        a.kill();
        let r = turn.await.unwrap();
        assert!(r.is_err(), "a killed agent's turn is an error");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!alive(pid));
    });
}

#[test]
fn missing_or_silent_agents_fail_to_start_clearly() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (tx, _rx) = agent::notice_channel();
        let e = agent::start(
            &spec(
                d.path(),
                d.path().join("no-such-agent"),
                PolicyKind::WorkdirEdits,
            ),
            tx,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(e.code(), ErrorCode::Agent);
        assert!(e.to_string().contains("OMK_KIMI_BIN"), "{e}");

        let silent = d.path().join("silent");
        std::fs::write(&silent, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&silent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = spec(d.path(), silent, PolicyKind::WorkdirEdits);
        s.start_timeout = Duration::from_millis(500);
        let (tx, _rx) = agent::notice_channel();
        let e = agent::start(&s, tx).await.err().unwrap();
        assert_eq!(e.code(), ErrorCode::Timeout);
        assert!(e.to_string().contains("initialize"), "{e}");
    });
}
