//! The `omk` binary: exit codes, JSON shapes and error rendering.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn omk(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omk"));
    cmd.args(args)
        .env("OMK_STATE_DIR", state)
        .env_remove("OMK_CONFIG")
        .env_remove("OMK_KIMI_BIN")
        .env_remove("OMK_KIMI_ARGS")
        .env_remove("OMK_AGENT_PROTOCOL")
        .env("XDG_CONFIG_HOME", state.join("no-config"))
        .current_dir(state.parent().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn fake_agent(dir: &Path) -> PathBuf {
    let p = dir.join("kimi");
    std::fs::write(&p, "#!/bin/sh\necho 'kimi, version 1.51.0'\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn version_prints_the_crate_version() {
    let d = tempfile::tempdir().unwrap();
    let out = omk(&d.path().join("s"), &["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("omk {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn doctor_healthy_exits_0_with_api_shape() {
    let d = tempfile::tempdir().unwrap();
    let agent = fake_agent(d.path());
    // Healthy whatever the free space of the machine running the test.
    let cfg = d.path().join("omk.toml");
    std::fs::write(&cfg, "[health]\nmin_free_disk_mb = 1\n").unwrap();
    let out = omk(
        &d.path().join("s"),
        &["doctor", "--json"],
        &[
            ("OMK_KIMI_BIN", agent.to_str().unwrap()),
            ("OMK_CONFIG", cfg.to_str().unwrap()),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["healthy"], true);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config", "kimi", "state_dir", "disk"]);
    assert_eq!(v["checks"][1]["version"], "kimi, version 1.51.0");
}

#[test]
fn doctor_with_missing_agent_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-such-kimi");
    let out = omk(
        &d.path().join("s"),
        &["doctor", "--json"],
        &[("OMK_KIMI_BIN", missing.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(
        (v["status"].as_str(), v["healthy"].as_bool()),
        (Some("unhealthy"), Some(false))
    );
    // Text mode says the same thing to a person.
    let out = omk(
        &d.path().join("s"),
        &["doctor"],
        &[("OMK_KIMI_BIN", missing.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("OMK_KIMI_BIN") && text.contains("issues found: 1"),
        "{text}"
    );
}

#[test]
fn doctor_reports_a_broken_config_file_by_name_and_line() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("omk.toml");
    std::fs::write(&cfg, "[agent]\nbin = \n").unwrap();
    let agent = fake_agent(d.path());
    let out = omk(
        &d.path().join("s"),
        &["doctor", "--json"],
        &[
            ("OMK_CONFIG", cfg.to_str().unwrap()),
            ("OMK_KIMI_BIN", agent.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let detail = v["checks"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("omk.toml") && detail.contains("line 2"),
        "{detail}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    for args in [&["frobnicate"][..], &["doctor", "--nope"][..], &[][..]] {
        let out = omk(&d.path().join("s"), args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn bad_agent_protocol_env_is_reported_as_a_config_issue() {
    let d = tempfile::tempdir().unwrap();
    let out = omk(
        &d.path().join("s"),
        &["doctor", "--json"],
        &[("OMK_AGENT_PROTOCOL", "carrier-pigeon")],
    );
    // A bad protocol is a config error: doctor reports it as an issue.
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert!(v["checks"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("OMK_AGENT_PROTOCOL"));
}

#[test]
fn a_broken_config_file_stops_every_command_but_doctor() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "bad = \n").unwrap();
    let state = d.path().join("s");
    for args in [
        &["team", "list"][..],
        &["gates", "status"],
        &["goal", "list"],
        &["pools", "status"],
        &["team", "status", "x"],
    ] {
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = omk(&state, &all, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains("line 1"),
            "{args:?}: {err}"
        );
    }
    // The same file named by OMK_CONFIG.
    let out = omk(
        &state,
        &["team", "list"],
        &[("OMK_CONFIG", cfg.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    // Nothing was written.
    assert!(!state.exists(), "a refused command created the state root");
}

#[test]
fn an_explicit_config_file_that_does_not_exist_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.toml");
    let state = d.path().join("s");
    let out = omk(
        &state,
        &["--config", missing.to_str().unwrap(), "team", "list"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nope.toml") && err.contains("does not exist"),
        "{err}"
    );
    let out = omk(
        &state,
        &["goal", "list"],
        &[("OMK_CONFIG", missing.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    // doctor reports it and still checks the agent OMK_KIMI_BIN names.
    let agent = fake_agent(d.path());
    let out = omk(
        &state,
        &["--config", missing.to_str().unwrap(), "doctor", "--json"],
        &[("OMK_KIMI_BIN", agent.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["status"], "unhealthy", "{v}");
    assert!(
        v["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{v}"
    );
}

#[test]
fn doctor_with_a_broken_config_still_applies_environment_overrides() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "bad = \n").unwrap();
    let agent = fake_agent(d.path());
    let out = omk(
        &d.path().join("s"),
        &["--config", cfg.to_str().unwrap(), "doctor", "--json"],
        &[("OMK_KIMI_BIN", agent.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["checks"][0]["name"], "config");
    assert_eq!(v["checks"][0]["status"], "error", "{v}");
    let kimi = &v["checks"][1];
    assert_eq!(kimi["name"], "kimi");
    assert_eq!(kimi["status"], "ok", "OMK_KIMI_BIN was forgotten: {kimi}");
    assert_eq!(kimi["path"], agent.to_str().unwrap(), "{kimi}");
}

#[test]
fn mcp_doctor_explains_dead_servers_in_words_and_logs_nothing_without_v() {
    let d = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // the listener is dropped: nobody listens there
    std::fs::create_dir_all(d.path().join(".omk")).unwrap();
    std::fs::write(
        d.path().join(".omk/mcp.json"),
        format!(
            r#"{{"mcpServers": {{"dead": {{"url": "http://127.0.0.1:{port}/mcp"}}, "gone": {{"command": "false"}}}}}}"#
        ),
    )
    .unwrap();
    let state = d.path().join("s");
    let out = omk(&state, &["mcp", "doctor", "--timeout", "5"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("cannot reach http://127.0.0.1:{port}/mcp")),
        "{stdout}"
    );
    assert!(
        stdout.contains("exited before it answered initialize"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("::") && !stderr.contains("::"),
        "type names: {stdout}{stderr}"
    );
    assert!(stderr.is_empty(), "logs without -v: {stderr}");
}
