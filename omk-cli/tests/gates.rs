//! `omk gates` end to end: exit codes, the breaker cycle, detection, memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

fn project(gates_toml: Option<&str>) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj");
    std::fs::create_dir_all(root.join(".omk")).unwrap();
    if let Some(t) = gates_toml {
        std::fs::write(root.join(".omk/gates.toml"), t).unwrap();
    }
    let state = dir.path().join("state");
    Project {
        _dir: dir,
        root,
        state,
    }
}

fn cmd(p: &Project, cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_omk"));
    c.args(args)
        .current_dir(cwd)
        .env("OMK_STATE_DIR", &p.state)
        .env("XDG_CONFIG_HOME", p.state.join("xdg"))
        .env_remove("OMK_CONFIG");
    c
}

fn omk(p: &Project, args: &[&str]) -> Output {
    cmd(p, &p.root, args).output().unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

const GATES: &str = r#"
[[gate]]
name = "ok"
command = ["true"]

[[gate]]
name = "flaky"
command = "exit 1"

[[gate]]
name = "style"
command = "false"
required = false

[breaker]
failure_threshold = 2
recovery_timeout_secs = 3600
"#;

#[test]
fn run_status_and_reset_follow_the_breaker() {
    let p = project(Some(GATES));
    let o = omk(&p, &["gates", "run", "--json"]);
    assert_eq!(o.status.code(), Some(1), "a required gate failed");
    let r = json(&o);
    let verdicts: Vec<(String, bool)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap().into(), g["passed"] == true))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("ok".into(), true),
            ("flaky".into(), false),
            ("style".into(), false)
        ]
    );
    // Only the optional one failing: exit 0.
    let o = omk(&p, &["gates", "run", "--gate", "ok", "--gate", "style"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Second failure opens flaky's breaker; the next run skips it.
    omk(&p, &["gates", "run", "--gate", "flaky"]);
    let o = omk(&p, &["gates", "run", "--gate", "flaky", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let r = json(&o);
    assert_eq!(r["results"][0]["skipped"], true);

    let status = json(&omk(&p, &["gates", "status", "--json"]));
    let flaky = status["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["gate_name"] == "flaky")
        .unwrap()
        .clone();
    assert_eq!(flaky["state"], "Open");
    assert_eq!(flaky["failure_count"], 2);
    assert_eq!(flaky["half_open_calls_remaining"], 0);
    assert_eq!(flaky["recovery_timeout_secs"], 3600);
    assert!(flaky["last_failure_at"].is_string());
    for key in [
        "gate_name",
        "state",
        "failure_count",
        "last_failure_at",
        "recovery_timeout_secs",
        "half_open_calls_remaining",
    ] {
        assert!(flaky.get(key).is_some(), "missing {key}");
    }
    // The text table says the same.
    let text = String::from_utf8_lossy(&omk(&p, &["gates", "status"]).stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("flaky") && l.contains("Open")),
        "{text}"
    );

    // Unknown gate: exit 3, nothing changed.
    let o = omk(&p, &["gates", "reset", "--gate", "nope"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no gate named \"nope\""));

    let o = omk(&p, &["gates", "reset", "--all", "--json"]);
    let r = json(&o);
    // The optional gate failed twice too, so its breaker was open as well.
    let mut reset: Vec<(String, String)> = r["reset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["gate_name"].as_str().unwrap().into(),
                e["previous_state"].as_str().unwrap().into(),
            )
        })
        .collect();
    reset.sort();
    assert_eq!(
        reset,
        [
            ("flaky".into(), "Open".into()),
            ("style".into(), "Open".into())
        ]
    );
    assert_eq!(r["count"], 2);
    assert_eq!(
        json(&omk(&p, &["gates", "reset", "--all", "--json"]))["count"],
        0,
        "nothing left open"
    );
    let o = omk(&p, &["gates", "reset", "--gate", "flaky"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("already Closed"));
    // --gate and --all together, or neither, are usage errors.
    assert_eq!(omk(&p, &["gates", "reset"]).status.code(), Some(2));
    assert_eq!(
        omk(&p, &["gates", "reset", "--all", "--gate", "x"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn the_same_project_through_another_path_shares_its_breakers() {
    let p = project(Some(GATES));
    omk(&p, &["gates", "run", "--gate", "flaky"]);
    let sub = p.root.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let o = cmd(&p, &sub, &["-C", "..", "gates", "status", "--json"])
        .output()
        .unwrap();
    let status = json(&o);
    let flaky = status["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["gate_name"] == "flaky")
        .unwrap()
        .clone();
    assert_eq!(flaky["failure_count"], 1, "{status}");
}

#[test]
fn detected_gates_are_listed_with_their_origin() {
    let p = project(None);
    std::fs::write(p.root.join("Makefile"), "test:\n\ttrue\n").unwrap();
    let v = json(&omk(&p, &["gates", "list", "--json"]));
    assert_eq!(v["source"], "detected");
    assert_eq!(v["gates"][0]["name"], "make test");
    assert_eq!(v["gates"][0]["origin"], "detected from Makefile");
    let o = omk(&p, &["gates", "run", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&o)["results"][0]["passed"], true);
}

#[test]
fn a_broken_gates_file_is_invalid_input_naming_the_line() {
    let p = project(Some(
        "[[gate]]\nname = \"x\"\ncommand = \"true\"\nbogus = 1\n",
    ));
    let o = omk(&p, &["gates", "run"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gates.toml") && err.contains("line 4"),
        "{err}"
    );
}

#[test]
fn fifty_megabytes_of_output_do_not_blow_up_memory() {
    let p = project(Some(
        "[[gate]]\nname = \"loud\"\ncommand = \"yes 'a line of gate output' | head -c 52428800\"\n",
    ));
    let mut child = cmd(&p, &p.root, &["gates", "run", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak_kb = 0u64;
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut s).unwrap();
        s
    });
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out: Value = serde_json::from_str(&reader.join().unwrap()).unwrap();
    assert_eq!(out["results"][0]["passed"], true);
    assert!(out["results"][0]["stdout"].as_str().unwrap().len() < 40 * 1024);
    assert!(
        peak_kb > 0 && peak_kb < 40 * 1024,
        "omk peaked at {peak_kb} KiB for 50 MiB of output"
    );
}

#[test]
fn an_open_breaker_reads_half_open_once_its_recovery_time_is_up() {
    let p = project(Some(
        "[[gate]]\nname = \"flaky\"\ncommand = \"exit 1\"\n\n[breaker]\nfailure_threshold = 2\nrecovery_timeout_secs = 2\nhalf_open_calls = 1\n",
    ));
    omk(&p, &["gates", "run"]);
    omk(&p, &["gates", "run"]);
    let flaky = |p: &Project| {
        let s = json(&omk(p, &["gates", "status", "--json"]));
        s["breakers"][0].clone()
    };
    let b = flaky(&p);
    assert_eq!(b["state"], "Open", "{b}");
    assert_eq!(b["half_open_calls_remaining"], 0, "{b}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Read after the timeout: HalfOpen with its probe, though no run has
    // touched the stored breaker since it opened.
    let b = flaky(&p);
    assert_eq!(b["state"], "HalfOpen", "{b}");
    assert_eq!(b["half_open_calls_remaining"], 1, "{b}");
    let text = String::from_utf8_lossy(&omk(&p, &["gates", "status"]).stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("flaky") && l.contains("HalfOpen")),
        "{text}"
    );
    // The same in every project's view.
    let all = json(&omk(&p, &["gates", "status", "--all-projects", "--json"]));
    assert_eq!(all["breakers"][0]["state"], "HalfOpen", "{all}");
    // What readers saw is what the next run finds: a probe, which fails
    // and opens the breaker again.
    let o = omk(&p, &["gates", "run", "--json"]);
    assert_eq!(json(&o)["results"][0]["skipped"], false);
    assert_eq!(flaky(&p)["state"], "Open");
}
