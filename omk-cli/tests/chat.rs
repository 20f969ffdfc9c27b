//! `omk chat` end to end: the real `omk` binary talking to the bundled
//! scripted Wire agent, driven on a real terminal (tmux) and through pipes.
//!
//! The terminal tests need tmux (`make deps` installs it); without it they
//! say so on stderr and pass. Every wait has a deadline; nothing sleeps a
//! fixed long time. Each test owns a temp dir with its state, project and
//! config, and each tmux test its own tmux server (`-L`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fake secret typed into prompts; it must never reach the disk.
const SECRET: &str = "sk-proj-Zq8Xv3Lm9Tn2Wp5Rk7Yd4Hs6";

// ---------------------------------------------------------------- fixture

/// The scripted agent, next to the omk binary (built if missing).
fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let omk = Path::new(env!("CARGO_BIN_EXE_omk"));
        let bin = omk.with_file_name("omk-scripted-agent");
        if !bin.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "omk-scripted-agent"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build -p omk-scripted-agent");
            assert!(status.success(), "cargo build -p omk-scripted-agent failed");
        }
        assert!(bin.exists(), "no scripted agent at {}", bin.display());
        bin
    })
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    project: PathBuf,
    config: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        agent_bin();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let state = root.join("state");
        let project = root.join("project");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(root.join("xdg")).unwrap();
        let config = root.join("omk.toml");
        // No approval policy configured: on a terminal the chat asks.
        std::fs::write(&config, "[team]\nstop_grace_secs = 2\n").unwrap();
        Fixture {
            _tmp: tmp,
            root,
            state,
            project,
            config,
        }
    }

    /// `omk chat ARGS` with piped stdin/stdout/stderr.
    fn chat(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omk"));
        cmd.arg("chat")
            .args(args)
            .current_dir(&self.project)
            .env("OMK_STATE_DIR", &self.state)
            .env("OMK_CONFIG", &self.config)
            .env("OMK_KIMI_BIN", agent_bin())
            .env("XDG_CONFIG_HOME", self.root.join("xdg"))
            .env_remove("NO_COLOR")
            .env_remove("OMK_KIMI_ARGS")
            .env_remove("OMK_AGENT_PROTOCOL")
            .env_remove("OMK_SCRIPTED_BEHAVIOUR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Run `omk chat ARGS` with `input` on stdin (closed after), bounded.
    fn chat_piped(&self, args: &[&str], input: &str) -> Output {
        let mut child = self.chat(args).spawn().expect("start omk chat");
        // A chat that refuses its arguments exits before reading: EPIPE.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        wait_output(child, Duration::from_secs(60))
    }

    fn sessions(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.state.join("sessions"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn session_dir(&self, id: &str) -> PathBuf {
        self.state.join("sessions").join(id)
    }

    fn jsonl(&self, id: &str, file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.session_dir(id).join(file)).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {e}: {l}")))
            .collect()
    }

    /// The conversation, validated line by line against API.md.
    fn conversation(&self, id: &str) -> Vec<(String, String)> {
        let lines = self.jsonl(id, "conversation.jsonl");
        lines
            .iter()
            .map(|v| {
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
                assert_eq!(keys, ["ts", "role", "text"], "{v}");
                let ts = v["ts"].as_str().unwrap();
                assert!(
                    ts.ends_with('Z') && chrono_like_rfc3339(ts),
                    "ts not ISO 8601 UTC: {ts}"
                );
                let role = v["role"].as_str().unwrap().to_string();
                assert!(role == "user" || role == "assistant", "{v}");
                (role, v["text"].as_str().unwrap().to_string())
            })
            .collect()
    }

    fn engine_events(&self, id: &str) -> Vec<Value> {
        self.jsonl(id, "engine-events.jsonl")
    }

    /// No file of the session contains the secret.
    fn assert_no_secret(&self, id: &str) {
        for f in std::fs::read_dir(self.session_dir(id)).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(SECRET) && !text.contains(&SECRET[..16]),
                "secret on disk in {}",
                f.path().display()
            );
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (what chat writes: seconds, UTC, `Z`).
fn chrono_like_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    ts.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "omk chat did not finish within {limit:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- tmux

fn have_tmux() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        // In CI a missing peer is a failure, never a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true")
                && std::env::var_os("OMK_REQUIRE_PEERS").is_none(),
            "tmux is not installed (make deps installs it): the terminal chat tests cannot run"
        );
        eprintln!(
            "SKIPPED: tmux is not installed (make deps installs it); terminal chat tests not run"
        );
    }
    ok
}

