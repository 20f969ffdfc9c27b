//! The chat engine through the library API, against the bundled scripted
//! agent: streamed text, approvals asked of the observer (`always` included),
//! cancel from another thread, one agent per session, resume with context,
//! and one live chat per session.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use common::scripted_agent;
use omk_core::agent::{ApprovalRequest, TurnStatus};
use omk_core::chat::engine::{ApprovalAnswer, ApprovalMode, ChatObserver, ChatOptions, Resume};
use omk_core::{ErrorCode, Omk, OpenOptions};

#[derive(Default)]
struct Collect {
    deltas: Vec<String>,
    answers: VecDeque<ApprovalAnswer>,
    asked: Vec<String>,
}

impl ChatObserver for Collect {
    fn text(&mut self, delta: &str) {
        self.deltas.push(delta.to_string());
    }
    fn approve(&mut self, request: &ApprovalRequest) -> ApprovalAnswer {
        self.asked.push(request.action.clone());
        self.answers.pop_front().unwrap_or(ApprovalAnswer::Reject)
    }
}

fn open(root: &Path) -> Omk {
    let config = root.join("omk.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nbin = \"{}\"\n[team]\nstop_grace_secs = 2\n",
            scripted_agent().display()
        ),
    )
    .unwrap();
    Omk::open(OpenOptions {
        state_dir: Some(root.join("state")),
        project_dir: Some(root.join("proj")),
        config: Some(config),
    })
    .unwrap()
}

fn ask() -> ChatOptions {
    ChatOptions {
        approval: ApprovalMode::Ask,
        ..Default::default()
    }
}

#[test]
fn a_chat_streams_asks_cancels_and_resumes() {
    no_agent_override();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("proj")).unwrap();
    let omk = open(&root);
    let mut chat = omk.chat_open(ask()).unwrap();
    let id = chat.meta().id.clone();
    assert_eq!(chat.resume(), &Resume::New);

    let mut obs = Collect::default();
    let turn = chat
        .send("hi [answer:Hello there, friend]", &mut obs)
        .unwrap();
    assert_eq!(turn.status, TurnStatus::Finished);
    assert_eq!(turn.text, "Hello there, friend");
    assert!(obs.deltas.len() > 1, "streamed in parts: {:?}", obs.deltas);
    assert_eq!(obs.deltas.concat(), turn.text);
    assert!(turn.usage.output > 0);

    // `always` answers this request and the next one of the same action.
    let mut obs = Collect {
        answers: VecDeque::from([ApprovalAnswer::Always]),
        ..Default::default()
    };
    let turn = chat
        .send("[write:a.txt:one] [write:b.txt:two]", &mut obs)
        .unwrap();
    assert_eq!(turn.status, TurnStatus::Finished);
    assert_eq!(obs.asked, ["edit file"]);
    assert_eq!(
        std::fs::read_to_string(root.join("proj/b.txt")).unwrap(),
        "two"
    );
    // A rejected command does not run.
    let mut obs = Collect {
        answers: VecDeque::from([ApprovalAnswer::Reject]),
        ..Default::default()
    };
    chat.send("[run:touch ran.txt]", &mut obs).unwrap();
    assert_eq!(obs.asked, ["run command"]);
    assert!(!root.join("proj/ran.txt").exists());

    // Cancel from another thread once the slow turn runs.
    let cancel = chat.canceller();
    assert!(!cancel.turn_running());
    let t = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cancel.turn_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(1500));
        cancel.cancel();
    });
    let started = Instant::now();
    let turn = chat.send("[sleep:60]", &mut Collect::default()).unwrap();
    t.join().unwrap();
    assert_eq!(turn.status, TurnStatus::Cancelled);
    assert!(!turn.agent_lost);
    assert!(turn.text.starts_with("tick 0 tick 1"), "{}", turn.text);
    assert!(started.elapsed() < Duration::from_secs(30));

    // The same agent serves the next turn.
    let turn = chat
        .send("[answer:still here]", &mut Collect::default())
        .unwrap();
    assert_eq!(turn.text, "still here");

    // One live chat per session.
    let e = omk
        .chat_open(ChatOptions {
            session: Some(id.clone()),
            ..ask()
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    chat.close().unwrap();

    let conv = omk.chat_conversation(&id).unwrap();
    assert_eq!(conv.len(), 10);
    let listed = omk.chat_sessions(false).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);

    // Resume: this agent cannot reopen its session, so the conversation goes
    // with the next prompt, once.
    let mut chat = omk
        .chat_open(ChatOptions {
            session: Some(id.clone()),
            ..ask()
        })
        .unwrap();
    assert_eq!(chat.resume(), &Resume::Context { messages: 10 });
    let turn = chat.send("[recall]", &mut Collect::default()).unwrap();
    assert!(
        turn.text.contains("user: hi [answer:Hello there, friend]")
            && turn.text.contains("assistant: still here"),
        "{}",
        turn.text
    );
    let turn = chat.send("[recall]", &mut Collect::default()).unwrap();
    assert_eq!(turn.text, "Recall: (no context)");
    chat.close().unwrap();
    assert_eq!(omk.chat_conversation(&id).unwrap().len(), 14);
}

#[test]
fn an_agent_that_cannot_start_leaves_no_session() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("proj")).unwrap();
    let config = root.join("omk.toml");
    std::fs::write(&config, "[agent]\nbin = \"/nonexistent/agent\"\n").unwrap();
    let omk = Omk::open(OpenOptions {
        state_dir: Some(root.join("state")),
        project_dir: Some(root.join("proj")),
        config: Some(config),
    })
    .unwrap();
    no_agent_override();
    let e = omk.chat_open(ChatOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Agent);
    assert!(omk.chat_sessions(true).unwrap().is_empty());
    let e = omk
        .chat_open(ChatOptions {
            session: Some("../escape".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);
}

/// These tests drive the scripted agent their config names; `OMK_KIMI_BIN`
/// would replace it. `make cargo-test` unsets it: fail rather than skip.
fn no_agent_override() {
    assert!(
        std::env::var_os("OMK_KIMI_BIN").is_none(),
        "OMK_KIMI_BIN is set and would replace the scripted agent: unset it (`make cargo-test` does)"
    );
}
