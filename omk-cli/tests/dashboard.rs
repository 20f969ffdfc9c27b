//! `omk dashboard` end to end: the real binary on a free loopback port,
//! state made by the real commands on the scripted agent, and a plain HTTP
//! client (each route, errors, auth, the event stream).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{text, Fx};

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// A running `omk dashboard`, killed on drop.
struct Dash {
    child: std::process::Child,
    addr: String,
}

impl Drop for Dash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fx {
    fn dashboard(&self, extra: &[&str]) -> Dash {
        let mut args = vec!["dashboard", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(&args)
            .env_remove("OMK_DASHBOARD_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{line}");
        Dash { child, addr }
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn http_get(addr: &str, path: &str, token: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (headers, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = headers[9..12].parse().unwrap();
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers: headers.to_ascii_lowercase(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

#[test]
fn every_route_answers_with_its_document() {
    let fx = Fx::new("[[gate]]\nname = \"ok\"\ncommand = \"true\"\n");
    let out = fx.omk(&[
        "team",
        "run",
        "1:executor",
        "Build",
        "--name",
        "alpha",
        "--subtask",
        "one",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = fx.omk(&["goal", "run", "Greet [json-plan:Hi]"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = fx.omk(&["ralph", "Pass", "--name", "r1"]);
    assert!(out.status.success(), "{}", text(&out));
    let d = fx.dashboard(&[]);

    let health = http_get(&d.addr, "/api/health", None);
    assert!(health
        .headers
        .contains("content-security-policy: default-src 'none'"));
    let h = health.json();
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["checks"]["kimi"]["status"].is_string());
    assert!(h["checks"]["disk"]["status"].is_string());
    assert_eq!(health.status, if h["status"] == "ok" { 200 } else { 503 });

    let teams = http_get(&d.addr, "/api/teams", None).json();
    let alpha = &teams["teams"][0];
    for f in [
        "version",
        "name",
        "task",
        "created_at",
        "worker_count",
        "worker_role",
        "phase",
        "tasks",
        "state_dir",
    ] {
        assert!(alpha.get(f).is_some(), "team entry lacks {f}");
    }
    let names: Vec<&str> = teams["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"alpha"));
    assert_eq!(
        http_get(&d.addr, "/api/teams/alpha", None).json()["phase"],
        "Completed"
    );
    let missing = http_get(&d.addr, "/api/teams/nope", None);
    assert_eq!(
        (missing.status, missing.json()["error"]["code"].clone()),
        (404, "not_found".into())
    );
    let bad = http_get(&d.addr, "/api/teams/bad%20name", None);
    assert_eq!(
        (bad.status, bad.json()["error"]["code"].clone()),
        (400, "invalid_input".into())
    );

    assert_eq!(
        http_get(&d.addr, "/api/ralphs", None).json()["ralphs"][0]["iteration"],
        1
    );
    assert!(http_get(&d.addr, "/api/autopilots", None).json()["autopilots"].is_array());
    let m = http_get(&d.addr, "/api/metrics", None).json();
    assert!(m["metrics"]["total_team_runs"].as_u64().unwrap() >= 2);
    assert_eq!(m["metrics"]["total_ralph_runs"], 1);
    let goals = http_get(&d.addr, "/api/goals", None).json();
    let gid = goals["goals"][0]["goal_id"].as_str().unwrap().to_string();
    assert_eq!(
        http_get(&d.addr, &format!("/api/goals/{gid}"), None).json()["status"],
        "ready"
    );
    assert_eq!(
        http_get(&d.addr, "/api/goals/latest/proof", None).json()["status"],
        "ready"
    );
    assert!(http_get(&d.addr, "/api/goals/latest/replay", None).json()["timeline"].is_array());
    assert!(http_get(&d.addr, "/api/goals/latest/budget", None).json()["used_tokens"].is_u64());
    assert_eq!(
        http_get(&d.addr, "/api/goals/latest/diagnose", None).json()["stagnant"],
        false
    );
    assert_eq!(http_get(&d.addr, "/api/goals/goal-nope", None).status, 404);
    assert_eq!(
        http_get(&d.addr, "/api/gates", None).json()["breakers"][0]["gate_name"],
        "ok"
    );
    assert_eq!(
        http_get(&d.addr, "/api/pools", None).json()["pools"][0]["name"],
        "default"
    );

    let prom = http_get(&d.addr, "/metrics", None);
    assert!(prom
        .headers
        .contains("content-type: text/plain; version=0.0.4"));
    assert!(prom.body.contains("# TYPE omk_team_runs_total counter"));
    assert!(prom.body.contains("omk_teams{phase=\"Completed\"}"));
    let api = http_get(&d.addr, "/api/openapi.json", None).json();
    assert_eq!(api["openapi"], "3.1.0");
    for p in [
        "/api/health",
        "/api/teams",
        "/api/teams/{name}",
        "/api/goals/{id}/proof",
        "/metrics",
    ] {
        assert!(api["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let page = http_get(&d.addr, "/", None);
    assert!(page.body.contains("<script src=\"/app.js\""));
    let js = http_get(&d.addr, "/app.js", None).body;
    assert!(
        !js.contains("innerHTML"),
        "the page builds the DOM with textContent only"
    );
    let none = http_get(&d.addr, "/etc/passwd", None);
    assert_eq!(none.status, 404);

    // The team list follows the files: an ended team served from memory
    // is re-read when its document changes, and dropped when it goes.
    let file = fx.state.join("team/alpha/team.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    doc["task"] = "Build, edited".into();
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let teams = http_get(&d.addr, "/api/teams", None).json();
    let alpha = teams["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alpha")
        .unwrap()
        .clone();
    assert_eq!(alpha["task"], "Build, edited");
    std::fs::remove_dir_all(fx.state.join("team/alpha")).unwrap();
    let teams = http_get(&d.addr, "/api/teams", None).json();
    assert!(!teams["teams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "alpha"));
}

#[test]
fn a_token_guards_the_api_and_a_public_bind_needs_one() {
    let fx = Fx::new("");
    let d = fx.dashboard(&["--token", "s3cret"]);
    let denied = http_get(&d.addr, "/api/teams", None);
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"]["code"], "unauthorized");
    assert!(denied.headers.contains("content-security-policy"));
    assert_eq!(http_get(&d.addr, "/api/teams", Some("wrong")).status, 401);
    assert_eq!(http_get(&d.addr, "/metrics", None).status, 401);
    assert_eq!(http_get(&d.addr, "/api/teams", Some("s3cret")).status, 200);
    assert_eq!(http_get(&d.addr, "/metrics", Some("s3cret")).status, 200);
    // The page itself loads; it asks for the token.
    assert_eq!(http_get(&d.addr, "/", None).status, 200);
    drop(d);

    let out = fx.omk(&["dashboard", "--bind", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
    let out = fx.omk(&["dashboard", "--bind", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn events_stream_a_team_created_after_connecting() {
    let fx = Fx::new("");
    // A token with characters the page percent-encodes in the query.
    let d = fx.dashboard(&["--token", "t+k/=%"]);
    assert_eq!(
        http_get(&d.addr, "/api/events?token=t%2Bk", None).status,
        401
    );
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /api/events?token=t%2Bk%2F%3D%25 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("event: hello") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        seen.push_str(&line);
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    // Let the watcher take its first look, then create a team.
    std::thread::sleep(Duration::from_millis(600));
    let out = fx.omk(&[
        "team",
        "run",
        "1:executor",
        "Late",
        "--name",
        "late-team",
        "--subtask",
        "x",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
        if line.starts_with("data: ") && line.contains("\"name\":\"late-team\"") {
            let v: Value = serde_json::from_str(line.trim_start_matches("data: ").trim()).unwrap();
            if v["document"]["phase"] == "Completed" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no team event for late-team");
    }
}

/// A burst of 1,000 rewrites of one document: the feed's notifications
/// coalesce, it re-reads, and the stream ends on the last version without
/// ever going back to an older one.
#[test]
fn events_follow_a_burst_of_1000_updates_to_the_last_version() {
    let fx = Fx::new("");
    let out = fx.omk(&[
        "team",
        "run",
        "1:executor",
        "Burst",
        "--name",
        "burst",
        "--subtask",
        "x",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let file = fx.state.join("team/burst/team.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let d = fx.dashboard(&[]);
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let mut hello = None;
    while hello.is_none() {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if let Some(data) = line.strip_prefix("data: ") {
            hello = Some(serde_json::from_str::<Value>(data.trim()).unwrap());
        }
    }
    assert_eq!(hello.unwrap()["watch"], "native");
    let writer = std::thread::spawn(move || {
        for i in 0..1000 {
            doc["task"] = Value::from(format!("burst {i}"));
            let tmp = file.with_file_name(format!(".team.json.tmp.burst.{i}"));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        }
    });
    let mut versions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while versions.last() != Some(&999) {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
        if let Some(data) = line
            .strip_prefix("data: ")
            .filter(|d| d.contains("\"name\":\"burst\""))
        {
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            if let Some(n) = v["document"]["task"]
                .as_str()
                .and_then(|t| t.strip_prefix("burst "))
            {
                versions.push(n.parse::<u32>().unwrap());
            }
        }
        assert!(
            Instant::now() < deadline,
            "the last version never came: {versions:?}"
        );
    }
    writer.join().unwrap();
    // A document read just after a rewrite may be sent twice (its file
    // changed, its content had already been sent): never an older one.
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "an older version after a newer one: {versions:?}"
    );
}
