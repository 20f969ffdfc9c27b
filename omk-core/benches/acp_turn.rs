//! omk's own cost per ACP turn (issue: ACP agents, target < 2 ms): the same
//! agent (`omk-scripted-agent acp`, answering `[answer:ok]`) driven by
//! omk's ACP backend and by a minimal client (raw pipes, one JSON parse per
//! line, nothing recorded), in the same run. The difference of the medians
//! is what omk adds per turn: message mapping, the notice queue, the held
//! answer, usage and cost.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use omk_core::agent::{self, AgentSpec, ApprovalPolicy, PolicyKind};
use omk_core::config::AgentProtocol;
use serde_json::{json, Value};

const PROMPT: &str = "[answer:ok]";

fn scripted_agent() -> PathBuf {
    // target/<profile>/deps/acp_turn-... -> target/<profile>/omk-scripted-agent
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    for profile in [dir.to_path_buf(), dir.parent().unwrap().join("release")] {
        let bin = profile.join("omk-scripted-agent");
        if bin.exists() {
            return bin;
        }
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "omk-scripted-agent"])
        .status()
        .unwrap();
    assert!(status.success());
    dir.parent().unwrap().join("release/omk-scripted-agent")
}

/// The minimal client: blocking pipes, a JSON parse per line to find the
/// answer, nothing else.
struct Minimal {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    session: String,
    next: u64,
}

impl Minimal {
    fn start(agent: &PathBuf, dir: &std::path::Path) -> Minimal {
        let mut child = Command::new(agent)
            .arg("acp")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut m = Minimal {
            child,
            out,
            session: String::new(),
            next: 1,
        };
        m.call(
            "initialize",
            json!({ "protocolVersion": 1, "clientCapabilities": {} }),
        );
        let r = m.call("session/new", json!({ "cwd": dir, "mcpServers": [] }));
        m.session = r["sessionId"].as_str().unwrap().to_string();
        m
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let line = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut buf = String::new();
        loop {
            buf.clear();
            assert!(self.out.read_line(&mut buf).unwrap() > 0, "agent closed");
            let v: Value = serde_json::from_str(&buf).unwrap();
            if v["id"] == id && v.get("method").is_none() {
                return v["result"].clone();
            }
        }
    }

    fn turn(&mut self) {
        let params =
            json!({ "sessionId": self.session, "prompt": [{ "type": "text", "text": PROMPT }] });
        let r = self.call("session/prompt", params);
        assert_eq!(r["stopReason"], "end_turn");
    }
}

fn acp_turn(c: &mut Criterion) {
    let agent = scripted_agent();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("acp_turn");

    let mut minimal = Minimal::start(&agent, dir.path());
    g.bench_function("minimal_client", |b| b.iter(|| minimal.turn()));
    drop(minimal.child.stdin.take());
    let _ = minimal.child.wait();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spec = AgentSpec {
        program: agent.clone(),
        extra_args: vec!["acp".into()],
        work_dir: dir.path().to_path_buf(),
        env: Vec::new(),
        protocol: AgentProtocol::Acp,
        policy: ApprovalPolicy {
            kind: PolicyKind::WorkdirEdits,
            ..Default::default()
        },
        start_timeout: Duration::from_secs(20),
        questions: false,
        mcp_servers: Vec::new(),
    };
    let backend = rt.block_on(async {
        let (tx, mut rx) = agent::notice_channel();
        // The owner drains notices, as a worker's pump does.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        agent::start(&spec, tx).await.unwrap()
    });
    g.bench_function("omk_backend", |b| {
        b.iter(|| {
            let o = rt.block_on(backend.prompt(PROMPT)).unwrap();
            assert_eq!(o.record.text, "ok");
        })
    });
    rt.block_on(backend.stop(Duration::from_secs(2)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(60)
        .measurement_time(std::time::Duration::from_secs(5))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = acp_turn
}
criterion_main!(benches);