/// One tmux server with one pane running a command.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Start `omk chat ARGS` in a 120x40 pane. When omk exits the pane
    /// prints `EXIT=<status>` and stays, so the end can be read.
    fn start(fx: &Fixture, args: &[&str], extra_env: &[(&str, &str)]) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "omk-chat-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let script = fx.root.join(format!("{socket}.sh"));
        let mut env = vec![
            ("OMK_STATE_DIR", fx.state.display().to_string()),
            ("OMK_CONFIG", fx.config.display().to_string()),
            ("OMK_KIMI_BIN", agent_bin().display().to_string()),
            ("XDG_CONFIG_HOME", fx.root.join("xdg").display().to_string()),
        ];
        for (k, v) in extra_env {
            env.push((k, v.to_string()));
        }
        // The script's sh shares omk's process group (no job control), so
        // Ctrl-C reaches it too: it must outlive that to print EXIT=.
        let mut text = String::from(
            "trap ':' INT\nunset NO_COLOR OMK_KIMI_ARGS OMK_AGENT_PROTOCOL OMK_SCRIPTED_BEHAVIOUR RUST_LOG\n",
        );
        for (k, v) in env {
            text.push_str(&format!("export {k}='{v}'\n"));
        }
        text.push_str(&format!("cd '{}'\n", fx.project.display()));
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        text.push_str(&format!(
            "'{}' chat {}\necho \"EXIT=$?\"\nsleep 60\n",
            env!("CARGO_BIN_EXE_omk"),
            quoted.join(" ")
        ));
        std::fs::write(&script, text).unwrap();
        let t = Tmux { socket };
        let out = t
            .cmd()
            .args(["new-session", "-d", "-x", "120", "-y", "40", "-s", "chat"])
            .arg(format!("sh '{}'", script.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the whole transcript.
        let _ = t
            .cmd()
            .args(["set-option", "-g", "history-limit", "10000"])
            .output();
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    /// The pane's whole transcript (`escapes`: with colour codes).
    fn screen(&self, escapes: bool) -> String {
        let mut c = self.cmd();
        c.args(["capture-pane", "-p", "-J", "-t", "chat", "-S", "-10000"]);
        if escapes {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }

    /// Wait until one line of the screen is exactly `line` (an answer, as
    /// opposed to the typed prompt that asked for it).
    fn wait_for_line(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen(false);
            if s.lines().any(|l| l.trim_end() == line) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the line {line:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        self.wait_for_count(needle, 1)
    }

    /// Wait until the chat waits at an empty prompt: the last line of the
    /// screen is `you>`. Keys typed before that reach a terminal still in
    /// cooked mode, where Ctrl-C and Ctrl-D mean something else (a lost
    /// Ctrl-D at the end of a turn made the test wait for an exit forever).
    fn wait_for_prompt(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen(false);
            if s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim_end)
                == Some("you>")
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for an empty prompt; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `needle` appears `n` times on the screen.
    fn wait_for_count(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen(false);
            if s.matches(needle).count() >= n {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} x {needle:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type `text` literally (no Enter).
    fn type_text(&self, text: &str) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "chat", "-l", text])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn key(&self, key: &str) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "chat", key])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Type a line and press Enter.
    fn line(&self, text: &str) {
        self.type_text(text);
        self.key("Enter");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

// ---------------------------------------------------------------- tests

/// Two turns, a cancelled slow turn, approvals answered y and always, Ctrl-C
/// at the prompt, then the files line by line; then a resume that shows the
/// earlier turns and gives them to the agent.
#[test]
fn terminal_chat_turns_cancel_approvals_and_resume() {
    if !have_tmux() {
        return;
    }
    let fx = Fixture::new();
    let t = Tmux::start(&fx, &["--new"], &[]);
    t.wait_for("you> ");

    // Two turns, streamed.
    t.line("hello [answer:Hello from the agent]");
    t.wait_for_line("Hello from the agent");
    t.line(&format!("my key is {SECRET} [answer:Second answer]"));
    t.wait_for_line("Second answer");

    // A slow streaming turn, cancelled by Ctrl-C once it is visibly running.
    t.line("count slowly [sleep:60]");
    t.wait_for("tick 1");
    t.key("C-c");
    t.wait_for("turn cancelled");
    t.wait_for_count("you> ", 4);

    // The session goes on: an approval answered y writes the file.
    t.line("[write:notes.txt:written by chat]");
    t.wait_for("approve?");
    let s = t.screen(false);
    assert!(
        s.contains("asks to edit file") && s.contains("notes.txt"),
        "{s}"
    );
    t.line("y");
    t.wait_for("Done: [write:notes.txt");
    assert_eq!(
        std::fs::read_to_string(fx.project.join("notes.txt")).unwrap(),
        "written by chat"
    );

    // `always` approves this and later requests of the same action.
    t.line("[write:a.txt:first] [write:b.txt:second]");
    t.wait_for_count("approve?", 2);
    t.line("always");
    t.wait_for("Done: [write:a.txt");
    assert_eq!(t.screen(false).matches("approve?").count(), 2);
    assert_eq!(
        std::fs::read_to_string(fx.project.join("b.txt")).unwrap(),
        "second"
    );

    // `always` covers one action: a command is still asked about, and a
    // rejected one does not run.
    t.line("[run:touch no.txt]");
    t.wait_for_count("approve?", 3);
    assert!(t.screen(false).contains("asks to run command"));
    t.line("n");
    t.wait_for("Done: [run:touch no.txt]");
    assert!(!fx.project.join("no.txt").exists());

    // Ctrl-C at the prompt drops the line, like a shell.
    t.wait_for_prompt();
    t.type_text("never sent");
    t.key("C-c");
    t.line("/exit");
    let screen = t.wait_for("EXIT=0");
    // Colour is on without NO_COLOR (dim status lines).
    assert!(t.screen(true).contains("\x1b[2m"), "no colour:\n{screen}");

    // ---- the files, line by line
    let ids = fx.sessions();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    assert!(id.starts_with("s-") && id.len() == 27, "{id}");
    let conv = fx.conversation(id);
    let roles: Vec<&str> = conv.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ],
        "{conv:?}"
    );
    assert_eq!(conv[0].1, "hello [answer:Hello from the agent]");
    assert_eq!(conv[1].1, "Hello from the agent");
    assert!(conv[2].1.starts_with("my key is ") && conv[2].1.contains("[REDACTED]"));
    assert_eq!(conv[3].1, "Second answer");
    assert_eq!(conv[4].1, "count slowly [sleep:60]");
    assert!(
        conv[5].1.starts_with("tick 0 tick 1"),
        "partial answer: {}",
        conv[5].1
    );
    assert!(!conv.iter().any(|(_, t)| t.contains("never sent")));
    fx.assert_no_secret(id);

    let events = fx.engine_events(id);
    for e in &events {
        assert!(chrono_like_rfc3339(e["ts"].as_str().unwrap()), "{e}");
        assert!(e["type"].is_string() && e.get("payload").is_some(), "{e}");
    }
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
    assert_eq!(
        of("agent_start").len(),
        1,
        "one agent for the whole session"
    );
    assert_eq!(of("cancel").len(), 1);
    assert_eq!(of("cancel")[0]["payload"]["how"], "cancel");
    let statuses: Vec<&str> = of("turn_end")
        .iter()
        .map(|e| e["payload"]["status"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "finished",
            "finished",
            "cancelled",
            "finished",
            "finished",
            "finished"
        ]
    );
    let decisions: Vec<(&str, &str)> = of("approval")
        .iter()
        .map(|e| {
            (
                e["payload"]["decision"]["response"].as_str().unwrap(),
                e["payload"]["decision"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    assert_eq!(decisions[0], ("approve", "approved by the user"));
    assert!(
        decisions[1].1.contains("rest of the chat") && decisions[2].1.contains("rest of the chat")
    );
    assert_eq!(decisions[3], ("reject", "rejected by the user"));
    assert!(!of("ContentPart").is_empty() && !of("TurnBegin").is_empty());

    let history: Vec<String> = fx
        .jsonl(id, "session-history.jsonl")
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        history.first().map(String::as_str),
        Some("hello [answer:Hello from the agent]")
    );
    assert_eq!(history.last().map(String::as_str), Some("/exit"));
    assert!(history
        .iter()
        .any(|h| h == "[write:notes.txt:written by chat]"));
    assert!(history
        .iter()
        .all(|h| !h.contains("never sent") && !h.contains(SECRET)));

    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(fx.session_dir(id).join("meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["id"], id.as_str());
    assert_eq!(meta["project_root"], fx.project.display().to_string());
    assert_eq!(meta["theme"], "default");
    assert!(meta["started_at"].as_str().unwrap().ends_with('Z'));
    drop(t);

    // ---- resume: the earlier turns are shown, the agent gets them, no colour
    let t = Tmux::start(&fx, &["--session", id], &[("NO_COLOR", "1")]);
    let s = t.wait_for("you> count slowly");
    assert!(
        s.contains("Hello from the agent") && s.contains("Second answer"),
        "{s}"
    );
    assert!(
        s.contains("earlier messages go to the agent as context"),
        "{s}"
    );
    t.wait_for("/help for commands");
    // Arrow-up brings back the last input of the session (`/exit`).
    t.key("Up");
    t.wait_for("you> /exit");
    t.key("C-c");
    t.line("what did we say [recall]");
    // The answer streams in parts: wait for its end (the last message).
    let s = t.wait_for("assistant: Done: [run:touch no.txt]");
    assert!(
        s.contains("Recall: This conversation is being resumed"),
        "{s}"
    );
    assert!(s.contains("assistant: Hello from the agent"), "{s}");
    assert!(
        !t.screen(true).contains("\x1b[2m"),
        "NO_COLOR still coloured"
    );
    t.wait_for_prompt();
    t.key("C-d");
    t.wait_for("EXIT=0");
    assert_eq!(fx.sessions().len(), 1);
    let conv = fx.conversation(id);
    assert_eq!(conv.len(), 14);
    assert!(conv[13].1.starts_with("Recall: "));
    let events = fx.engine_events(id);
    let resume: Vec<&Value> = events.iter().filter(|e| e["type"] == "resume").collect();
    assert_eq!(resume.len(), 1);
    assert_eq!(resume[0]["payload"]["mode"], "context");
    assert_eq!(resume[0]["payload"]["messages"], 12);
}

/// Without flags the latest session of the project is offered; the slash
/// commands switch sessions without losing any.
#[test]
fn terminal_chat_offers_the_latest_session_and_switches() {
    if !have_tmux() {
        return;
    }
    let fx = Fixture::new();
    let out = fx.chat_piped(&["--new"], "first session [answer:one]\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
    assert!(out.status.success());
    let first = fx.sessions()[0].clone();

    let t = Tmux::start(&fx, &[], &[]);
    t.wait_for(&format!("Resume the latest session {first}"));
    t.line("");
    let s = t.wait_for("/help for commands");
    assert!(s.contains("you> first session [answer:one]"), "{s}");
    t.line("/new");
    t.wait_for_count("/help for commands", 2);
    t.line("second session [answer:Answer Two]");
    t.wait_for_line("Answer Two");
    t.line("/resume no-such-session");
    t.wait_for("no chat session");
    t.line("/resume ../etc");
    t.wait_for("invalid session id");
    t.line("/sessions");
    let s = t.wait_for("2 messages  second session");
    assert!(s.contains(&format!("  {first}")), "{s}");
    t.line(&format!("/resume {first}"));
    t.wait_for_count("you> first session [answer:one]", 2);
    t.line("/team");
    t.wait_for("usage: /team SPEC TASK");
    t.line("/bogus");
    t.wait_for("unknown command /bogus");
    t.line("/help");
    t.wait_for("/resume ID");
    t.line("/exit");
    t.wait_for("EXIT=0");
    let ids = fx.sessions();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let second = ids.iter().find(|i| **i != first).unwrap();
    assert_eq!(fx.conversation(&first).len(), 2);
    assert_eq!(fx.conversation(second).len(), 2);
    // The offer declined: a new session.
    drop(t);
    let t = Tmux::start(&fx, &[], &[]);
    t.wait_for("Resume the latest session");
    t.line("n");
    t.wait_for("(new)");
    t.line("/exit");
    t.wait_for("EXIT=0");
    assert_eq!(fx.sessions().len(), 3);
}

/// stdin not a terminal: one prompt per line, only answers on stdout, no
/// prompts or colour; `/team` runs a team and reports.
#[test]
fn piped_chat_prints_only_answers() {
    let fx = Fixture::new();
    let out = fx.chat_piped(
        &["--new"],
        &format!(
            "first [answer:one]\n\n  second {SECRET} [answer:two\\nlines]  \n/team 1:executor write it [write:team.txt:by team]\n[write:w.txt:x]\n"
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout {stdout} stderr {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..3], ["one", "two", "lines"], "{stdout}");
    assert!(
        lines[3].starts_with("team executor-") && lines[3].contains("Completed, 1/1"),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"Done: [write:w.txt:x]"));
    assert!(
        !stdout.contains("you>") && !stdout.contains('\x1b'),
        "{stdout}"
    );
    assert!(stderr.contains("omk chat: session s-"), "{stderr}");
    // Not on a terminal the default policy decides: workdir-edits approves.
    assert_eq!(
        std::fs::read_to_string(fx.project.join("w.txt")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(fx.project.join("team.txt")).unwrap(),
        "by team"
    );
    let id = &fx.sessions()[0];
    fx.assert_no_secret(id);
    let conv = fx.conversation(id);
    assert_eq!(conv.len(), 6);
    assert!(fx
        .engine_events(id)
        .iter()
        .any(|e| e["type"] == "team" && e["payload"]["phase"] == "Completed"));

    // Resuming through a pipe: earlier turns on stderr, the answer on stdout.
    let out = fx.chat_piped(
        &["--session", id, "--approval", "reject-all"],
        "[recall]\n[write:r.txt:no]\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("Recall: This conversation is being resumed"),
        "{stdout}"
    );
    assert!(stdout.contains("user: first [answer:one]"), "{stdout}");
    assert!(stderr.contains("you> first [answer:one]"), "{stderr}");
    assert!(
        !fx.project.join("r.txt").exists(),
        "reject-all wrote a file"
    );
    assert!(stderr.contains("[rejected] edit file"), "{stderr}");
}

/// `--agent NAME`: a chat with an ACP profile (the scripted agent over ACP)
/// for two turns, then a resume, where the conversation is replayed as
/// context (ACP agents get no `--session`).
#[test]
fn piped_chat_with_an_acp_agent_profile_and_a_resume() {
    let fx = Fixture::new();
    let mut cfg = std::fs::read_to_string(&fx.config).unwrap();
    cfg.push_str(&format!(
        "\n[agents.acp-a]\ncommand = [{:?}, \"acp\"]\nprotocol = \"acp\"\n",
        agent_bin().display().to_string()
    ));
    std::fs::write(&fx.config, cfg).unwrap();
    let out = fx.chat_piped(
        &["--new", "--agent", "acp-a"],
        "first [answer:one]\nsecond [answer:two]\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["one", "two"],
        "{stdout}"
    );
    let id = &fx.sessions()[0];
    let start = fx
        .engine_events(id)
        .into_iter()
        .find(|e| e["type"] == "agent_start")
        .unwrap();
    assert_eq!(start["payload"]["agent"], "acp-a", "{start}");
    assert_eq!(start["payload"]["protocol"], "acp", "{start}");
    assert_eq!(fx.conversation(id).len(), 4);

    // The resumed session keeps its profile without --agent.
    let out = fx.chat_piped(&["--session", id], "[recall]\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Recall: "), "{stdout}");
    assert!(stdout.contains("first [answer:one]"), "{stdout}");
    assert_eq!(fx.conversation(id).len(), 6);

    let out = fx.chat_piped(&["--new", "--agent", "nope"], "x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent profile"));
}

/// Failures: a failed turn makes a piped chat exit 1 but the chat goes on;
/// a crashed agent is restarted with the conversation as context.
#[test]
fn piped_chat_survives_failed_turns_and_a_crashed_agent() {
    let fx = Fixture::new();
    let out = fx.chat_piped(
        &["--new"],
        "[answer:before]\n[provider-error:quota exceeded]\n[crash]\n[recall]\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert!(stderr.contains("quota exceeded"), "{stderr}");
    assert!(stderr.contains("the agent stopped"), "{stderr}");
    assert!(
        stdout.contains("Recall: This conversation is being resumed"),
        "{stdout}"
    );
    assert!(stdout.contains("assistant: before"), "{stdout}");
    let id = &fx.sessions()[0];
    let events = fx.engine_events(id);
    let starts = events.iter().filter(|e| e["type"] == "agent_start").count();
    assert_eq!(starts, 2, "the crashed agent was replaced once");
    assert!(events.iter().any(|e| e["type"] == "agent_exit"));
}

/// Ctrl-C (SIGINT) without a terminal: during a turn it cancels the turn (a
/// second one kills an agent that ignores cancel), between turns it ends the
/// chat with 130.
#[test]
fn piped_chat_ctrl_c_cancels_turns() {
    let fx = Fixture::new();
    let mut child = fx.chat(&["--new"]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        // Forward output as it streams (answers have no newline until the end).
        while let Ok(1) = r.read(&mut byte) {
            buf.push(byte[0]);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        }
    });
    let seen = |needle: &str| {
        let needle = needle.to_string();
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(s) = rx.recv_timeout(Duration::from_millis(100)) {
                last = s;
            }
            if last.contains(&needle) {
                return last;
            }
        }
        panic!("no {needle:?} in {last:?}");
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sigint = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();

    let started = Instant::now();
    writeln!(stdin, "[sleep:60]").unwrap();
    seen("tick 1");
    sigint();
    writeln!(stdin, "[answer:after cancel]").unwrap();
    seen("after cancel");
    // [stall] ignores cancel: the second Ctrl-C kills the agent.
    writeln!(stdin, "[stall]").unwrap();
    let id = {
        let fx = &fx;
        wait_until("the stalled turn", Duration::from_secs(20), || {
            fx.sessions().first().is_some_and(|id| {
                fx.engine_events(id)
                    .iter()
                    .filter(|e| e["type"] == "StepBegin")
                    .count()
                    >= 3
            })
        });
        fx.sessions()[0].clone()
    };
    sigint();
    std::thread::sleep(Duration::from_millis(300));
    sigint();
    writeln!(stdin, "[answer:after kill]").unwrap();
    seen("after kill");
    // Between turns Ctrl-C ends a piped chat.
    wait_until("idle", Duration::from_secs(10), || {
        fx.engine_events(&id)
            .iter()
            .filter(|e| e["type"] == "turn_end")
            .count()
            == 4
    });
    // Until the chat is back at its input (a signal a moment early only
    // cancels nothing), then it exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "Ctrl-C between turns did not end the chat"
        );
        sigint();
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "cancel did not cut the 60 s turn"
    );
    let events = fx.engine_events(&id);
    let hows: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "cancel")
        .map(|e| e["payload"]["how"].as_str().unwrap())
        .collect();
    assert_eq!(hows, ["cancel", "cancel", "kill"]);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "turn_end")
        .map(|e| e["payload"]["status"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cancelled", "finished", "cancelled", "finished"]);
    let conv = fx.conversation(&id);
    assert_eq!(conv.last().unwrap().1, "after kill");
}

/// Bad input gets a clear error and the right exit code, and loses nothing.
#[test]
fn chat_refuses_bad_input() {
    let fx = Fixture::new();
    let run = |args: &[&str]| {
        let out = fx.chat_piped(args, "hello\n");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--session", "../x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid session id"), "{err}");
    let (code, err) = run(&["--session", "s-20260101-0000000000000000"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no chat session"), "{err}");
    let (code, _) = run(&["--session", "x", "--new"]);
    assert_eq!(code, Some(2));
    let (code, err) = run(&["--approval", "sometimes"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&["--approval", "ask"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs a terminal"), "{err}");
    let (code, err) = run(&["--theme", "neon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(fx.sessions().is_empty(), "bad input created a session");

    let out = fx
        .chat(&["--new"])
        .env("OMK_KIMI_BIN", fx.root.join("no-such-agent"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // One live chat per session: a second one is refused while the first runs.
    let mut first = fx.chat(&["--new"]).spawn().unwrap();
    let mut stdin = first.stdin.take().unwrap();
    writeln!(stdin, "[answer:hold]").unwrap();
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "hold");
    let id = fx
        .sessions()
        .into_iter()
        .find(|i| fx.conversation(i).len() == 2)
        .unwrap();
    let out = fx.chat_piped(&["--session", &id], "[answer:intruder]\n");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("open in another omk chat"));
    drop(stdin);
    let out = wait_output(first, Duration::from_secs(20));
    assert!(out.status.success());
    assert_eq!(
        fx.conversation(&id).len(),
        2,
        "the refused chat wrote nothing"
    );
}
